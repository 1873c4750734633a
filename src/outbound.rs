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
use crate::AppState;

/// `timeout_ms` when the script gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client for outbound calls (no proxy: calls go straight to the system).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("a client with rustls builds")
}

/// `url` joined with `path`, refused when it leaves the url's origin (unless allowed).
pub fn target(channel: &Channel, path: &str, any_host: bool) -> Result<Url, String> {
    let base = channel
        .doc
        .url
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or("webquery: the channel has no url")?;
    let base = Url::parse(base).map_err(|e| format!("webquery: the channel's url: {e}"))?;
    let target = base
        .join(path)
        .map_err(|e| format!("webquery: path {path:?}: {e}"))?;
    if !matches!(target.scheme(), "http" | "https") {
        return Err(format!("webquery: {target} is not http(s)"));
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

/// Performs `#{method, path, body, headers, timeout_ms}`; returns `#{status, headers, body}`.
pub fn webquery(
    app: &AppState,
    channel: &Channel,
    request: Value,
    budget: Duration,
) -> Result<Value, String> {
    let path = request["path"].as_str().unwrap_or("");
    let url = target(channel, path, app.config.outbound_any_host)?;
    let method = request["method"]
        .as_str()
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("webquery: {method:?} is not an HTTP method"))?;
    let timeout = request["timeout_ms"]
        .as_u64()
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(budget);
    if timeout.is_zero() {
        return Err("webquery: no time left in this run".into());
    }
    let mut call = app.http.request(method, url.clone()).timeout(timeout);
    let mut has_type = false;
    if let Some(headers) = request["headers"].as_object() {
        for (name, value) in headers {
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("webquery: {name:?} is not a header name"))?;
            let value = HeaderValue::from_str(&text)
                .map_err(|_| format!("webquery: header {name}: not a valid value"))?;
            has_type |= name == CONTENT_TYPE;
            call = call.header(name, value);
        }
    }
    call = match &request["body"] {
        Value::Null => call,
        Value::String(s) => call.body(s.clone()),
        other => {
            if !has_type {
                call = call.header(CONTENT_TYPE, "application/json");
            }
            call.body(other.to_string())
        }
    };
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
    // Waiting on the network does not hold a computing slot (see `priority::slots`).
    let (status, headers, body) = crate::script::priority::while_waiting(|| {
        runtime.block_on(async move {
            let response = call.send().await?;
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
            let body = response.text().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        })
    })
    .map_err(|e| {
        let why = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "failed"
        };
        format!(
            "webquery: {} {why}: {e}",
            url.origin().ascii_serialization()
        )
    })?;
    Ok(json!({ "status": status, "headers": headers, "body": body }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(url: &str) -> Channel {
        crate::channel::test_channel(&format!(r#"{{"code":"c","url":"{url}"}}"#))
    }

    #[test]
    fn paths_join_the_url_and_other_origins_are_refused() {
        let ch = channel("https://erp.example.com/api/");
        assert_eq!(
            target(&ch, "orders/1", false).unwrap().as_str(),
            "https://erp.example.com/api/orders/1"
        );
        assert_eq!(
            target(&ch, "/v2/x", false).unwrap().as_str(),
            "https://erp.example.com/v2/x"
        );
        assert_eq!(
            target(&ch, "", false).unwrap().as_str(),
            "https://erp.example.com/api/"
        );
        for escape in [
            "https://evil.example.com/",
            "//evil.example.com/x",
            "http://erp.example.com/api/",
            "https://erp.example.com:444/",
        ] {
            assert!(target(&ch, escape, false).is_err(), "{escape}");
        }
        assert!(target(&ch, "https://other.example.com/", true).is_ok());
        assert!(target(&ch, "file:///etc/passwd", true).is_err());
    }
}
