//! What the authoring checks (SPEC §10 "Authoring") say about the loaded
//! channels and scripts: errors (a call to a function that exists nowhere)
//! and warnings (a recv script's answer that nobody reads). `switchyard check`
//! prints all of them, the admin API answers those of what it saves, and
//! `serve` logs them at start.

use std::path::Path;

use crate::channel::Channel;
use crate::registry::{Problem, Snapshot};
use crate::script::lint::{self, Finding};
use crate::script::{Script, ScriptEngine, ScriptTable};

/// Calls in `script` to functions that exist nowhere (none when it does not compile).
pub fn script_errors(
    engine: &ScriptEngine,
    script: &Script,
    scripts: &ScriptTable,
) -> Vec<Finding> {
    match &script.compiled {
        Ok(ast) => engine.unknown_calls(ast, scripts),
        Err(_) => Vec::new(),
    }
}

/// The warnings for `channel`: its recv script sets an answer on a channel
/// that answers `202` before the script runs (`issync = false`).
pub fn channel_warnings(channel: &Channel, scripts: &ScriptTable) -> Vec<Finding> {
    if channel.doc.opts.issync {
        return Vec::new();
    }
    let Some(code) = channel.doc.recv_svcscriptcode.as_deref() else {
        return Vec::new();
    };
    let Some(Ok(ast)) = scripts.get(code).map(|s| &s.compiled) else {
        return Vec::new();
    };
    lint::outputs_set(ast)
        .into_iter()
        .map(|(name, line, col)| Finding {
            line,
            col,
            message: format!(
                "channel {:?} has issync = false: its caller already got 202, so the `{name}` \
                 that its recv script {code:?} sets is never sent (set opts.issync = true to answer)",
                channel.code()
            ),
        })
        .collect()
}

/// Every error and warning of a snapshot, as problems of the script files.
pub fn review(snapshot: &Snapshot, engine: &ScriptEngine) -> (Vec<Problem>, Vec<Problem>) {
    let at = |path: &Path, f: Finding| Problem {
        file: path.to_owned(),
        line: f.line,
        col: f.col,
        message: f.message,
    };
    let mut codes: Vec<&String> = snapshot.scripts.keys().collect();
    codes.sort();
    let mut errors = Vec::new();
    for code in codes {
        let script = &snapshot.scripts[code];
        for f in script_errors(engine, script, &snapshot.scripts) {
            errors.push(at(&script.path, f));
        }
    }
    let mut channels: Vec<&std::sync::Arc<Channel>> = snapshot.channels.values().collect();
    channels.sort_by(|a, b| a.code().cmp(b.code()));
    let mut warnings = Vec::new();
    for channel in channels {
        let script = channel.doc.recv_svcscriptcode.as_deref();
        let Some(script) = script.and_then(|c| snapshot.scripts.get(c)) else {
            continue;
        };
        for f in channel_warnings(channel, &snapshot.scripts) {
            warnings.push(at(&script.path, f));
        }
    }
    (errors, warnings)
}
