//! Websocket sessions on `GET /channels/{code}/ws`: frames, the in-flight cap, token APIs.
//!
//! A session is two tasks. The reader parses frames and starts a task per
//! `message` frame, at most `ws_max_inflight` at once: past that it stops
//! reading the socket (backpressure) instead of dropping frames. The writer
//! drains the connection's send queue, pings every 30 s and closes a
//! connection that has sent nothing for 90 s (see [`ping_every`]). An answer
//! with nothing queued ahead of it while the writer is idle is written to the
//! socket by whoever made it (see [`answer`]): no hop through the writer task.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::channel::{Channel, ScriptField};
use crate::connections::{
    Connection, Outbox, CLOSE_GOING_AWAY, CLOSE_POLICY, MAX_PATTERNS, MAX_PATTERNS_PER_FRAME,
};
use crate::events::Event;
use crate::http::{admit, Caller};
use crate::pattern::Pattern;
use crate::script::{convert, RunContext, RunError};
use crate::AppState;

/// The server pings every 30 s, or every `SWITCHYARD_WS_PING_SECS` seconds when that
/// environment variable is set (for load balancers with short idle timeouts, and tests).
pub fn ping_every() -> Duration {
    static EVERY: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *EVERY.get_or_init(|| {
        let secs = std::env::var("SWITCHYARD_WS_PING_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .unwrap_or(30);
        Duration::from_secs(secs)
    })
}

/// A connection that sent nothing (not even a pong) for three ping intervals (90 s) is closed.
pub fn idle_limit() -> Duration {
    ping_every() * 3
}
/// Rate limiting that goes on this long closes the connection with 1008.
pub const RATE_LIMIT_CLOSE_AFTER: Duration = Duration::from_secs(10);
/// Read buffer of a connection: frames are read in chunks of this size (a
/// larger frame grows the buffer while it is read). Every idle socket holds one.
const READ_BUFFER: usize = 2 * 1024;
/// Bytes written before a flush is forced.
const WRITE_BUFFER: usize = 8 * 1024;
/// Most bytes waiting in the library's write buffer (frames and the pongs it
/// queues by itself for a client's pings); past it the connection is closed.
/// The send queue ([`crate::connections::QUEUE_BYTES`]) bounds our own frames
/// before they get here.
const MAX_WRITE_BUFFER: usize = 2 * crate::connections::QUEUE_BYTES;
/// How long a close frame may take to leave.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The top-level variables a websocket message script may set.
pub const MESSAGE_OUTPUTS: &[&str] = &["data", "success"];

/// Handles the upgrade request: authenticated exactly like HTTP before upgrading.
#[utoipa::path(
    get, path = "/channels/{code}/ws", tag = "channel", operation_id = "websocket",
    description = "Opens a websocket to the channel (SPEC §5): an HTTP/1.1 upgrade with channel credentials.",
    params(("code" = String, Path, description = "The channel code")),
    security(("channel_bearer" = []), ("channel_query" = [])),
    responses(
        (status = 101, description = "Switching to the websocket protocol"),
        (status = 400, description = "Not a websocket upgrade", content_type = "text/plain"),
        (status = 426, description = "The connection cannot be upgraded", content_type = "text/plain"),
    )
)]
pub async fn upgrade(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(code): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    slot: Option<axum::Extension<crate::conn_io::ConnectionSlot>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let admitted = admit(&app, &code, peer, &headers, uri.query())
        .and_then(|caller| valid_upgrade(&headers).map(|()| caller));
    let known = crate::http::known(&admitted);
    let response = match admitted {
        Err(e) => e.into_response(),
        Ok(caller) => match ws {
            Err(rejection) => rejection.into_response(),
            Ok(ws) => {
                let max = app.config.ws_max_frame_bytes;
                let app = app.clone();
                // tungstenite reserves 128 KiB per socket by default; 10 000 idle
                // connections would hold 1.3 GB. Frames still grow the buffer as needed.
                ws.max_message_size(max)
                    .max_frame_size(max)
                    .read_buffer_size(READ_BUFFER)
                    .write_buffer_size(WRITE_BUFFER)
                    .max_write_buffer_size(MAX_WRITE_BUFFER)
                    .on_upgrade(move |socket| async move {
                        // The websocket holds its max_connections slot until it closes.
                        let _slot = slot;
                        session(app, caller, socket).await
                    })
            }
        },
    };
    crate::http::tag_channel(known, code, response)
}

