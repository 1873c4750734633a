//! `/admin`: channels and scripts through the API, with secrets masked.
//!
//! Every change is written to its file atomically (temporary file, fsync,
//! rename, fsync of the folder) and then loaded by the same reload the file
//! watcher runs, so the API and hand edits go one way. Changes are
//! serialised by [`AppState::admin_lock`].

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::authoring;
use crate::channel::{self, Channel, ChannelDoc, ValidationContext};
use crate::error::AppError;
use crate::registry::{FileKind, Snapshot};
use crate::script::lint::Finding;
use crate::script::CompileError;
use crate::AppState;

/// Shown instead of a secret; sent back in a PUT, it keeps the stored secret.
pub const MASK: &str = "***";
const SECRET_FIELDS: [&str; 4] = [
    "token_local",
    "token_remote",
    "token_remote2",
    "token_remote_test",
];

/// The `/admin` routes (authentication is [`guard`]).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/channels", get(list_channels).post(create_channel))
        .route(
            "/admin/channels/{code}",
            get(get_channel).put(replace_channel).delete(delete_channel),
        )
        .route(
            "/admin/channels/{code}/stop",
            axum::routing::post(stop_channel),
        )
        .route(
            "/admin/channels/{code}/start",
            axum::routing::post(start_channel),
        )
        .route("/admin/scripts", get(list_scripts))
        .route("/admin/connections", get(list_connections))
        .route("/admin/jobs", get(list_jobs))
        .route("/admin/queues", get(list_queues))
        .route(
            "/admin/queues/{name}/production",
            axum::routing::post(queue_to_production),
        )
        .route("/admin/jobs/{id}", get(get_job))
        .route("/admin/jobs/{id}/retry", axum::routing::post(retry_job))
        .route(
            "/admin/scripts/{code}",
            get(get_script).put(put_script).delete(delete_script),
        )
        .route(
            "/admin/channels/{code}/token",
            get(reveal_token).post(regenerate_token),
        )
        .route("/admin/check", axum::routing::post(check_script))
        .route("/admin/stream", get(stream))
        .route("/admin/overview", get(overview))
}

/// Refuses every `/admin` request without admin credentials (401), before routing.
pub async fn guard(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let send =
        path.starts_with("/channels/") && path.ends_with("/send") && path.matches('/').count() == 3;
    if path == "/admin" || path.starts_with("/admin/") || path == "/events" || send {
        // A console session (cookie) when no credential is given in the header.
        let bearer = req.headers().contains_key(header::AUTHORIZATION);
        if let Some((_, session)) = (!bearer)
            .then(|| crate::console::session_of(&app, req.headers()))
            .flatten()
        {
            if let Err(e) = session_may(&session, &req) {
                return e.into_response();
            }
            let role = session.role;
            let mut req = req;
            req.extensions_mut().insert(role);
            return next.run(req).await;
        }
        let sender = crate::net::sender_addr(peer.ip(), req.headers(), &app.config.trusted_proxies);
        if let Err(e) = app
            .auth
            .admin_caller(sender, req.headers(), req.uri().query())
        {
            return e.into_response();
        }
    }
    next.run(req).await
}

/// What a console session may do: read anything; change things only as an
/// admin, and only with the session's CSRF token (SameSite=Strict already
/// keeps the cookie off other sites' requests; the token is the second lock).
fn session_may(session: &crate::console::Session, req: &Request) -> Result<(), AppError> {
    let reads = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if reads {
        return Ok(());
    }
    let sent = req
        .headers()
        .get(crate::console::session::CSRF_HEADER)
        .and_then(|v| v.to_str().ok());
    if !sent.is_some_and(|t| crate::auth::secret_eq(t, &session.csrf)) {
        return Err(AppError::Forbidden(
            "csrf",
            "a change needs the session's X-CSRF-Token".into(),
        ));
    }
    if session.role != crate::console::Role::Admin {
        return Err(AppError::Forbidden(
            "read_only",
            "a viewer sees everything and changes nothing".into(),
        ));
    }
    Ok(())
}

