//! Request headers as a JSON object, as scripts (`startparam(5)`) and
//! recordings show them: lower-case names, repeated headers joined with
//! `", "`, and the named credentials left out. A leaf.

use axum::http::HeaderMap;
use serde_json::{Map, Value};

/// Left out of what a script sees: the caller's credential.
pub const HIDDEN_FROM_SCRIPTS: &[&str] = &["authorization"];

/// Left out of recordings: every credential a request may carry.
pub const HIDDEN_FROM_RECORDINGS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// The console's session cookie (SPEC §16): never shown to a script, whatever
/// path a client sends it on; the request's other cookies are.
pub const SESSION_COOKIE: &str = "switchyard_session";

/// `headers` as a JSON object, without those named in `hidden` (lower-case).
pub fn to_json(headers: &HeaderMap, hidden: &[&str]) -> Map<String, Value> {
    let mut map = Map::new();
    for (name, value) in headers {
        if hidden.contains(&name.as_str()) {
            continue;
        }
        let mut value = String::from_utf8_lossy(value.as_bytes());
        if name == axum::http::header::COOKIE {
            match without_session(&value) {
                Some(rest) => value = rest.into(),
                None => continue,
            }
        }
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

/// Marks an answer from anything but the console (a channel's script, a
/// stored file, the admin API) so that a browser can never run it as the
/// console's page (SPEC §16): `Content-Security-Policy: sandbox` puts it in an
/// origin of its own, without the console's cookie or storage, whatever other
/// policy a script sets (a browser enforces every policy it gets); the
/// content type is not guessed, and no other page may frame it.
pub fn confine(headers: &mut HeaderMap) {
    use axum::http::{header, HeaderValue};
    headers.append(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::X_FRAME_OPTIONS) {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
}

/// A `Cookie` header's text without the console's session cookie; `None`
/// when nothing else is left.
fn without_session(cookies: &str) -> Option<String> {
    if !cookies.contains(SESSION_COOKIE) {
        return Some(cookies.to_owned());
    }
    let kept: Vec<&str> = cookies
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty() && pair.split_once('=').map_or(*pair, |(k, _)| k) != SESSION_COOKIE
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_session_cookie_is_never_shown_and_other_cookies_are() {
        let mut h = HeaderMap::new();
        h.append(
            "cookie",
            HeaderValue::from_static("a=1; switchyard_session=secret; b=2"),
        );
        h.append("cookie", HeaderValue::from_static("switchyard_session=x"));
        let json = to_json(&h, HIDDEN_FROM_SCRIPTS);
        assert_eq!(json["cookie"], "a=1; b=2");
        assert!(!Value::Object(json).to_string().contains("secret"));
        let mut only = HeaderMap::new();
        only.insert("cookie", HeaderValue::from_static("switchyard_session=s"));
        assert!(to_json(&only, HIDDEN_FROM_SCRIPTS).get("cookie").is_none());
    }
}
