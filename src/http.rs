//! Inbound HTTP: `ANY /channels/{code}/api[/{*path}]` → the channel's recv script.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http_body_util::BodyExt;

use crate::answer::{http_answer, HttpAnswer, RECV_OUTPUTS};
use crate::auth::{self, Identity};
use crate::channel::{Channel, ScriptField};
use crate::error::AppError;
use crate::registry::Snapshot;
use crate::script::{LazyParam, RunContext, RunError};
use crate::telemetry::{ChannelTag, RequestId};
use crate::AppState;

/// A channel resolved and its caller authenticated.
pub struct Caller {
    /// The snapshot the request runs on.
    pub snapshot: Arc<Snapshot>,
    /// The channel.
    pub channel: Arc<Channel>,
    /// Who is calling.
    pub identity: Identity,
    /// The sender address.
    pub sender: std::net::IpAddr,
}

/// A request whose framing the server does not take (SPEC §14): an HTTP/1.1
/// request without exactly one `Host`, or a transfer coding other than
/// `chunked` (hyper would decode the chunks and pass `gzip` bytes on as the body).
///
/// And a request line and headers larger than `max_head` bytes (`431`): hyper's
/// own bound on HTTP/1.1 is its read buffer, which a last read may overrun by
/// up to 8 KiB.
pub fn framing_error(req: &Request, max_head: usize) -> Option<AppError> {
    let headers = req.headers();
    if head_len(req) > max_head {
        return Some(AppError::HeadersTooLarge(max_head));
    }
    if req.version() == axum::http::Version::HTTP_11 {
        let mut hosts = headers.get_all(header::HOST).iter();
        // host[:port]: visible ASCII, no user info, path, query or fragment.
        let valid = match (hosts.next(), hosts.next()) {
            (Some(host), None) => {
                let h = host.as_bytes();
                !h.is_empty()
                    && h.iter()
                        .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'@' | b'?' | b'#'))
            }
            _ => false,
        };
        if !valid {
            return Some(AppError::BadRequest(
                "an HTTP/1.1 request needs exactly one valid Host header".into(),
            ));
        }
    }
    if !headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    let codings: Vec<String> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    if !codings.is_empty() && codings != ["chunked"] {
        return Some(AppError::Unsupported(
            "unsupported_transfer_coding",
            format!(
                "transfer coding {:?} is not supported; only chunked",
                codings.join(", ")
            ),
        ));
    }
    None
}

/// The bytes of a request's line and headers as an HTTP/1.1 client sends
/// them (`METHOD target HTTP/1.1\r\n`, `name: value\r\n` each, `\r\n`).
fn head_len(req: &Request) -> usize {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    line + fields + 2
}

/// [`framing_error`] as middleware of the router.
pub async fn framing_guard(
    State(app): State<Arc<AppState>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match framing_error(&req, app.config.max_header_bytes) {
        Some(e) => {
            discard(req.into_body());
            e.into_response()
        }
        None => next.run(req).await,
    }
}

/// Finds the channel and authenticates the caller, in the order of the contract's table.
pub fn admit(
    app: &AppState,
    code: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Caller, AppError> {
    let snapshot = app.registry.snapshot();
    let channel = snapshot
        .channel(code)
        .cloned()
        .ok_or(AppError::UnknownChannel)?;
    let sender = crate::net::sender_addr(peer.ip(), headers, &app.config.trusted_proxies);
    let identity = app.auth.channel_caller(&channel, sender, headers, query)?;
    if channel.doc.opts.disabled {
        return Err(AppError::ChannelDisabled);
    }
    if app.stopped.contains(code) {
        return Err(AppError::ChannelStopped);
    }
    Ok(Caller {
        snapshot,
        channel,
        identity,
        sender,
    })
}

/// The channel API's description: routed by hand (any method, any rest of
/// the path), so not registered from its attribute like the other routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(api))]
pub struct ChannelApi;

/// Handles `ANY /channels/{code}/api` and `ANY /channels/{code}/api/{*path}`
/// when the request came through the router (see [`api_route`] for the usual way).
#[utoipa::path(
    method(get, post, put, patch, delete), path = "/channels/{code}/api/{path}", tag = "channel",
    operation_id = "channel_api",
    description = "Runs the channel's recv script (SPEC §4). `{path}` is any rest of the path, also empty (`/channels/{code}/api`). The answer is the script's: its status, headers and body; with `opts.issync = false` it is `202` at once.",
    params(
        ("code" = String, Path, description = "The channel code"),
        ("path" = String, Path, description = "The rest of the path, handed to the script as `path`"),
    ),
    security(("channel_bearer" = []), ("channel_query" = [])),
    request_body(content = Vec<u8>, content_type = "*/*", description = "Any body, handed to the script"),
    responses(
        (status = "2XX", description = "The script's answer"),
        (status = "4XX", description = "The script's answer, or an error of the runtime", body = crate::api_doc::ErrorAnswer),
        (status = 500, description = "The script failed (`script_error`)", body = crate::api_doc::ErrorAnswer),
        (status = 501, description = "The channel has no recv script (`no_script`)", body = crate::api_doc::ErrorAnswer),
        (status = 503, description = "The channel is stopped or disabled", body = crate::api_doc::ErrorAnswer),
        (status = 504, description = "The script ran past the channel's timeout", body = crate::api_doc::ErrorAnswer),
    )
)]
pub async fn api(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(params): Path<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let code = params
        .into_iter()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v)
        .unwrap_or_default();
    serve(app, peer, &request_id, code, req).await
}