/// A channel as the API shows it: secrets masked, plus its load `status`,
/// its `state` (running, stopped, disabled) and whether its `credential` is
/// still valid. None of the three is stored; POST and PUT ignore them.
fn shown(app: &AppState, channel: &Channel, snapshot: &Snapshot) -> Value {
    let mut doc = serde_json::to_value(&channel.doc).unwrap_or_default();
    for field in SECRET_FIELDS {
        if doc[field].as_str().is_some_and(|s| !s.is_empty()) {
            doc[field] = MASK.into();
        }
    }
    doc["status"] = status_of(snapshot, FileKind::Channel, channel.code());
    doc["state"] = state_of(app, channel).into();
    doc["credential"] = if channel.credential_expired() {
        "expired"
    } else {
        "valid"
    }
    .into();
    doc
}

fn state_of(app: &AppState, channel: &Channel) -> &'static str {
    if channel.doc.opts.disabled {
        "disabled"
    } else if app.stopped.contains(channel.code()) {
        "stopped"
    } else {
        "running"
    }
}

/// A disabled channel is neither stopped nor started: `409 channel_disabled`.
fn refuse_disabled(channel: &Channel) -> Result<(), AppError> {
    if channel.doc.opts.disabled {
        return Err(AppError::Conflict(
            "channel_disabled",
            format!(
                "channel {:?} is disabled (opts.disabled); enable it first",
                channel.code()
            ),
        ));
    }
    Ok(())
}