/// An upgrade request the server takes: a `Sec-WebSocket-Key` of 16 bytes in
/// base64 (RFC 6455 §4.1), and no body (its bytes would be read as frames).
fn valid_upgrade(headers: &HeaderMap) -> Result<(), crate::error::AppError> {
    use base64::Engine as _;
    let bad = |m: &str| Err(crate::error::AppError::BadRequest(m.into()));
    let key = headers
        .get("sec-websocket-key")
        .and_then(|k| k.to_str().ok())
        .map(|k| base64::engine::general_purpose::STANDARD.decode(k.trim()));
    if !matches!(key, Some(Ok(bytes)) if bytes.len() == 16) {
        return bad("Sec-WebSocket-Key must be 16 bytes in base64");
    }
    let has_body = headers.contains_key(axum::http::header::TRANSFER_ENCODING)
        || headers
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return bad("an upgrade request has no body");
    }
    Ok(())
}

async fn session(app: Arc<AppState>, caller: Caller, socket: WebSocket) {
    let channel = caller.channel.clone();
    let (conn, outbox) = Connection::new(
        channel.code(),
        caller.sender,
        caller.identity,
        channel.events.clone(),
        app.config.ws_max_inflight,
    );
    app.connections.add(conn.clone());
    // Changed between the upgrade and now: what closes sockets did not see this one.
    let snapshot = app.registry.snapshot();
    let now = snapshot.channel(channel.code()).map(|c| &**c);
    let stopped = app.stopped.contains(channel.code());
    if let Some((code, why)) = crate::connections::why_close(&channel, now, stopped) {
        conn.close(code, why);
    }
    if channel.kind == crate::channel::ChannelKind::Events {
        app.events.connection_opened(channel.code());
    }
    tracing::info!(channel = %channel.code(), connection = %conn.id, address = %conn.address, "websocket opened");
    let clock = Clock::new();
    let (sink, stream) = socket.split();
    let sink: SharedSink = Arc::new(tokio::sync::Mutex::new(sink));
    let writer = tokio::spawn(write_loop(
        sink.clone(),
        outbox,
        conn.clone(),
        clock.clone(),
    ));
    let end = read_loop(&app, &conn, sink, stream, &clock).await;
    let (code, reason) = end.clone().unwrap_or((1000, String::new()));
    conn.close(code, &reason);
    let _ = writer.await;
    conn.ended();
    app.connections.remove(&conn);
    tracing::info!(channel = %channel.code(), connection = %conn.id, close_code = code, reason = %reason, "websocket closed");
}

/// Milliseconds since the session began at which the client last sent anything.
#[derive(Clone)]
struct Clock {
    start: Instant,
    last_seen_ms: Arc<AtomicU64>,
}

impl Clock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_seen_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_seen_ms.store(now, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Most frames written before one flush.
const WRITE_BATCH: usize = 64;

/// The socket's sending half, shared by the writer task and the direct answers.
/// A frame taken from the queue keeps its room until the writer, holding this
/// lock, has handed it to the socket: so "no room taken" seen under the lock
/// means no frame is waiting to be written.
type SharedSink = Arc<tokio::sync::Mutex<SplitSink<WebSocket, Message>>>;

/// How an answer left.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// On the socket, or queued for the writer, or the connection is gone.
    Done,
    /// Handed to the socket unflushed: the reader flushes before it waits for input.
    Unflushed,
}

/// Sends an answer: written straight to the socket when no frame is queued
/// ahead of it and nobody is writing, otherwise queued (waiting for room: a
/// client that does not read stops the reader, not the server). With `flush`
/// false (the reader's own answers) a direct write is left in the socket's
/// buffer, so answers to frames that arrived together leave in one write.
async fn answer(
    conn: &Connection,
    sink: &SharedSink,
    closing: &mut watch::Receiver<Option<(u16, String)>>,
    text: String,
    flush: bool,
) -> Sent {
    if let Ok(mut sink) = sink.try_lock() {
        if conn.queued_bytes() == 0 {
            if closing.borrow().is_some() {
                return Sent::Done;
            }
            let message = Message::Text(text.into());
            let write = async {
                if flush {
                    sink.send(message).await.map(|()| Sent::Done)
                } else {
                    sink.feed(message).await.map(|()| Sent::Unflushed)
                }
            };
            // A client that stopped reading must not hold up a close request.
            return tokio::select! {
                biased;
                _ = closing.changed() => Sent::Done,
                sent = write => sent.unwrap_or(Sent::Done),
            };
        }
    }
    conn.answer(text).await;
    Sent::Done
}

