//! `/admin`: channels, scripts, jobs and live views through the API, with
//! secrets masked; the guard that admits admin callers and console sessions.
//!
//! Every change is written to its file atomically (temporary file, fsync,
//! rename, fsync of the folder) and then loaded by the same reload the file
//! watcher runs, so the API and hand edits go one way. Changes are
//! serialised by [`AppState::admin_lock`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use crate::disk::{sync_dir, write_atomic};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::api_doc::*;
use crate::authoring;
use crate::channel::{self, Channel, ChannelDoc, ValidationContext};
use crate::error::AppError;
use crate::registry::{FileKind, Snapshot};
use crate::script::lint::Finding;
use crate::script::CompileError;
use crate::AppState;

mod channels;
mod jobs;
mod live;
mod scripts;
mod secrets;
mod versions;

pub use crate::channel::{mask_doc, masked, MASK, TOKEN_FIELDS as SECRET_FIELDS};

pub use channels::join_cluster_states;
pub use secrets::follow as follow_secrets;

/// The questions other nodes ask of the admin API's parts (cluster mode).
pub fn answer_questions(app: &Arc<AppState>) {
    channels::answer_questions(app);
    live::answer_questions(app);
}

/// The `/admin` routes (authentication is [`guard`]), each registered from
/// its handler's description (SPEC §18).
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(channels::list_channels, channels::create_channel))
        .routes(routes!(
            channels::get_channel,
            channels::replace_channel,
            channels::delete_channel
        ))
        .routes(routes!(channels::stop_channel))
        .routes(routes!(channels::start_channel))
        .routes(routes!(channels::reveal_token, channels::regenerate_token))
        .routes(routes!(channels::queue_to_production))
        .routes(routes!(scripts::list_scripts))
        .routes(routes!(
            scripts::get_script,
            scripts::put_script,
            scripts::delete_script
        ))
        .routes(routes!(scripts::check_script))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(jobs::retry_jobs))
        .routes(routes!(jobs::list_queues))
        .routes(routes!(live::list_connections))
        .routes(routes!(live::post_event))
        .routes(routes!(live::stream))
        .routes(routes!(live::overview))
        .routes(routes!(versions::channel_versions))
        .routes(routes!(versions::channel_version))
        .routes(routes!(versions::channel_diff))
        .routes(routes!(versions::channel_restore))
        .routes(routes!(versions::script_versions))
        .routes(routes!(versions::script_version))
        .routes(routes!(versions::script_diff))
        .routes(routes!(versions::script_restore))
        .routes(routes!(versions::audit_log))
        .routes(routes!(secrets::list_secrets))
        .routes(routes!(secrets::put_secret, secrets::delete_secret))
}

/// Refuses every `/admin` request without admin credentials (401), before routing.
pub async fn guard(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if crate::auth::admin_only(path) {
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
            crate::audit::identified(crate::audit::by_of(&session.user));
            let mut req = req;
            req.extensions_mut().insert(role);
            return next.run(req).await;
        }
        let sender = crate::net::sender_addr(peer.ip(), req.headers(), &app.config.trusted_proxies);
        match app
            .auth
            .admin_caller(sender, req.headers(), req.uri().query())
        {
            Ok(identity) => crate::audit::identified(crate::audit::by_of(&identity.user_id)),
            Err(e) => return e.into_response(),
        }
    }
    next.run(req).await
}

/// What a console session may do: read anything; change things only as an
/// admin, and only with the session's CSRF token (SameSite=Strict already
/// keeps the cookie off other sites' requests; the token is the second lock).
pub(super) fn session_may(
    session: &crate::console::Session,
    req: &Request,
) -> Result<(), AppError> {
    // `POST /admin/check` compiles what it is sent and saves nothing: a read.
    let reads = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) || req.uri().path() == "/admin/check";
    if reads {
        return Ok(());
    }
    session.check_csrf(req.headers())?;
    if session.role != crate::console::Role::Admin {
        return Err(AppError::Forbidden(
            "read_only",
            "a viewer sees everything and changes nothing".into(),
        ));
    }
    Ok(())
}

