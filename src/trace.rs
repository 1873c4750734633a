//! Traces (SPEC §11): an incoming W3C `traceparent` continues its trace
//! (else a new one starts); each request, frame, job attempt and schedule
//! run is a span with the channel and request id; a script's run is a span
//! under it and each `webquery` a client span under that, whose context goes
//! out as `traceparent`. With config `otlp_endpoint` set the spans are
//! exported over OTLP/HTTP (JSON), in batches, off the request path.
//!
//! Off (the default) nothing is recorded or exported: a span is then its
//! ids alone (random numbers from a thread-local generator), so that
//! `traceparent` still goes out on `webquery` calls and upstream systems
//! can follow the trace.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    SdkTracer, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};

/// How often finished spans are sent.
const EXPORT_EVERY: Duration = Duration::from_secs(1);
/// Finished spans waiting to be sent at most; past it new ones are dropped.
const QUEUE: usize = 65_536;
/// Waiting spans that make the exporter send at once, without waiting for its tick.
const SEND_AT: usize = 4096;
/// Spans in one export request at most.
const BATCH: usize = 512;

static TRACER: OnceLock<(SdkTracer, SdkTracerProvider)> = OnceLock::new();

/// Starts exporting spans to `endpoint` (`http://collector:4318`; the path
/// `/v1/traces` is added unless given). Called once, at start.
pub fn export_to(endpoint: &str) -> Result<(), String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let endpoint = endpoint.trim_end_matches('/');
    let url = if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("otlp_endpoint: {e}"))?;
    let batch = Batcher::start(exporter);
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("switchyard")
                .build(),
        )
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "switchyard");
    TRACER
        .set((tracer, provider))
        .map_err(|_| "traces: already exporting".to_owned())
}

/// Sends the spans still waiting (a clean stop).
pub fn flush() {
    if let Some((_, provider)) = TRACER.get() {
        if let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!("traces not all exported at stop: {e}");
        }
    }
}

/// The span processor: a finished span is pushed onto a bounded queue
/// under a lock (no thread woken, no syscall); a thread of its own sends
/// the queue every [`EXPORT_EVERY`] in requests of [`BATCH`], at once when
/// [`SEND_AT`] spans wait, and on a flush or a shutdown. (The SDK's batch processor wakes its thread
/// for every span: measured, that cost the server ≈ 8 µs a span on a busy
/// core.) Past [`QUEUE`] waiting spans new ones are dropped and counted in
/// `switchyard_trace_spans_dropped_total`.
#[derive(Debug)]
struct Batcher {
    shared: std::sync::Arc<Shared>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Shared {
    queue: std::sync::Mutex<Vec<SpanData>>,
    /// Flushes asked for, flushes done; `stop` once shutting down.
    state: std::sync::Mutex<(u64, u64, bool)>,
    wake: std::sync::Condvar,
    exporter_resource: std::sync::Mutex<Option<opentelemetry_sdk::Resource>>,
}

impl Batcher {
    fn start<E: SpanExporter + 'static>(mut exporter: E) -> Batcher {
        let shared = std::sync::Arc::new(Shared::default());
        let me = shared.clone();
        let thread = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || loop {
                let (asked, stop) = {
                    let state = me.state.lock().unwrap_or_else(|p| p.into_inner());
                    let (state, _) = me
                        .wake
                        .wait_timeout_while(state, EXPORT_EVERY, |s| s.0 == s.1 && !s.2)
                        .unwrap_or_else(|p| p.into_inner());
                    (state.0, state.2)
                };
                if let Some(resource) = me
                    .exporter_resource
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                {
                    exporter.set_resource(&resource);
                }
                let spans =
                    std::mem::take(&mut *me.queue.lock().unwrap_or_else(|p| p.into_inner()));
                let mut spans = spans.into_iter().peekable();
                while spans.peek().is_some() {
                    let batch: Vec<SpanData> = spans.by_ref().take(BATCH).map(redacted).collect();
                    if let Err(e) = futures_executor::block_on(exporter.export(batch)) {
                        tracing::debug!("traces not exported: {e}");
                    }
                }
                let mut state = me.state.lock().unwrap_or_else(|p| p.into_inner());
                state.1 = asked;
                me.wake.notify_all();
                if stop {
                    let _ = exporter.shutdown();
                    return;
                }
            })
            .expect("a thread for the span exporter");
        Batcher {
            shared,
            thread: std::sync::Mutex::new(Some(thread)),
        }
    }

    /// Asks the thread to send what waits now; waits for it, at most `limit`.
    fn send_now(&self, stop: bool, limit: Duration) -> OTelSdkResult {
        let shared = &self.shared;
        let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += 1;
        state.2 |= stop;
        let target = state.0;
        shared.wake.notify_all();
        let (state, timeout) = shared
            .wake
            .wait_timeout_while(state, limit, |s| s.1 < target)
            .unwrap_or_else(|p| p.into_inner());
        drop(state);
        if timeout.timed_out() {
            return Err(OTelSdkError::Timeout(limit));
        }
        Ok(())
    }
}

