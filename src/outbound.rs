//! `webquery`: a script's call to its channel's external system.
//!
//! Scripts run on blocking worker threads, so the call is made with the
//! async client on the runtime (`Handle::block_on` from that worker): the
//! worker waits, the async reactor never does. The call's timeout is capped
//! by what is left of the run's own timeout.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde_json::{json, Map, Value};

use crate::channel::Channel;
use crate::script::trail::{cut, Trail, BODY_BYTES, HEADER_BYTES, MAX_HEADERS};
use crate::AppState;

/// `timeout_ms` when the script gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Redirects followed within the origin of the first request, at most.
pub const MAX_REDIRECTS: usize = 10;

/// The keys of a `webquery` request map.
pub const REQUEST_KEYS: &[&str] = &["method", "path", "query", "body", "headers", "timeout_ms"];

/// The HTTP client for outbound calls (no proxy: calls go straight to the system).
///
/// A redirect is followed only while it stays on the origin of the request
/// (so never with the script's headers to another host, SPEC §7); one that
/// leaves it, or the eleventh, is handed to the script as the 3xx answer.
pub fn client() -> reqwest::Client {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(Url::origin);
        if attempt.previous().len() > MAX_REDIRECTS || first != Some(attempt.url().origin()) {
            attempt.stop()
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .no_proxy()
        .redirect(policy)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("a client with rustls builds")
}

/// `url` joined with `path`, refused when it leaves the url's origin (unless allowed).
/// A `url` that is a path (`/channels/orders/api/`) is on this server, at
/// `own`, the address it listens on. Errors name origins and paths only,
/// never a query (it may hold a secret).
pub fn target(
    channel: &Channel,
    path: &str,
    any_host: bool,
    own: Option<std::net::SocketAddr>,
) -> Result<Url, String> {
    let base = channel
        .outbound_url()
        .ok_or("webquery: the channel has no url")?;
    let base = if base.starts_with('/') {
        let own =
            own.ok_or("webquery: the channel's url is on this server, which is not listening yet")?;
        Url::parse(&format!("http://{own}{base}"))
    } else {
        Url::parse(base)
    };
    let base = base.map_err(|e| format!("webquery: the channel's url: {e}"))?;
    let shown = path.split(['?', '#']).next().unwrap_or("");
    let target = base
        .join(path)
        .map_err(|e| format!("webquery: path {shown:?}: {e}"))?;
    if !matches!(target.scheme(), "http" | "https") {
        return Err(format!(
            "webquery: path {shown:?} leads to {}:, not http(s)",
            target.scheme()
        ));
    }
    if !any_host && target.origin() != base.origin() {
        return Err(format!(
            "webquery: {} is outside the origin of the channel's url ({}); set outbound_any_host to allow it",
            target.origin().ascii_serialization(),
            base.origin().ascii_serialization()
        ));
    }
    Ok(target)
}

/// A `webquery` request map, checked: every key known, every value of its type.
struct Request<'a> {
    method: Method,
    path: &'a str,
    query: Option<&'a Map<String, Value>>,
    headers: Option<&'a Map<String, Value>>,
    body: &'a Value,
    timeout: Option<Duration>,
}

/// Checks a `webquery` request map as a real call would (dry runs use it).
pub fn check_request(request: &Value) -> Result<(), String> {
    parse_request(request).map(|_| ())
}

fn parse_request(request: &Value) -> Result<Request<'_>, String> {
    let fields = request
        .as_object()
        .ok_or("webquery: the request is a map")?;
    if let Some(key) = fields.keys().find(|k| !REQUEST_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "webquery: unknown key {key:?}; the keys are {}",
            REQUEST_KEYS.join(", ")
        ));
    }
    let wrong = |key: &str, what: &str| {
        format!(
            "webquery: {key} must be {what} (the keys are method, path: strings; query, headers: \
             maps; body: any value; timeout_ms: a whole number)"
        )
    };
    let text = |key: &str| match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(wrong(key, "a string")),
    };
    let map = |key: &str| match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(wrong(key, "a map")),
    };
    let method = text("method")?.unwrap_or("GET").to_ascii_uppercase();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("webquery: {method:?} is not an HTTP method"))?;
    let timeout = match fields.get("timeout_ms") {
        None | Some(Value::Null) => None,
        Some(v) => {
            Some(Duration::from_millis(v.as_u64().ok_or_else(|| {
                wrong("timeout_ms", "a whole number of milliseconds")
            })?))
        }
    };
    Ok(Request {
        method,
        path: text("path")?.unwrap_or(""),
        query: map("query")?,
        headers: map("headers")?,
        body: fields.get("body").unwrap_or(&Value::Null),
        timeout,
    })
}