/// A channel API request on the hot path (no router, no middleware stack:
/// the admin guard does not apply), with panics caught as in the router.
pub async fn api_fast(
    state: Arc<AppState>,
    peer: SocketAddr,
    code: String,
    req: Request,
) -> Response {
    use futures_util::FutureExt;
    if let Some(e) = framing_error(&req, state.config.max_header_bytes) {
        discard(req.into_body());
        return e.into_response();
    }
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    // Boxed: the script run's state is large, and unboxed it would be copied
    // each time a future around it (the catcher, the request layer) is moved.
    std::panic::AssertUnwindSafe(Box::pin(serve(state, peer, &request_id, code, req)))
        .catch_unwind()
        .await
        .unwrap_or_else(crate::telemetry::panicked)
}

/// The channel code of a `/channels/{code}/api[/…]` path, when the code needs no
/// percent-decoding: such requests skip the router (the server's hot path).
pub fn api_route(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/channels/")?;
    let (code, rest) = rest.split_once('/')?;
    let after = rest.strip_prefix("api")?;
    let plain = !code.is_empty() && !code.contains('%');
    (plain && (after.is_empty() || after.starts_with('/'))).then_some(code)
}

/// Serves a channel API request: the recv script's answer, or the error of the contract.
pub async fn serve(
    app: Arc<AppState>,
    peer: SocketAddr,
    request_id: &str,
    code: String,
    req: Request,
) -> Response {
    let outcome = serve_api(&app, &code, peer, request_id.to_owned(), req).await;
    tag_channel(
        known(&outcome),
        code,
        outcome.unwrap_or_else(IntoResponse::into_response),
    )
}

/// Marks a response with its channel for the log line and metrics (known channels only,
/// so unknown codes cannot blow up the metric labels).
pub fn tag_channel(known: bool, code: String, mut response: Response) -> Response {
    if known {
        response.extensions_mut().insert(ChannelTag(code));
    }
    response
}

/// Whether a handler's outcome still names a known channel.
pub fn known<T>(outcome: &Result<T, AppError>) -> bool {
    !matches!(outcome, Err(AppError::UnknownChannel))
}

