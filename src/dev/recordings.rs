//! Recordings (SPEC §15): a channel with `opts.record = N` keeps its last N
//! inbound HTTP requests and websocket `message` frames with their answers,
//! for dry runs and replays.
//!
//! A recording is made off the request's path: the handler puts it in a
//! small in-memory buffer that keeps each channel's newest N
//! ([`Recorder::keep`], a lock and a push), and a task writes the buffer to
//! the store ([`Recordings`]: SQLite, or the cluster's stream) every
//! [`FLUSH_EVERY`], trimming each channel to its N. At a high rate most recordings are replaced in the buffer
//! before they are ever written, so the store sees at most N rows a channel
//! a flush. Readers flush first, so they see every recording made so far.
//! Credentials are left out before anything is kept.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::backend::{Recorded, Recordings};
use crate::registry::Snapshot;
use crate::store::StoreError;
use crate::AppState;

/// Bodies longer than this are cut, and the recording marked `truncated`.
pub const MAX_BODY: usize = 64 * 1024;

/// How often the buffer is written to the store.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// One channel's recordings not yet written: the newest `keep`.
struct Pending {
    keep: u32,
    docs: std::collections::VecDeque<Recording>,
}

/// Recordings on their way to the store.
#[derive(Default)]
pub struct Recorder {
    pending: std::sync::Mutex<std::collections::HashMap<String, Pending>>,
    /// Serialises flushes, so recordings go in in the order they were made.
    flushing: tokio::sync::Mutex<()>,
}

impl Recorder {
    /// Starts the task that writes the buffer every [`FLUSH_EVERY`].
    pub fn start(app: &Arc<AppState>) {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            loop {
                tick.tick().await;
                if let Err(e) = app.recorder.flush(&*app.recordings).await {
                    tracing::warn!("recordings not written: {e}");
                }
            }
        });
    }

    /// Keeps `doc` for channel `channel`, which keeps its newest `keep`; never waits for the store.
    pub fn keep(&self, channel: &str, keep: u32, doc: Recording) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pending
            .entry(channel.to_owned())
            .or_insert_with(|| Pending {
                keep,
                docs: Default::default(),
            });
        entry.keep = keep;
        entry.docs.push_back(doc);
        while entry.docs.len() > keep as usize {
            entry.docs.pop_front();
        }
    }

    /// Writes what is buffered, and trims each channel written to its `keep`.
    pub async fn flush(&self, to: &dyn Recordings) -> Result<(), StoreError> {
        let _one = self.flushing.lock().await;
        let batch: Vec<Recorded> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_empty() {
                return Ok(());
            }
            std::mem::take(&mut *pending)
                .into_iter()
                .map(|(channel, p)| Recorded {
                    channel,
                    keep: p.keep,
                    docs: p
                        .docs
                        .iter()
                        .map(|r| {
                            // No secret's value in a recording (SPEC §20).
                            let mut doc = r.to_doc();
                            crate::secrets::redact_json(&mut doc);
                            doc
                        })
                        .collect(),
                })
                .collect()
        };
        to.write(batch).await
    }
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
    Value::Object(crate::headers::to_json(
        headers,
        crate::headers::HIDDEN_FROM_RECORDINGS,
    ))
}

/// The answer of a recorded request.
pub enum Answer {
    /// What the script answered: status, content type, headers, body.
    Http(crate::answer::HttpAnswer),
    /// Any other answer (an error, the inbox's 202, a frame's result), as JSON.
    Json(Value),
}

/// A recorded HTTP request.
pub struct HttpRecording {
    pub id: String,
    pub at: std::time::SystemTime,
    pub method: String,
    /// The path after `/channels/{code}/api`.
    pub path: String,
    /// The query, its `token` parameter already removed.
    pub query: String,
    pub headers: axum::http::HeaderMap,
    pub body: String,
    pub answer: Answer,
    pub duration_ms: f64,
    pub version: String,
}

/// A recording as the buffer keeps it: the raw parts, made into JSON only
/// when written (most are replaced in the buffer before that, at a high rate).
pub enum Recording {
    /// An inbound HTTP request.
    Http(Box<HttpRecording>),
    /// A websocket `message` frame: its data as JSON text, and the answer.
    Ws {
        id: String,
        at: std::time::SystemTime,
        data: String,
        success: bool,
        /// The answer's data as JSON text.
        answered: String,
        duration_ms: f64,
        version: String,
    },
}

impl Recording {
    /// The id (the request id).
    pub fn id(&self) -> &str {
        match self {
            Recording::Http(h) => &h.id,
            Recording::Ws { id, .. } => id,
        }
    }

    /// The recording as SPEC §15 shows it.
    pub fn to_doc(&self) -> Value {
        let ts = |at: &std::time::SystemTime| {
            chrono::DateTime::<chrono::Utc>::from(*at)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let ms = |d: f64| (d * 1000.0).round() / 1000.0;
        let (mut doc, body) = match self {
            Recording::Http(r) => {
                let HttpRecording {
                    id,
                    at,
                    method,
                    path,
                    query,
                    headers: h,
                    body,
                    answer,
                    duration_ms,
                    version,
                } = &**r;
                let answer = match answer {
                    Answer::Http(a) => a.to_json(),
                    Answer::Json(v) => v.clone(),
                };
                (
                    json!({
                        "id": id, "ts": ts(at), "kind": "http", "method": method, "path": path,
                        "query": query, "headers": headers(h), "answer": answer,
                        "duration_ms": ms(*duration_ms), "script": version,
                    }),
                    body,
                )
            }
            Recording::Ws {
                id,
                at,
                data,
                success,
                answered,
                duration_ms,
                version,
            } => (
                json!({
                    "id": id, "ts": ts(at), "kind": "ws", "method": "", "path": "", "query": "",
                    "headers": {},
                    "answer": {
                        "success": success,
                        "data": serde_json::from_str::<Value>(answered).unwrap_or(Value::Null),
                    },
                    "duration_ms": ms(*duration_ms), "script": version,
                }),
                data,
            ),
        };
        let (body, truncated) = cut(body);
        doc["body"] = body.into();
        if truncated {
            doc["truncated"] = true.into();
        }
        doc
    }
}

/// The newest `limit` recordings of `channel`, newest first (every one made so far).
pub async fn list(app: &AppState, channel: &str, limit: usize) -> Result<Vec<Value>, StoreError> {
    app.recorder.flush(&*app.recordings).await?;
    app.recordings.list(channel, limit).await
}

/// The recording `id` of `channel`.
pub async fn find(app: &AppState, channel: &str, id: &str) -> Result<Option<Value>, StoreError> {
    let all = list(app, channel, 1000).await?;
    Ok(all.into_iter().find(|r| r["id"] == id))
}

/// Removes every recording of `channel`; returns how many.
pub async fn clear(app: &AppState, channel: &str) -> Result<usize, StoreError> {
    app.recorder.flush(&*app.recordings).await?;
    app.recordings.clear(channel).await
}

/// Holds the recordings to the channels: a channel that is gone, or records
/// nothing now, keeps none; the others keep their newest `opts.record`.
pub async fn sync(app: &AppState, snapshot: &Snapshot) -> Result<(), StoreError> {
    app.recorder.flush(&*app.recordings).await?;
    let keep: Vec<(String, u32)> = snapshot
        .channels
        .values()
        .map(|c| (c.code().to_owned(), c.doc.opts.record.unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    app.recordings.hold_to(keep).await
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
