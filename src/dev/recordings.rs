//! Recordings (SPEC §15): a channel with `opts.record = N` keeps its last N
//! inbound HTTP requests and websocket `message` frames with their answers,
//! for dry runs and replays.
//!
//! A recording is made off the request's path: the handler hands it to a
//! bounded queue without waiting ([`Recorder::keep`]), and one task writes
//! what queued in batches, trimming each channel to its N. When the queue is
//! full the recording is dropped (and counted), never the request.
//! Credentials are left out before anything is queued.

use std::sync::Arc;

use rusqlite::params;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::registry::Snapshot;
use crate::store::{Store, StoreError};
use crate::AppState;

/// Bodies longer than this are cut, and the recording marked `truncated`.
pub const MAX_BODY: usize = 64 * 1024;

/// Recordings waiting to be written, at most.
const QUEUE: usize = 4096;

/// Request headers never recorded.
const SECRET_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// One recording on its way to the store.
struct Pending {
    channel: String,
    keep: u32,
    doc: Value,
}

/// The recordings queue: handlers put, one task writes.
pub struct Recorder {
    tx: mpsc::Sender<Pending>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<Pending>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel::<Pending>(QUEUE);
        Self {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }
}

impl Recorder {
    /// Starts the writer task (once).
    pub fn start(app: &Arc<AppState>) {
        let rx = app
            .recorder
            .rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut rx) = rx else { return };
        let app = app.clone();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 256).await > 0 {
                let items = std::mem::take(&mut batch);
                if let Err(e) = app.store.write(move |c| write(c, &items)).await {
                    tracing::warn!("recordings not written: {e}");
                }
            }
        });
    }

    /// Queues `doc` for channel `channel`, which keeps `keep`; never waits.
    pub fn keep(&self, channel: &str, keep: u32, doc: Value) {
        let pending = Pending {
            channel: channel.to_owned(),
            keep,
            doc,
        };
        if self.tx.try_send(pending).is_err() {
            metrics::counter!("switchyard_recordings_dropped_total").increment(1);
        }
    }
}

fn write(c: &rusqlite::Connection, items: &[Pending]) -> rusqlite::Result<()> {
    for item in items {
        c.prepare_cached("INSERT INTO recordings (channel, id, doc) VALUES (?1, ?2, ?3)")?
            .execute(params![
                item.channel,
                item.doc["id"].as_str().unwrap_or(""),
                item.doc.to_string()
            ])?;
    }
    let mut trimmed: Vec<&str> = Vec::new();
    for item in items.iter().rev() {
        if !trimmed.contains(&item.channel.as_str()) {
            trim(c, &item.channel, item.keep)?;
            trimmed.push(&item.channel);
        }
    }
    Ok(())
}

/// Keeps the newest `keep` recordings of `channel`.
fn trim(c: &rusqlite::Connection, channel: &str, keep: u32) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "DELETE FROM recordings WHERE channel = ?1 AND seq <= coalesce((SELECT seq FROM recordings \
         WHERE channel = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2), -1)",
    )?
    .execute(params![channel, keep])
}

/// A body as recorded: cut at [`MAX_BODY`] (on a character boundary), and whether it was.
pub fn cut(body: &str) -> (&str, bool) {
    if body.len() <= MAX_BODY {
        return (body, false);
    }
    let mut end = MAX_BODY;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    (&body[..end], true)
}

/// Request headers as recorded: lower-case names, credentials left out.
pub fn headers(headers: &axum::http::HeaderMap) -> Value {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        if SECRET_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match map.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                map.insert(name.as_str().to_owned(), value.into());
            }
        }
    }
    Value::Object(map)
}

/// What a recording holds of an HTTP request (its answer added by the caller).
pub struct HttpRequest<'a> {
    pub id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// The query with its `token` parameter already removed.
    pub query: &'a str,
    pub headers: Value,
    pub body: &'a str,
}

