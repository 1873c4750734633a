//! Request headers as a JSON object, as scripts (`startparam(5)`) and
//! recordings show them: lower-case names, repeated headers joined with
//! `", "`, and the named credentials left out. A leaf.

use axum::http::HeaderMap;
use serde_json::{Map, Value};

/// Left out of what a script sees: the caller's credential.
pub const HIDDEN_FROM_SCRIPTS: &[&str] = &["authorization"];

/// Left out of recordings: every credential a request may carry.
pub const HIDDEN_FROM_RECORDINGS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// `headers` as a JSON object, without those named in `hidden` (lower-case).
pub fn to_json(headers: &HeaderMap, hidden: &[&str]) -> Map<String, Value> {
    let mut map = Map::new();
    for (name, value) in headers {
        if hidden.contains(&name.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        match map.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                map.insert(name.as_str().to_owned(), value.into_owned().into());
            }
        }
    }
    map
}
