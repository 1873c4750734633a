//! Open websocket connections, by channel: pushes, subscriptions, closing.
//!
//! Each [`Connection`] has a bounded send queue drained by its writer task,
//! bounded both in frames and in bytes ([`QUEUE_BYTES`] for everything queued
//! to it: answers, pushes, events). Answers to the client's own requests wait
//! for room, so a client that does not read its answers stops being read
//! (backpressure); pushes and events never wait: when the queue has no room,
//! the push is dropped and counted. Answers of finished runs waiting for room
//! count too ([`WAITING_BYTES`]): past them the client is not reading, and is
//! disconnected, so what one connection holds stays bounded in bytes.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, Utf8Bytes};
use dashmap::DashMap;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::auth::Identity;
use crate::channel::Channel;
use crate::pattern::Pattern;

/// Frames a connection's send queue holds at most, beyond its in-flight answers.
pub const QUEUE_FRAMES: usize = 256;
/// Bytes a connection's send queue may hold (answers, pushes and events together):
/// past it answers wait and pushes are dropped.
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Bytes of answers that may wait for room in the send queue (held by runs
/// that finished while it was full), beyond the first one: past it the
/// connection is closed (1008), so a client that never reads its answers
/// holds at most about `QUEUE_BYTES + WAITING_BYTES` (plus one answer) here.
pub const WAITING_BYTES: usize = 4 * 1024 * 1024;
/// Event patterns one connection may hold (its channel's `opts.events` included).
pub const MAX_PATTERNS: usize = 256;
/// Patterns one `subscribe` or `unsubscribe` frame may name.
pub const MAX_PATTERNS_PER_FRAME: usize = 64;

/// Close code: the server or the channel is going away.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: a policy no longer admits the connection (credentials changed, rate).
pub const CLOSE_POLICY: u16 = 1008;

/// Whether the websockets that `admitted` let in must close now that the
/// channel is `now` (`None`: deleted) and `stopped` or not; with the close code
/// and reason. The one rule for a reload and for a socket that registers late.
pub fn why_close(
    admitted: &Channel,
    now: Option<&Channel>,
    stopped: bool,
) -> Option<(u16, &'static str)> {
    match now {
        None => Some((CLOSE_GOING_AWAY, "channel deleted")),
        Some(now) if now.doc.opts.disabled => Some((CLOSE_GOING_AWAY, "channel disabled")),
        Some(now) if !now.same_admission(admitted) => {
            Some((CLOSE_POLICY, "the channel's credentials changed"))
        }
        Some(_) if stopped => Some((CLOSE_GOING_AWAY, "channel stopped")),
        Some(_) => None,
    }
}

/// One open websocket.
pub struct Connection {
    /// Connection id (UUID), `startparam(3)` of message scripts.
    pub id: Uuid,
    /// The channel it belongs to.
    pub channel: String,
    /// The sender address.
    pub address: IpAddr,
    /// When it opened (RFC 3339).
    pub opened: String,
    /// Who opened it.
    pub identity: Identity,
    /// Messages running now.
    pub inflight: AtomicUsize,
    /// Event patterns: the channel's `opts.events` plus subscriptions.
    pub patterns: Mutex<Vec<Pattern>>,
    /// One permit per byte that may still be queued.
    room: Arc<Semaphore>,
    /// Bytes of answers waiting for room.
    waiting: AtomicUsize,
    out: mpsc::Sender<Outgoing>,
    close: watch::Sender<Option<(u16, String)>>,
}

/// Bytes counted in a connection's waiting answers, until dropped.
struct Waiting<'a>(&'a AtomicUsize, usize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}

/// A frame waiting in a send queue, with the bytes of room it holds.
pub struct Outgoing {
    /// The frame.
    pub message: Message,
    _room: OwnedSemaphorePermit,
}

/// The receiving ends a session's writer task drains.
pub struct Outbox {
    /// Frames to send.
    pub frames: mpsc::Receiver<Outgoing>,
    /// A close request (code, reason).
    pub close: watch::Receiver<Option<(u16, String)>>,
}

