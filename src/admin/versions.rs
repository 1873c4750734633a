//! `/admin/{channels,scripts}/{code}/versions`, `/diff`, `/restore` and
//! `/admin/audit` (SPEC §19).
//!
//! Each route exists twice (channels and scripts, described apart); the
//! handlers are thin and share the work below.

use super::*;
use crate::backend::AuditQuery;

/// Most audit entries one answer holds.
const MOST_ENTRIES: usize = 1000;

fn unknown_version(kind: FileKind, code: &str, n: u64) -> AppError {
    AppError::Missing(
        "unknown_version",
        format!(
            "{} {code:?} has no version {n} (pruned past versions_keep, or never made)",
            crate::versions::kind_name(kind)
        ),
    )
}

async fn versions_of(app: &AppState, kind: FileKind, code: &str) -> Result<Vec<Value>, AppError> {
    let list = app
        .versions
        .list(crate::versions::kind_name(kind), code)
        .await
        .map_err(|e| AppError::store("reading versions", &e))?;
    if list.is_empty() {
        return Err(match kind {
            FileKind::Channel => AppError::UnknownChannel,
            FileKind::Script => AppError::Missing("unknown_script", format!("no script {code:?}")),
        });
    }
    Ok(list)
}

async fn version(app: &AppState, kind: FileKind, code: &str, n: u64) -> Result<Value, AppError> {
    if n > i64::MAX as u64 {
        return Err(unknown_version(kind, code, n));
    }
    app.versions
        .get(crate::versions::kind_name(kind), code, n)
        .await
        .map_err(|e| AppError::store("reading a version", &e))?
        .ok_or_else(|| unknown_version(kind, code, n))
}

async fn list(app: &AppState, kind: FileKind, code: &str) -> Result<Json<Value>, AppError> {
    Ok(Json(
        json!({ "versions": versions_of(app, kind, code).await? }),
    ))
}

async fn one(app: &AppState, kind: FileKind, code: &str, n: &str) -> Result<Json<Value>, AppError> {
    // Not a number: no such version (the route's own 400 would be plain text).
    let n = n.parse::<u64>().map_err(|_| {
        AppError::Missing("unknown_version", format!("{n:?} is not a version number"))
    })?;
    let mut v = version(app, kind, code, n).await?;
    v["content"] = crate::versions::shown_content(kind, &v["content"]);
    Ok(Json(v))
}

async fn diff(
    app: &AppState,
    kind: FileKind,
    code: &str,
    uri: &Uri,
) -> Result<Json<Value>, AppError> {
    let params = listing_params(uri, &["from", "to"])?;
    let number = |name: &str| -> Result<Option<u64>, AppError> {
        params
            .get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    AppError::BadRequest(format!("{name}: {v:?} is not a version number"))
                })
            })
            .transpose()
    };
    let from = number("from")?.ok_or_else(|| {
        AppError::BadRequest("from: the version to compare from is needed".into())
    })?;
    let to = match number("to")? {
        Some(n) => n,
        None => versions_of(app, kind, code).await?[0]["number"]
            .as_u64()
            .unwrap_or(0),
    };
    let (a, b) = (
        version(app, kind, code, from).await?,
        version(app, kind, code, to).await?,
    );
    let text = |v: &Value| crate::versions::diff_text(kind, &v["content"]);
    let label = |n: u64| format!("{code} version {n}");
    Ok(Json(json!({
        "diff": crate::versions::unified_diff(&text(&a), &text(&b), &label(from), &label(to)),
    })))
}

fn restore_body(bytes: &[u8]) -> Result<u64, AppError> {
    serde_json::from_slice::<crate::api_doc::RestoreIn>(bytes)
        .map(|r| r.version)
        .map_err(|e| AppError::BadRequest(format!("the body is {{\"version\": N}}: {e}")))
}

/// Brings version `n` back: checked as a save would be (422 when it would
/// not load today), written as a new version of kind `restored`.
async fn restore(
    app: &Arc<AppState>,
    kind: FileKind,
    code: &str,
    n: u64,
) -> Result<Arc<Snapshot>, AppError> {
    let v = version(app, kind, code, n).await?;
    let Some(content) = v["content"].as_str().map(str::to_owned) else {
        return Err(AppError::Unloadable(
            "would_not_load",
            format!("version {n} is the deletion of {code:?}: restore a version before it"),
        ));
    };
    let _serial = app.admin_lock.lock().await;
    let snapshot = app.registry.snapshot();
    match kind {
        FileKind::Channel => {
            let doc = channels::parse_doc(content.as_bytes()).map_err(|e| would_not_load(n, e))?;
            if doc.code != code {
                return Err(would_not_load(
                    n,
                    AppError::InvalidChannel(format!("its code is {:?}", doc.code)),
                ));
            }
            channels::validate(app, doc, &snapshot).map_err(|e| would_not_load(n, e))?;
        }
        FileKind::Script => {
            let ast = app
                .engine
                .compile_detached(content.clone())
                .await
                .map_err(|e| would_not_load(n, AppError::Compile(e)))?;
            scripts::refuse_unknown_calls(app, &ast, &snapshot.scripts)
                .map_err(|e| would_not_load(n, e))?;
        }
    }
    let (snapshot, _) = write_and_reload(app, kind, code, Some(content.into_bytes()), true).await?;
    count_change(crate::versions::kind_name(kind), "restore");
    Ok(snapshot)
}

