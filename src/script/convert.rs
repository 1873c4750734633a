//! JSON ↔ Rhai values.
//!
//! Integers stay integers (`i64`); JSON numbers beyond `i64` become floats.
//! Nesting is bounded on the way out so a self-built deep value cannot
//! exhaust the stack.

use rhai::{Array, Blob, Dynamic, ImmutableString, Map, FLOAT, INT};
use serde_json::{Number, Value};

/// Deepest nesting of arrays and maps turned into JSON.
pub const MAX_DEPTH: usize = 128;

/// A JSON value as a Rhai value.
pub fn from_json(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => (i as INT).into(),
            None => (n.as_f64().unwrap_or(0.0) as FLOAT).into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(list) => list.iter().map(from_json).collect::<Array>().into(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.as_str().into(), from_json(v)))
            .collect::<Map>()
            .into(),
    }
}

/// A Rhai value as JSON; `()` is `null`, non-finite floats are `null`,
/// other values (functions, timestamps…) their text.
pub fn to_json(value: &Dynamic) -> Result<Value, String> {
    to_json_at(value, 0)
}

fn to_json_at(value: &Dynamic, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("value nested deeper than {MAX_DEPTH} levels"));
    }
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::Number(i.into()));
    }
    if let Ok(f) = value.as_float() {
        return Ok(Number::from_f64(f).map_or(Value::Null, Value::Number));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if value.is_string() {
        return Ok(Value::String(
            value
                .read_lock::<ImmutableString>()
                .map_or_else(String::new, |s| s.to_string()),
        ));
    }
    if value.is_array() {
        let list = value.read_lock::<Array>().ok_or("array is locked")?;
        return list
            .iter()
            .map(|v| to_json_at(v, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if value.is_map() {
        let map = value.read_lock::<Map>().ok_or("map is locked")?;
        let mut out = serde_json::Map::with_capacity(map.len());
        for (k, v) in map.iter() {
            out.insert(k.to_string(), to_json_at(v, depth + 1)?);
        }
        return Ok(Value::Object(out));
    }
    if value.is_blob() {
        let blob = value.read_lock::<Blob>().ok_or("blob is locked")?;
        return Ok(Value::Array(blob.iter().map(|b| Value::from(*b)).collect()));
    }
    Ok(Value::String(value.to_string()))
}

/// The text of a value: a string as is, `()` empty, anything else its JSON.
pub fn to_text(value: &Dynamic) -> Result<String, String> {
    if value.is_unit() {
        Ok(String::new())
    } else if value.is_string() {
        Ok(value
            .read_lock::<ImmutableString>()
            .map_or_else(String::new, |s| s.to_string()))
    } else {
        to_json(value).map(|v| v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_json() {
        let v = json!({"a": 1, "b": [true, null, 2.5, "x"], "c": {"d": -7}, "big": 1e300});
        assert_eq!(to_json(&from_json(&v)).unwrap(), v);
        assert_eq!(
            to_json(&from_json(&json!(u64::MAX))).unwrap(),
            json!(u64::MAX as f64)
        );
    }

    #[test]
    fn deep_values_are_refused_not_overflowed() {
        let mut v = Dynamic::from(1 as INT);
        for _ in 0..1_000 {
            v = Dynamic::from(vec![v]);
        }
        assert!(to_json(&v).is_err());
    }

    #[test]
    fn text_of_values() {
        assert_eq!(to_text(&Dynamic::UNIT).unwrap(), "");
        assert_eq!(to_text(&Dynamic::from("hi")).unwrap(), "hi");
        assert_eq!(to_text(&Dynamic::from(42 as INT)).unwrap(), "42");
    }
}
