//! Versions of channel documents and scripts (SPEC §19), whatever changed
//! them.
//!
//! Two ways in, both under one lock ([`Seen`]) so they never cross:
//!
//! - an admin write (API, console, restore) keeps the new content as a
//!   version *before* the file is written ([`write`]): a change answered is
//!   versioned (and kill -9 between the two leaves a version of a change not
//!   made, never the other way round);
//! - after every reload, [`reconcile`] compares each file with what this
//!   node last versioned or saw, and keeps a version (by `file`) of what
//!   changed by other hands: a hand edit, a file that appeared or vanished,
//!   a file another node's change brought (in cluster mode that version
//!   exists already, and the backend makes none for the same content).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use crate::backend::{content_sha, NewVersion, Versioned};
use crate::error::AppError;
use crate::registry::FileKind;
use crate::store::StoreError;
use crate::AppState;

/// The SHA-256 of every file as this node last versioned or saw it.
#[derive(Default)]
pub struct Seen(Mutex<HashMap<(FileKind, String), String>>);

impl Seen {
    fn lock(&self) -> MutexGuard<'_, HashMap<(FileKind, String), String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `channel` or `script`.
pub fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Channel => "channel",
        FileKind::Script => "script",
    }
}

/// The file of a channel or script.
pub fn file_of(app: &AppState, kind: FileKind, code: &str) -> PathBuf {
    match kind {
        FileKind::Channel => crate::channel::file_path(&app.config.channels, code),
        FileKind::Script => app.config.scripts.join(format!("{code}.rhai")),
    }
}

/// Runs a backend call from a blocking thread.
fn block<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Handle::current().block_on(fut)
}

fn record(
    app: &AppState,
    kind: FileKind,
    code: &str,
    content: Option<String>,
    restored: bool,
    by: Value,
) -> Result<Versioned, StoreError> {
    block(app.versions.record(NewVersion {
        kind: kind_name(kind),
        code: code.to_owned(),
        content,
        restored,
        at: crate::channel::rfc3339(std::time::SystemTime::now()),
        by,
        keep: app.config.versions_keep,
    }))
}

/// Keeps the version of `bytes` (`None`: the file is removed) by the
/// request's caller, then writes (or removes) the file atomically. Blocking;
/// the caller reloads afterwards.
pub fn write(
    app: &AppState,
    kind: FileKind,
    code: &str,
    bytes: Option<Vec<u8>>,
    restored: bool,
    by: Value,
) -> Result<Versioned, AppError> {
    let mut seen = app.seen.lock();
    let content = bytes
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned());
    let sha = content_sha(content.as_deref());
    let versioned = record(app, kind, code, content, restored, by)
        .map_err(|e| AppError::store("keeping the version", &e))?;
    let path = file_of(app, kind, code);
    match &bytes {
        Some(bytes) => {
            crate::disk::write_atomic(&path, bytes).map_err(|e| AppError::io("writing", &e))?;
            seen.insert((kind, code.to_owned()), sha);
        }
        None => {
            std::fs::remove_file(&path).map_err(|e| AppError::io("removing", &e))?;
            crate::disk::sync_dir(&path);
            seen.remove(&(kind, code.to_owned()));
        }
    }
    Ok(versioned)
}

/// Keeps a version of every file that changed since this node last versioned
/// or saw it, by `file` (see the module docs). Blocking; run after a reload.
pub fn reconcile(app: &AppState) {
    let mut seen = app.seen.lock();
    let folders = [
        (FileKind::Channel, &app.config.channels, "json"),
        (FileKind::Script, &app.config.scripts, "rhai"),
    ];
    for (kind, dir, ext) in folders {
        let Ok(files) = crate::registry::files_with_ext(dir, ext) else {
            continue;
        };
        let mut present = HashSet::new();
        for (code, path) in files {
            if !crate::channel::valid_code(&code) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let content = String::from_utf8_lossy(&bytes).into_owned();
            let sha = content_sha(Some(&content));
            present.insert(code.clone());
            if seen.get(&(kind, code.clone())) == Some(&sha) {
                continue;
            }
            let by = crate::audit::actor();
            match record(app, kind, &code, Some(content), false, by) {
                Ok(v) => {
                    if v.made() {
                        tracing::info!(kind = kind_name(kind), code = %code, version = v.after, "versioned a change made in the folder");
                    }
                    seen.insert((kind, code), sha);
                }
                Err(e) => tracing::warn!(kind = kind_name(kind), code = %code, "versions: {e}"),
            }
        }
        let gone: Vec<String> = seen
            .keys()
            .filter(|(k, code)| *k == kind && !present.contains(code))
            .map(|(_, code)| code.clone())
            .collect();
        for code in gone {
            match record(app, kind, &code, None, false, crate::audit::actor()) {
                Ok(_) => {
                    seen.remove(&(kind, code));
                }
                Err(e) => tracing::warn!(kind = kind_name(kind), code = %code, "versions: {e}"),
            }
        }
    }
}

/// At start: takes the current versions as seen, then versions what changed
/// in the folders while the server was not running.
pub async fn start(app: &std::sync::Arc<AppState>) {
    match app.versions.current().await {
        Ok(current) => {
            let mut seen = app.seen.lock();
            for crate::backend::Current { kind, code, sha256 } in current {
                let kind = if kind == "script" {
                    FileKind::Script
                } else {
                    FileKind::Channel
                };
                seen.insert((kind, code), sha256);
            }
        }
        Err(e) => tracing::warn!("versions: reading the current versions: {e}"),
    }
    let app = app.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || reconcile(&app)).await {
        tracing::error!("versions: {e}");
    }
}

/// A version's content as the API shows it: a channel document parsed, its
/// secrets masked (§9); a script's text as it is.
pub fn shown_content(kind: FileKind, content: &Value) -> Value {
    match (kind, content.as_str()) {
        (FileKind::Channel, Some(text)) => match serde_json::from_str::<Value>(text) {
            Ok(mut doc) => {
                crate::channel::mask_doc(&mut doc);
                doc
            }
            Err(_) => content.clone(),
        },
        _ => content.clone(),
    }
}

/// The text a diff compares: a channel document as masked, pretty JSON; a
/// script's text; nothing for a deletion.
pub fn diff_text(kind: FileKind, content: &Value) -> String {
    match shown_content(kind, content) {
        Value::Null => String::new(),
        Value::String(text) => text,
        doc => serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n",
    }
}

/// The unified diff of two texts, labelled.
pub fn unified_diff(from: &str, to: &str, from_label: &str, to_label: &str) -> String {
    similar::TextDiff::from_lines(from, to)
        .unified_diff()
        .context_radius(3)
        .header(from_label, to_label)
        .to_string()
}