fn would_not_load(n: u64, e: AppError) -> AppError {
    AppError::Unloadable(
        "would_not_load",
        format!("version {n} would not load today, nothing changed: {e}"),
    )
}

#[utoipa::path(
    get, path = "/admin/channels/{code}/versions", tag = "history",
    params(("code" = String, Path, description = "The channel code")),
    responses(
        (status = 200, description = "The channel's versions, newest first (also of a deleted channel)", body = crate::api_doc::VersionList),
        (status = 404, description = "No version of this code", body = ErrorAnswer),
    )
)]
pub(super) async fn channel_versions(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<Json<Value>, AppError> {
    list(&app, FileKind::Channel, &code).await
}

#[utoipa::path(
    get, path = "/admin/scripts/{code}/versions", tag = "history",
    params(("code" = String, Path, description = "The script code")),
    responses(
        (status = 200, description = "The script's versions, newest first (also of a deleted script)", body = crate::api_doc::VersionList),
        (status = 404, description = "No version of this code", body = ErrorAnswer),
    )
)]
pub(super) async fn script_versions(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<Json<Value>, AppError> {
    list(&app, FileKind::Script, &code).await
}

#[utoipa::path(
    get, path = "/admin/channels/{code}/versions/{n}", tag = "history",
    params(
        ("code" = String, Path, description = "The channel code"),
        ("n" = u64, Path, description = "The version number"),
    ),
    responses(
        (status = 200, description = "The version; its document with secrets masked", body = crate::api_doc::VersionShown),
        (status = 404, description = "No such version", body = ErrorAnswer),
    )
)]
pub(super) async fn channel_version(
    State(app): State<Arc<AppState>>,
    Path((code, n)): Path<(String, String)>,
) -> Result<Json<Value>, AppError> {
    one(&app, FileKind::Channel, &code, &n).await
}

#[utoipa::path(
    get, path = "/admin/scripts/{code}/versions/{n}", tag = "history",
    params(
        ("code" = String, Path, description = "The script code"),
        ("n" = u64, Path, description = "The version number"),
    ),
    responses(
        (status = 200, description = "The version with the script's text", body = crate::api_doc::VersionShown),
        (status = 404, description = "No such version", body = ErrorAnswer),
    )
)]
pub(super) async fn script_version(
    State(app): State<Arc<AppState>>,
    Path((code, n)): Path<(String, String)>,
) -> Result<Json<Value>, AppError> {
    one(&app, FileKind::Script, &code, &n).await
}

#[utoipa::path(
    get, path = "/admin/channels/{code}/diff", tag = "history",
    params(
        ("code" = String, Path, description = "The channel code"),
        ("from" = u64, Query, description = "The version compared from"),
        ("to" = Option<u64>, Query, description = "The version compared to (default: the current one)"),
    ),
    responses(
        (status = 200, description = "A unified diff of the masked, pretty JSON", body = crate::api_doc::DiffShown),
        (status = 400, description = "from missing, or not a number", body = ErrorAnswer),
        (status = 404, description = "No such version", body = ErrorAnswer),
    )
)]
pub(super) async fn channel_diff(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
    uri: Uri,
) -> Result<Json<Value>, AppError> {
    diff(&app, FileKind::Channel, &code, &uri).await
}

#[utoipa::path(
    get, path = "/admin/scripts/{code}/diff", tag = "history",
    params(
        ("code" = String, Path, description = "The script code"),
        ("from" = u64, Query, description = "The version compared from"),
        ("to" = Option<u64>, Query, description = "The version compared to (default: the current one)"),
    ),
    responses(
        (status = 200, description = "A unified diff of the script's text", body = crate::api_doc::DiffShown),
        (status = 400, description = "from missing, or not a number", body = ErrorAnswer),
        (status = 404, description = "No such version", body = ErrorAnswer),
    )
)]
pub(super) async fn script_diff(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
    uri: Uri,
) -> Result<Json<Value>, AppError> {
    diff(&app, FileKind::Script, &code, &uri).await
}

