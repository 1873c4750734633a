//! Accepting and serving connections (SPEC §1, §14, §17): at most
//! `max_connections` at once and `max_connections_per_ip` an address, the
//! header timeout, TLS (rustls, ALPN) and the protocol of each connection:
//! HTTP/1.1 (with upgrades: websockets), or HTTP/2 by ALPN over TLS or with
//! prior knowledge (h2c) over plain TCP.
//!
//! HTTP/2 gets hyper's flood limits: at most [`H2_MAX_STREAMS`] concurrent
//! streams a connection (more are refused with `REFUSED_STREAM`), header
//! lists bounded by `max_header_bytes`, streams reset by the client before
//! they were answered bounded ("rapid reset": past [`H2_MAX_RESETS`] the
//! connection is closed with `ENHANCE_YOUR_CALM`), and a connection with no
//! request under way for `header_timeout` is closed (`GOAWAY`), as HTTP/1.1
//! closes an idle keep-alive connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::conn_io::{ConnIo, ConnectionSlot, Shared};
use crate::tls::{Tls, ALPN_H2};
use crate::{http, telemetry, AppState};

/// Concurrent HTTP/2 streams a connection may open.
pub const H2_MAX_STREAMS: u32 = 100;
/// HTTP/2 streams a client may reset before the server answered them, at
/// once, before the connection is closed (hyper's rapid-reset guard).
pub const H2_MAX_RESETS: usize = 20;
/// HTTP/2 streams the server may reset for a client's protocol errors
/// before it closes the connection.
const H2_MAX_ERROR_RESETS: usize = 100;
/// How often an HTTP/2 connection is pinged, and how long a ping may go unanswered.
const H2_PING: Duration = Duration::from_secs(30);

/// The connection preface of HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Open connections per sender address (the socket peer).
#[derive(Default)]
struct PerIp(dashmap::DashMap<std::net::IpAddr, usize>);

/// One open connection of an address, counted until dropped.
struct IpSlot(Arc<PerIp>, std::net::IpAddr);

impl PerIp {
    /// A slot for `ip`, unless it has `max` connections open already.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let mut n = self.0.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot(self.clone(), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.0 .0.remove_if_mut(&self.1, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// Accepts connections until `shutdown` resolves, at most `max_connections`
/// at once (the next ones wait in the accept backlog); then lets every
/// connection finish its request and returns.
pub async fn accept_loop(
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    tls: Option<Arc<Tls>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let max = state.config.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let per_ip = Arc::new(PerIp::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // One address may not hold every slot: past its share it is refused
        // (closed at once), so other addresses are always served.
        let Some(ip_slot) = per_ip.take(peer.ip(), state.config.max_connections_per_ip) else {
            metrics::counter!("switchyard_connections_refused_total", "reason" => "per_ip")
                .increment(1);
            drop(stream);
            continue;
        };
        let slot = ConnectionSlot(Arc::new((slot, ip_slot)));
        let conn = Conn {
            peer,
            router: router.clone(),
            slot,
            state: state.clone(),
            stop: stop_rx.clone(),
        };
        tokio::spawn(conn.serve(stream, tls.clone()));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection (and websocket) gives its slot back when it is done.
    let longest_script = Duration::from_secs(crate::channel::MAX_RECV_TIMEOUT + 5);
    let _ = tokio::time::timeout(longest_script, slots.acquire_many(max as u32)).await;
}

/// Waits for the first bytes of a plain connection: `Some(true)` for the
/// HTTP/2 preface, `Some(false)` for anything else (HTTP/1.1), `None` when
/// nothing came within `limit` or the client closed.
async fn sniff(socket: &tokio::net::TcpStream, limit: Duration) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = match tokio::time::timeout_at(deadline, socket.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // A part of the preface so far (rare: it is one segment): wait for the rest.
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// When an HTTP/2 connection last started or finished answering a request,
/// and how many are under way (an answer counts until its body is sent).
struct Activity {
    began: tokio::time::Instant,
    /// Milliseconds after `began` of the last request's start or answer's end.
    last: AtomicU64,
    active: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            began: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
            active: AtomicUsize::new(0),
        })
    }

