//! System events (SPEC §6): the event itself and its frame. Names and
//! patterns are in `pattern`; delivery is a [`crate::backend::EventBus`].

use axum::extract::ws::Utf8Bytes;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::pattern::valid_name;

/// A system event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its id.
    pub id: Uuid,
    /// Dot-separated name, e.g. `order.created`.
    pub name: String,
    /// When it was published (RFC 3339).
    pub ts: String,
    /// The publishing channel's code, or `system`.
    pub source: String,
    /// Any JSON.
    pub data: Value,
    /// Published by a channel in test mode (`opts.mode = "test"`).
    pub test: bool,
}

impl Event {
    /// A new event; refuses an invalid name.
    pub fn new(source: &str, name: &str, data: Value) -> Result<Self, String> {
        if !valid_name(name) {
            return Err(format!(
                "{name:?} is not an event name (dot-separated segments, no wildcards)"
            ));
        }
        Ok(Self {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            source: source.to_owned(),
            data,
            test: false,
        })
    }

    /// The event as JSON: `{id, name, ts, source, data}`, and `"test": true`
    /// when a channel in test mode published it.
    pub fn to_json(&self) -> Value {
        let mut event = json!({"id": self.id, "name": self.name, "ts": self.ts, "source": self.source, "data": self.data});
        if self.test {
            event["test"] = true.into();
        }
        event
    }

    /// The event as JSON text (what the queues store and the frames carry).
    pub fn json_text(&self) -> String {
        serde_json::to_string(&self.to_json()).unwrap_or_default()
    }
}

/// The `["event", …]` frame of an event's JSON text.
pub fn frame_of(event_json: &str) -> Utf8Bytes {
    format!("[\"event\",{event_json}]").into()
}

/// Adds `n` to the per-channel counter `metric`.
pub fn count(metric: &'static str, channel: &str, n: u64) {
    metrics::counter!(metric, "channel" => channel.to_owned()).increment(n);
}