#[utoipa::path(
    post, path = "/admin/channels/{code}/restore", tag = "history",
    params(("code" = String, Path, description = "The channel code")),
    request_body(content = crate::api_doc::RestoreIn),
    responses(
        (status = 200, description = "The restored document (secrets masked); a new version of kind restored", body = ChannelShown),
        (status = 400, description = "Not {\"version\": N}", body = ErrorAnswer),
        (status = 404, description = "No such version", body = ErrorAnswer),
        (status = 422, description = "The version would not load today (`would_not_load`); nothing changed", body = ErrorAnswer),
    )
)]
pub(super) async fn channel_restore(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
    crate::http::LimitedBody(bytes): crate::http::LimitedBody,
) -> Result<Json<ChannelShown>, AppError> {
    let n = restore_body(&bytes)?;
    let snapshot = restore(&app, FileKind::Channel, &code, n).await?;
    snapshot
        .channel(&code)
        .map(|c| Json(channels::shown(&app, c, &snapshot)))
        .ok_or(AppError::Internal)
}

#[utoipa::path(
    post, path = "/admin/scripts/{code}/restore", tag = "history",
    params(("code" = String, Path, description = "The script code")),
    request_body(content = crate::api_doc::RestoreIn),
    responses(
        (status = 200, description = "Restored and loaded; a new version of kind restored", body = ScriptSaved),
        (status = 400, description = "Not {\"version\": N}", body = ErrorAnswer),
        (status = 404, description = "No such version", body = ErrorAnswer),
        (status = 422, description = "The version would not load today (`would_not_load`); nothing changed", body = ErrorAnswer),
    )
)]
pub(super) async fn script_restore(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
    crate::http::LimitedBody(bytes): crate::http::LimitedBody,
) -> Result<Json<ScriptSaved>, AppError> {
    let n = restore_body(&bytes)?;
    let snapshot = restore(&app, FileKind::Script, &code, n).await?;
    Ok(Json(ScriptSaved {
        status: status_of(&snapshot, FileKind::Script, &code),
        code,
    }))
}

/// A time filter: RFC 3339, or an age (`15m`, `2h`, `7d`: that long ago).
fn time_param(name: &str, text: &str) -> Result<i64, AppError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(age) = humantime::parse_duration(text) {
        return Ok(chrono::Utc::now().timestamp_millis() - age.as_millis() as i64);
    }
    Err(AppError::BadRequest(format!(
        "{name}: {text:?} is neither an RFC 3339 time nor an age like 15m or 7d"
    )))
}

#[utoipa::path(
    get, path = "/admin/audit", tag = "history",
    params(
        ("since" = Option<String>, Query, description = "Entries at or after: RFC 3339, or an age (`1h`, `7d`)"),
        ("until" = Option<String>, Query, description = "Entries before: RFC 3339, or an age"),
        ("by" = Option<String>, Query, description = "`admin`, `user:<id>`, `anonymous`"),
        ("code" = Option<String>, Query, description = "The channel, script or secret"),
        ("action" = Option<String>, Query, description = "`channel.change`, `token.show`, `console.sign_in_failed`…"),
        ("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)"),
        ("offset" = Option<usize>, Query, description = "Skip this many (newest first)"),
    ),
    responses(
        (status = 200, description = "The entries that pass the filters, newest first", body = crate::api_doc::AuditList),
        (status = 400, description = "An unknown filter or a bad value", body = ErrorAnswer),
    )
)]
pub(super) async fn audit_log(
    State(app): State<Arc<AppState>>,
    uri: Uri,
) -> Result<Json<Value>, AppError> {
    let params = listing_params(
        &uri,
        &["since", "until", "by", "code", "action", "limit", "offset"],
    )?;
    let count = |name: &str, default: usize| -> Result<usize, AppError> {
        params.get(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| AppError::BadRequest(format!("{name}: {v:?} is not a whole number")))
        })
    };
    let query = AuditQuery {
        since: params
            .get("since")
            .map(|t| time_param("since", t))
            .transpose()?,
        until: params
            .get("until")
            .map(|t| time_param("until", t))
            .transpose()?,
        by: params.get("by").cloned(),
        code: params.get("code").cloned(),
        action: params.get("action").cloned(),
        limit: count("limit", 100)?.min(MOST_ENTRIES),
        offset: count("offset", 0)?,
    };
    let entries = app
        .audit
        .list(query)
        .await
        .map_err(|e| AppError::store("reading the audit log", &e))?;
    Ok(Json(json!({ "entries": entries })))
}
