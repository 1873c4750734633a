//! The files API (`/channels/{code}/files/{name}`) and `file_read` / `file_write`.
//!
//! Where files live is the backend's ([`crate::backend::Files`]): a folder per
//! channel in embedded mode, an object store in cluster mode. A name is one
//! path segment of `[A-Za-z0-9._-]`, at most 255 bytes, not starting with a
//! dot, so no name can leave its channel's folder.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::backend::FileError;
use crate::channel::Channel;
use crate::error::AppError;
use crate::store::StoreError;
use crate::AppState;

/// Longest file name.
pub const MAX_NAME: usize = 255;

/// `true` for a name the files API accepts.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn enabled(channel: &Channel) -> bool {
    channel.is_general() && channel.doc.opts.allow_files_api
}

/// Checks that the channel allows the files API and that the name is valid.
fn check(channel: &Channel, name: &str) -> Result<(), String> {
    if !enabled(channel) {
        return Err(format!(
            "channel {:?} does not allow the files API",
            channel.code()
        ));
    }
    if !valid_name(name) {
        return Err(format!("{name:?} is not a valid file name"));
    }
    Ok(())
}

/// A script function's message for a store failure; a full disk or an
/// unreachable cluster is also noted for the run's answer (`507`, `503`).
fn script_failure(app: &AppState, function: &str, e: &StoreError) -> String {
    if e.is_full() {
        app.store.note_disk_full();
        crate::script::note_store_full();
    }
    if e.is_cluster_unavailable() {
        crate::script::note_cluster_unavailable();
    }
    format!("{function}: {e}")
}

/// `file_read(name)`: the file as UTF-8 text.
pub fn read_text(app: &AppState, channel: &Channel, name: &str) -> Result<String, String> {
    check(channel, name)?;
    let bytes = app
        .files
        .read(channel.code(), name)
        .map_err(|e| script_failure(app, "file_read", &e))?
        .ok_or_else(|| format!("file_read: no file {name:?}"))?;
    String::from_utf8(bytes).map_err(|_| format!("file_read: {name:?} is not UTF-8 text"))
}

/// `file_write(name, text)`: replaces the file atomically.
pub fn write_text(app: &AppState, channel: &Channel, name: &str, text: &str) -> Result<(), String> {
    check(channel, name)?;
    if text.len() as u64 > app.config.max_file_bytes {
        return Err(format!(
            "file_write: larger than max_file_bytes ({})",
            app.config.max_file_bytes
        ));
    }
    match app.files.write(channel.code(), name, text.as_bytes()) {
        Ok(_) => Ok(()),
        Err(FileError::Quota(m)) => Err(format!("file_write: {m}")),
        Err(FileError::Store(e)) => Err(script_failure(app, "file_write", &e)),
    }
}

/// Runs a files call on a blocking thread.
async fn blocking<T: Send + 'static>(
    app: &Arc<AppState>,
    f: impl FnOnce(&AppState) -> T + Send + 'static,
) -> Result<T, AppError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .map_err(|_| AppError::Internal)
}

/// `PUT|GET|DELETE /channels/{code}/files/{name}` with channel credentials.
#[utoipa::path(
    method(get, put, delete), path = "/channels/{code}/files/{name}", tag = "channel",
    operation_id = "file",
    params(
        ("code" = String, Path, description = "The channel code"),
        ("name" = String, Path, description = "One segment of A-Z a-z 0-9 . _ - (not starting with a dot, at most 255 bytes)"),
    ),
    security(("channel_bearer" = []), ("channel_query" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "PUT: the file's bytes (at most max_file_bytes)"),
    responses(
        (status = 200, description = "GET: the file's bytes; PUT: replaced `{\"name\", \"size\"}`", content_type = "application/octet-stream"),
        (status = 201, description = "PUT: created `{\"name\", \"size\"}`"),
        (status = 204, description = "DELETE: removed"),
        (status = 400, description = "Not a valid file name", body = crate::api_doc::ErrorAnswer),
        (status = 413, description = "Larger than max_file_bytes", body = crate::api_doc::ErrorAnswer),
        (status = 507, description = "The channel's files quota or the disk is full", body = crate::api_doc::ErrorAnswer),
    )
)]
pub async fn handle(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((code, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    let outcome = serve(&app, &code, &name, peer, req).await;
    crate::http::tag_channel(
        crate::http::known(&outcome),
        code,
        outcome.unwrap_or_else(IntoResponse::into_response),
    )
}

async fn serve(
    app: &Arc<AppState>,
    code: &str,
    name: &str,
    peer: SocketAddr,
    req: Request,
) -> Result<Response, AppError> {
    let (parts, body) = req.into_parts();
    let caller = match crate::http::admit(app, code, peer, &parts.headers, parts.uri.query()) {
        Ok(c) => c,
        Err(e) => {
            crate::http::discard(body);
            return Err(e);
        }
    };
    if !enabled(&caller.channel) {
        crate::http::discard(body);
        return Err(AppError::Missing(
            "files_api_disabled",
            format!("channel {code:?} does not allow the files API"),
        ));
    }
    if !valid_name(name) {
        crate::http::discard(body);
        return Err(AppError::Invalid(
            "bad_file_name",
            format!("{name:?} is not one segment of A-Z a-z 0-9 . _ - (not starting with a dot, at most {MAX_NAME})"),
        ));
    }
    let (code, name) = (code.to_owned(), name.to_owned());
    match parts.method {
        Method::PUT => {
            let bytes =
                crate::http::read_body_max(app, &parts.headers, body, app.config.max_file_bytes)
                    .await?;
            let size = bytes.len();
            let file = name.clone();
            let existed = blocking(app, move |app| app.files.write(&code, &file, &bytes))
                .await?
                .map_err(|e| match e {
                    FileError::Quota(m) => AppError::InsufficientStorage(m),
                    FileError::Store(e) => {
                        if e.is_full() {
                            app.store.note_disk_full();
                        }
                        AppError::store("files", &e)
                    }
                })?;
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((status, Json(json!({ "name": name, "size": size }))).into_response())
        }
        Method::GET => {
            let file = name.clone();
            match blocking(app, move |app| app.files.read(&code, &file))
                .await?
                .map_err(|e| AppError::store("files", &e))?
            {
                Some(bytes) => Ok(
                    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
                ),
                None => Err(AppError::Missing(
                    "unknown_file",
                    format!("no file {name:?}"),
                )),
            }
        }
        Method::DELETE => {
            let file = name.clone();
            if blocking(app, move |app| app.files.delete(&code, &file))
                .await?
                .map_err(|e| AppError::store("files", &e))?
            {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Err(AppError::Missing(
                    "unknown_file",
                    format!("no file {name:?}"),
                ))
            }
        }
        _ => Ok(StatusCode::METHOD_NOT_ALLOWED.into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_channel_folder() {
        for good in ["report.csv", "a", "A-b_c.1", &"x".repeat(255)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".env",
            "../x",
            "a/b",
            "/etc/passwd",
            "a\\b",
            "a b",
            "%2e%2e",
            &"x".repeat(256),
            "naïve",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