/// The text of a query or header value: a string as is, anything else its JSON.
fn value_text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// Performs `#{method, path, query, body, headers, timeout_ms}`; returns `#{status, headers, body}`.
/// An answer longer than the script string limit is an error, found while it
/// arrives (the rest is never read).
pub fn webquery(
    app: &AppState,
    channel: &Channel,
    request: Value,
    budget: Duration,
    trace: &opentelemetry::trace::SpanContext,
    trail: Option<&Trail>,
) -> Result<Value, String> {
    let request = parse_request(&request)?;
    let own = app.listening.get().copied();
    let mut url = target(channel, request.path, app.config.outbound_any_host, own)?;
    if let Some(query) = request.query {
        // Percent-encoded as `url_encode` does (a space is %20, never `+`),
        // after whatever query the path already has.
        let mut text = url.query().unwrap_or("").to_owned();
        for (key, value) in query {
            if !text.is_empty() {
                text.push('&');
            }
            text.push_str(&crate::script::library::url_encode(key));
            text.push('=');
            text.push_str(&crate::script::library::url_encode(&value_text(value)));
        }
        url.set_query(Some(&text));
    }
    let timeout = request.timeout.unwrap_or(DEFAULT_TIMEOUT).min(budget);
    if timeout.is_zero() {
        return Err("webquery: no time left in this run".into());
    }
    let origin = url.origin().ascii_serialization();
    let mut span = crate::trace::webquery_span(trace, request.method.as_str(), &url);
    // The job card's record of the call (credentials masked), when a job's.
    let mut record = trail.map(
        |_| json!({"method": request.method.as_str(), "url": masked_url(&url), "request": {}}),
    );
    let mut sent: Vec<(String, String)> = Vec::new();
    let mut call = app.http.request(request.method, url).timeout(timeout);
    let (mut has_type, mut has_parent) = (false, false);
    for (name, value) in request.headers.into_iter().flatten() {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("webquery: {name:?} is not a header name"))?;
        let text = value_text(value);
        let value = HeaderValue::from_str(&text)
            .map_err(|_| format!("webquery: header {name}: not a valid value"))?;
        has_type |= header == CONTENT_TYPE;
        has_parent |= header.as_str() == "traceparent";
        if record.is_some() {
            sent.push((header.as_str().to_owned(), text));
        }
        call = call.header(header, value);
    }
    if let Some(r) = record.as_mut() {
        r["request"]["headers"] = shown_headers(sent.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    // The trace goes on upstream (a script's own `traceparent` is left as it is).
    if !has_parent {
        call = call.header("traceparent", crate::trace::traceparent(span.context()));
    }
    let body = match request.body {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => {
            if !has_type {
                call = call.header(CONTENT_TYPE, "application/json");
            }
            Some(other.to_string())
        }
    };
    if let (Some(r), Some(body)) = (record.as_mut(), &body) {
        r["request"]["body"] = cut(body, BODY_BYTES).into();
    }
    if let Some(body) = body {
        call = call.body(body);
    }
    let sent_at = std::time::Instant::now();
    let limit = crate::script::limits::STRING_BYTES;
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
    // Waiting on the network does not hold a computing slot (see `priority::slots`).
    let answer = crate::script::priority::while_waiting(|| {
        runtime.block_on(async move {
            let mut response = call.send().await.map_err(Failure::Http)?;
            let status = response.status().as_u16();
            let mut headers = Map::new();
            for (name, value) in response.headers() {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                match headers.get_mut(name.as_str()) {
                    Some(Value::String(s)) => {
                        s.push_str(", ");
                        s.push_str(&value);
                    }
                    _ => {
                        headers.insert(name.as_str().to_owned(), value.into());
                    }
                }
            }
            if response.content_length().is_some_and(|n| n > limit as u64) {
                return Err(Failure::TooLarge);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(Failure::Http)? {
                if body.len() + chunk.len() > limit {
                    return Err(Failure::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            let body = String::from_utf8_lossy(&body).into_owned();
            Ok((status, headers, body))
        })
    });
    let answer = answer.map_err(|failure| match failure {
        Failure::TooLarge => {
            format!("webquery: {origin} answered with a body over the {limit}-byte string limit")
        }
        Failure::Http(e) => {
            let why = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "failed"
            };
            // `without_url`: the URL may carry secrets in its query.
            format!("webquery: {origin} {why}: {}", e.without_url())
        }
    });
    if let (Some(trail), Some(mut r)) = (trail, record) {
        r["duration_ms"] = (sent_at.elapsed().as_millis() as u64).into();
        match &answer {
            Ok((status, headers, body)) => {
                let shown = shown_headers(
                    headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or(""))),
                );
                r["response"] =
                    json!({"status": status, "headers": shown, "body": cut(body, BODY_BYTES)});
            }
            Err(e) => r["error"] = e.clone().into(),
        }
        trail.call(mask_values(r, channel));
    }
    let (status, headers, body) = match answer {
        Ok(a) => a,
        Err(e) => {
            span.fail(|| e.clone());
            return Err(e);
        }
    };
    span.set(|| {
        vec![opentelemetry::KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        )]
    });
    if status >= 500 {
        span.fail(|| format!("status {status}"));
    }
    Ok(json!({ "status": status, "headers": headers, "body": body }))
}

/// Headers as a job card shows them: at most [`MAX_HEADERS`], each value
/// cut at [`HEADER_BYTES`] (`***` for a credential); `"…"` says how many
/// more there were.
fn shown_headers<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    let mut shown = Map::new();
    let mut more = 0;
    for (name, value) in headers {
        if shown.len() < MAX_HEADERS {
            shown.insert(
                name.to_owned(),
                cut(&shown_header(name, value), HEADER_BYTES).into(),
            );
        } else {
            more += 1;
        }
    }
    if more > 0 {
        shown.insert("…".into(), format!("{more} more not kept").into());
    }
    Value::Object(shown)
}

