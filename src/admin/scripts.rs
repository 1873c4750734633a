//! `/admin/scripts`: Rhai sources, saved only when they compile and call
//! only functions that exist; `/admin/check` without saving.

use super::*;

#[utoipa::path(
    get, path = "/admin/scripts", tag = "scripts",
    responses(
        (status = 200, description = "Every script, whether it loads, and the channels naming it", body = ScriptList),
        (status = 400, description = "A query parameter (this listing takes none)", body = ErrorAnswer),
    )
)]
pub(super) async fn list_scripts(
    State(app): State<Arc<AppState>>,
    uri: Uri,
) -> Result<Json<ScriptList>, AppError> {
    listing_params(&uri, &[])?;
    let snapshot = app.registry.snapshot();
    let mut codes: Vec<&String> = snapshot.scripts.keys().collect();
    codes.sort();
    let scripts = codes
        .into_iter()
        .map(|code| ScriptEntry {
            code: code.clone(),
            status: status_of(&snapshot, FileKind::Script, code),
            used_by: snapshot.channels_using(code),
        })
        .collect();
    Ok(Json(ScriptList { scripts }))
}

#[utoipa::path(
    get, path = "/admin/scripts/{code}", tag = "scripts",
    params(("code" = String, Path, description = "The script code")),
    responses(
        (status = 200, description = "The Rhai source", body = String, content_type = "text/plain"),
        (status = 404, description = "No such script", body = ErrorAnswer),
    )
)]
pub(super) async fn get_script(
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

#[utoipa::path(
    put, path = "/admin/scripts/{code}", tag = "scripts",
    params(("code" = String, Path, description = "The script code (1 to 64 of A-Z a-z 0-9 _ . -)")),
    request_body(content = Option<String>, content_type = "text/plain", description = "Rhai source (empty is an empty script)"),
    responses(
        (status = 200, description = "Replaced and loaded", body = ScriptSaved),
        (status = 201, description = "Created and loaded", body = ScriptSaved),
        (status = 400, description = "Not a valid script code", body = ErrorAnswer),
        (status = 413, description = "Larger than max_script_bytes", body = ErrorAnswer),
        (status = 415, description = "Not UTF-8", body = ErrorAnswer),
        (status = 422, description = "Does not compile, or calls a function that exists nowhere (`line`, `col`)", body = ErrorAnswer),
    )
)]
pub(super) async fn put_script(
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
    refuse_unknown_calls(&app, &ast, &app.registry.snapshot().scripts)?;
    let path = script_file(&app, &code);
    let existed = path.exists();
    let bytes = Some(source.into_bytes());
    let (snapshot, _) = write_and_reload(&app, FileKind::Script, &code, bytes, false).await?;
    count_change("script", if existed { "update" } else { "create" });
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(ScriptSaved {
            status: status_of(&snapshot, FileKind::Script, &code),
            code,
        }),
    )
        .into_response())
}

/// A call to a function that exists nowhere is refused like a syntax error
/// (`422 compile_error` at the first, every one in the message): on a save
/// and on a restore.
pub(super) fn refuse_unknown_calls(
    app: &AppState,
    ast: &rhai::AST,
    scripts: &crate::script::ScriptTable,
) -> Result<(), AppError> {
    let unknown = app.engine.unknown_calls(ast, scripts);
    let Some(first) = unknown.first() else {
        return Ok(());
    };
    let mut message = first.message.clone();
    for more in &unknown[1..] {
        message.push_str(&format!("; {}:{}: {}", more.line, more.col, more.message));
    }
    Err(AppError::Compile(CompileError {
        line: first.line,
        col: first.col,
        message,
    }))
}

#[utoipa::path(
    delete, path = "/admin/scripts/{code}", tag = "scripts",
    params(("code" = String, Path, description = "The script code")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such script", body = ErrorAnswer),
        (status = 409, description = "A channel names it", body = ErrorAnswer),
    )
)]
pub(super) async fn delete_script(
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
    write_and_reload(&app, FileKind::Script, &code, None, false).await?;
    count_change("script", "delete");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /admin/check`: compiles the body (Rhai source) and runs the authoring
/// check without saving anything: `{"ok", "errors": [{line, col, message}]}`.
#[utoipa::path(
    post, path = "/admin/check", tag = "scripts",
    request_body(content = Option<String>, content_type = "text/plain", description = "Rhai source (empty is an empty script)"),
    responses(
        (status = 200, description = "Whether it compiles and calls only functions that exist; nothing is saved", body = CheckResult),
        (status = 415, description = "Not UTF-8", body = ErrorAnswer),
    )
)]
pub(super) async fn check_script(
    State(app): State<Arc<AppState>>,
    crate::http::LimitedBody(body): crate::http::LimitedBody,
) -> Result<Json<CheckResult>, AppError> {
    let source = String::from_utf8(body.to_vec()).map_err(|_| AppError::UnsupportedBody)?;
    let engine = app.engine.clone();
    let scripts = app.registry.snapshot().scripts.clone();
    let errors = tokio::task::spawn_blocking(move || match engine.compile(&source) {
        Err(e) => vec![Finding {
            line: e.line,
            col: e.col,
            message: e.message,
        }],
        Ok(ast) => engine.unknown_calls(&ast, &scripts),
    })
    .await
    .map_err(|_| AppError::Internal)?;
    Ok(Json(CheckResult {
        ok: errors.is_empty(),
        errors,
    }))
}