async fn write_loop(sink: SharedSink, mut outbox: Outbox, conn: Arc<Connection>, clock: Clock) {
    let every = ping_every();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            biased;
            changed = outbox.close.changed() => {
                let request = if changed.is_ok() { outbox.close.borrow().clone() } else { None };
                if let Some((code, reason)) = request {
                    let frame = CloseFrame { code, reason: reason.into() };
                    let send = async { sink.lock().await.send(Message::Close(Some(frame))).await };
                    let _ = tokio::time::timeout(CLOSE_WAIT, send).await;
                }
                break;
            }
            next = outbox.frames.recv() => {
                let Some(outgoing) = next else { break };
                // Everything already queued goes out in one write (one flush).
                // Each frame gives its room back only once the lock is held.
                let frames = &mut outbox.frames;
                let write = async {
                    let mut sink = sink.lock().await;
                    sink.feed(conn.dequeued(outgoing)).await?;
                    for _ in 1..WRITE_BATCH {
                        match frames.try_recv() {
                            Ok(more) => sink.feed(conn.dequeued(more)).await?,
                            Err(_) => break,
                        }
                    }
                    sink.flush().await
                };
                // Boxed, like the reader's frame handling: idle tasks stay small.
                let write = Box::pin(write);
                tokio::select! {
                    biased;
                    // A client that stopped reading must not hold up a close request.
                    _ = outbox.close.changed() => break,
                    sent = write => if sent.is_err() { break },
                }
            }
            _ = ping.tick() => {
                if clock.silent_for() >= idle_limit() {
                    conn.close(CLOSE_GOING_AWAY, "no answer for three ping intervals");
                } else if sink.lock().await.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async { sink.lock().await.close().await }).await;
    // Nothing more leaves (the client took nothing for write_timeout, or the
    // close went): the reader stops, and answers waiting for room give up.
    conn.close(
        CLOSE_GOING_AWAY,
        "the client took nothing for write_timeout",
    );
    conn.ended();
}

/// Per-connection state of the reader.
struct Reader<'a> {
    app: &'a Arc<AppState>,
    conn: &'a Arc<Connection>,
    sink: SharedSink,
    permits: Arc<Semaphore>,
    inflight: Arc<Mutex<HashSet<String>>>,
    rate: RateLimit,
    closing: watch::Receiver<Option<(u16, String)>>,
    /// `startparam(3)` and `startparam(4)` of message scripts, made once per connection.
    conn_params: [rhai::ImmutableString; 2],
    /// Answers handed to the socket and not flushed yet.
    unflushed: bool,
}

/// Reads until the client leaves or a frame ends the session; returns the close to send.
async fn read_loop(
    app: &Arc<AppState>,
    conn: &Arc<Connection>,
    sink: SharedSink,
    mut stream: SplitStream<WebSocket>,
    clock: &Clock,
) -> Option<(u16, String)> {
    let mut reader = Reader {
        app,
        conn,
        sink,
        permits: Arc::new(Semaphore::new(app.config.ws_max_inflight)),
        inflight: Arc::default(),
        rate: RateLimit::new(app.config.ws_max_rate),
        closing: conn.closing(),
        conn_params: [conn.id.to_string().into(), conn.address.to_string().into()],
        unflushed: false,
    };
    loop {
        if reader.closing.borrow().is_some() {
            return None;
        }
        // Frames already here are read first; the answers written meanwhile
        // are flushed once, before waiting for more.
        let next = match stream.next().now_or_never() {
            Some(next) => next,
            None => {
                reader.flush().await;
                tokio::select! {
                    next = stream.next() => next,
                    _ = reader.closing.changed() => return None,
                }
            }
        };
        let message = match next {
            None => return None,
            Some(Err(e)) => return close_for(e),
            Some(Ok(message)) => message,
        };
        clock.touch();
        match message {
            Message::Text(text) => {
                // Boxed: an idle connection's task keeps only the small read-loop
                // state, not room for the largest frame handler (10 000 idle
                // sockets hold that room 10 000 times).
                if let Some(close) = Box::pin(reader.frame(text.as_str())).await {
                    return Some(close);
                }
            }
            Message::Binary(_) => return Some((1003, "binary frames are not accepted".into())),
            Message::Close(_) => return None,
            // Control frames count toward ws_max_rate too (a ping flood is a flood);
            // the pongs the library queues are bounded by the write buffer's limit.
            Message::Ping(_) | Message::Pong(_) => {
                if let Rate::Sustained = reader.rate.check(Instant::now()) {
                    return Some((CLOSE_POLICY, "rate limit exceeded for 10 s".into()));
                }
            }
        }
    }
}