async fn serve_api(
    app: &Arc<AppState>,
    code: &str,
    peer: SocketAddr,
    request_id: String,
    req: Request,
) -> Result<Response, AppError> {
    let (parts, body) = req.into_parts();
    let admitted = admit(app, code, peer, &parts.headers, parts.uri.query()).and_then(|caller| {
        let script = caller
            .channel
            .script_for(ScriptField::Recv)
            .and_then(|code| caller.snapshot.scripts.get(code).cloned())
            .ok_or(AppError::NoScript)?;
        Ok((caller, script))
    });
    let (caller, script) = match admitted {
        Ok(ok) => ok,
        Err(e) => {
            discard(body);
            return Err(e);
        }
    };
    let channel = caller.channel.clone();
    let body = read_body(app, &parts.headers, body).await?;
    let body = String::from_utf8(body.to_vec()).map_err(|_| AppError::UnsupportedBody)?;
    // A channel with `opts.record` keeps the request (without credentials) and its answer.
    let started = std::time::Instant::now();
    let keep = channel.doc.opts.record.unwrap_or(0);
    let mut recorded = (keep > 0).then(|| {
        (
            parts.method.to_string(),
            sub_path(parts.uri.path()).to_owned(),
            auth::strip_token(parts.uri.query().unwrap_or("")),
            parts.headers.clone(),
            body.clone(),
            script.version.clone(),
        )
    });
    let mut record = |answer: crate::dev::recordings::Answer| {
        if let Some((method, path, query, headers, body, version)) = recorded.take() {
            let rec = crate::dev::recordings::Recording::Http(Box::new(
                crate::dev::recordings::HttpRecording {
                    id: request_id.clone(),
                    at: std::time::SystemTime::now(),
                    method,
                    path,
                    query,
                    headers,
                    body,
                    answer,
                    duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                    version,
                },
            ));
            app.recorder.keep(channel.code(), keep, rec);
        }
    };

    let params: Vec<rhai::ImmutableString> = vec![
        parts.method.as_str().into(),
        sub_path(parts.uri.path()).into(),
        auth::strip_token(parts.uri.query().unwrap_or("")).into(),
        body.into(),
        // Built only when needed: by the inbox below, or by the script's startparam(5).
        rhai::ImmutableString::new(),
        crate::net::ip_text(caller.sender).into(),
        channel.code().into(),
        request_id.as_str().into(),
    ];
    if !channel.doc.opts.issync {
        // The durable inbox: committed before the 202; the channel's queue runs it.
        let mut texts: Vec<String> = params.iter().map(|p| p.to_string()).collect();
        texts[4] = headers_json(&parts.headers);
        let stored =
            crate::jobs::create_recv(app, channel.code(), &request_id, &texts, &caller.identity)
                .await
                .map_err(|e| AppError::store(&format!("inbox of {}", channel.code()), &e))?;
        if stored == crate::jobs::Inbox::Full {
            return Err(AppError::Full(
                "inbox_full",
                format!(
                    "the channel's inbox holds {} requests waiting to run (inbox_max); try again later",
                    app.config.inbox_max
                ),
            ));
        }
        let body = serde_json::json!({ "request_id": request_id });
        record(crate::dev::recordings::Answer::Json(serde_json::json!({
            "status": 202, "content_type": "application/json", "headers": {}, "body": body,
        })));
        return Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response());
    }
    let parent = parts
        .extensions
        .get::<crate::trace::Current>()
        .map(|c| c.0.clone());
    let mut span = crate::trace::script_span(&channel, &request_id, parent.as_ref());
    let ctx = RunContext {
        channel: channel.clone(),
        request_id: request_id.clone(),
        identity: caller.identity,
        params,
        scripts: caller.snapshot.scripts.clone(),
        host: app.clone(),
        job: None,
        lazy: Some(LazyParam::new(5, move || headers_json(&parts.headers))),
        trace: span.context().clone(),
    };
    let run = app
        .engine
        .run(script, ctx, channel.timeout, RECV_OUTPUTS)
        .await;
    if let Err(e) = &run {
        span.fail(|| e.to_string());
    }
    drop(span);
    let answer = run
        .map_err(|e| script_failure(app, &channel, &request_id, e))
        .and_then(|outputs| {
            http_answer(&outputs)
                .map_err(|e| script_failure(app, &channel, &request_id, RunError::Failed(e)))
        });
    if keep > 0 {
        record(match &answer {
            Ok(a) => crate::dev::recordings::Answer::Http(a.clone()),
            Err(e) => {
                let (status, code) = e.status_and_code();
                let mut body = serde_json::json!({ "error": code });
                if let AppError::Script(Some(m)) = e {
                    body["message"] = m.clone().into();
                }
                crate::dev::recordings::Answer::Json(serde_json::json!({
                    "status": status.as_u16(), "content_type": "application/json",
                    "headers": {}, "body": body,
                }))
            }
        });
    }
    answer.map(HttpAnswer::into_response)
}