/// `POST /admin/channels/{code}/stop` and `/start`: an operator pauses a
/// channel (nothing runs, nothing queued is lost) or resumes it. Not stored.
async fn stop_channel(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<Json<Value>, AppError> {
    set_stopped(&app, code, true)
}

async fn start_channel(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<Json<Value>, AppError> {
    set_stopped(&app, code, false)
}

fn set_stopped(app: &AppState, code: String, stop: bool) -> Result<Json<Value>, AppError> {
    let snapshot = app.registry.snapshot();
    let channel = snapshot.channel(&code).ok_or(AppError::UnknownChannel)?;
    refuse_disabled(channel)?;
    if stop {
        app.stopped.insert(code.clone());
        app.connections.close_channel(
            &code,
            crate::connections::CLOSE_GOING_AWAY,
            "channel stopped",
        );
    } else {
        app.stopped.remove(&code);
        crate::jobs::resume(app, &code);
    }
    let state = state_of(app, channel);
    tracing::info!(channel = %code, state, "channel {}", if stop { "stopped" } else { "started" });
    Ok(Json(json!({ "code": code, "state": state })))
}

/// The warnings of the authoring checks for a channel, or for the channels
/// that use a script as their recv script.
fn warnings_of(snapshot: &Snapshot, kind: FileKind, code: &str) -> Vec<Finding> {
    match kind {
        FileKind::Channel => snapshot
            .channel(code)
            .map(|c| authoring::channel_warnings(c, &snapshot.scripts))
            .unwrap_or_default(),
        FileKind::Script => {
            let mut users: Vec<&Arc<Channel>> = snapshot
                .channels
                .values()
                .filter(|c| c.doc.recv_svcscriptcode.as_deref() == Some(code))
                .collect();
            users.sort_by(|a, b| a.code().cmp(b.code()));
            users
                .into_iter()
                .flat_map(|c| authoring::channel_warnings(c, &snapshot.scripts))
                .collect()
        }
    }
}

fn status_of(snapshot: &Snapshot, kind: FileKind, code: &str) -> Value {
    let warnings = warnings_of(snapshot, kind, code);
    let mut status = status_error(snapshot, kind, code);
    if !warnings.is_empty() {
        status["warnings"] = warnings
            .into_iter()
            .map(|w| json!({"line": w.line, "col": w.col, "message": w.message}))
            .collect();
    }
    status
}

fn status_error(snapshot: &Snapshot, kind: FileKind, code: &str) -> Value {
    match snapshot.error(kind, code) {
        None => json!({ "ok": true }),
        Some(e) => {
            let serving = match kind {
                FileKind::Script => snapshot
                    .scripts
                    .get(code)
                    .is_some_and(|s| s.compiled.is_ok()),
                FileKind::Channel => snapshot.channel(code).is_some(),
            };
            json!({
                "ok": false,
                "error": e.message,
                "error_at": e.since,
                "serving": if serving {
                    "the last good version"
                } else {
                    "nothing: it has not loaded since the server started"
                },
            })
        }
    }
}

async fn list_channels(
    State(app): State<Arc<AppState>>,
    uri: Uri,
) -> Result<Json<Value>, AppError> {
    listing_params(&uri, &[])?;
    let snapshot = app.registry.snapshot();
    let mut codes: Vec<&String> = snapshot.channels.keys().collect();
    codes.sort();
    let channels: Vec<Value> = codes
        .into_iter()
        .map(|c| shown(&app, &snapshot.channels[c], &snapshot))
        .collect();
    Ok(Json(json!({ "channels": channels })))
}

async fn get_channel(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<Json<Value>, AppError> {
    let snapshot = app.registry.snapshot();
    match snapshot.channel(&code) {
        Some(ch) => Ok(Json(shown(&app, ch, &snapshot))),
        None => Err(match snapshot.error(FileKind::Channel, &code) {
            Some(e) => {
                AppError::Missing("unknown_channel", format!("does not load: {}", e.message))
            }
            None => AppError::UnknownChannel,
        }),
    }
}

/// Parses an API body into a document; `status` (as shown by GET) is ignored.
fn parse_doc(bytes: &[u8]) -> Result<ChannelDoc, AppError> {
    let mut value: Value = serde_json::from_slice(bytes)
        .map_err(|e| AppError::InvalidChannel(format!("the body is not JSON: {e}")))?;
    let Some(object) = value.as_object_mut() else {
        return Err(AppError::InvalidChannel(
            "the body must be a JSON object".into(),
        ));
    };
    // What GET adds and the document does not hold.
    for shown_only in ["status", "state", "credential"] {
        object.remove(shown_only);
    }
    ChannelDoc::parse(&value.to_string()).map_err(|e| AppError::InvalidChannel(e.to_string()))
}

fn validate(app: &AppState, doc: ChannelDoc, snapshot: &Snapshot) -> Result<Channel, AppError> {
    let names = snapshot.scripts.keys().cloned().collect();
    let ctx = ValidationContext {
        solution_types: &app.config.solution_types,
        scripts: &names,
    };
    let channel = doc
        .validate(None, &ctx)
        .map_err(|e| AppError::InvalidChannel(e.to_string()))?;
    let taken = snapshot
        .channels
        .values()
        .find(|other| other.id == channel.id && other.code() != channel.code());
    if let Some(other) = taken {
        return Err(AppError::InvalidChannel(format!(
            "id: {} is already the id of channel {:?}",
            channel.id,
            other.code()
        )));
    }
    Ok(channel)
}

fn now() -> String {
    channel::rfc3339(std::time::SystemTime::now())
}

async fn create_channel(
    State(app): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, AppError> {
    let bytes = body_of(&app, req).await?;
    let mut doc = parse_doc(&bytes)?;
    for field in SECRET_FIELDS {
        if secret_mut(&mut doc, field).as_deref() == Some(MASK) {
            return Err(AppError::InvalidChannel(format!(
                "{field}: {MASK:?} is the mask shown by GET, not a secret"
            )));
        }
    }
    if doc.id.as_deref().is_none_or(str::is_empty) {
        doc.id = Some(uuid::Uuid::new_v4().to_string());
    }
    let stamp = now();
    doc.ext.insert("ct".into(), stamp.clone().into());
    doc.ext.insert("lwt".into(), stamp.into());

    let _serial = app.admin_lock.lock().await;
    let snapshot = app.registry.snapshot();
    if channel::valid_code(&doc.code) && channel_file(&app, &doc.code).exists() {
        return Err(AppError::Conflict(
            "channel_exists",
            format!("channel {:?} exists", doc.code),
        ));
    }
    let ch = validate(&app, doc, &snapshot)?;
    let code = ch.code().to_owned();
    let snapshot = write_and_reload(&app, channel_file(&app, &code), doc_bytes(&ch.doc)?).await?;
    count_change("channel", "create");
    let shown = snapshot.channel(&code).map(|c| shown(&app, c, &snapshot));
    Ok((StatusCode::CREATED, Json(shown.unwrap_or(Value::Null))).into_response())
}

async fn replace_channel(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
    req: Request,
) -> Result<Json<Value>, AppError> {
    let bytes = body_of(&app, req).await?;
    let mut doc = parse_doc(&bytes)?;
    if doc.code != code {
        return Err(AppError::InvalidChannel(format!(
            "code: {:?} does not match the path's {code:?}",
            doc.code
        )));
    }
    let _serial = app.admin_lock.lock().await;
    let snapshot = app.registry.snapshot();
    let stored = snapshot
        .channel(&code)
        .cloned()
        .ok_or(AppError::UnknownChannel)?;
    let mut stored_doc = stored.doc.clone();
    for field in SECRET_FIELDS {
        let slot = secret_mut(&mut doc, field);
        if slot.as_deref() == Some(MASK) {
            *slot = secret_mut(&mut stored_doc, field).take();
        }
    }
    doc.id = stored.doc.id.clone();
    let ct = stored
        .doc
        .ext
        .get("ct")
        .cloned()
        .unwrap_or_else(|| now().into());
    doc.ext.insert("ct".into(), ct);
    doc.ext.insert("lwt".into(), now().into());
    let ch = validate(&app, doc, &snapshot)?;
    let snapshot = write_and_reload(&app, channel_file(&app, &code), doc_bytes(&ch.doc)?).await?;
    count_change("channel", "update");
    let shown = snapshot.channel(&code).map(|c| shown(&app, c, &snapshot));
    Ok(Json(shown.unwrap_or(Value::Null)))
}

/// `GET /admin/channels/{code}/token`: the channel's `token_local`, shown on
/// demand (to an admin: a console viewer sees the mask only).
async fn reveal_token(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
    role: Option<axum::Extension<crate::console::Role>>,
) -> Result<Json<Value>, AppError> {
    if role.is_some_and(|r| r.0 != crate::console::Role::Admin) {
        return Err(AppError::Forbidden(
            "read_only",
            "a viewer does not see secrets".into(),
        ));
    }
    let snapshot = app.registry.snapshot();
    let channel = snapshot.channel(&code).ok_or(AppError::UnknownChannel)?;
    Ok(Json(json!({
        "code": code,
        "token_local": channel.doc.token_local.clone().unwrap_or_default(),
        "token_valid_until": channel.doc.opts.token_valid_until,
    })))
}

/// `POST /admin/channels/{code}/token`: a new random `token_local`, written as
/// a PUT would; the old one stops working at once (the reload closes the
/// websockets it admitted). The new token is in this answer only.
async fn regenerate_token(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<Json<Value>, AppError> {
    let _serial = app.admin_lock.lock().await;
    let snapshot = app.registry.snapshot();
    let channel = snapshot.channel(&code).ok_or(AppError::UnknownChannel)?;
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut doc = channel.doc.clone();
    doc.token_local = Some(token.clone());
    doc.ext.insert("lwt".into(), now().into());
    write_and_reload(&app, channel_file(&app, &code), doc_bytes(&doc)?).await?;
    count_change("channel", "update");
    tracing::info!(channel = %code, "token_local regenerated");
    Ok(Json(json!({ "code": code, "token_local": token })))
}

/// `POST /admin/check`: compiles the body (Rhai source) and runs the authoring
/// check without saving anything: `{"ok", "errors": [{line, col, message}]}`.
async fn check_script(
    State(app): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, AppError> {
    let source = String::from_utf8(body.to_vec()).map_err(|_| AppError::UnsupportedBody)?;
    let engine = app.engine.clone();
    let scripts = app.registry.snapshot().scripts.clone();
    let errors = tokio::task::spawn_blocking(move || match engine.compile(&source) {
        Err(e) => vec![json!({"line": e.line, "col": e.col, "message": e.message})],
        Ok(ast) => engine
            .unknown_calls(&ast, &scripts)
            .into_iter()
            .map(|f| json!({"line": f.line, "col": f.col, "message": f.message}))
            .collect(),
    })
    .await
    .map_err(|_| AppError::Internal)?;
    Ok(Json(json!({ "ok": errors.is_empty(), "errors": errors })))
}

/// `GET /admin/overview`: each channel's last hour, a bucket a minute
/// (requests, errors, p99), for the console's charts.
async fn overview(State(app): State<Arc<AppState>>, uri: Uri) -> Result<Json<Value>, AppError> {
    listing_params(&uri, &[])?;
    let mut codes: Vec<String> = app.registry.snapshot().channels.keys().cloned().collect();
    codes.sort();
    Ok(Json(json!({
        "bucket_secs": 60,
        "channels": crate::history::last_hour(&codes),
        "bytes_per_channel": crate::history::bytes_per_channel(),
    })))
}

/// `GET /admin/stream`: server-sent events of the server's activity
/// (`request`, `event`, `job`), one JSON object each, as they happen.
async fn stream() -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let rx = crate::activity::subscribe();
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let data = match rx.recv().await {
            Ok(text) => text.to_string(),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                json!({"type": "lagged", "missed": n}).to_string()
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(Event::default().data(data)), rx))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn delete_channel(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<StatusCode, AppError> {
    let _serial = app.admin_lock.lock().await;
    let path = channel_file(&app, &code);
    if !channel::valid_code(&code) || !path.exists() {
        return Err(AppError::UnknownChannel);
    }
    remove_and_reload(&app, path).await?;
    count_change("channel", "delete");
    Ok(StatusCode::NO_CONTENT)
}

async fn body_of(app: &AppState, req: Request) -> Result<axum::body::Bytes, AppError> {
    let (parts, body) = req.into_parts();
    crate::http::read_body(app, &parts.headers, body).await
}

fn secret_mut<'a>(doc: &'a mut ChannelDoc, field: &str) -> &'a mut Option<String> {
    match field {
        "token_local" => &mut doc.token_local,
        "token_remote" => &mut doc.token_remote,
        "token_remote2" => &mut doc.token_remote2,
        _ => &mut doc.token_remote_test,
    }
}

fn doc_bytes(doc: &ChannelDoc) -> Result<Vec<u8>, AppError> {
    let mut bytes = serde_json::to_vec_pretty(doc).map_err(|_| AppError::Internal)?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn channel_file(app: &AppState, code: &str) -> PathBuf {
    channel::file_path(&app.config.channels, code)
}

fn script_file(app: &AppState, code: &str) -> PathBuf {
    app.config.scripts.join(format!("{code}.rhai"))
}

/// The query parameters of an admin listing, refusing one it does not know
/// (a misspelt filter must not silently list everything).
pub fn listing_params(uri: &Uri, allowed: &[&str]) -> Result<HashMap<String, String>, AppError> {
    let mut out = HashMap::new();
    for (k, v) in crate::auth::query_pairs(uri.query().unwrap_or("")) {
        if !allowed.contains(&k.as_str()) {
            return Err(AppError::BadRequest(if allowed.is_empty() {
                format!("unknown query parameter {k:?}: this listing takes none")
            } else {
                format!(
                    "unknown query parameter {k:?}; the filters are {}",
                    allowed.join(", ")
                )
            }));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// The filters of `GET /admin/jobs`.
const JOB_FILTERS: &[&str] = &[
    "channel", "kind", "state", "queue", "test", "tag", "limit", "offset",
];

async fn list_jobs(State(app): State<Arc<AppState>>, uri: Uri) -> Result<Json<Value>, AppError> {
    let mut f = listing_params(&uri, JOB_FILTERS)?;
    let mut take = |k: &str| f.remove(k).filter(|s| !s.is_empty());
    let (channel, kind, state) = (take("channel"), take("kind"), take("state"));
    let (queue, tag) = (take("queue"), take("tag"));
    let test = match take("test").as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(AppError::BadRequest(format!(
                "test must be true or false, not {other:?}"
            )))
        }
    };
    let mut number = |k: &str| -> Result<Option<usize>, AppError> {
        match take(k) {
            None => Ok(None),
            Some(n) => n.parse::<usize>().map(Some).map_err(|_| {
                AppError::BadRequest(format!("{k} must be a whole number, not {n:?}"))
            }),
        }
    };
    let (limit, offset) = (number("limit")?, number("offset")?);
    if let Some(k) = &kind {
        if !crate::jobs::KINDS.contains(&k.as_str()) {
            return Err(AppError::BadRequest(format!(
                "kind must be one of {:?}",
                crate::jobs::KINDS
            )));
        }
    }
    if let Some(s) = &state {
        if !crate::jobs::STATES.contains(&s.as_str()) {
            return Err(AppError::BadRequest(format!(
                "state must be one of {:?}",
                crate::jobs::STATES
            )));
        }
    }
    let filter = crate::jobs::JobFilter {
        channel,
        kind,
        state,
        queue,
        test,
        tag,
        limit: limit.unwrap_or(100).clamp(1, 1000),
        offset: offset.unwrap_or(0),
    };
    let app2 = app.clone();
    let jobs = tokio::task::spawn_blocking(move || crate::jobs::list(&app2, &filter))
        .await
        .map_err(|_| AppError::Internal)?
        .map_err(|e| {
            tracing::error!("jobs: {e}");
            AppError::Internal
        })?;
    Ok(Json(json!({ "jobs": jobs })))
}

/// `POST /admin/queues/{name}/production`: every channel of the queue in test
/// mode goes to production, its document written as a PUT would; answers the
/// codes switched.
async fn queue_to_production(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    let _serial = app.admin_lock.lock().await;
    let snapshot = app.registry.snapshot();
    let mut switched = Vec::new();
    let mut writes = Vec::new();
    for channel in snapshot.channels.values() {
        if channel.queue() != name || !channel.test_mode() {
            continue;
        }
        let mut doc = channel.doc.clone();
        doc.opts.mode = Some("production".into());
        doc.ext.insert("lwt".into(), now().into());
        writes.push((channel_file(&app, channel.code()), doc_bytes(&doc)?));
        switched.push(channel.code().to_owned());
    }
    switched.sort();
    if !writes.is_empty() {
        let app2 = app.clone();
        tokio::task::spawn_blocking(move || {
            for (path, bytes) in &writes {
                write_atomic(path, bytes)
                    .map_err(|e| AppError::io("switching to production", &e))?;
            }
            crate::reload::reload_now(&app2);
            Ok::<_, AppError>(())
        })
        .await
        .map_err(|_| AppError::Internal)??;
        count_change("channel", "update");
    }
    Ok(Json(json!({ "queue": name, "switched": switched })))
}

/// `GET /admin/queues`: the job-processing queues, their channels and jobs by state.
async fn list_queues(State(app): State<Arc<AppState>>, uri: Uri) -> Result<Json<Value>, AppError> {
    listing_params(&uri, &[])?;
    let app2 = app.clone();
    tokio::task::spawn_blocking(move || crate::jobs::queues(&app2))
        .await
        .map_err(|_| AppError::Internal)?
        .map(Json)
        .map_err(|e| AppError::store("queues", &e))
}

async fn get_job(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let app2 = app.clone();
    let job = tokio::task::spawn_blocking(move || crate::jobs::get(&app2, &id))
        .await
        .map_err(|_| AppError::Internal)?
        .map_err(|e| {
            tracing::error!("jobs: {e}");
            AppError::Internal
        })?;
    job.map(Json)
        .ok_or_else(|| AppError::Missing("unknown_job", "no such job".into()))
}

async fn retry_job(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    match crate::jobs::retry(&app, &id).await {
        Err(e) => Err(AppError::store("job retry", &e)),
        Ok(Ok(job)) => Ok(Json(job)),
        Ok(Err(why)) if why == "unknown" => {
            Err(AppError::Missing("unknown_job", format!("no job {id:?}")))
        }
        Ok(Err(why)) if why == "schedule" => Err(AppError::Conflict(
            "job_not_retryable",
            "schedule runs are not retried; the next tick runs the script again".into(),
        )),
        Ok(Err(state)) => Err(AppError::Conflict(
            "job_not_retryable",
            format!("only failed or timed_out jobs are retried; this one is {state}"),
        )),
    }
}

async fn list_connections(
    State(app): State<Arc<AppState>>,
    uri: Uri,
) -> Result<Json<Value>, AppError> {
    listing_params(&uri, &[])?;
    Ok(Json(json!({ "connections": app.connections.describe() })))
}

/// `POST /events` (admin credentials): publishes `{"name", "data"}` as source `system`.
pub async fn post_event(
    State(app): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, AppError> {
    let bytes = body_of(&app, req).await?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| AppError::BadRequest(format!("the body is not JSON: {e}")))?;
    let name = body.get("name").and_then(Value::as_str).unwrap_or("");
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    let event = crate::events::Event::new("system", name, data).map_err(AppError::BadRequest)?;
    let id = event.id;
    app.events
        .publish(event)
        .await
        .map_err(|e| AppError::store("publishing", &e))?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id }))).into_response())
}

async fn list_scripts(State(app): State<Arc<AppState>>, uri: Uri) -> Result<Json<Value>, AppError> {
    listing_params(&uri, &[])?;
    let snapshot = app.registry.snapshot();
    let mut codes: Vec<&String> = snapshot.scripts.keys().collect();
    codes.sort();
    let scripts: Vec<Value> = codes
        .into_iter()
        .map(|code| {
            json!({
                "code": code,
                "status": status_of(&snapshot, FileKind::Script, code),
                "used_by": snapshot.channels_using(code),
            })
        })
        .collect();
    Ok(Json(json!({ "scripts": scripts })))
}

async fn get_script(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<Response, AppError> {
    let unknown = || AppError::Missing("unknown_script", format!("no script {code:?}"));
    if !channel::valid_code(&code) {
        return Err(unknown());
    }
    let path = script_file(&app, &code);
    // Never through a link out of the scripts folder (it is not loaded either).
    if !crate::registry::inside(&app.config.scripts, &path) {
        return Err(unknown());
    }
    let source = tokio::fs::read_to_string(path)
        .await
        .map_err(|_| unknown())?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        source,
    )
        .into_response())
}

