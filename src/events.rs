//! System events: names, subscription patterns, and once-per-channel delivery.
//!
//! Patterns match dot-separated names: `*` matches exactly one segment, a
//! trailing `>` matches one or more. [`publish`] hands each event to exactly
//! one matching open connection of every `events` channel, round-robin.

use axum::extract::ws::Utf8Bytes;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::channel::ChannelKind;
use crate::AppState;

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
        })
    }

    /// The event as JSON: `{id, name, ts, source, data}`.
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "ts": self.ts, "source": self.source, "data": self.data})
    }

    /// The websocket frame `["event", {...}]`.
    pub fn frame(&self) -> Utf8Bytes {
        json!(["event", self.to_json()]).to_string().into()
    }
}

/// Hands `event` to one matching open connection of every events channel.
/// Returns the number of channels it reached.
pub fn publish(app: &AppState, event: &Event) -> usize {
    let snapshot = app.registry.snapshot();
    let frame = event.frame();
    let mut reached = 0;
    for channel in snapshot.channels.values() {
        if channel.kind != ChannelKind::Events || channel.doc.opts.disabled {
            continue;
        }
        let code = channel.code();
        let delivered = app.connections.with_channel(code, |conns| {
            conns.is_some_and(|c| c.deliver_once(&event.name, &frame))
        });
        if delivered {
            reached += 1;
            metrics::counter!("switchyard_events_delivered_total", "channel" => code.to_owned())
                .increment(1);
        } else if channel.events.iter().any(|p| p.matches(&event.name)) {
            // No open connection took it; durable queueing arrives with the store.
            metrics::counter!("switchyard_events_dropped_total", "channel" => code.to_owned())
                .increment(1);
        }
    }
    metrics::counter!("switchyard_events_published_total").increment(1);
    tracing::debug!(event = %event.name, id = %event.id, source = %event.source, reached, "event published");
    reached
}

/// A parsed subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
    tail: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Any,
}

impl Pattern {
    /// Parses `order.*`, `order.>`, `a.b.c`; refuses empty segments and a `>` that is not last.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an event pattern cannot be empty".into());
        }
        let parts: Vec<&str> = text.split('.').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut tail = false;
        for (i, part) in parts.iter().enumerate() {
            match *part {
                "" => return Err(format!("{text:?} has an empty segment")),
                ">" if i + 1 == parts.len() => tail = true,
                ">" => return Err(format!("{text:?}: '>' may only be the last segment")),
                "*" => segments.push(Segment::Any),
                p if p.contains(['*', '>', ' ']) => {
                    return Err(format!("{text:?}: segment {p:?} mixes wildcards with text"))
                }
                p => segments.push(Segment::Literal(p.to_owned())),
            }
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
            tail,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `true` when the event name `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let mut parts = name.split('.');
        for seg in &self.segments {
            match (seg, parts.next()) {
                (_, None) | (_, Some("")) => return false,
                (Segment::Any, Some(_)) => {}
                (Segment::Literal(l), Some(p)) if l == p => {}
                _ => return false,
            }
        }
        let mut rest = parts.peekable();
        if self.tail {
            rest.peek().is_some() && rest.all(|p| !p.is_empty())
        } else {
            rest.next().is_none()
        }
    }
}

/// `true` when `name` is a valid event name: non-empty dot-separated segments, no wildcards.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .split('.')
            .all(|p| !p.is_empty() && !p.contains(['*', '>']) && !p.contains(char::is_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Pattern::parse(p).unwrap().matches(n)
    }

    #[test]
    fn literal_patterns_match_exactly() {
        assert!(m("order.created", "order.created"));
        assert!(!m("order.created", "order.created.late"));
        assert!(!m("order.created", "order"));
        assert!(!m("order", "orders"));
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        assert!(m("order.*", "order.created"));
        assert!(!m("order.*", "order"));
        assert!(!m("order.*", "order.created.late"));
        assert!(m("*.created", "invoice.created"));
        assert!(m("*", "x"));
        assert!(!m("*", "x.y"));
        assert!(m("a.*.c", "a.b.c"));
    }

    #[test]
    fn trailing_gt_matches_one_or_more() {
        assert!(m("order.>", "order.created"));
        assert!(m("order.>", "order.created.late"));
        assert!(!m("order.>", "order"));
        assert!(m(">", "anything.at.all"));
        assert!(m("*.>", "a.b"));
        assert!(!m("*.>", "a"));
    }

    #[test]
    fn names_with_empty_segments_never_match() {
        assert!(!m("order.>", "order..x"));
        assert!(!m("*.x", ".x"));
        assert!(!m(">", ""));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in ["", "a..b", ".a", "a.", "a.>.b", "a*", "or>der", "> .x"] {
            assert!(Pattern::parse(p).is_err(), "{p}");
        }
        assert!(valid_name("order.created"));
        assert!(!valid_name("order.*"));
        assert!(!valid_name("order..x"));
    }
}