/// `POST /channels/{code}/jobs/{id}/result` (channel credentials): the external
/// system's answer to a waiting send job.
#[utoipa::path(
    post, path = "/channels/{code}/jobs/{id}/result", tag = "channel",
    params(
        ("code" = String, Path, description = "The channel code"),
        ("id" = String, Path, description = "The send job waiting for this answer"),
    ),
    security(("channel_bearer" = []), ("channel_query" = [])),
    request_body(content = crate::api_doc::JobResultIn),
    responses(
        (status = 200, description = "Taken: the job's new state", body = crate::api_doc::JobResultTaken),
        (status = 400, description = "Not JSON, or success is not a boolean", body = crate::api_doc::ErrorAnswer),
        (status = 409, description = "The job is not waiting", body = crate::api_doc::ErrorAnswer),
    )
)]
pub async fn job_result(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((code, id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let outcome = async {
        let (parts, body) = req.into_parts();
        if let Err(e) = admit(&app, &code, peer, &parts.headers, parts.uri.query()) {
            discard(body);
            return Err(e);
        }
        let bytes = read_body(&app, &parts.headers, body).await?;
        let answer: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| AppError::BadRequest(format!("the body is not JSON: {e}")))?;
        let success = answer["success"]
            .as_bool()
            .ok_or_else(|| AppError::BadRequest("success must be true or false".into()))?;
        let reason = answer["reason"].as_str().map(str::to_owned);
        let data = answer.get("data").cloned().unwrap_or_default();
        let done = crate::jobs::callback(&app, &code, &id, success, reason, data)
            .await
            .map_err(|e| AppError::store("job result", &e))?;
        match done {
            crate::jobs::Callback::Done(state) => {
                Ok(axum::Json(serde_json::json!({ "id": id, "state": state })).into_response())
            }
            crate::jobs::Callback::Unknown => Err(AppError::Missing(
                "unknown_job",
                format!("no job {id:?} on channel {code:?}"),
            )),
            crate::jobs::Callback::NotWaiting(state) => Err(AppError::Conflict(
                "job_not_waiting",
                format!("job {id:?} is {state}, not waiting"),
            )),
        }
    }
    .await;
    tag_channel(
        known(&outcome),
        code,
        outcome.unwrap_or_else(IntoResponse::into_response),
    )
}

/// `POST /channels/{code}/send` (admin credentials): the body is the data of a new send job.
#[utoipa::path(
    post, path = "/channels/{code}/send", tag = "jobs",
    params(
        ("code" = String, Path, description = "The channel code"),
        ("tag" = Option<String>, Query, description = "A business key of the job; repeatable", min_length = 1, max_length = 256),
    ),
    security(("admin" = [])),
    request_body(content = Option<serde_json::Value>, description = "The data of the send job: any JSON; empty is null"),
    responses(
        (status = 202, description = "Queued", body = crate::api_doc::JobAccepted),
        (status = 400, description = "Not JSON, or a bad tag", body = crate::api_doc::ErrorAnswer),
        (status = 404, description = "No such channel", body = crate::api_doc::ErrorAnswer),
        (status = 501, description = "The channel has no send script", body = crate::api_doc::ErrorAnswer),
    )
)]
pub async fn send(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
    req: Request,
) -> Response {
    let outcome = async {
        let (parts, body) = req.into_parts();
        let bytes = read_body(&app, &parts.headers, body).await?;
        let data: serde_json::Value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| AppError::BadRequest(format!("the body is not JSON: {e}")))?
        };
        // `?tag=T`, repeatable: the job's business keys.
        let tags: Vec<String> = crate::auth::query_pairs(parts.uri.query().unwrap_or(""))
            .filter(|(k, _)| k == "tag")
            .map(|(_, v)| v.to_string())
            .collect();
        match crate::jobs::create_send(&app, &code, &data, &tags).await {
            Ok(id) => Ok((
                StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({ "job_id": id })),
            )
                .into_response()),
            Err(crate::jobs::CreateError::UnknownChannel(_)) => Err(AppError::UnknownChannel),
            Err(crate::jobs::CreateError::NoScript(_)) => Err(AppError::NoScript),
            Err(crate::jobs::CreateError::BadTags(m)) => Err(AppError::BadRequest(m)),
            Err(crate::jobs::CreateError::Store(e)) => Err(AppError::store("send job", &e)),
        }
    }
    .await;
    tag_channel(
        known(&outcome),
        code,
        outcome.unwrap_or_else(IntoResponse::into_response),
    )
}

/// Logs a failed run and turns it into the answer of the contract.
pub fn script_failure(
    app: &AppState,
    channel: &Channel,
    request_id: &str,
    err: RunError,
) -> AppError {
    match err {
        RunError::Timeout => {
            tracing::warn!(channel = %channel.code(), request_id, timeout_s = channel.timeout.as_secs(), "script timed out");
            AppError::Timeout
        }
        RunError::Failed(message) | RunError::Fail(message) => {
            tracing::error!(channel = %channel.code(), request_id, "script error: {message}");
            AppError::Script(app.config.expose_script_errors.then_some(message))
        }
        RunError::ClusterUnavailable(message) => {
            tracing::warn!(channel = %channel.code(), request_id, "cluster unavailable: {message}");
            AppError::ClusterUnavailable
        }
        RunError::StoreFull(message) => {
            tracing::error!(channel = %channel.code(), request_id, "the store is full: {message}");
            AppError::InsufficientStorage("no space left for the store; try again later".into())
        }
    }
}