impl SpanProcessor for Batcher {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &Context) {}

    fn on_end(&self, span: SpanData) {
        let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= QUEUE {
            drop(queue);
            metrics::counter!("switchyard_trace_spans_dropped_total").increment(1);
            return;
        }
        queue.push(span);
        if queue.len() == SEND_AT {
            drop(queue);
            let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            state.0 += 1;
            self.shared.wake.notify_all();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.send_now(false, Duration::from_secs(10))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let done = self.send_now(true, timeout);
        if done.is_ok() {
            if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = thread.join();
            }
        }
        done
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        *self
            .shared
            .exporter_resource
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(resource.clone());
    }
}

/// `true` when spans are exported.
pub fn exporting() -> bool {
    TRACER.get().is_some()
}

struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The span context of an incoming `traceparent` (and `tracestate`), if valid.
pub fn incoming(headers: &axum::http::HeaderMap) -> Option<SpanContext> {
    headers.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    let parent = cx.span().span_context().clone();
    parent.is_valid().then_some(parent)
}

/// A random span id (and trace id, for a new trace), from the SDK's
/// thread-local generator.
fn new_span_id() -> SpanId {
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    RandomIdGenerator::default().new_span_id()
}

fn new_trace_id() -> TraceId {
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    RandomIdGenerator::default().new_trace_id()
}

/// A span under way: recorded when exporting, else its ids alone.
pub struct Span {
    context: SpanContext,
    /// Boxed: an exporter's span is large (384 bytes) and this one lives in
    /// every request's future, where it is `None` unless traces are exported.
    recorded: Option<Box<opentelemetry_sdk::trace::Span>>,
}