/// The close code for a read error: 1009 too large, 1007 bad UTF-8, 1002 protocol.
fn close_for(err: axum::Error) -> Option<(u16, String)> {
    let inner = err.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Some((1009, "frame too large".into())),
        Some(tungstenite::Error::Utf8(_)) => Some((1007, "invalid UTF-8 in a text frame".into())),
        Some(tungstenite::Error::Protocol(e)) => Some((1002, format!("protocol error: {e}"))),
        _ => None,
    }
}

/// A parsed request frame `[kind, {qid, data, …}]`.
pub struct Frame {
    kind: String,
    qid: Value,
    payload: Map<String, Value>,
}

/// A frame that is not `[string, object]` with a qid: its qid if any, and why.
pub struct BadFrame {
    qid: Value,
    message: String,
}

/// Parses a text frame (public for the fuzz targets).
pub fn parse_frame(text: &str) -> Result<Frame, BadFrame> {
    let bad = |qid: Value, message: &str| BadFrame {
        qid,
        message: message.to_owned(),
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(Value::Null, &format!("not JSON: {e}")))?;
    let Value::Array(mut items) = value else {
        return Err(bad(Value::Null, "a frame is a JSON array [kind, payload]"));
    };
    if items.len() != 2 {
        return Err(bad(
            Value::Null,
            "a frame is a JSON array of two items [kind, payload]",
        ));
    }
    let payload = items.pop();
    let kind = items.pop();
    let (Some(Value::String(kind)), Some(Value::Object(payload))) = (kind, payload) else {
        return Err(bad(Value::Null, "a frame is [string, object]"));
    };
    match payload.get("qid") {
        Some(qid @ (Value::String(_) | Value::Number(_))) => Ok(Frame {
            kind,
            qid: qid.clone(),
            payload,
        }),
        Some(other) => Err(bad(other.clone(), "qid must be a string or a number")),
        None => Err(bad(Value::Null, "the payload needs a qid")),
    }
}

fn result_frame(kind: &str, qid: &Value, success: bool, data: Value) -> String {
    result_frame_text(kind, qid, success, &json_text(&data))
}