/// Reads the whole body, refusing more than `max_body_bytes` (413) and a body
/// that stalls longer than `body_timeout` between two chunks (408).
pub(crate) async fn read_body(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, AppError> {
    read_body_max(app, headers, body, app.config.max_body_bytes).await
}

/// A request body read by [`read_body`]: the one way a handler takes a body
/// (an extractor), so every route answers `413` past `max_body_bytes` and
/// `408` when the body stalls past `body_timeout`, before any work is done.
pub struct LimitedBody(pub Bytes);

impl axum::extract::FromRequest<Arc<AppState>> for LimitedBody {
    type Rejection = AppError;

    async fn from_request(req: Request, app: &Arc<AppState>) -> Result<Self, AppError> {
        let (parts, body) = req.into_parts();
        read_body(app, &parts.headers, body).await.map(LimitedBody)
    }
}

/// [`read_body`] with another limit (the files API uses `max_file_bytes`).
pub(crate) async fn read_body_max(
    app: &AppState,
    headers: &HeaderMap,
    mut body: Body,
    max: u64,
) -> Result<Bytes, AppError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        discard(body);
        return Err(AppError::PayloadTooLarge(max));
    }
    // Room for what arrives, not for what was declared (a declared megabyte
    // followed by one byte holds one byte).
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(16 * 1024) as usize);
    // body_timeout bounds the whole body, not each read.
    let deadline = tokio::time::Instant::now() + app.config.body_timeout;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(AppError::RequestTimeout),
            Ok(None) => return Ok(Bytes::from(buf)),
            Ok(Some(Err(e))) => {
                return Err(AppError::BadRequest(format!("cannot read the body: {e}")))
            }
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if (buf.len() + data.len()) as u64 > max {
                        discard(body);
                        return Err(AppError::PayloadTooLarge(max));
                    }
                    buf.extend_from_slice(data);
                }
            }
        }
    }
}

/// Reads and drops what is left of a refused request's body in the background
/// (bounded), so the client receives the answer instead of a connection reset.
pub(crate) fn discard(mut body: Body) {
    const MAX_DRAIN: usize = 16 * 1024 * 1024;
    const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
    tokio::spawn(async move {
        let mut drained = 0;
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        while drained < MAX_DRAIN {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => drained += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    });
}

/// The raw path after `/channels/{code}/api`, e.g. `/orders/42`, or `""`.
pub fn sub_path(path: &str) -> &str {
    path.strip_prefix("/channels/")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(_, after)| after.strip_prefix("api"))
        .unwrap_or("")
}

/// Request headers as `startparam(5)` gives them: JSON, the credential left out.
pub fn headers_json(headers: &HeaderMap) -> String {
    serde_json::Value::Object(crate::headers::to_json(
        headers,
        crate::headers::HIDDEN_FROM_SCRIPTS,
    ))
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn api_routes_are_recognised_without_the_router() {
        assert_eq!(api_route("/channels/orders/api"), Some("orders"));
        assert_eq!(api_route("/channels/orders/api/"), Some("orders"));
        assert_eq!(api_route("/channels/orders/api/a/b"), Some("orders"));
        assert_eq!(api_route("/channels/orders/apis"), None);
        assert_eq!(api_route("/channels/orders/ws"), None);
        assert_eq!(api_route("/channels//api"), None);
        assert_eq!(
            api_route("/channels/ord%65rs/api"),
            None,
            "decoded by the router"
        );
        assert_eq!(api_route("/channels/orders/send"), None);
        assert_eq!(api_route("/admin/channels/api"), None);
    }

    #[test]
    fn sub_path_is_what_follows_api() {
        assert_eq!(sub_path("/channels/orders/api"), "");
        assert_eq!(sub_path("/channels/orders/api/orders/42"), "/orders/42");
        assert_eq!(sub_path("/channels/orders/api/"), "/");
    }

    #[test]
    fn headers_are_lower_case_without_authorization() {
        let mut h = HeaderMap::new();
        h.insert("X-Thing", HeaderValue::from_static("a"));
        h.append("x-thing", HeaderValue::from_static("b"));
        h.insert("authorization", HeaderValue::from_static("Bearer secret"));
        assert_eq!(headers_json(&h), r#"{"x-thing":"a, b"}"#);
    }
}