/// The warnings of the authoring checks for a channel, or for the channels
/// that use a script as their recv script.
pub(super) fn warnings_of(snapshot: &Snapshot, kind: FileKind, code: &str) -> Vec<Finding> {
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

pub(super) fn status_of(snapshot: &Snapshot, kind: FileKind, code: &str) -> LoadStatus {
    let warnings = warnings_of(snapshot, kind, code);
    let mut status = status_error(snapshot, kind, code);
    if !warnings.is_empty() {
        status.warnings = Some(warnings);
    }
    status
}

pub(super) fn status_error(snapshot: &Snapshot, kind: FileKind, code: &str) -> LoadStatus {
    let Some(e) = snapshot.error(kind, code) else {
        return LoadStatus {
            ok: true,
            error: None,
            error_at: None,
            serving: None,
            warnings: None,
        };
    };
    let serving = match kind {
        FileKind::Script => snapshot
            .scripts
            .get(code)
            .is_some_and(|s| s.compiled.is_ok()),
        FileKind::Channel => snapshot.channel(code).is_some(),
    };
    LoadStatus {
        ok: false,
        error: Some(e.message.clone()),
        error_at: Some(e.since.clone()),
        serving: Some(
            if serving {
                "the last good version"
            } else {
                "nothing: it has not loaded since the server started"
            }
            .into(),
        ),
        warnings: None,
    }
}

pub(super) fn now() -> String {
    channel::rfc3339(std::time::SystemTime::now())
}

pub(super) fn doc_bytes(doc: &ChannelDoc) -> Result<Vec<u8>, AppError> {
    let mut bytes = serde_json::to_vec_pretty(doc).map_err(|_| AppError::Internal)?;
    bytes.push(b'\n');
    Ok(bytes)
}

pub(super) fn channel_file(app: &AppState, code: &str) -> PathBuf {
    channel::file_path(&app.config.channels, code)
}

pub(super) fn script_file(app: &AppState, code: &str) -> PathBuf {
    app.config.scripts.join(format!("{code}.rhai"))
}

/// The query parameters of an admin listing, refusing one it does not know
/// (a misspelt filter must not silently list everything).
pub fn listing_params(uri: &Uri, allowed: &[&str]) -> Result<HashMap<String, String>, AppError> {
    let mut out = HashMap::new();
    for (k, v) in crate::auth::query_pairs(uri.query().unwrap_or("")) {
        if !allowed.contains(&k.as_ref()) {
            return Err(AppError::BadRequest(if allowed.is_empty() {
                format!("unknown query parameter {k:?}: this listing takes none")
            } else {
                format!(
                    "unknown query parameter {k:?}; the filters are {}",
                    allowed.join(", ")
                )
            }));
        }
        out.insert(k.into_owned(), v.into_owned());
    }
    Ok(out)
}

pub(super) fn count_change(kind: &'static str, action: &'static str) {
    metrics::counter!("switchyard_admin_changes_total", "kind" => kind, "action" => action)
        .increment(1);
}

/// Keeps the version (by the request's caller), writes `bytes` to the file of
/// `kind`/`code` atomically (`None`: removes it), then reloads; returns the
/// new snapshot and the version numbers (also noted for the audit entry).
pub(super) async fn write_and_reload(
    app: &Arc<AppState>,
    kind: FileKind,
    code: &str,
    bytes: Option<Vec<u8>>,
    restored: bool,
) -> Result<(Arc<Snapshot>, crate::backend::Versioned), AppError> {
    let (app, code, by) = (app.clone(), code.to_owned(), crate::audit::actor());
    let (snapshot, versioned) = tokio::task::spawn_blocking(move || {
        let versioned = crate::versions::write(&app, kind, &code, bytes, restored, by)?;
        Ok::<_, AppError>((crate::reload::reload_now(&app).snapshot, versioned))
    })
    .await
    .map_err(|_| AppError::Internal)??;
    crate::audit::versions(versioned);
    Ok((snapshot, versioned))
}