/// JSON text of a value; `serde_json::to_string` writes straight into a buffer,
/// several times faster than the `Display` impl (which goes through `fmt`).
fn json_text(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// `[kind_result, {qid, success, data}]` with `data` given as JSON text; written
/// directly (this is every websocket answer).
fn result_frame_text(kind: &str, qid: &Value, success: bool, data: &str) -> String {
    let mut out = String::with_capacity(48 + kind.len() + data.len());
    out.push('[');
    out.push_str(&json_text(&Value::from(format!("{kind}_result"))));
    out.push_str(",{\"qid\":");
    out.push_str(&json_text(qid));
    out.push_str(if success {
        ",\"success\":true,\"data\":"
    } else {
        ",\"success\":false,\"data\":"
    });
    out.push_str(data);
    out.push_str("}]");
    out
}

fn too_many(kind: &str, qid: &Value, message: String) -> String {
    result_frame(
        kind,
        qid,
        false,
        json!({"error": "too_many_patterns", "message": message}),
    )
}

fn failure(kind: &str, qid: &Value, error: &str) -> String {
    result_frame(kind, qid, false, json!({ "error": error }))
}

impl Reader<'_> {
    async fn answer(&mut self, text: String) {
        if answer(self.conn, &self.sink, &mut self.closing, text, false).await == Sent::Unflushed {
            self.unflushed = true;
        }
    }

    /// Flushes what the reader's answers left in the socket's buffer. When the
    /// writer holds the socket it flushes them with its own frames.
    async fn flush(&mut self) {
        if !std::mem::take(&mut self.unflushed) {
            return;
        }
        if let Ok(mut sink) = self.sink.try_lock() {
            tokio::select! {
                biased;
                _ = self.closing.changed() => {}
                _ = sink.flush() => {}
            }
        }
    }

    /// Handles one text frame; returns a close when the session must end.
    async fn frame(&mut self, text: &str) -> Option<(u16, String)> {
        let frame = match parse_frame(text) {
            Ok(frame) => frame,
            Err(bad) => {
                let answer = json!(["error", {"qid": bad.qid, "error": "bad_frame", "message": bad.message}]);
                self.answer(answer.to_string()).await;
                return None;
            }
        };
        match self.rate.check(Instant::now()) {
            Rate::Ok => {}
            Rate::Over => {
                self.answer(failure(&frame.kind, &frame.qid, "rate_limited"))
                    .await;
                return None;
            }
            Rate::Sustained => return Some((CLOSE_POLICY, "rate limit exceeded for 10 s".into())),
        }
        let snapshot = self.app.registry.snapshot();
        let Some(channel) = snapshot.channel(&self.conn.channel).cloned() else {
            return Some((CLOSE_GOING_AWAY, "channel deleted".into()));
        };
        match frame.kind.as_str() {
            "message" => self.message(frame, channel).await,
            "subscribe" | "unsubscribe" | "publish" => {
                let answer = self.token_api(&frame, &channel).await;
                self.answer(answer).await;
            }
            _ => {
                self.answer(failure(&frame.kind, &frame.qid, "unknown_kind"))
                    .await;
            }
        }
        None
    }

    async fn message(&mut self, frame: Frame, channel: Arc<Channel>) {
        let key = frame.qid.to_string();
        let fresh = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        if !fresh {
            self.answer(failure("message", &frame.qid, "duplicate_qid"))
                .await;
            return;
        }
        // Past the cap, wait here: the socket is not read until a slot frees up.
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.flush().await;
                tokio::select! {
                    permit = self.permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    _ = self.closing.changed() => return,
                }
            }
        };
        let request_id = uuid::Uuid::new_v4().to_string();
        let span = crate::trace::frame_span(channel.code(), &request_id, &frame.qid);
        let task = MessageRun {
            app: self.app.clone(),
            conn: self.conn.clone(),
            sink: self.sink.clone(),
            conn_params: self.conn_params.clone(),
            channel,
            frame,
            key,
            inflight: self.inflight.clone(),
            span,
            request_id,
            started: Instant::now(),
            _permit: permit,
        };
        if task.start(&mut self.closing).await == Sent::Unflushed {
            self.unflushed = true;
        }
    }

    async fn token_api(&self, frame: &Frame, channel: &Channel) -> String {
        let (kind, qid) = (frame.kind.as_str(), &frame.qid);
        let allowed = channel
            .doc
            .opts
            .ws_apis
            .iter()
            .any(|a| a == "*" || a == kind);
        if !allowed {
            return failure(kind, qid, "forbidden");
        }
        if kind != "publish" && channel.kind != crate::channel::ChannelKind::Events {
            // Only events channels receive events: a pattern here would never match.
            return failure(kind, qid, "not_an_events_channel");
        }
        let data = frame.payload.get("data").cloned().unwrap_or(Value::Null);
        match kind {
            "publish" => {
                if !self.conn.identity.has_role("events.publish") {
                    return failure(kind, qid, "forbidden");
                }
                let name = data.get("name").and_then(Value::as_str).unwrap_or("");
                let payload = data.get("data").cloned().unwrap_or(Value::Null);
                match Event::new(channel.code(), name, payload) {
                    Ok(mut event) => {
                        event.test = channel.test_mode();
                        let id = event.id;
                        match self.app.events.publish(event).await {
                            Ok(_) => result_frame(kind, qid, true, json!({ "id": id })),
                            Err(e) if e.is_cluster_unavailable() => {
                                tracing::warn!("publishing: {e}");
                                failure(kind, qid, "cluster_unavailable")
                            }
                            Err(e) => {
                                tracing::error!("publishing: {e}");
                                failure(kind, qid, "internal")
                            }
                        }
                    }
                    Err(message) => result_frame(
                        kind,
                        qid,
                        false,
                        json!({"error": "bad_event", "message": message}),
                    ),
                }
            }
            _ => {
                let wanted: Result<Vec<Pattern>, String> = match data.get("events") {
                    Some(Value::Array(list)) => list
                        .iter()
                        .map(|p| {
                            p.as_str()
                                .ok_or("patterns are strings".to_string())
                                .and_then(Pattern::parse)
                        })
                        .collect(),
                    _ => Err("data.events must be a list of patterns".into()),
                };
                let wanted = match wanted {
                    Ok(w) => w,
                    Err(message) => {
                        return result_frame(
                            kind,
                            qid,
                            false,
                            json!({"error": "bad_pattern", "message": message}),
                        )
                    }
                };
                if wanted.len() > MAX_PATTERNS_PER_FRAME {
                    return too_many(
                        kind,
                        qid,
                        format!("at most {MAX_PATTERNS_PER_FRAME} patterns in one frame"),
                    );
                }
                let mut patterns = self.conn.patterns.lock().unwrap_or_else(|p| p.into_inner());
                if kind == "subscribe" {
                    let mut fresh: Vec<Pattern> = Vec::new();
                    for p in wanted {
                        if !patterns.contains(&p) && !fresh.contains(&p) {
                            fresh.push(p);
                        }
                    }
                    if patterns.len() + fresh.len() > MAX_PATTERNS {
                        return too_many(
                            kind,
                            qid,
                            format!("a connection holds at most {MAX_PATTERNS} patterns"),
                        );
                    }
                    patterns.extend(fresh);
                } else {
                    patterns.retain(|p| !wanted.contains(p));
                }
                let now: Vec<&str> = patterns.iter().map(Pattern::as_str).collect();
                result_frame(kind, qid, true, json!({ "events": now }))
            }
        }
    }
}

