//! The live activity of the server, for the console's live views and
//! `GET /admin/stream`: requests, events and job changes as they happen.
//!
//! A leaf: a process-wide broadcast channel that anyone may publish to. With
//! nobody listening (the usual case) a publish is one atomic load; a slow
//! listener misses messages (it is told how many) and never holds anyone up.

use std::sync::OnceLock;

use serde_json::Value;
use tokio::sync::broadcast;

/// Messages a listener may fall behind by before it misses some.
const BACKLOG: usize = 1024;

fn channel() -> &'static broadcast::Sender<std::sync::Arc<str>> {
    static TX: OnceLock<broadcast::Sender<std::sync::Arc<str>>> = OnceLock::new();
    TX.get_or_init(|| broadcast::channel(BACKLOG).0)
}

/// `true` when someone listens (build the message only then).
pub fn listened() -> bool {
    channel().receiver_count() > 0
}

/// Publishes `{"type": kind, ...fields()}` to every listener; with none,
/// `fields` is never called (nothing is built on the paths that publish).
pub fn publish(kind: &str, fields: impl FnOnce() -> Value) {
    if !listened() {
        return;
    }
    let mut fields = fields();
    fields["type"] = kind.into();
    let _ = channel().send(fields.to_string().into());
}

/// A new listener, from now on.
pub fn subscribe() -> broadcast::Receiver<std::sync::Arc<str>> {
    channel().subscribe()
}