impl Connection {
    /// A new connection and the outbox its writer drains.
    pub fn new(
        channel: &str,
        address: IpAddr,
        identity: Identity,
        patterns: Vec<Pattern>,
        inflight_cap: usize,
    ) -> (Arc<Self>, Outbox) {
        let (out, frames) = mpsc::channel(QUEUE_FRAMES + inflight_cap);
        let (close, close_rx) = watch::channel(None);
        let conn = Arc::new(Self {
            id: Uuid::new_v4(),
            channel: channel.to_owned(),
            address,
            opened: crate::channel::rfc3339(std::time::SystemTime::now()),
            identity,
            inflight: AtomicUsize::new(0),
            patterns: Mutex::new(patterns),
            room: Arc::new(Semaphore::new(QUEUE_BYTES)),
            waiting: AtomicUsize::new(0),
            out,
            close,
        });
        (
            conn,
            Outbox {
                frames,
                close: close_rx,
            },
        )
    }

    /// The room a frame of `len` bytes takes (a frame larger than the whole
    /// budget takes all of it, so it still goes, alone).
    fn room_for(len: usize) -> u32 {
        len.clamp(1, QUEUE_BYTES) as u32
    }

    /// Queues an answer, waiting for room; `false` when the connection is gone,
    /// or is closed now because its waiting answers are past [`WAITING_BYTES`].
    pub async fn answer(&self, text: String) -> bool {
        use tokio::sync::TryAcquireError;
        let need = Self::room_for(text.len());
        let room = match self.room.clone().try_acquire_many_owned(need) {
            Ok(room) => room,
            Err(TryAcquireError::Closed) => return false,
            Err(TryAcquireError::NoPermits) => {
                let len = text.len();
                let before = self.waiting.fetch_add(len, Ordering::AcqRel);
                let _counted = Waiting(&self.waiting, len);
                if before > 0 && before + len > WAITING_BYTES {
                    metrics::counter!("switchyard_ws_closed_not_reading_total").increment(1);
                    self.close(CLOSE_POLICY, "answers are not being read");
                    // Every answer still waiting gives up (and its memory) now.
                    self.room.close();
                    return false;
                }
                match self.room.clone().acquire_many_owned(need).await {
                    Ok(room) => room,
                    Err(_) => return false,
                }
            }
        };
        let message = Message::Text(text.into());
        self.out
            .send(Outgoing {
                message,
                _room: room,
            })
            .await
            .is_ok()
    }

    /// Queues a push without waiting; `false` (and counted) when the queue has no room.
    pub fn push(&self, frame: &Utf8Bytes) -> bool {
        let sent = match self
            .room
            .clone()
            .try_acquire_many_owned(Self::room_for(frame.len()))
        {
            Ok(room) => self
                .out
                .try_send(Outgoing {
                    message: Message::Text(frame.clone()),
                    _room: room,
                })
                .is_ok(),
            Err(_) => false,
        };
        if !sent {
            metrics::counter!("switchyard_ws_push_dropped_total", "channel" => self.channel.clone())
                .increment(1);
        }
        sent
    }

    /// Called by the writer, holding the socket, as it hands a frame over: the
    /// frame's room is free again (until then it counts as queued).
    pub fn dequeued(&self, outgoing: Outgoing) -> Message {
        outgoing.message
    }

    /// Bytes queued to this connection now.
    pub fn queued_bytes(&self) -> usize {
        QUEUE_BYTES - self.room.available_permits()
    }

    /// The session has ended: answers still waiting for room give up.
    pub fn ended(&self) {
        self.room.close();
    }

    /// Asks the writer to send a close frame and end the session.
    pub fn close(&self, code: u16, reason: &str) {
        self.close.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some((code, reason.to_owned()));
                true
            } else {
                false
            }
        });
    }

    /// A receiver that wakes when the connection is asked to close.
    pub fn closing(&self) -> watch::Receiver<Option<(u16, String)>> {
        self.close.subscribe()
    }

    /// `true` when one of the connection's patterns matches the event name.
    pub fn wants(&self, name: &str) -> bool {
        self.patterns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|p| p.matches(name))
    }

    fn describe(&self) -> Value {
        let patterns: Vec<String> = self
            .patterns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        json!({
            "id": self.id,
            "address": self.address.to_string(),
            "opened": self.opened,
            "inflight": self.inflight.load(Ordering::Relaxed),
            "queued_bytes": self.queued_bytes(),
            "waiting_bytes": self.waiting.load(Ordering::Relaxed),
            "patterns": patterns,
        })
    }
}

/// The connections of one channel, in opening order, with a cursor for spreading events.
#[derive(Default)]
pub struct ChannelConnections {
    /// Open connections, oldest first.
    pub conns: Vec<Arc<Connection>>,
    /// Round-robin position for once-per-channel delivery.
    pub cursor: usize,
}

