//! JSON ↔ Rhai values.
//!
//! Integers stay integers (`i64`); JSON numbers beyond `i64` become floats.
//! Nesting is bounded on the way out so a self-built deep value cannot
//! exhaust the stack.

use rhai::{Array, Blob, Dynamic, ImmutableString, Map, FLOAT, INT};
use serde::{de, ser};
use serde_json::Value;

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

/// Parses JSON text straight into a Rhai value, with the mapping of [`from_json`]
/// (no `serde_json::Value` in between).
pub fn parse(text: &str) -> Result<Dynamic, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = de::DeserializeSeed::deserialize(Rhai, &mut de)?;
    de.end()?;
    Ok(value)
}

/// Builds a [`Dynamic`] from any self-describing input.
#[derive(Clone, Copy)]
struct Rhai;

impl<'de> de::DeserializeSeed<'de> for Rhai {
    type Value = Dynamic;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Dynamic, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for Rhai {
    type Value = Dynamic;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Dynamic, E> {
        Ok(Dynamic::UNIT)
    }
    fn visit_none<E>(self) -> Result<Dynamic, E> {
        Ok(Dynamic::UNIT)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Dynamic, E> {
        Ok(b.into())
    }
    fn visit_i64<E>(self, i: i64) -> Result<Dynamic, E> {
        Ok((i as INT).into())
    }
    fn visit_u64<E>(self, u: u64) -> Result<Dynamic, E> {
        Ok(match INT::try_from(u) {
            Ok(i) => i.into(),
            Err(_) => (u as FLOAT).into(),
        })
    }
    fn visit_f64<E>(self, f: f64) -> Result<Dynamic, E> {
        Ok((f as FLOAT).into())
    }
    fn visit_str<E>(self, s: &str) -> Result<Dynamic, E> {
        Ok(s.into())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Dynamic, A::Error> {
        let mut list = Array::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(self)? {
            list.push(item);
        }
        Ok(list.into())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut entries: A) -> Result<Dynamic, A::Error> {
        let mut map = Map::new();
        while let Some(key) = entries.next_key_seed(Key)? {
            let value = entries.next_value_seed(self)?;
            map.insert(key, value);
        }
        Ok(map.into())
    }
}

/// The engine's map key type (a small-string type rhai does not export by name).
type Identifier = <Map as KeyOf>::Key;

trait KeyOf {
    type Key;
}

impl<K, V> KeyOf for std::collections::BTreeMap<K, V> {
    type Key = K;
}

/// A map key, made straight into the engine's key type.
struct Key;

impl<'de> de::DeserializeSeed<'de> for Key {
    type Value = Identifier;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Identifier, D::Error> {
        d.deserialize_str(self)
    }
}

impl de::Visitor<'_> for Key {
    type Value = Identifier;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E>(self, s: &str) -> Result<Identifier, E> {
        Ok(s.into())
    }
}

/// A Rhai value as JSON; `()` is `null`, non-finite floats are `null`,
/// other values (functions, timestamps…) their text.
pub fn to_json(value: &Dynamic) -> Result<Value, String> {
    serde_json::to_value(AsJson { value, depth: 0 }).map_err(|e| e.to_string())
}

/// A Rhai value as JSON text, written straight from the value (see [`to_json`]).
pub fn to_json_text(value: &Dynamic) -> Result<String, String> {
    serde_json::to_string(&AsJson { value, depth: 0 }).map_err(|e| e.to_string())
}

/// Serializes a [`Dynamic`] with the JSON mapping, refusing nesting past [`MAX_DEPTH`].
struct AsJson<'a> {
    value: &'a Dynamic,
    depth: usize,
}

impl ser::Serialize for AsJson<'_> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ser::{Error, SerializeMap, SerializeSeq};
        let (value, depth) = (self.value, self.depth);
        if depth > MAX_DEPTH {
            return Err(S::Error::custom(format!(
                "value nested deeper than {MAX_DEPTH} levels"
            )));
        }
        if value.is_unit() {
            return s.serialize_unit();
        }
        if let Ok(b) = value.as_bool() {
            return s.serialize_bool(b);
        }
        if let Ok(i) = value.as_int() {
            return s.serialize_i64(i);
        }
        if let Ok(f) = value.as_float() {
            return if f.is_finite() {
                s.serialize_f64(f)
            } else {
                s.serialize_unit()
            };
        }
        if let Ok(c) = value.as_char() {
            return s.serialize_char(c);
        }
        if value.is_string() {
            return match value.read_lock::<ImmutableString>() {
                Some(text) => s.serialize_str(&text),
                None => s.serialize_str(""),
            };
        }
        if value.is_array() {
            let list = value
                .read_lock::<Array>()
                .ok_or_else(|| S::Error::custom("array is locked"))?;
            let mut seq = s.serialize_seq(Some(list.len()))?;
            for item in list.iter() {
                seq.serialize_element(&AsJson {
                    value: item,
                    depth: depth + 1,
                })?;
            }
            return seq.end();
        }
        if value.is_map() {
            let map = value
                .read_lock::<Map>()
                .ok_or_else(|| S::Error::custom("map is locked"))?;
            let mut out = s.serialize_map(Some(map.len()))?;
            for (k, v) in map.iter() {
                out.serialize_entry(
                    k.as_str(),
                    &AsJson {
                        value: v,
                        depth: depth + 1,
                    },
                )?;
            }
            return out.end();
        }
        if value.is_blob() {
            let blob = value
                .read_lock::<Blob>()
                .ok_or_else(|| S::Error::custom("blob is locked"))?;
            return s.collect_seq(blob.iter());
        }
        s.serialize_str(&value.to_string())
    }
}

