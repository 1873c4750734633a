//! Channels and compiled scripts in memory, swapped whole on reload.
//!
//! A [`Snapshot`] is immutable; a request takes the current one once and
//! finishes on it, whatever is loaded meanwhile.

use std::collections::{HashMap, HashSet};
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
    /// Scripts by code (also those that do not compile, with their error).
    pub scripts: Arc<ScriptTable>,
}

impl Snapshot {
    /// The channel `code`, if loaded.
    pub fn channel(&self, code: &str) -> Option<&Arc<Channel>> {
        self.channels.get(code)
    }
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

/// The live snapshot.
pub struct Registry {
    current: ArcSwap<Snapshot>,
}

impl Registry {
    /// Starts with `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot.
    pub fn replace(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}

/// Files in `dir` ending in `.ext`, with their code (stem), sorted by code.
fn files_with_ext(dir: &Path, ext: &str) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(ext) || !path.is_file() {
            continue;
        }
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
            if !stem.starts_with('.') {
                out.push((stem.to_owned(), path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads and compiles every `*.rhai` of the scripts folder.
pub fn load_scripts(dir: &Path, engine: &ScriptEngine) -> (ScriptTable, Vec<Problem>) {
    let mut table = ScriptTable::new();
    let mut problems = Vec::new();
    let files = match files_with_ext(dir, "rhai") {
        Ok(files) => files,
        Err(e) => {
            problems.push(problem(
                dir,
                1,
                1,
                format!("cannot read the scripts folder: {e}"),
            ));
            return (table, problems);
        }
    };
    for (code, path) in files {
        if !channel::valid_code(&code) {
            problems.push(problem(
                &path,
                1,
                1,
                "the file name is not a valid script code",
            ));
            continue;
        }
        let source = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => {
                problems.push(problem(&path, 1, 1, format!("cannot read: {e}")));
                continue;
            }
        };
        let script = engine.load(&code, path.clone(), source);
        if let Err(e) = &script.compiled {
            problems.push(problem(&path, e.line, e.col, e.message.clone()));
        }
        table.insert(code, Arc::new(script));
    }
    (table, problems)
}

/// Reads and validates every `*.json` of the channels folder against `scripts`.
pub fn load_channels(
    dir: &Path,
    config: &Config,
    scripts: &ScriptTable,
) -> (HashMap<String, Arc<Channel>>, Vec<Problem>) {
    let mut channels = HashMap::new();
    let mut problems = Vec::new();
    let files = match files_with_ext(dir, "json") {
        Ok(files) => files,
        Err(e) => {
            problems.push(problem(
                dir,
                1,
                1,
                format!("cannot read the channels folder: {e}"),
            ));
            return (channels, problems);
        }
    };
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
                problems.push(problem(&path, line, col, e.to_string()));
            }
        }
    }
    (channels, problems)
}

/// Loads both folders into a snapshot, with every problem found.
pub fn load(config: &Config, engine: &ScriptEngine) -> (Snapshot, Vec<Problem>) {
    let (scripts, mut problems) = load_scripts(&config.scripts, engine);
    let (channels, more) = load_channels(&config.channels, config, &scripts);
    problems.extend(more);
    (
        Snapshot {
            channels,
            scripts: Arc::new(scripts),
        },
        problems,
    )
}

fn problem(file: &Path, line: usize, col: usize, message: impl Into<String>) -> Problem {
    Problem {
        file: file.to_owned(),
        line,
        col,
        message: message.into(),
    }
}
