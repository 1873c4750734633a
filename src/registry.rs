//! Channels and compiled scripts in memory, swapped whole on reload.
//!
//! A [`Snapshot`] is immutable; a request takes the current one once and
//! finishes on it, whatever is loaded meanwhile. [`load`] builds the next
//! snapshot from the folders, given the previous one: an unchanged script is
//! reused (not recompiled), and a document or script that no longer loads
//! keeps its last good version, with the error recorded in [`Snapshot::errors`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::channel::{self, Channel, ValidationContext};
use crate::config::Config;
use crate::script::{ScriptEngine, ScriptTable};

/// Everything loaded at one moment.
#[derive(Default)]
pub struct Snapshot {
    /// Valid channels by code.
    pub channels: HashMap<String, Arc<Channel>>,
    /// Scripts by code (also those that never compiled, with their error).
    pub scripts: Arc<ScriptTable>,
    /// The last load error of each file that currently fails, by file kind and code.
    pub errors: BTreeMap<(FileKind, String), LoadError>,
}

impl Snapshot {
    /// The channel `code`, if loaded.
    pub fn channel(&self, code: &str) -> Option<&Arc<Channel>> {
        self.channels.get(code)
    }

    /// The load error of a file, if it currently fails to load.
    pub fn error(&self, kind: FileKind, code: &str) -> Option<&LoadError> {
        self.errors.get(&(kind, code.to_owned()))
    }

    /// Codes of the channels that name script `code`.
    pub fn channels_using(&self, code: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .channels
            .values()
            .filter(|c| c.script_codes().any(|s| s == code))
            .map(|c| c.code().to_owned())
            .collect();
        users.sort();
        users
    }
}

/// Which folder a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    /// `channels/<code>.json`
    Channel,
    /// `scripts/<code>.rhai`
    Script,
}

/// Why a file does not load, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// `FILE:LINE:COL: message`.
    pub message: String,
    /// When this error was first seen (RFC 3339).
    pub since: String,
}

/// A file that could not be loaded, printed as `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// What a reload changed, for logs and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A channel appeared.
    Created(String),
    /// A channel's document changed.
    Updated(String),
    /// A channel is gone.
    Deleted(String),
}

/// The result of [`load`].
pub struct Loaded {
    /// The new snapshot.
    pub snapshot: Arc<Snapshot>,
    /// Every file that did not load this time.
    pub problems: Vec<Problem>,
    /// Channels created, updated or deleted against the previous snapshot.
    pub changes: Vec<Change>,
}

/// The live snapshot.
pub struct Registry {
    current: ArcSwap<Snapshot>,
    /// Serialises reloads so two never interleave.
    reload_lock: std::sync::Mutex<()>,
}

impl Registry {
    /// Starts with `snapshot`.
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        Self {
            current: ArcSwap::new(snapshot),
            reload_lock: std::sync::Mutex::new(()),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Reloads both folders and swaps the result in; returns what changed.
    pub fn reload(&self, config: &Config, engine: &ScriptEngine) -> Loaded {
        let _one_at_a_time = self
            .reload_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let prev = self.snapshot();
        let loaded = load(config, engine, Some(&prev));
        self.current.store(loaded.snapshot.clone());
        loaded
    }
}

/// Files in `dir` ending in `.ext`, with their code (stem), sorted by code.
/// `true` when `path` (links followed) is inside `dir`: a link that leads
/// out of `channels/` or `scripts/` is neither loaded nor served.
pub fn inside(dir: &Path, path: &Path) -> bool {
    std::fs::canonicalize(dir).is_ok_and(|root| under(&root, path))
}

/// [`inside`] for a folder already canonicalized.
fn under(root: &Path, path: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|real| real.starts_with(root))
}

/// The `<stem>.<ext>` files of `dir`, sorted. Hidden files are left out, and
/// so are symlinks that lead outside the folder (logged): a link must not
/// serve `/etc/passwd` as a script.
pub fn files_with_ext(dir: &Path, ext: &str) -> std::io::Result<Vec<(String, PathBuf)>> {
    let root = std::fs::canonicalize(dir)?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(ext) || !path.is_file() {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if stem.starts_with('.') {
            continue;
        }
        if !under(&root, &path) {
            tracing::warn!(file = %path.display(), "skipped: a link that leads outside {}", dir.display());
            continue;
        }
        out.push((stem.to_owned(), path));
    }
    out.sort();
    Ok(out)
}