impl Span {
    /// A new span under `parent` (none: a new trace); `name` and
    /// `attributes` are made only when spans are recorded.
    pub fn start(
        name: impl FnOnce() -> String,
        kind: SpanKind,
        parent: Option<&SpanContext>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Span {
        if let Some((tracer, _)) = TRACER.get() {
            let cx = match parent {
                Some(p) => Context::new().with_remote_span_context(p.clone()),
                None => Context::new(),
            };
            let span = tracer
                .span_builder(name())
                .with_kind(kind)
                .with_attributes(attributes())
                .start_with_context(tracer, &cx);
            return Span {
                context: span.span_context().clone(),
                recorded: Some(Box::new(span)),
            };
        }
        let (trace, flags, state) = match parent.filter(|p| p.is_valid()) {
            Some(p) => (p.trace_id(), p.trace_flags(), p.trace_state().clone()),
            None => (new_trace_id(), TraceFlags::SAMPLED, TraceState::default()),
        };
        Span {
            context: SpanContext::new(trace, new_span_id(), flags, false, state),
            recorded: None,
        }
    }

    /// The span's ids, for its children.
    pub fn context(&self) -> &SpanContext {
        &self.context
    }

    /// Adds attributes (when recorded).
    pub fn set(&mut self, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(span) = self.recorded.as_mut() {
            span.set_attributes(attributes());
        }
    }

    /// Marks the span failed with `why` (when recorded).
    pub fn fail(&mut self, why: impl FnOnce() -> String) {
        if let Some(span) = self.recorded.as_mut() {
            span.set_status(Status::error(why()));
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(span) = self.recorded.as_mut() {
            span.end();
        }
    }
}

/// The W3C `traceparent` value of `context`.
pub fn traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// The span context a request's handler runs under (its request span).
#[derive(Clone)]
pub struct Current(pub SpanContext);

/// The channel and request id every span carries.
fn ids(channel: &str, request_id: &str) -> [KeyValue; 2] {
    [
        KeyValue::new("switchyard.channel", channel.to_owned()),
        KeyValue::new("switchyard.request_id", request_id.to_owned()),
    ]
}

/// The span of an incoming request (a server span), under its `traceparent`.
pub fn request_span(
    method: &axum::http::Method,
    path: &str,
    headers: &axum::http::HeaderMap,
    request_id: &str,
) -> Span {
    let parent = incoming(headers);
    Span::start(
        || format!("{method} {}", route(path)),
        SpanKind::Server,
        parent.as_ref(),
        || {
            vec![
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("url.path", path.to_owned()),
                KeyValue::new("http.route", route(path)),
                KeyValue::new("switchyard.request_id", request_id.to_owned()),
            ]
        },
    )
}

/// The route of a path: a channel's code and an id as placeholders.
fn route(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["", "channels", _, "api", ..] => "/channels/{code}/api".into(),
        ["", "channels", _, "files", _] => "/channels/{code}/files/{name}".into(),
        ["", "channels", _, "jobs", _, rest] => format!("/channels/{{code}}/jobs/{{id}}/{rest}"),
        ["", "channels", _, rest] => format!("/channels/{{code}}/{rest}"),
        ["", "admin", "channels", _, rest @ ..] => {
            let mut r = "/admin/channels/{code}".to_owned();
            for p in rest {
                r.push('/');
                r.push_str(p);
            }
            r
        }
        ["", "admin", "jobs", _, rest @ ..] => {
            let mut r = "/admin/jobs/{id}".to_owned();
            for p in rest {
                r.push('/');
                r.push_str(p);
            }
            r
        }
        _ => path.to_owned(),
    }
}

/// The span of a script's run (internal), under the request's span.
pub fn script_span(
    channel: &crate::channel::Channel,
    request_id: &str,
    parent: Option<&SpanContext>,
) -> Span {
    Span::start(
        || format!("script {}", channel.code()),
        SpanKind::Internal,
        parent,
        || ids(channel.code(), request_id).to_vec(),
    )
}

/// The span of a websocket `message` frame (a server span of its own trace).
pub fn frame_span(channel: &str, request_id: &str, qid: &serde_json::Value) -> Span {
    Span::start(
        || format!("frame message {channel}"),
        SpanKind::Server,
        None,
        || {
            let mut a = ids(channel, request_id).to_vec();
            a.push(KeyValue::new("switchyard.qid", qid.to_string()));
            a
        },
    )
}

/// The span of one attempt of a job (`send`, `recv` for the inbox, `schedule`).
pub fn job_span(kind: &str, channel: &str, job: &str, attempt: i64) -> Span {
    Span::start(
        || format!("job {kind} {channel}"),
        SpanKind::Consumer,
        None,
        || {
            let mut a = ids(channel, job).to_vec();
            a.push(KeyValue::new("switchyard.job.kind", kind.to_owned()));
            a.push(KeyValue::new("switchyard.job.attempt", attempt));
            a
        },
    )
}

/// A span without any secret's value (SPEC §20) in its attributes or status.
fn redacted(mut span: SpanData) -> SpanData {
    let clean = |text: &str| crate::secrets::redact(text).into_owned();
    for kv in span.attributes.iter_mut() {
        if let opentelemetry::Value::String(text) = &kv.value {
            kv.value = opentelemetry::Value::String(clean(text.as_str()).into());
        }
    }
    if let Status::Error { description } = &span.status {
        span.status = Status::error(clean(description));
    }
    span
}

/// The span of a `webquery` call (a client span): its context is the
/// `traceparent` that goes out.
pub fn webquery_span(parent: &SpanContext, method: &str, url: &reqwest::Url) -> Span {
    Span::start(
        || format!("webquery {method}"),
        SpanKind::Client,
        Some(parent),
        || {
            vec![
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("server.address", url.host_str().unwrap_or("").to_owned()),
                KeyValue::new("url.path", url.path().to_owned()),
            ]
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request's future holds a span: with nothing exported it is its
    /// ids and one pointer, not an exporter's span (the future is copied into
    /// place and its memory is cold on each request; see README "Equal
    /// instructions, unequal time").
    #[test]
    fn a_span_that_records_nothing_stays_small() {
        assert!(
            std::mem::size_of::<Span>() <= std::mem::size_of::<SpanContext>() + 16,
            "{} bytes",
            std::mem::size_of::<Span>()
        );
        let span = Span::start(|| "x".into(), SpanKind::Server, None, Vec::new);
        assert!(span.context().is_valid());
        assert!(span.recorded.is_none());
    }
}