async fn put_script(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
    req: Request,
) -> Result<Response, AppError> {
    if !channel::valid_code(&code) {
        return Err(AppError::BadRequest(format!(
            "{code:?} is not a valid script code (1 to 64 of A-Z a-z 0-9 _ . -)"
        )));
    }
    let (parts, body) = req.into_parts();
    let max = app.config.max_script_bytes as u64;
    let bytes = crate::http::read_body_max(&app, &parts.headers, body, max).await?;
    let source = String::from_utf8(bytes.to_vec()).map_err(|_| AppError::UnsupportedBody)?;
    // Compiled on a thread of its own (a large script takes seconds), outside
    // every lock; the reload below takes the result instead of compiling again.
    let ast = app
        .engine
        .compile_detached(source.clone())
        .await
        .map_err(AppError::Compile)?;
    let _serial = app.admin_lock.lock().await;
    // A call to a function that exists nowhere is refused like a syntax error.
    let unknown = app
        .engine
        .unknown_calls(&ast, &app.registry.snapshot().scripts);
    if let Some(first) = unknown.first() {
        let mut message = first.message.clone();
        for more in &unknown[1..] {
            message.push_str(&format!("; {}:{}: {}", more.line, more.col, more.message));
        }
        return Err(AppError::Compile(CompileError {
            line: first.line,
            col: first.col,
            message,
        }));
    }
    let path = script_file(&app, &code);
    let existed = path.exists();
    let snapshot = write_and_reload(&app, path, source.into_bytes()).await?;
    count_change("script", if existed { "update" } else { "create" });
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(json!({ "code": code, "status": status_of(&snapshot, FileKind::Script, &code) })),
    )
        .into_response())
}