/// Loads both folders into a snapshot; `prev` supplies unchanged scripts and last good versions.
pub fn load(config: &Config, engine: &ScriptEngine, prev: Option<&Snapshot>) -> Loaded {
    let mut problems = Vec::new();
    let mut errors = BTreeMap::new();
    let mut fail = |kind: FileKind, code: &str, p: Problem| {
        let message = p.to_string();
        let since = prev
            .and_then(|s| s.error(kind, code))
            .filter(|e| e.message == message)
            .map(|e| e.since.clone())
            .unwrap_or_else(|| channel::rfc3339(std::time::SystemTime::now()));
        errors.insert((kind, code.to_owned()), LoadError { message, since });
        problems.push(p);
    };

    let mut scripts = ScriptTable::new();
    match files_with_ext(&config.scripts, "rhai") {
        Err(e) => fail(
            FileKind::Script,
            "",
            problem(
                &config.scripts,
                1,
                1,
                format!("cannot read the scripts folder: {e}"),
            ),
        ),
        Ok(files) => {
            for (code, path) in files {
                if !channel::valid_code(&code) {
                    fail(
                        FileKind::Script,
                        &code,
                        problem(&path, 1, 1, "the file name is not a valid script code"),
                    );
                    continue;
                }
                let old = prev.and_then(|s| s.scripts.get(&code));
                let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                if size > config.max_script_bytes as u64 {
                    fail(
                        FileKind::Script,
                        &code,
                        problem(
                            &path,
                            1,
                            1,
                            format!(
                                "{size} bytes, more than max_script_bytes ({}): not loaded",
                                config.max_script_bytes
                            ),
                        ),
                    );
                    if let Some(old) = old {
                        scripts.insert(code, old.clone());
                    }
                    continue;
                }
                let source = match std::fs::read_to_string(&path) {
                    Ok(s) => s,
                    Err(e) => {
                        fail(
                            FileKind::Script,
                            &code,
                            problem(&path, 1, 1, format!("cannot read: {e}")),
                        );
                        if let Some(old) = old {
                            scripts.insert(code, old.clone());
                        }
                        continue;
                    }
                };
                if let Some(old) = old.filter(|o| o.source == source) {
                    if let Err(e) = &old.compiled {
                        fail(
                            FileKind::Script,
                            &code,
                            problem(&path, e.line, e.col, e.message.clone()),
                        );
                    }
                    scripts.insert(code, old.clone());
                    continue;
                }
                let script = engine.load(&code, path.clone(), source);
                match &script.compiled {
                    Ok(_) => {
                        scripts.insert(code, Arc::new(script));
                    }
                    Err(e) if e.message == crate::script::STILL_COMPILING => {
                        tracing::info!(script = %code, bytes = script.source.len(), "compiling a large script on its own thread");
                        let keep = old.filter(|o| o.compiled.is_ok()).cloned();
                        scripts.insert(code, keep.unwrap_or_else(|| Arc::new(script)));
                    }
                    Err(e) => {
                        fail(
                            FileKind::Script,
                            &code,
                            problem(&path, e.line, e.col, e.message.clone()),
                        );
                        // Keep the last good version serving; else keep the failing one so callers see why.
                        let keep = old.filter(|o| o.compiled.is_ok()).cloned();
                        scripts.insert(code, keep.unwrap_or_else(|| Arc::new(script)));
                    }
                }
            }
        }
    }

    let mut channels = HashMap::new();
    match files_with_ext(&config.channels, "json") {
        Err(e) => fail(
            FileKind::Channel,
            "",
            problem(
                &config.channels,
                1,
                1,
                format!("cannot read the channels folder: {e}"),
            ),
        ),
        Ok(files) => {
            let names: HashSet<String> = scripts.keys().cloned().collect();
            let ctx = ValidationContext {
                solution_types: &config.solution_types,
                scripts: &names,
            };
            for (code, path) in files {
                match channel::load_file(&path, &ctx) {
                    Ok(ch) => {
                        channels.insert(code, Arc::new(ch));
                    }
                    Err(e) => {
                        let (line, col) = e.line_col.unwrap_or((1, 1));
                        fail(
                            FileKind::Channel,
                            &code,
                            problem(&path, line, col, e.to_string()),
                        );
                        // A secret it may no longer use: the old value stops too.
                        let keep = prev
                            .and_then(|s| s.channels.get(&code))
                            .filter(|_| !e.secret);
                        if let Some(old) = keep {
                            channels.insert(code, old.clone());
                        }
                    }
                }
            }
        }
    }

    // Channel ids are unique: the first code (in name order) keeps an id, a
    // later channel with the same id is reported and not served.
    let mut codes: Vec<String> = channels.keys().cloned().collect();
    codes.sort();
    let mut owners: HashMap<uuid::Uuid, String> = HashMap::new();
    for code in codes {
        let id = channels[&code].id;
        if let Some(owner) = owners.get(&id) {
            let path = channel::file_path(&config.channels, &code);
            let at = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| channel::locate(&text, "id"))
                .unwrap_or((1, 1));
            fail(
                FileKind::Channel,
                &code,
                problem(
                    &path,
                    at.0,
                    at.1,
                    format!("id {id} is already the id of channel {owner:?}"),
                ),
            );
            channels.remove(&code);
        } else {
            owners.insert(id, code);
        }
    }

    let changes = prev.map(|p| diff(p, &channels)).unwrap_or_default();
    Loaded {
        snapshot: Arc::new(Snapshot {
            channels,
            scripts: Arc::new(scripts),
            errors,
        }),
        problems,
        changes,
    }
}

fn diff(prev: &Snapshot, next: &HashMap<String, Arc<Channel>>) -> Vec<Change> {
    let mut changes = Vec::new();
    for (code, ch) in next {
        match prev.channels.get(code) {
            None => changes.push(Change::Created(code.clone())),
            Some(old) if !Arc::ptr_eq(old, ch) && !same_doc(old, ch) => {
                changes.push(Change::Updated(code.clone()))
            }
            Some(_) => {}
        }
    }
    for code in prev.channels.keys() {
        if !next.contains_key(code) {
            changes.push(Change::Deleted(code.clone()));
        }
    }
    changes.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    changes
}

/// The same document with the same secrets behind it: a rotated secret
/// changes the channel (its websockets admitted with the old value close).
fn same_doc(a: &Channel, b: &Channel) -> bool {
    a.secrets == b.secrets && serde_json::to_value(&a.doc).ok() == serde_json::to_value(&b.doc).ok()
}

fn problem(file: &Path, line: usize, col: usize, message: impl Into<String>) -> Problem {
    Problem {
        file: file.to_owned(),
        line,
        col,
        message: message.into(),
    }
}