/// A rough size of a value (bytes of text plus one per value inside), counted
/// only up to `limit`: cheap for small values, bounded for large ones.
pub fn rough_size(value: &Dynamic, limit: usize) -> usize {
    let mut left = limit;
    count_down(value, &mut left, 0);
    limit - left
}

fn count_down(value: &Dynamic, left: &mut usize, depth: usize) {
    let take = |left: &mut usize, n: usize| *left = left.saturating_sub(n);
    take(left, 1);
    // Script values nest at most 128 deep (the engine checks); this bound is for any other.
    if *left == 0 || depth > MAX_DEPTH {
        return;
    }
    if let Some(text) = value.read_lock::<ImmutableString>() {
        take(left, text.len());
    } else if let Some(list) = value.read_lock::<Array>() {
        for item in list.iter() {
            count_down(item, left, depth + 1);
            if *left == 0 {
                return;
            }
        }
    } else if let Some(map) = value.read_lock::<Map>() {
        for (k, item) in map.iter() {
            take(left, k.len());
            count_down(item, left, depth + 1);
            if *left == 0 {
                return;
            }
        }
    } else if let Some(blob) = value.read_lock::<Blob>() {
        take(left, blob.len());
    }
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
        to_json_text(value)
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

    /// The vendored Rhai's patch (vendor/README.md): a map or an array becomes a
    /// value as it is, its entries where they were, not taken apart and rebuilt
    /// (which cost a third of parsing a small body).
    #[test]
    fn maps_and_arrays_become_values_without_being_rebuilt() {
        // Where each value lives: a rebuilt map puts them in new tree nodes (40
        // entries fill several nodes, so the allocator cannot hand all of them
        // back at the same addresses).
        fn places(map: &Map) -> Vec<*const Dynamic> {
            map.values().map(|v| v as *const Dynamic).collect()
        }
        let map = || Map::from_iter((0..40).map(|i| (format!("k{i:02}").into(), i.into())));
        let (by_from, by_into) = (map(), map());
        let (from_at, into_at) = (places(&by_from), places(&by_into));
        let (by_from, by_into): (Dynamic, Dynamic) = (Dynamic::from(by_from), by_into.into());
        assert_eq!(places(&by_from.read_lock::<Map>().unwrap()), from_at);
        assert_eq!(places(&by_into.read_lock::<Map>().unwrap()), into_at);
        assert_eq!(by_into.read_lock::<Map>().unwrap().len(), 40);

        let list = || -> Array { vec![1.into(), "x".into()] };
        let (by_from, by_into) = (list(), list());
        let (from_at, into_at) = (by_from.as_ptr(), by_into.as_ptr());
        let (by_from, by_into): (Dynamic, Dynamic) = (Dynamic::from(by_from), by_into.into());
        assert_eq!(by_from.read_lock::<Array>().unwrap().as_ptr(), from_at);
        assert_eq!(by_into.read_lock::<Array>().unwrap().as_ptr(), into_at);
    }

    #[test]
    fn parses_text_like_values() {
        for text in [
            r#"{"a": 1, "b": [true, null, 2.5, "x\u00e9"], "c": {"d": -7}, "big": 1e300}"#,
            "18446744073709551615",
            "-9223372036854775808",
            r#"{"k": 1, "k": 2}"#,
            "[]",
            "\"\"",
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            let direct = parse(text).unwrap();
            assert_eq!(to_json(&direct).unwrap(), to_json(&from_json(&v)).unwrap());
            assert_eq!(
                to_json_text(&direct).unwrap(),
                to_json(&direct).unwrap().to_string()
            );
        }
        assert!(parse("{\"a\": }").is_err());
        assert!(parse("1 2").is_err(), "trailing input is an error");
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let err = parse(&deep).unwrap_err().to_string();
        assert!(err.contains("recursion limit"), "nesting is bounded: {err}");
    }

    /// Found by the `json_rhai` fuzz target: without serde_json's `float_roundtrip`
    /// "70E22" parsed to a float that, written and read again, came back as
    /// 6.999999999999999e23. Numbers must survive parse → write → parse.
    #[test]
    fn floats_survive_a_round_trip() {
        for text in [
            "70E22",
            "7e23",
            "0.1",
            "1.7976931348623157e308",
            "5e-324",
            "123456789.123456789",
        ] {
            let once = parse(text).unwrap();
            let again = parse(&to_json_text(&once).unwrap()).unwrap();
            assert_eq!(to_json(&again).unwrap(), to_json(&once).unwrap(), "{text}");
            let exact: f64 = text.parse().unwrap();
            assert_eq!(once.as_float().unwrap(), exact, "{text} is read exactly");
        }
    }

    #[test]
    fn deep_values_are_refused_not_overflowed() {
        let mut v = Dynamic::from(1 as INT);
        for _ in 0..1_000 {
            v = Dynamic::from(vec![v]);
        }
        assert!(to_json(&v).is_err());
        assert!(to_json_text(&v)
            .unwrap_err()
            .contains("nested deeper than 128"));
    }

    #[test]
    fn rough_size_counts_up_to_its_limit() {
        let v = parse(r#"{"ab": ["xyz", 1], "c": "d"}"#).unwrap();
        // map 1 + keys 3 + array 1 + "xyz" 1+3 + 1 + "d" 1+1
        assert_eq!(rough_size(&v, 1000), 12);
        assert_eq!(rough_size(&v, 5), 5);
        let big = Dynamic::from(vec![Dynamic::from("x".repeat(100)); 10_000]);
        assert_eq!(rough_size(&big, 4096), 4096);
    }

    #[test]
    fn text_of_values() {
        assert_eq!(to_text(&Dynamic::UNIT).unwrap(), "");
        assert_eq!(to_text(&Dynamic::from("hi")).unwrap(), "hi");
        assert_eq!(to_text(&Dynamic::from(42 as INT)).unwrap(), "42");
    }
}
