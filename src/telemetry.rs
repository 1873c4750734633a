//! Logs, metrics and the per-request layer (request id, error bodies, one log line).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

use crate::config::LogFormat;
use crate::error::ErrorBody;

/// The id of one HTTP request, set by [`request_layer`].
/// Its text is made once: the header, the log line, error bodies and the
/// script's `startparam(8)` all use it.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// Put on a response by a handler that knows which channel it served.
#[derive(Debug, Clone)]
pub struct ChannelTag(pub String);

/// Whether fault injection is on (`SWITCHYARD_FAULT_INJECTION=1`): a test-only
/// switch that adds the script function `fault_panic(message)` and the admin
/// route `GET /admin/fault/panic`, both of which panic on purpose so the tests
/// can prove panics are caught. Off in production.
pub fn fault_injection() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SWITCHYARD_FAULT_INJECTION").is_some_and(|v| v == "1"))
}

/// The message of a caught panic.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic")
}

/// Put on a response by the panic catcher: the request layer logs it with the request id.
#[derive(Debug, Clone)]
pub struct Panicked(pub String);

/// Sends panic reports through `tracing` (one structured line with the place),
/// instead of the default hook's plain stderr text.
pub fn init_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let what = panic_text(info.payload());
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            target: "switchyard::panic",
            thread = thread.name().unwrap_or("?"),
            place,
            "panic: {what}"
        );
    }));
}

/// Lines the log writer dropped (its buffer was full).
static LOG_LINES: OnceLock<crate::log_writer::Lines> = OnceLock::new();

pub use crate::log_writer::LogWriter;

/// Starts `tracing` on stderr; `RUST_LOG` sets the level (default `info`).
/// Lines go through [`crate::log_writer`]: formatted by the thread that
/// logs, written in batches by a thread of their own.
pub fn init_logs(format: LogFormat) -> LogWriter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let limit = std::env::var("SWITCHYARD_LOG_BUFFER")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(crate::log_writer::BUFFER_BYTES);
    let (lines, writer) = crate::log_writer::start(std::io::stderr(), limit);
    let _ = LOG_LINES.set(lines.clone());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(lines.clone());
    let _ = match format {
        LogFormat::Json => {
            crate::log_format::enable_direct(lines.clone(), crate::log_format::Layout::Json);
            builder.json().flatten_event(true).try_init()
        }
        LogFormat::Text => {
            crate::log_format::enable_direct(lines.clone(), crate::log_format::Layout::Text);
            builder.event_format(crate::log_format::TextLine).try_init()
        }
    };
    writer
}