/// The recording of an HTTP request and its answer.
pub fn http_doc(req: HttpRequest<'_>, answer: Value, duration_ms: f64, version: &str) -> Value {
    let (body, truncated) = cut(req.body);
    let mut doc = json!({
        "id": req.id,
        "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "kind": "http",
        "method": req.method,
        "path": req.path,
        "query": req.query,
        "headers": req.headers,
        "body": body,
        "answer": answer,
        "duration_ms": (duration_ms * 1000.0).round() / 1000.0,
        "script": version,
    });
    if truncated {
        doc["truncated"] = true.into();
    }
    doc
}

/// The recording of a websocket `message` frame (its `data` as JSON text in
/// `body`) and its answer `{success, data}`.
pub fn ws_doc(id: &str, data: &str, answer: Value, duration_ms: f64, version: &str) -> Value {
    let (body, truncated) = cut(data);
    let mut doc = json!({
        "id": id,
        "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "kind": "ws",
        "method": "",
        "path": "",
        "query": "",
        "headers": {},
        "body": body,
        "answer": answer,
        "duration_ms": (duration_ms * 1000.0).round() / 1000.0,
        "script": version,
    });
    if truncated {
        doc["truncated"] = true.into();
    }
    doc
}

/// The newest `limit` recordings of `channel`, newest first.
pub fn list(store: &Store, channel: &str, limit: usize) -> Result<Vec<Value>, StoreError> {
    store.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT doc FROM recordings WHERE channel = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![channel, limit as i64], |r| r.get::<_, String>(0))?
            .filter_map(|r| r.ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect();
        Ok(rows)
    })
}

/// The recording `id` of `channel`.
pub fn find(store: &Store, channel: &str, id: &str) -> Result<Option<Value>, StoreError> {
    store.read(|c| {
        use rusqlite::OptionalExtension;
        let text: Option<String> = c
            .prepare_cached("SELECT doc FROM recordings WHERE channel = ?1 AND id = ?2 ORDER BY seq DESC LIMIT 1")?
            .query_row(params![channel, id], |r| r.get(0))
            .optional()?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    })
}

/// Removes every recording of `channel`; returns how many.
pub async fn clear(store: &Store, channel: &str) -> Result<usize, StoreError> {
    let channel = channel.to_owned();
    store
        .write(move |c| {
            c.execute(
                "DELETE FROM recordings WHERE channel = ?1",
                params![channel],
            )
        })
        .await
}

/// Holds the recordings to the channels: a channel that is gone, or records
/// nothing now, keeps none; the others keep their newest `opts.record`.
pub async fn sync(store: &Store, snapshot: &Snapshot) -> Result<(), StoreError> {
    let keep: Vec<(String, u32)> = snapshot
        .channels
        .values()
        .map(|c| (c.code().to_owned(), c.doc.opts.record.unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    store
        .write(move |c| {
            let codes: Vec<String> = c
                .prepare_cached("SELECT DISTINCT channel FROM recordings")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for code in codes {
                match keep.iter().find(|(k, _)| *k == code) {
                    Some((_, n)) => trim(c, &code, *n)?,
                    None => {
                        c.execute("DELETE FROM recordings WHERE channel = ?1", params![code])?
                    }
                };
            }
            Ok(())
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_BODY);
        let (cut_body, truncated) = cut(&long);
        assert!(truncated && cut_body.len() <= MAX_BODY && cut_body.len() >= MAX_BODY - 1);
        assert_eq!(cut("short"), ("short", false));
    }

    #[test]
    fn credentials_are_left_out_of_headers() {
        let mut h = axum::http::HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer x"),
            ("cookie", "s=1"),
            ("proxy-authorization", "Basic y"),
            ("x-shop", "1"),
        ] {
            h.insert(
                axum::http::HeaderName::from_static(k),
                axum::http::HeaderValue::from_static(v),
            );
        }
        assert_eq!(headers(&h), json!({"x-shop": "1"}));
    }
}