/// One `message` frame being run by the channel's `recv_svcscriptcode_ws`.
struct MessageRun {
    app: Arc<AppState>,
    conn: Arc<Connection>,
    sink: SharedSink,
    conn_params: [rhai::ImmutableString; 2],
    channel: Arc<Channel>,
    frame: Frame,
    key: String,
    inflight: Arc<Mutex<HashSet<String>>>,
    request_id: String,
    started: Instant,
    /// The frame's span (ended when the run is dropped, after its answer).
    span: crate::trace::Span,
    _permit: OwnedSemaphorePermit,
}

/// Whether a run succeeded, and its `data` as JSON text.
type Outcome = (bool, String);

impl MessageRun {
    /// Runs the frame: answered right here when the script finishes inline (most
    /// do, within 1 ms and without side effects), otherwise on its own task so the
    /// reader goes on with the next frames.
    async fn start(self, closing: &mut watch::Receiver<Option<(u16, String)>>) -> Sent {
        self.conn.inflight.fetch_add(1, Ordering::Relaxed);
        let (script, ctx) = match self.prepare() {
            Ok(ready) => ready,
            Err(outcome) => return self.finish(outcome, closing, false).await,
        };
        let engine = &self.app.engine;
        let timeout = self.channel.timeout;
        if let Some(done) = engine.try_inline(&script, &ctx, self.started, timeout, MESSAGE_OUTPUTS)
        {
            let outcome = self.settle(done);
            return self.finish(outcome, closing, false).await;
        }
        let mut closing = closing.clone();
        tokio::spawn(async move {
            let done = self
                .app
                .engine
                .run_off_thread(script, ctx, self.started, timeout, MESSAGE_OUTPUTS)
                .await;
            let outcome = self.settle(done);
            self.finish(outcome, &mut closing, true).await
        });
        Sent::Done
    }

    /// Frees the qid, answers, logs and counts.
    /// `flush` is false when the reader itself answers (it flushes later).
    async fn finish(
        mut self,
        (success, data): Outcome,
        closing: &mut watch::Receiver<Option<(u16, String)>>,
        flush: bool,
    ) -> Sent {
        if !success {
            self.span.fail(|| data.clone());
        }
        // The qid is free again before the client can see the answer.
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        let text = result_frame_text("message", &self.frame.qid, success, &data);
        let sent = answer(&self.conn, &self.sink, closing, text, flush).await;
        self.conn.inflight.fetch_sub(1, Ordering::Relaxed);
        let keep = self.channel.doc.opts.record.unwrap_or(0);
        if keep > 0 {
            self.record(keep, success, &data);
        }
        if tracing::enabled!(target: "switchyard::ws", tracing::Level::INFO) {
            use crate::log_format::{direct, Value};
            let elapsed = self.started.elapsed();
            let fields = [
                ("channel", Value::Text(self.channel.code())),
                ("request_id", Value::Text(&self.request_id)),
                ("connection", Value::Text(&self.conn_params[0])),
                ("qid", Value::Json(&self.frame.qid)),
                ("success", Value::Bool(success)),
                ("duration_ms", Value::Millis(elapsed)),
            ];
            direct("switchyard::ws", "message", &fields);
        }
        crate::telemetry::count_ws_message(self.channel.code(), success);
        sent
    }

