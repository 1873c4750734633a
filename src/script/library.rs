//! The everyday functions of integrations (SPEC §10 "Authoring"): URL
//! encoding, joining, and time as Unix seconds. Pure functions: none has a
//! side effect, so all of them run in an inline attempt.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, TimeZone, Utc};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Position, INT};

type Fallible<T> = Result<T, Box<EvalAltResult>>;

fn fail<T>(message: impl Into<String>) -> Fallible<T> {
    Err(EvalAltResult::ErrorRuntime(message.into().into(), Position::NONE).into())
}

/// Every byte but RFC 3986's unreserved characters `A-Z a-z 0-9 - . _ ~`.
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `s` for a URL's path segment or query value.
pub fn url_encode(s: &str) -> String {
    utf8_percent_encode(s, RESERVED).to_string()
}

/// Seconds since the Unix epoch of an RFC 3339 or RFC 2822 time.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_rfc2822(s))
        .map(|t| t.timestamp())
        .map_err(|_| {
            format!("parse_time: {s:?} is neither RFC 3339 (2026-12-01T10:00:00Z) nor RFC 2822")
        })
}

/// `secs` as UTC text in the strftime format `fmt`.
pub fn format_time(secs: i64, fmt: &str) -> Result<String, String> {
    let items: Vec<Item> = StrftimeItems::new(fmt).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(format!(
            "format_time: {fmt:?} is not a valid strftime format"
        ));
    }
    let Some(time) = Utc.timestamp_opt(secs, 0).single() else {
        return Err(format!("format_time: {secs} is out of range"));
    };
    Ok(time.format_with_items(items.into_iter()).to_string())
}

/// Registers the functions.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("url_encode", |s: &str| -> Fallible<ImmutableString> {
        super::heavy(s.len())?;
        Ok(url_encode(s).into())
    });
    engine.register_fn("url_decode", |s: &str| -> Fallible<ImmutableString> {
        super::heavy(s.len())?;
        match percent_decode_str(s).decode_utf8() {
            Ok(text) => Ok(text.into_owned().into()),
            Err(_) => fail("url_decode: the decoded bytes are not UTF-8 text"),
        }
    });
    // join(array, sep), also as a method: items as text (strings as they are).
    engine.register_fn(
        "join",
        |items: Array, sep: &str| -> Fallible<ImmutableString> {
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                match item.read_lock::<ImmutableString>() {
                    Some(s) => out.push_str(&s),
                    None => out.push_str(&super::convert::to_text(item).unwrap_or_default()),
                }
                super::heavy(out.len())?;
            }
            Ok(out.into())
        },
    );
    engine.register_fn("unix_time", || -> INT { Utc::now().timestamp() });
    engine.register_fn("unix_time_ms", || -> INT { Utc::now().timestamp_millis() });
    engine.register_fn("parse_time", |s: &str| -> Fallible<INT> {
        parse_time(s).or_else(fail)
    });
    engine.register_fn(
        "format_time",
        |secs: INT, fmt: &str| -> Fallible<ImmutableString> {
            format_time(secs, fmt).map(Into::into).or_else(fail)
        },
    );
    engine.register_fn(
        "format_time",
        |secs: Dynamic, _: &str| -> Fallible<ImmutableString> {
            fail(format!(
                "format_time: the time is whole seconds since 1970 (an integer), not {}",
                secs.type_name()
            ))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_keeps_only_unreserved_characters() {
        assert_eq!(
            url_encode("BOLT M8/ä?&=~._-"),
            "BOLT%20M8%2F%C3%A4%3F%26%3D~._-"
        );
    }

    #[test]
    fn times_parse_and_format_in_utc() {
        assert_eq!(parse_time("2026-12-01T10:00:00+01:00"), Ok(1_796_115_600));
        assert_eq!(
            parse_time("Tue, 01 Dec 2026 09:00:00 GMT"),
            Ok(1_796_115_600)
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(
            format_time(1_796_115_600, "%Y-%m-%d %H:%M").as_deref(),
            Ok("2026-12-01 09:00")
        );
        assert!(format_time(0, "%Q").is_err());
        assert!(format_time(i64::MAX, "%Y").is_err());
    }
}