    fn start(self: &Arc<Self>) -> Active {
        self.last
            .store(self.began.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    /// No request under way, and none started for `limit`.
    fn idle_for(&self, limit: Duration) -> bool {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.active.load(Ordering::Relaxed) == 0 && self.began.elapsed() >= last + limit
    }
}

/// A request under way on an HTTP/2 connection, until dropped.
struct Active(Arc<Activity>);

impl Active {
    /// `response` with `active` held until its body is sent (or dropped): a
    /// long download or an event stream is not idleness.
    fn held_by(
        active: Option<Active>,
        response: axum::response::Response,
    ) -> axum::response::Response {
        use http_body_util::BodyExt;
        match active {
            None => response,
            Some(active) => response.map(|body| {
                axum::body::Body::new(body.map_frame(move |frame| {
                    let _held = &active;
                    frame
                }))
            }),
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        // Idle from the end of the last answer on.
        let now = self.0.began.elapsed().as_millis() as u64;
        self.0.last.store(now, Ordering::Relaxed);
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One accepted connection and what serving it needs.
struct Conn {
    peer: SocketAddr,
    router: Router,
    slot: ConnectionSlot,
    state: Arc<AppState>,
    stop: watch::Receiver<bool>,
}

impl Conn {
    async fn serve(self, stream: tokio::net::TcpStream, tls: Option<Arc<Tls>>) {
        let _ = stream.set_nodelay(true);
        let limit = self.state.config.header_timeout;
        let (io, shared) = ConnIo::new(stream, self.state.config.write_timeout);
        let Some(tls) = tls else {
            match sniff(&shared.socket, limit).await {
                Some(true) => self.serve_h2(io).await,
                Some(false) => self.serve_h1(io, Some(shared)).await,
                None => tracing::debug!(peer = %self.peer, "idle connection closed"),
            }
            return;
        };
        let stream = match tokio::time::timeout(limit, tls.acceptor.accept(io)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                metrics::counter!("switchyard_tls_handshakes_failed_total").increment(1);
                tracing::debug!(peer = %self.peer, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                metrics::counter!("switchyard_tls_handshakes_failed_total").increment(1);
                tracing::debug!(peer = %self.peer, "TLS handshake not done within header_timeout");
                return;
            }
        };
        if stream.get_ref().1.alpn_protocol() == Some(ALPN_H2) {
            self.serve_h2(stream).await
        } else {
            // No `408` over TLS: the server's last word would be plain text.
            self.serve_h1(stream, None).await
        }
    }

    /// The service of a connection: channel API calls straight to their
    /// handler (the hot path), everything else through the router.
    fn service(
        &self,
        activity: Option<Arc<Activity>>,
    ) -> impl hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future = impl std::future::Future<
            Output = Result<axum::response::Response, std::convert::Infallible>,
        > + Send
                     + 'static,
    > + Clone {
        let (state, peer, slot, router) = (
            self.state.clone(),
            self.peer,
            self.slot.clone(),
            self.router.clone(),
        );
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            use futures_util::future::Either;
            let active = activity.as_ref().map(Activity::start);
            if let Some(code) = http::api_route(req.uri().path()) {
                let code = code.to_owned();
                let state = state.clone();
                let req = req.map(axum::body::Body::new);
                // Not boxed: the script run inside is (http::api_fast), so this
                // future is small when hyper moves it.
                return Either::Left(async move {
                    let response =
                        telemetry::observe(req, |req| http::api_fast(state, peer, code, req)).await;
                    Ok::<_, std::convert::Infallible>(Active::held_by(active, response))
                });
            }
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(slot.clone());
            let mut router = router.clone();
            Either::Right(Box::pin(async move {
                let response =
                    tower::Service::call(&mut router, req.map(axum::body::Body::new)).await;
                response.map(|r| Active::held_by(active, r))
            }))
        })
    }

    /// HTTP/1.1 with upgrades (websockets); `shared` (plain TCP only) lets
    /// the server answer `408` itself when the request headers are too slow.
    async fn serve_h1<I>(mut self, io: I, shared: Option<Shared>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = self.service(None);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.state.config.header_timeout)
            .max_buf_size(self.state.config.max_header_bytes)
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = self.stop.changed() => {
                conn.as_mut().graceful_shutdown();
                // Keep driving the connection until its request is answered.
                conn.as_mut().await
            }
        };
        let Err(e) = result else { return };
        let peer = self.peer;
        match shared {
            Some(shared) if e.is_timeout() && shared.request_begun() => {
                // Counted like any answered request, with no channel (none was named
                // yet); before the answer, so a client that sees the 408 sees it counted.
                telemetry::count_request("", 408);
                let body = r#"{"error":"request_timeout","message":"request headers not received in time"}"#;
                let response = format!(
                    "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                shared
                    .last_word(response.as_bytes(), Duration::from_secs(1))
                    .await;
                tracing::info!(target: "switchyard::http", peer = %peer, status = 408, "request headers not received in time");
            }
            // An idle keep-alive connection: closed without a word, so that no
            // unsolicited 408 races a client that is reusing it.
            _ if e.is_timeout() => tracing::debug!(peer = %peer, "idle connection closed"),
            _ => tracing::debug!(peer = %peer, "connection ended: {e}"),
        }
    }

    /// HTTP/2, with hyper's flood limits (see the module docs).
    async fn serve_h2<I>(mut self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new();
        let service = self.service(Some(activity.clone()));
        let config = &self.state.config;
        let idle = config.header_timeout;
        let mut builder =
            hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(config.max_header_bytes as u32)
            .max_pending_accept_reset_streams(H2_MAX_RESETS)
            .max_local_error_reset_streams(H2_MAX_ERROR_RESETS)
            .keep_alive_interval(H2_PING)
            .keep_alive_timeout(H2_PING);
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(100)));
        let mut closing = false;
        // An idle connection told to go (GOAWAY) that does not close within
        // another `header_timeout` (a client that never answers the PING
        // of the shutdown) is dropped.
        let mut drop_at: Option<tokio::time::Instant> = None;
        let result = loop {
            tokio::select! {
                result = conn.as_mut() => break result,
                _ = self.stop.changed(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tick.tick() => {
                    if drop_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
                        tracing::debug!(peer = %self.peer, "idle HTTP/2 connection dropped");
                        return;
                    }
                    if !closing && activity.idle_for(idle) {
                        closing = true;
                        drop_at = Some(tokio::time::Instant::now() + idle);
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(peer = %self.peer, "HTTP/2 connection ended: {e}");
        }
    }
}