async fn delete_script(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<StatusCode, AppError> {
    let _serial = app.admin_lock.lock().await;
    let path = script_file(&app, &code);
    if !channel::valid_code(&code) || !path.exists() {
        return Err(AppError::Missing(
            "unknown_script",
            format!("no script {code:?}"),
        ));
    }
    let users = app.registry.snapshot().channels_using(&code);
    if !users.is_empty() {
        return Err(AppError::Conflict(
            "script_in_use",
            format!(
                "script {code:?} is named by channel(s) {}",
                users.join(", ")
            ),
        ));
    }
    remove_and_reload(&app, path).await?;
    count_change("script", "delete");
    Ok(StatusCode::NO_CONTENT)
}

fn count_change(kind: &'static str, action: &'static str) {
    metrics::counter!("switchyard_admin_changes_total", "kind" => kind, "action" => action)
        .increment(1);
}

/// Writes `bytes` to `path` atomically, then reloads; returns the new snapshot.
async fn write_and_reload(
    app: &Arc<AppState>,
    path: PathBuf,
    bytes: Vec<u8>,
) -> Result<Arc<Snapshot>, AppError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        write_atomic(&path, &bytes).map_err(|e| {
            tracing::error!("cannot write {}: {e}", path.display());
            AppError::Internal
        })?;
        Ok(crate::reload::reload_now(&app).snapshot)
    })
    .await
    .map_err(|_| AppError::Internal)?
}

async fn remove_and_reload(app: &Arc<AppState>, path: PathBuf) -> Result<(), AppError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::remove_file(&path).map_err(|e| {
            tracing::error!("cannot remove {}: {e}", path.display());
            AppError::Internal
        })?;
        sync_dir(&path);
        crate::reload::reload_now(&app);
        Ok(())
    })
    .await
    .map_err(|_| AppError::Internal)?
}

/// Temporary file beside the target, fsync, rename over it, fsync the folder:
/// a reader sees the old file or the new one, never half of one.
pub fn write_atomic(path: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(FsPath::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_dir(path);
    Ok(())
}

fn sync_dir(path: &FsPath) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}
