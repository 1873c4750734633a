//! A recv script's answer (SPEC §4): its outputs `status`, `body`,
//! `content_type` and `headers` made into an HTTP response, and into the JSON
//! form recordings and dry runs show. A leaf: the server, recordings and dry
//! runs all build on it.

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use rhai::{Dynamic, Map};

use crate::script::convert;

/// The top-level variables a recv script may set.
pub const RECV_OUTPUTS: &[&str] = &["status", "body", "content_type", "headers"];

/// Response headers the server sets itself; a script's are left out.
const FRAMING_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// A recv script's answer, before it becomes an HTTP response.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: String,
}

impl HttpAnswer {
    /// The answer as a JSON value: `{status, content_type, headers, body}`,
    /// the body parsed when it is JSON (as recordings and dry runs show it).
    pub fn to_json(&self) -> serde_json::Value {
        let mut headers = serde_json::Map::new();
        for (name, value) in &self.headers {
            headers.insert(
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes())
                    .into_owned()
                    .into(),
            );
        }
        serde_json::json!({
            "status": self.status.as_u16(),
            "content_type": self.content_type,
            "headers": headers,
            "body": body_json(&self.body),
        })
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        let out = response.headers_mut();
        if let Ok(ct) = HeaderValue::from_str(&self.content_type) {
            out.insert(header::CONTENT_TYPE, ct);
        }
        for (name, value) in self.headers {
            out.append(name, value);
        }
        response
    }
}

/// A body as JSON when it parses as JSON, else as text.
pub fn body_json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|_| body.into())
}

/// The answer a recv script's outputs (`status`, `body`, `content_type`,
/// `headers`) make, or why they make none.
pub fn http_answer(outputs: &[Dynamic]) -> Result<HttpAnswer, String> {
    let [status, body, content_type, headers] = outputs else {
        return Err("internal: wrong number of outputs".into());
    };
    let status = response_status(status)?;
    let structured = body.is_map() || body.is_array();
    let body_text = convert::to_text(body).map_err(|e| format!("body: {e}"))?;
    let content_type = if content_type.is_unit() {
        if structured {
            "application/json".to_owned()
        } else {
            "text/plain; charset=utf-8".to_owned()
        }
    } else {
        convert::to_text(content_type).map_err(|e| format!("content_type: {e}"))?
    };
    HeaderValue::from_str(&content_type)
        .map_err(|_| format!("content_type {content_type:?} is not a valid header value"))?;
    let mut out = Vec::new();
    if !headers.is_unit() {
        let map = headers
            .read_lock::<Map>()
            .ok_or("headers must be a map of header names to values")?;
        for (name, value) in map.iter() {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: {name:?} is not a valid header name"))?;
            // The framing of the answer is the server's: a script's copy of
            // these (echoed request headers, say) would contradict it.
            if FRAMING_HEADERS.contains(&name.as_str()) {
                continue;
            }
            let text = convert::to_text(value).map_err(|e| format!("headers.{name}: {e}"))?;
            let value = HeaderValue::from_str(&text)
                .map_err(|_| format!("headers.{name}: not a valid header value"))?;
            out.push((name, value));
        }
    }
    Ok(HttpAnswer {
        status,
        content_type,
        headers: out,
        body: body_text,
    })
}

fn response_status(status: &Dynamic) -> Result<StatusCode, String> {
    if status.is_unit() {
        return Ok(StatusCode::OK);
    }
    let code = if let Ok(n) = status.as_int() {
        u16::try_from(n).ok()
    } else if status.is_string() {
        convert::to_text(status)?.trim().parse::<u16>().ok()
    } else {
        None
    };
    code.and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("status {status} is not an HTTP status code"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_accept_ints_and_numeric_strings() {
        assert_eq!(response_status(&Dynamic::UNIT).unwrap(), StatusCode::OK);
        assert_eq!(
            response_status(&Dynamic::from(404_i64)).unwrap(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            response_status(&Dynamic::from("201")).unwrap(),
            StatusCode::CREATED
        );
        assert!(response_status(&Dynamic::from("abc")).is_err());
        assert!(response_status(&Dynamic::from(70_000_i64)).is_err());
        assert!(response_status(&Dynamic::from(true)).is_err());
    }
}
