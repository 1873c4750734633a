//! The files API (`/channels/{code}/files/{name}`) and `file_read` / `file_write`.
//!
//! Files live in `<data>/files/<channel>/<name>`. A name is one path segment of
//! `[A-Za-z0-9._-]`, at most 255 bytes, not starting with a dot, so no name
//! can leave its channel's folder.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::channel::Channel;
use crate::error::AppError;
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

/// The path of a file, after checking the channel and the name.
pub fn path_of(app: &AppState, channel: &Channel, name: &str) -> Result<PathBuf, String> {
    if !enabled(channel) {
        return Err(format!(
            "channel {:?} does not allow the files API",
            channel.code()
        ));
    }
    if !valid_name(name) {
        return Err(format!("{name:?} is not a valid file name"));
    }
    Ok(app
        .config
        .data
        .join("files")
        .join(channel.code())
        .join(name))
}

/// `file_read(name)`: the file as UTF-8 text.
pub fn read_text(app: &AppState, channel: &Channel, name: &str) -> Result<String, String> {
    let path = path_of(app, channel, name)?;
    let bytes = std::fs::read(&path).map_err(|_| format!("file_read: no file {name:?}"))?;
    String::from_utf8(bytes).map_err(|_| format!("file_read: {name:?} is not UTF-8 text"))
}

/// `file_write(name, text)`: replaces the file atomically.
pub fn write_text(app: &AppState, channel: &Channel, name: &str, text: &str) -> Result<(), String> {
    let path = path_of(app, channel, name)?;
    if text.len() as u64 > app.config.max_file_bytes {
        return Err(format!(
            "file_write: larger than max_file_bytes ({})",
            app.config.max_file_bytes
        ));
    }
    check_quota(app, &path, text.len() as u64).map_err(|e| format!("file_write: {e}"))?;
    store(&path, text.as_bytes()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::StorageFull {
            crate::script::note_store_full();
        }
        format!("file_write: {e}")
    })
}

fn store(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::disk::write_atomic(path, bytes)
}

/// Refuses a write of `size` bytes to `path` that would take the channel's
/// folder past `files_max_count` files or `files_max_bytes` bytes.
fn check_quota(app: &AppState, path: &std::path::Path, size: u64) -> Result<(), String> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let (mut count, mut bytes, mut replaced) = (0usize, 0u64, None);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            count += 1;
            bytes += meta.len();
            if entry.path() == path {
                replaced = Some(meta.len());
            }
        }
    }
    let (max_count, max_bytes) = (app.config.files_max_count, app.config.files_max_bytes);
    if replaced.is_none() && count >= max_count {
        return Err(format!(
            "the channel has {max_count} files already (files_max_count)"
        ));
    }
    if bytes - replaced.unwrap_or(0) + size > max_bytes {
        return Err(format!(
            "the channel's files would take more than {max_bytes} bytes (files_max_bytes)"
        ));
    }
    Ok(())
}

/// `PUT|GET|DELETE /channels/{code}/files/{name}` with channel credentials.
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
    let path = app.config.data.join("files").join(code).join(name);
    match parts.method {
        Method::PUT => {
            let bytes =
                crate::http::read_body_max(app, &parts.headers, body, app.config.max_file_bytes)
                    .await?;
            let existed = path.exists();
            let size = bytes.len();
            let quota_app = app.clone();
            tokio::task::spawn_blocking(move || {
                check_quota(&quota_app, &path, size as u64)
                    .map_err(AppError::InsufficientStorage)?;
                store(&path, &bytes).map_err(|e| AppError::io("files", &e))
            })
            .await
            .map_err(|_| AppError::Internal)??;
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((status, Json(json!({ "name": name, "size": size }))).into_response())
        }
        Method::GET => match tokio::fs::read(&path).await {
            Ok(bytes) => {
                Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
            }
            Err(_) => Err(AppError::Missing(
                "unknown_file",
                format!("no file {name:?}"),
            )),
        },
        Method::DELETE => match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
            Err(_) => Err(AppError::Missing(
                "unknown_file",
                format!("no file {name:?}"),
            )),
        },
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