/// A header's value as a job card shows it: `***` for a credential.
fn shown_header(name: &str, value: &str) -> String {
    let name = name.to_ascii_lowercase();
    let credential = matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || ["token", "secret", "password", "key", "auth", "signature"]
        .iter()
        .any(|w| name.contains(w));
    if credential {
        "***".into()
    } else {
        value.to_owned()
    }
}

/// `url` as a job card shows it: no user or password, and `***` for the
/// value of a query parameter that names a credential.
fn masked_url(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if shown_header(&k, "") == "***" {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// `record` with every one of the channel's credentials masked wherever it
/// appears (a token put in a body or a path by the script).
fn mask_values(mut record: Value, channel: &Channel) -> Value {
    let values: Vec<&str> = crate::channel::TOKEN_FIELDS
        .into_iter()
        .filter_map(|f| channel.field(f))
        .filter(|v| v.len() >= 4)
        .collect();
    if !values.is_empty() {
        crate::secrets::map_strings(&mut record, &|s| {
            let mut out = std::borrow::Cow::Borrowed(s);
            for token in &values {
                if out.contains(token) {
                    out = out.replace(token, "***").into();
                }
            }
            out
        });
    }
    record
}

/// Why a call gave no answer.
enum Failure {
    Http(reqwest::Error),
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(url: &str) -> Channel {
        crate::channel::test_channel(&format!(r#"{{"code":"c","url":"{url}"}}"#))
    }

    #[test]
    fn headers_shown_are_bounded_and_credentials_masked() {
        let long = "v".repeat(HEADER_BYTES * 3);
        let mut pairs: Vec<(String, String)> = vec![
            ("authorization".into(), "Bearer abc".into()),
            ("x-api-key".into(), "k".into()),
            ("x-long".into(), long.clone()),
        ];
        pairs.extend((0..MAX_HEADERS).map(|i| (format!("x-{i:02}"), "1".to_owned())));
        let shown = shown_headers(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let shown = shown.as_object().unwrap();
        assert_eq!(shown["authorization"], "***");
        assert_eq!(shown["x-api-key"], "***");
        assert!(shown["x-long"].as_str().unwrap().len() < HEADER_BYTES + 40);
        assert_eq!(shown.len(), MAX_HEADERS + 1);
        assert_eq!(shown["…"], "3 more not kept");
    }

    #[test]
    fn requests_name_unknown_keys_and_wrong_types() {
        let err = parse_request(&json!({"path": "/x", "header": {}}))
            .err()
            .unwrap();
        assert!(
            err.contains("\"header\"") && err.contains("headers"),
            "{err}"
        );
        let err = parse_request(&json!({"timeout_ms": "5000"})).err().unwrap();
        assert!(err.contains("timeout_ms"), "{err}");
        let err = parse_request(&json!({"query": "a=1"})).err().unwrap();
        assert!(err.contains("query must be a map"), "{err}");
        let good = json!({"method": "post", "query": {"sku": "BOLT M8"}});
        let ok = parse_request(&good).ok().unwrap();
        assert_eq!(ok.method, Method::POST);
    }

    #[test]
    fn paths_join_the_url_and_other_origins_are_refused() {
        let ch = channel("https://erp.example.com/api/");
        assert_eq!(
            target(&ch, "orders/1", false, None).unwrap().as_str(),
            "https://erp.example.com/api/orders/1"
        );
        assert_eq!(
            target(&ch, "/v2/x", false, None).unwrap().as_str(),
            "https://erp.example.com/v2/x"
        );
        assert_eq!(
            target(&ch, "", false, None).unwrap().as_str(),
            "https://erp.example.com/api/"
        );
        for escape in [
            "https://evil.example.com/",
            "//evil.example.com/x",
            "http://erp.example.com/api/",
            "https://erp.example.com:444/",
        ] {
            assert!(target(&ch, escape, false, None).is_err(), "{escape}");
        }
        let err = target(&ch, "ftp://x/?key=secret", true, None).unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        assert!(target(&ch, "https://other.example.com/", true, None).is_ok());
        assert!(target(&ch, "file:///etc/passwd", true, None).is_err());
    }
}