impl ChannelConnections {
    /// Gives `frame` to exactly one connection whose patterns match `name`,
    /// round-robin; a connection whose queue is full passes its turn on.
    /// `None`: no connection wants it; `Some(false)`: all that want it are full.
    pub fn deliver_once(&mut self, name: &str, frame: &Utf8Bytes) -> Option<bool> {
        let n = self.conns.len();
        let mut wanted = false;
        for step in 0..n {
            let i = (self.cursor + step) % n;
            let conn = &self.conns[i];
            if conn.wants(name) {
                wanted = true;
                if conn.push(frame) {
                    self.cursor = i + 1;
                    return Some(true);
                }
            }
        }
        wanted.then_some(false)
    }
}

/// Every open connection, by channel.
#[derive(Default)]
pub struct ConnectionTable {
    by_channel: DashMap<String, ChannelConnections>,
    total: AtomicUsize,
}

impl ConnectionTable {
    /// Registers an open connection.
    pub fn add(&self, conn: Arc<Connection>) {
        let channel = conn.channel.clone();
        self.by_channel
            .entry(channel.clone())
            .or_default()
            .conns
            .push(conn);
        self.total.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("switchyard_ws_connections", "channel" => channel).increment(1.0);
    }

    /// Forgets a closed connection.
    pub fn remove(&self, conn: &Connection) {
        let mut removed = false;
        if let Some(mut entry) = self.by_channel.get_mut(&conn.channel) {
            let before = entry.conns.len();
            entry.conns.retain(|c| c.id != conn.id);
            removed = entry.conns.len() < before;
        }
        self.by_channel
            .remove_if(&conn.channel, |_, c| c.conns.is_empty());
        if removed {
            self.total.fetch_sub(1, Ordering::Relaxed);
            metrics::gauge!("switchyard_ws_connections", "channel" => conn.channel.clone())
                .decrement(1.0);
        }
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// `true` when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f` on a channel's connections (locked for the call).
    pub fn with_channel<T>(
        &self,
        channel: &str,
        f: impl FnOnce(Option<&mut ChannelConnections>) -> T,
    ) -> T {
        match self.by_channel.get_mut(channel) {
            Some(mut entry) => f(Some(&mut entry)),
            None => f(None),
        }
    }

    /// Pushes `frame` to every connection of `channel`; returns how many took it.
    pub fn push_all(&self, channel: &str, frame: &Utf8Bytes) -> usize {
        self.with_channel(channel, |c| {
            c.map_or(0, |c| {
                c.conns.iter().filter(|conn| conn.push(frame)).count()
            })
        })
    }

    /// Pushes `frame` to one connection of `channel`; `false` if it is not open or full.
    pub fn push_to(&self, channel: &str, id: Uuid, frame: &Utf8Bytes) -> bool {
        self.with_channel(channel, |c| {
            c.and_then(|c| c.conns.iter().find(|conn| conn.id == id))
                .is_some_and(|conn| conn.push(frame))
        })
    }

    /// Closes every connection of `channel`.
    pub fn close_channel(&self, channel: &str, code: u16, reason: &str) {
        self.with_channel(channel, |c| {
            for conn in c.map(|c| c.conns.iter()).into_iter().flatten() {
                conn.close(code, reason);
            }
        });
    }

    /// Closes every connection.
    pub fn close_all(&self, code: u16, reason: &str) {
        for entry in self.by_channel.iter() {
            for conn in entry.conns.iter() {
                conn.close(code, reason);
            }
        }
    }

    /// `{"<channel>": [patterns]}`: each channel with open connections and
    /// the patterns any of them holds (what other nodes need to route events).
    pub fn patterns_by_channel(&self) -> Value {
        let mut out = serde_json::Map::new();
        for entry in self.by_channel.iter() {
            let mut patterns: Vec<String> = Vec::new();
            for conn in &entry.conns {
                for p in conn
                    .patterns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                {
                    if !patterns.iter().any(|q| q == p.as_str()) {
                        patterns.push(p.as_str().to_owned());
                    }
                }
            }
            out.insert(entry.key().clone(), json!(patterns));
        }
        Value::Object(out)
    }

    /// `{"<channel>": [{id, address, opened, inflight, patterns}]}` for the admin API.
    pub fn describe(&self) -> Value {
        let mut out = serde_json::Map::new();
        for entry in self.by_channel.iter() {
            out.insert(
                entry.key().clone(),
                Value::Array(entry.conns.iter().map(|c| c.describe()).collect()),
            );
        }
        Value::Object(out)
    }
}