    /// Keeps the frame and its answer (`opts.record`).
    fn record(&self, keep: u32, success: bool, data: &str) {
        let version = self
            .channel
            .script_for(ScriptField::RecvWs)
            .and_then(|code| {
                self.app
                    .registry
                    .snapshot()
                    .scripts
                    .get(code)
                    .map(|s| s.version.clone())
            })
            .unwrap_or_default();
        let sent = self
            .frame
            .payload
            .get("data")
            .map_or_else(|| "null".to_owned(), json_text);
        let doc = crate::dev::recordings::Recording::Ws {
            id: self.request_id.clone(),
            at: std::time::SystemTime::now(),
            data: sent,
            success,
            answered: data.to_owned(),
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            version,
        };
        self.app.recorder.keep(self.channel.code(), keep, doc);
    }

    /// The script and the run's inputs, or the answer when there is no script.
    #[allow(clippy::result_large_err)]
    fn prepare(&self) -> Result<(Arc<crate::script::Script>, Arc<RunContext>), Outcome> {
        let snapshot = self.app.registry.snapshot();
        let script = self
            .channel
            .script_for(ScriptField::RecvWs)
            .and_then(|code| snapshot.scripts.get(code).cloned());
        let Some(script) = script else {
            return Err((false, json!({ "error": "no_script" }).to_string()));
        };
        let data = self
            .frame
            .payload
            .get("data")
            .map_or_else(|| "null".to_owned(), json_text);
        let qid = match &self.frame.qid {
            Value::String(s) => s.clone(),
            other => json_text(other),
        };
        let ctx = RunContext {
            channel: self.channel.clone(),
            request_id: self.request_id.clone(),
            identity: self.conn.identity.clone(),
            params: vec![
                data.into(),
                qid.into(),
                self.conn_params[0].clone(),
                self.conn_params[1].clone(),
                self.channel.code().into(),
            ],
            scripts: snapshot.scripts.clone(),
            host: self.app.clone(),
            job: None,
            lazy: None,
            trace: self.span.context().clone(),
        };
        Ok((script, Arc::new(ctx)))
    }

    /// The answer for a finished run.
    fn settle(&self, run: Result<Vec<rhai::Dynamic>, RunError>) -> Outcome {
        let failed = |err: RunError| {
            let e = crate::http::script_failure(&self.app, &self.channel, &self.request_id, err);
            let (_, code) = e.status_and_code();
            let mut data = json!({ "error": code });
            if let crate::error::AppError::Script(Some(message)) = e {
                data["message"] = message.into();
            }
            (false, data.to_string())
        };
        match run {
            Err(err) => failed(err),
            Ok(outputs) => {
                let success = if outputs[1].is_unit() {
                    Ok(true)
                } else {
                    outputs[1]
                        .as_bool()
                        .map_err(|_| "success must be true or false".to_string())
                };
                match (success, convert::to_json_text(&outputs[0])) {
                    (Ok(success), Ok(data)) => (success, data),
                    (Err(e), _) | (_, Err(e)) => failed(RunError::Failed(e)),
                }
            }
        }
    }
}

/// `ws_max_rate`: frames a second per connection, in one-second windows.
struct RateLimit {
    max: u32,
    window: Instant,
    count: u32,
    over_since: Option<Instant>,
}

enum Rate {
    Ok,
    Over,
    Sustained,
}

impl RateLimit {
    fn new(max: u32) -> Self {
        Self {
            max,
            window: Instant::now(),
            count: 0,
            over_since: None,
        }
    }

    fn check(&mut self, now: Instant) -> Rate {
        if self.max == 0 {
            return Rate::Ok;
        }
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            if self.count <= self.max {
                self.over_since = None;
            }
            self.window = now;
            self.count = 0;
        }
        self.count += 1;
        if self.count <= self.max {
            return Rate::Ok;
        }
        let since = *self.over_since.get_or_insert(now);
        if now.duration_since(since) >= RATE_LIMIT_CLOSE_AFTER {
            Rate::Sustained
        } else {
            Rate::Over
        }
    }
}