/// Log lines dropped so far because the writer's buffer was full.
pub fn log_lines_dropped() -> u64 {
    LOG_LINES.get().map_or(0, crate::log_writer::Lines::dropped)
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".into()),
                    &[
                        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
                        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder (a test harness) may be installed already; then ours stays unused.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The per-request metric handles, cached by channel so the hot path neither
/// allocates labels nor looks the metric up in the registry.
struct ChannelMetrics {
    requests: Vec<(u16, metrics::Counter)>,
    script_duration: metrics::Histogram,
    /// `switchyard_ws_messages_total` for success false / true, made on first use.
    ws_messages: [Option<metrics::Counter>; 2],
}

fn channel_metrics() -> &'static dashmap::DashMap<String, ChannelMetrics> {
    static CACHE: OnceLock<dashmap::DashMap<String, ChannelMetrics>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn with_channel_metrics<T>(channel: &str, f: impl FnOnce(&mut ChannelMetrics) -> T) -> T {
    if let Some(mut m) = channel_metrics().get_mut(channel) {
        return f(&mut m);
    }
    let mut entry = channel_metrics()
        .entry(channel.to_owned())
        .or_insert_with(|| ChannelMetrics {
            requests: Vec::new(),
            ws_messages: [None, None],
            script_duration: metrics::histogram!(
                "switchyard_script_duration_seconds",
                "channel" => channel.to_owned()
            ),
        });
    f(&mut entry)
}

fn request_counter(channel: &str, status: u16) -> metrics::Counter {
    with_channel_metrics(channel, |m| {
        if let Some((_, c)) = m.requests.iter().find(|(s, _)| *s == status) {
            return c.clone();
        }
        let counter = metrics::counter!(
            "switchyard_http_requests_total",
            "channel" => channel.to_owned(),
            "status" => status.to_string()
        );
        m.requests.push((status, counter.clone()));
        counter
    })
}

/// Counts one answered request in `switchyard_http_requests_total`.
pub fn count_request(channel: &str, status: u16) {
    request_counter(channel, status).increment(1);
}

/// Counts one answered websocket `message` frame.
pub fn count_ws_message(channel: &str, success: bool) {
    with_channel_metrics(channel, |m| {
        m.ws_messages[usize::from(success)]
            .get_or_insert_with(|| {
                metrics::counter!(
                    "switchyard_ws_messages_total",
                    "channel" => channel.to_owned(),
                    "success" => success.to_string()
                )
            })
            .increment(1)
    });
}

/// Records one script run's duration for `channel`.
pub fn script_duration(channel: &str, seconds: f64) {
    with_channel_metrics(channel, |m| m.script_duration.record(seconds));
}

/// Gives every request an id, renders error bodies with it, sets
/// `X-Request-Id`, writes one log line and counts the request.
pub async fn request_layer(req: Request, next: Next) -> Response {
    observe(req, |req| next.run(req)).await
}

/// The work of [`request_layer`] around any handler; the hot channel routes
/// call it directly, without the router's middleware stack.
pub async fn observe<F, Fut>(mut req: Request, handler: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let id_text: Arc<str> = Uuid::new_v4().to_string().into();
    req.extensions_mut().insert(RequestId(id_text.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let mut span = crate::trace::request_span(&method, &path, req.headers(), &id_text);
    req.extensions_mut()
        .insert(crate::trace::Current(span.context().clone()));
    let mut response = handler(req).await;
    if let Some(err) = response.extensions_mut().remove::<ErrorBody>() {
        let body = serde_json::to_string(&err.answer(&id_text)).unwrap_or_default();
        *response.body_mut() = Body::from(body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    response.headers_mut().insert(
        "x-request-id",
        HeaderValue::from_str(&id_text).expect("a UUID is a valid header value"),
    );
    if !path.starts_with("/console") {
        crate::headers::confine(response.headers_mut());
    }
    let status = response.status().as_u16();
    let channel = response
        .extensions()
        .get::<ChannelTag>()
        .map(|c| c.0.clone())
        .unwrap_or_default();
    let elapsed = started.elapsed();
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    span.set(|| {
        vec![
            opentelemetry::KeyValue::new("switchyard.channel", channel.to_string()),
            opentelemetry::KeyValue::new("http.response.status_code", i64::from(status)),
        ]
    });
    if status >= 500 {
        span.fail(|| format!("status {status}"));
    }
    drop(span);
    if let Some(Panicked(what)) = response.extensions_mut().remove::<Panicked>() {
        tracing::error!(
            target: "switchyard::http",
            channel = %channel,
            request_id = %id_text,
            path = %path,
            "handler panicked: {what}"
        );
    }
    if tracing::enabled!(target: "switchyard::http", tracing::Level::INFO) {
        use crate::log_format::{direct, Value};
        let fields = [
            ("channel", Value::Text(&channel)),
            ("request_id", Value::Text(&id_text)),
            ("method", Value::Text(method.as_str())),
            ("path", Value::Text(&path)),
            ("status", Value::Number(status.into())),
            ("duration_ms", Value::Millis(elapsed)),
        ];
        direct("switchyard::http", "request", &fields);
    }
    count_request(&channel, status);
    crate::history::record(&channel, status, duration_ms);
    if !path.starts_with("/admin/stream") {
        crate::activity::publish("request", || {
            serde_json::json!({
                "channel": channel, "request_id": &*id_text, "method": method.as_str(),
                "path": path, "status": status,
                "duration_ms": (duration_ms * 1000.0).round() / 1000.0,
            })
        });
    }
    response
}

/// The answer to a handler that panicked: `500 {"error":"internal"}`,
/// counted, and marked so that the request layer logs it with the request
/// id; the server keeps serving.
pub fn panicked(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    metrics::counter!("switchyard_panics_total").increment(1);
    let mut response = crate::error::AppError::Internal.into_response();
    let what = panic_text(err.as_ref()).to_owned();
    response.extensions_mut().insert(Panicked(what));
    response
}