/// Runs channel `code`'s `send_svcscriptcode_ws` with `data` in the background.
pub fn run_send_ws(app: &Arc<AppState>, code: &str, data: Value) -> Result<(), String> {
    let snapshot = app.registry.snapshot();
    let channel = snapshot
        .channel(code)
        .cloned()
        .ok_or_else(|| format!("unknown channel {code:?}"))?;
    if channel.doc.opts.disabled {
        return Err(format!("channel {code:?} is disabled"));
    }
    let script = channel
        .script_for(ScriptField::SendWs)
        .and_then(|s| snapshot.scripts.get(s).cloned())
        .ok_or_else(|| format!("channel {code:?} has no send_svcscriptcode_ws"))?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
    let request_id = uuid::Uuid::new_v4().to_string();
    let ctx = RunContext {
        channel: channel.clone(),
        request_id: request_id.clone(),
        identity: crate::auth::channel_identity(&channel, &app.config),
        params: vec![data.to_string().into(), code.into()],
        scripts: snapshot.scripts.clone(),
        host: app.clone(),
        job: None,
        lazy: None,
        trace: opentelemetry::trace::SpanContext::empty_context(),
    };
    let Some(running) = SendWsRun::start(code) else {
        return Err(format!(
            "channel_send_ws: {MAX_SEND_WS_RUNS} runs for channel {code:?} are under way already"
        ));
    };
    let app = app.clone();
    runtime.spawn(async move {
        let _running = running;
        if let Err(err) = app.engine.run(script, ctx, channel.timeout, &[]).await {
            crate::http::script_failure(&app, &channel, &request_id, err);
        }
    });
    Ok(())
}

/// `channel_send_ws` runs one channel may have under way at once; past it the
/// call is a script error (each run is a task and maybe a thread).
pub const MAX_SEND_WS_RUNS: usize = 64;

/// One `channel_send_ws` run under way, counted per channel until dropped.
struct SendWsRun(String);

impl SendWsRun {
    fn counts() -> &'static dashmap::DashMap<String, usize> {
        static COUNTS: std::sync::OnceLock<dashmap::DashMap<String, usize>> =
            std::sync::OnceLock::new();
        COUNTS.get_or_init(Default::default)
    }

    fn start(code: &str) -> Option<Self> {
        let mut n = Self::counts().entry(code.to_owned()).or_insert(0);
        if *n >= MAX_SEND_WS_RUNS {
            return None;
        }
        *n += 1;
        Some(Self(code.to_owned()))
    }
}

impl Drop for SendWsRun {
    fn drop(&mut self) {
        Self::counts().remove_if_mut(&self.0, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// `["push", {"data": data}]`.
pub fn push_frame(data: Value) -> axum::extract::ws::Utf8Bytes {
    json_text(&json!(["push", { "data": data }])).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_or_say_why_not() {
        let f = parse_frame(r#"["message", {"qid": 7, "data": {"a": 1}}]"#)
            .ok()
            .unwrap();
        assert_eq!((f.kind.as_str(), f.qid.clone()), ("message", json!(7)));
        for (text, qid) in [
            ("not json", Value::Null),
            ("{}", Value::Null),
            (r#"["message"]"#, Value::Null),
            (r#"[1, {"qid": 1}]"#, Value::Null),
            (r#"["message", [1]]"#, Value::Null),
            (r#"["message", {"data": 1}]"#, Value::Null),
            (r#"["message", {"qid": true}]"#, json!(true)),
        ] {
            let bad = parse_frame(text).err().unwrap();
            assert_eq!(bad.qid, qid, "{text}");
        }
    }

    #[test]
    fn rate_limit_answers_then_closes_after_ten_seconds() {
        let mut r = RateLimit::new(2);
        let t0 = Instant::now();
        assert!(matches!(r.check(t0), Rate::Ok));
        assert!(matches!(r.check(t0), Rate::Ok));
        assert!(matches!(r.check(t0), Rate::Over));
        let mut t = t0;
        for _ in 0..9 {
            t += Duration::from_secs(1);
            r.check(t);
            r.check(t);
            assert!(matches!(r.check(t), Rate::Over));
        }
        t += Duration::from_secs(1);
        r.check(t);
        r.check(t);
        assert!(matches!(r.check(t), Rate::Sustained));
        // A calm second resets it.
        let mut calm = RateLimit::new(2);
        calm.check(t0);
        calm.check(t0);
        assert!(matches!(calm.check(t0), Rate::Over));
        calm.check(t0 + Duration::from_secs(1));
        assert!(matches!(calm.check(t0 + Duration::from_secs(2)), Rate::Ok));
    }
}
