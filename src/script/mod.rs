//! The Rhai script engine: one shared [`Engine`], scripts compiled once, a
//! fresh scope per run, a wall-clock deadline enforced inside the engine.
//!
//! Rhai is synchronous, so every run happens on a blocking thread
//! ([`ScriptEngine::run`] uses `spawn_blocking`). A run's context (its inputs,
//! the caller, the deadline) lives in thread-locals of that worker for the
//! length of the run; the registered functions and `on_progress` read it there.
//!
//! - `api`: the functions scripts can call (startparam, JSON, crypto, logs…).
//! - `convert`: JSON ↔ Rhai values.
//! - `error`: a script that does not compile, a run that did not finish.
//! - `watchdog`: stops blocking-thread runs at their deadline between operations.
//! - `memory`: the memory a run may hold, counted by the allocator.
//! - `priority`: computing slots and the CPU priority of long runs.
//! - `compiler`: large scripts compile on threads of their own.

mod api;
mod compiler;
pub mod convert;
pub mod error;
pub mod library;
pub mod lint;
pub mod memory;
pub mod priority;
pub mod trail;
mod watchdog;
pub mod webhooks;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rhai::module_resolvers::ModuleResolver;
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Module, Position, Scope, AST};

pub use error::{CompileError, RunError};

use crate::auth::Identity;
use crate::channel::Channel;

/// The limits of §10 (call depth, expression depth, sizes).
pub mod limits {
    /// Function call nesting.
    pub const CALL_LEVELS: usize = 64;
    /// Expression nesting, at global level and in functions.
    pub const EXPR_DEPTH: usize = 64;
    /// Longest string, in bytes.
    pub const STRING_BYTES: usize = 1024 * 1024;
    /// Longest array.
    pub const ARRAY_LEN: usize = 100_000;
    /// Largest object map.
    pub const MAP_LEN: usize = 100_000;
    /// Modules one run may import.
    pub const MODULES: usize = 64;
    /// Modules importing modules, this deep at most.
    pub const IMPORT_DEPTH: usize = 16;
    /// The longest a send job may wait for the external system's answer (`job_wait`).
    pub const JOB_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
    /// Inputs larger than this (bytes, or values in a data structure) are not
    /// handled on an async thread: a function given one leaves the inline attempt.
    pub const INLINE_INPUT: usize = 16 * 1024;
    /// `on_progress` checks the wall clock every this many operations (a power
    /// of two) on a blocking thread, where the watchdog also stops a run.
    pub const CLOCK_EVERY_OPS: u64 = 1024;
    /// … and this often in an inline attempt, which has 1 ms (and no watchdog).
    pub const INLINE_CLOCK_EVERY_OPS: u64 = 32;
}

/// All compiled scripts by code, as one immutable table.
pub type ScriptTable = HashMap<String, Arc<Script>>;

/// A script file, compiled once.
#[derive(Debug)]
pub struct Script {
    /// The script code (file name stem).
    pub code: String,
    /// Where it was read from.
    pub path: PathBuf,
    /// Its source text.
    pub source: String,
    /// The compiled form, or why it does not compile.
    pub compiled: Result<Arc<AST>, CompileError>,
    /// A short hash of the source: which version answered (recordings).
    pub version: String,
    /// Which function each call resolved to, kept between runs.
    caches: KeptCaches,
}

impl Script {
    /// A script read from `path`, with its compile result.
    pub fn new(
        code: &str,
        path: PathBuf,
        source: String,
        compiled: Result<Arc<AST>, CompileError>,
    ) -> Self {
        Script {
            code: code.to_owned(),
            path,
            version: version_of(&source),
            caches: KeptCaches::for_script(compiled.as_deref().ok()),
            source,
            compiled,
        }
    }
}

/// Rhai's function-resolution caches, kept between runs of one script instead
/// of being built anew for each run (issue #17): a run finds each function it
/// calls by hashing the name and argument types and searching the script's
/// own functions and the engine's modules, ≈ 640 instructions a call; from the
/// third run on it finds the answer in the cache. The caches say which function
/// a call resolved to and hold no value of any run, and they belong to one
/// compiled script on one engine, so a reloaded script starts with empty ones.
/// A script that imports a module keeps none: its modules are evaluated anew
/// by every run, and their methods would be found through the caches.
/// A few are kept (one per thread that ran the script at once, up to
/// [`KeptCaches::MAX`]); a run that finds none starts with empty ones.
struct KeptCaches(Option<std::sync::Mutex<Vec<rhai::Caches>>>);

impl KeptCaches {
    /// The most caches kept for one script.
    const MAX: usize = 8;

    fn for_script(ast: Option<&AST>) -> Self {
        let imports = |ast: &AST| {
            !ast.walk(&mut |path: &[rhai::ASTNode]| {
                !matches!(
                    path.last(),
                    Some(rhai::ASTNode::Stmt(rhai::Stmt::Import(..)))
                )
            })
        };
        Self(
            ast.filter(|ast| !imports(ast))
                .map(|_| std::sync::Mutex::new(Vec::new())),
        )
    }

    /// Caches for a run: kept ones if there are, empty ones otherwise.
    fn take(&self) -> rhai::Caches {
        self.0
            .as_ref()
            .and_then(|pool| pool.lock().ok()?.pop())
            .unwrap_or_default()
    }

    /// Gives back the caches of a run that ended (in any way).
    fn give(&self, mut caches: rhai::Caches) {
        if let Some(pool) = &self.0 {
            // The script's own level only: blocks and function calls pop the
            // levels they push as they end, even on an error; this makes sure.
            caches.rewind_fn_resolution_caches(1);
            if let Ok(mut pool) = pool.lock() {
                if pool.len() < Self::MAX {
                    pool.push(caches);
                }
            }
        }
    }

    /// Calls whose resolution is kept, over all kept caches (for tests).
    #[cfg(test)]
    fn kept_calls(&self) -> Option<usize> {
        let pool = self.0.as_ref()?.lock().ok()?;
        Some(
            pool.iter()
                .map(|c| c.clone().fn_resolution_cache_mut().dict.len())
                .sum(),
        )
    }
}

impl std::fmt::Debug for KeptCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "kept" } else { "none" })
    }
}

/// What scripts reach beyond the engine: pushes, events. Implemented by the
/// server's state; a seam for other backends (§13) and for `check`.
pub trait Host: Send + Sync {
    /// Runs channel `code`'s `send_svcscriptcode_ws` with `data` in the background.
    fn channel_send_ws(&self, code: &str, data: serde_json::Value) -> Result<(), String>;
    /// Pushes `data` to the connections of `channel`: all of them, or the one with id `to`.
    /// Returns how many connections took it.
    fn ws_send(
        &self,
        channel: &str,
        to: Option<&str>,
        data: serde_json::Value,
    ) -> Result<usize, String>;
    /// Publishes a system event; returns its id.
    fn emit_event(
        &self,
        source: &str,
        name: &str,
        data: serde_json::Value,
    ) -> Result<String, String>;
    /// Creates a send job for channel `code` with business-key `tags`; returns its id once committed.
    fn channel_send(
        &self,
        code: &str,
        data: serde_json::Value,
        tags: &[String],
    ) -> Result<String, String>;
    /// Calls the channel's external system; `budget` is what is left of the
    /// run's time; the call is a span under `trace` (the run's span), and
    /// goes on the job attempt's `trail` when the run is a job's.
    fn webquery(
        &self,
        channel: &Channel,
        request: serde_json::Value,
        budget: Duration,
        trace: &opentelemetry::trace::SpanContext,
        trail: Option<&trail::Trail>,
    ) -> Result<serde_json::Value, String>;
    /// The channel's value for `key`, if any.
    fn kv_get(&self, channel: &str, key: &str) -> Result<Option<serde_json::Value>, String>;
    /// Stores (or with `None` removes) the channel's value for `key`, gone after `ttl` if given.
    fn kv_set(
        &self,
        channel: &str,
        key: &str,
        value: Option<serde_json::Value>,
        ttl: Option<Duration>,
    ) -> Result<(), String>;
    /// Removes the channel's `key`; `true` when it was there.
    fn kv_delete(&self, channel: &str, key: &str) -> Result<bool, String>;
    /// The channel's keys starting with `prefix`, sorted, at most 1 000.
    fn kv_keys(&self, channel: &str, prefix: &str) -> Result<Vec<String>, String>;
    /// Adds `tag` to job `job` (at most 8 tags a job).
    fn job_tag(&self, job: &str, tag: &str) -> Result<(), String>;
    /// Adds `n` to the integer under `key` (missing: 0), atomically; returns the new value.
    fn kv_incr(&self, channel: &str, key: &str, n: i64) -> Result<i64, String>;
    /// Sets `key` to `new` only if it now holds `expected` (`None`: absent), atomically.
    fn kv_cas(
        &self,
        channel: &str,
        key: &str,
        expected: Option<serde_json::Value>,
        new: Option<serde_json::Value>,
    ) -> Result<bool, String>;
    /// Reads a file of the channel's files API.
    fn file_read(&self, channel: &Channel, name: &str) -> Result<String, String>;
    /// Writes a file of the channel's files API.
    fn file_write(&self, channel: &Channel, name: &str, text: &str) -> Result<(), String>;
    /// `job_wait(secs)`: the send job `job` waits for the external system's answer.
    fn job_wait(&self, job: &JobRun, secs: u64) -> Result<(), String>;
    /// A log line of the script.
    fn log(&self, level: tracing::Level, channel: &str, request_id: &str, text: &str);
    /// The run ended after `operations` operations.
    fn finished(&self, operations: u64);
}

/// A host with nothing behind it (unit tests): every call fails with a message.
pub struct NoHost;

impl Host for NoHost {
    fn channel_send_ws(&self, _: &str, _: serde_json::Value) -> Result<(), String> {
        Err(Self::NO.into())
    }
    fn ws_send(&self, _: &str, _: Option<&str>, _: serde_json::Value) -> Result<usize, String> {
        Err(Self::NO.into())
    }
    fn emit_event(&self, _: &str, _: &str, _: serde_json::Value) -> Result<String, String> {
        Err(Self::NO.into())
    }
    fn channel_send(&self, _: &str, _: serde_json::Value, _: &[String]) -> Result<String, String> {
        Err(Self::NO.into())
    }
    fn webquery(
        &self,
        _: &Channel,
        _: serde_json::Value,
        _: Duration,
        _: &opentelemetry::trace::SpanContext,
        _: Option<&trail::Trail>,
    ) -> Result<serde_json::Value, String> {
        Err(Self::NO.into())
    }
    fn kv_get(&self, _: &str, _: &str) -> Result<Option<serde_json::Value>, String> {
        Err(Self::NO.into())
    }
    fn kv_set(
        &self,
        _: &str,
        _: &str,
        _: Option<serde_json::Value>,
        _: Option<Duration>,
    ) -> Result<(), String> {
        Err(Self::NO.into())
    }
    fn kv_delete(&self, _: &str, _: &str) -> Result<bool, String> {
        Err(Self::NO.into())
    }
    fn kv_keys(&self, _: &str, _: &str) -> Result<Vec<String>, String> {
        Err(Self::NO.into())
    }
    fn job_tag(&self, _: &str, _: &str) -> Result<(), String> {
        Err(Self::NO.into())
    }
    fn kv_incr(&self, _: &str, _: &str, _: i64) -> Result<i64, String> {
        Err(Self::NO.into())
    }
    fn kv_cas(
        &self,
        _: &str,
        _: &str,
        _: Option<serde_json::Value>,
        _: Option<serde_json::Value>,
    ) -> Result<bool, String> {
        Err(Self::NO.into())
    }
    fn file_read(&self, _: &Channel, _: &str) -> Result<String, String> {
        Err(Self::NO.into())
    }
    fn file_write(&self, _: &Channel, _: &str, _: &str) -> Result<(), String> {
        Err(Self::NO.into())
    }
    fn job_wait(&self, job: &JobRun, secs: u64) -> Result<(), String> {
        *job.wait_secs.lock().unwrap_or_else(|p| p.into_inner()) = Some(secs);
        Ok(())
    }
    fn log(&self, level: tracing::Level, channel: &str, request_id: &str, text: &str) {
        trace(level, channel, request_id, text);
    }
    fn finished(&self, _: u64) {}
}

impl NoHost {
    const NO: &'static str = "not available outside the server";
}

/// Everything a run knows about why it runs: shown to scripts through the API.
pub struct RunContext {
    /// The channel the script runs for.
    pub channel: Arc<Channel>,
    /// The request, frame or job id, for log lines.
    pub request_id: String,
    /// The caller.
    pub identity: Identity,
    /// `startparam(1..)`.
    pub params: Vec<ImmutableString>,
    /// The script table of this run, for `import`.
    pub scripts: Arc<ScriptTable>,
    /// Pushes, events, jobs, the store.
    pub host: Arc<dyn Host>,
    /// The job this run belongs to (send, inbox and schedule runs).
    pub job: Option<Arc<JobRun>>,
    /// A `startparam` computed only if the script asks for it.
    pub lazy: Option<LazyParam>,
    /// The span the run is part of: `webquery` calls are its children.
    pub trace: opentelemetry::trace::SpanContext,
}

/// The job a run belongs to (send, inbox and schedule runs): lets `job_wait`
/// mark a send job waiting.
#[derive(Debug, Default)]
pub struct JobRun {
    /// The job id.
    pub id: String,
    /// Seconds to wait for the external system's answer, once `job_wait` was called.
    pub wait_secs: std::sync::Mutex<Option<u64>>,
    /// `true` for send jobs (only they may wait).
    pub can_wait: bool,
    /// What the attempt did (calls, log lines), for the job card.
    pub trail: trail::Trail,
}

/// A `startparam(n)` value that is costly to build (the request headers as JSON)
/// and often unused: made on first use, once.
pub struct LazyParam {
    /// The 1-based `n` it answers.
    pub n: usize,
    make: Box<dyn Fn() -> String + Send + Sync>,
    value: OnceLock<ImmutableString>,
}

impl LazyParam {
    /// A lazy `startparam(n)` made by `make`.
    pub fn new(n: usize, make: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self {
            n,
            make: Box::new(make),
            value: OnceLock::new(),
        }
    }

    /// The value, made now if it was not yet.
    pub fn get(&self) -> ImmutableString {
        self.value.get_or_init(|| (self.make)().into()).clone()
    }
}

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static CONTEXT: RefCell<Option<Arc<RunContext>>> = const { RefCell::new(None) };
    /// Modules this run has imported, by script code: a module is evaluated once
    /// per run that imports it, so nothing of one run reaches another.
    static MODULES: RefCell<HashMap<String, rhai::Shared<Module>>> = RefCell::new(HashMap::new());
    static IMPORTING: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static INLINE: Cell<bool> = const { Cell::new(false) };
    /// A store write of this run failed for lack of space.
    static STORE_FULL: Cell<bool> = const { Cell::new(false) };
    static CLUSTER_DOWN: Cell<bool> = const { Cell::new(false) };
    /// Operations of the run so far (for dry runs, which report them).
    static OPERATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Every function that reaches beyond the run (a store, the network, other
/// channels, the log), with a call that exercises it. Each one goes through
/// the run's [`Host`] and leaves an inline attempt; a dry run (SPEC §15)
/// captures the writes and lets the reads ([`READS`]) see the stores. A
/// function added to the API must be listed here or in [`PURE`] (a test
/// holds the two lists to the engine).
pub const SIDE_EFFECTS: &[(&str, &str)] = &[
    ("kv_get", "kv_get(\"a\")"),
    ("kv_keys", "kv_keys(\"a\")"),
    ("file_read", "file_read(\"f\")"),
    ("kv_set", "kv_set(\"a\", 1)"),
    ("kv_delete", "kv_delete(\"a\")"),
    ("kv_incr", "kv_incr(\"n\", 1)"),
    ("kv_cas", "kv_cas(\"n\", (), 1)"),
    ("file_write", "file_write(\"f\", \"t\")"),
    ("emit_event", "emit_event(\"a.b\", 1)"),
    ("channel_send", "channel_send(\"c\", 1)"),
    ("channel_send_ws", "channel_send_ws(\"c\", 1)"),
    ("ws_send", "ws_send(1)"),
    ("ws_send_to", "ws_send_to(\"x\", 1)"),
    ("webquery", "webquery(#{})"),
    ("job_wait", "job_wait(5)"),
    ("job_tag", "job_tag(\"t\")"),
    ("log_info", "log_info(\"x\")"),
    ("log_warn", "log_warn(\"x\")"),
    ("log_error", "log_error(\"x\")"),
];

/// The [`SIDE_EFFECTS`] that only read.
pub const READS: &[&str] = &["kv_get", "kv_keys", "file_read"];

/// Switchyard's functions without a side effect: they depend on the run's
/// inputs at most, and run the same in an inline attempt, a real run and a
/// dry run.
pub const PURE: &[&str] = &[
    "startparam",
    "parse_json",
    "to_json",
    "parse_query",
    "now",
    "uuid",
    "has_role",
    "user_id",
    "token_remote",
    "secret",
    "token_remote2",
    "channel_mode",
    "md5_hex",
    "sha256_hex",
    "hmac_sha256_hex",
    "base64_encode",
    "base64_decode",
    "sleep",
    "fail",
    "webhook_verify",
    "hmac_sha256",
    "sha256",
    "hex_encode",
    "hex_decode",
    "base64_decode_blob",
    "eq_ct",
    "url_encode",
    "url_decode",
    "join",
    "unix_time",
    "unix_time_ms",
    "parse_time",
    "format_time",
    "fault_panic",
];

/// A log line of a script (`log_*`, `print`, `debug`), as tracing writes it.
pub fn trace(level: tracing::Level, channel: &str, request_id: &str, text: &str) {
    match level {
        tracing::Level::ERROR => {
            tracing::error!(target: "switchyard::script", channel, request_id, "{text}")
        }
        tracing::Level::WARN => {
            tracing::warn!(target: "switchyard::script", channel, request_id, "{text}")
        }
        tracing::Level::INFO => {
            tracing::info!(target: "switchyard::script", channel, request_id, "{text}")
        }
        _ => tracing::debug!(target: "switchyard::script", channel, request_id, "{text}"),
    }
}

/// Notes that a store write of the run on this thread failed for lack of space:
/// a run that then fails is [`RunError::StoreFull`] (`507`), not a script error.
pub fn note_store_full() {
    STORE_FULL.with(|f| f.set(true));
}

/// Notes that a shared-state call of the run on this thread found NATS
/// unreachable: a run that then fails is [`RunError::ClusterUnavailable`].
pub fn note_cluster_unavailable() {
    CLUSTER_DOWN.with(|f| f.set(true));
}

/// Whether the run on this thread (if any) is past its deadline at `now`.
fn past_deadline(now: Instant) -> bool {
    DEADLINE.with(|d| d.get().is_some_and(|t| now >= t))
}

/// What is left of the current run's time (a long time outside a run).
pub(crate) fn remaining() -> Duration {
    DEADLINE.with(|d| {
        d.get().map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(Instant::now())
        })
    })
}

/// Calls `f` with the current run's context, if a run is under way on this thread.
pub(crate) fn with_context<T>(f: impl FnOnce(Option<&RunContext>) -> T) -> T {
    CONTEXT.with(|c| f(c.borrow().as_deref()))
}

/// Sets the run context and deadline on this thread; clears them when dropped.
struct RunGuard;

impl RunGuard {
    fn enter(ctx: Arc<RunContext>, deadline: Instant) -> Self {
        DEADLINE.with(|d| d.set(Some(deadline)));
        STORE_FULL.with(|f| f.set(false));
        CLUSTER_DOWN.with(|f| f.set(false));
        CONTEXT.with(|c| *c.borrow_mut() = Some(ctx));
        // Inline attempts (1 ms) read the clock themselves, more often.
        if !INLINE.with(Cell::get) {
            watchdog::arm(deadline);
        }
        memory::start();
        Self
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let operations = OPERATIONS.with(|o| o.replace(0));
        with_context(|c| {
            if let Some(c) = c {
                c.host.finished(operations);
            }
        });
        memory::end();
        watchdog::disarm();
        DEADLINE.with(|d| d.set(None));
        CONTEXT.with(|c| *c.borrow_mut() = None);
        MODULES.with(|m| m.borrow_mut().clear());
        IMPORTING.with(|i| i.borrow_mut().clear());
    }
}

/// The shared engine.
#[derive(Clone)]
pub struct ScriptEngine {
    engine: Arc<Engine>,
    compiles: Arc<compiler::Compiles>,
    /// Every function name the engine has, for the authoring check.
    known: Arc<lint::Known>,
}

/// The first 12 hex digits of the SHA-256 of a script's source.
pub fn version_of(source: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(source.as_bytes())[..6])
}

/// The message of a script whose (large) compile is still under way.
pub const STILL_COMPILING: &str =
    "still compiling (a large script compiles on its own thread; the last good version serves meanwhile)";

impl Default for ScriptEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptEngine {
    /// Builds the one engine: limits, deadline check, API, sibling-module imports.
    pub fn new() -> Self {
        let mut engine = Engine::new();
        engine
            .set_max_call_levels(limits::CALL_LEVELS)
            .set_max_expr_depths(limits::EXPR_DEPTH, limits::EXPR_DEPTH)
            .set_max_string_size(limits::STRING_BYTES)
            .set_max_array_size(limits::ARRAY_LEN)
            .set_max_map_size(limits::MAP_LEN)
            .set_max_modules(limits::MODULES);
        engine.disable_symbol("eval");
        engine.on_progress(|ops| {
            // Before every operation: a slow operation cannot carry a run far past its
            // deadline, nor a growing container past the run's memory.
            if watchdog::expired() {
                return Some(Dynamic::from(TIMEOUT));
            }
            if memory::over() {
                return Some(Dynamic::from(OUT_OF_MEMORY));
            }
            OPERATIONS.with(|o| o.set(ops));
            let every = if INLINE.with(Cell::get) {
                limits::INLINE_CLOCK_EVERY_OPS
            } else {
                limits::CLOCK_EVERY_OPS
            };
            if ops & (every - 1) != 0 {
                return None;
            }
            let now = Instant::now();
            if past_deadline(now) {
                return Some(Dynamic::from(TIMEOUT));
            }
            priority::check(now);
            None
        });
        engine.set_module_resolver(SiblingResolver);
        api::register(&mut engine);
        webhooks::register(&mut engine);
        library::register(&mut engine);
        Self {
            known: Arc::new(lint::Known::of(&engine)),
            engine: Arc::new(engine),
            compiles: Arc::default(),
        }
    }

    /// The Rhai engine itself.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Calls in `ast` to functions that exist nowhere (SPEC §10 "Authoring"),
    /// the modules it imports looked up in `scripts`.
    pub fn unknown_calls(&self, ast: &AST, scripts: &ScriptTable) -> Vec<lint::Finding> {
        let module = |path: &str| {
            let code = path.trim_start_matches("./");
            let code = code.strip_suffix(".rhai").unwrap_or(code);
            let script = scripts.get(code)?;
            script.compiled.as_ref().ok().map(|ast| lint::exports(ast))
        };
        lint::unknown_calls(&self.known, ast, &module)
    }

    /// From now on, scripts over [`compiler::INLINE_COMPILE_BYTES`] compile on
    /// threads of their own; `on_done` is called when one ends (to reload).
    pub fn compile_in_background(&self, on_done: impl Fn() + Send + Sync + 'static) {
        self.compiles.in_background(on_done);
    }

    /// Compiles `source` on a detached thread (never one the runtime waits for
    /// at shutdown) and keeps the result for the next reload; the answer comes
    /// through the returned future.
    pub async fn compile_detached(&self, source: String) -> Result<Arc<AST>, CompileError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Err(e) = self.compile_apart(source, move |result| {
            let _ = tx.send(result);
        }) {
            return Err(CompileError {
                line: 1,
                col: 1,
                message: format!("cannot start a compile: {e}"),
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(CompileError {
                line: 1,
                col: 1,
                message: "the compile ended without a result".into(),
            })
        })
    }

    /// Compiles `source` on a detached thread of its own, keeps the result for
    /// the next reload (which it triggers) and hands it to `then`.
    fn compile_apart(
        &self,
        source: String,
        then: impl FnOnce(Result<Arc<AST>, CompileError>) + Send + 'static,
    ) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("compile".into())
            .spawn(move || {
                let result = me.compile(&source).map(Arc::new);
                me.compiles.done(&source, result.clone());
                then(result);
            })
            .map(|_| ())
    }

    /// Compiles `source`; the error has the position of the problem.
    pub fn compile(&self, source: &str) -> Result<AST, CompileError> {
        self.engine.compile(source).map_err(|e| {
            let pos = e.position();
            CompileError {
                line: pos.line().unwrap_or(1),
                col: pos.position().unwrap_or(1),
                message: e.err_type().to_string(),
            }
        })
    }

    /// A script file with its compiled form: compiled here, taken from a compile
    /// that ended elsewhere, or (a large one, with background compiles on)
    /// [`STILL_COMPILING`] while its own thread compiles it.
    pub fn load(&self, code: &str, path: PathBuf, source: String) -> Script {
        let still = || CompileError {
            line: 1,
            col: 1,
            message: STILL_COMPILING.into(),
        };
        let compiled = match self.compiles.find(&source) {
            compiler::Found::Done(result) => result,
            compiler::Found::Pending => Err(still()),
            compiler::Found::Unknown(false) => self.compile(&source).map(Arc::new),
            compiler::Found::Unknown(true) => match self.compile_apart(source.clone(), |_| {}) {
                Ok(()) => Err(still()),
                // No thread for it: compile here, and no longer mark it pending.
                Err(_) => {
                    self.compiles.forget(&source);
                    self.compile(&source).map(Arc::new)
                }
            },
        };
        // The AST carries its script's code: a caught error's `script`.
        let compiled = compiled.map(|mut ast| {
            if ast.source() != Some(code) {
                Arc::make_mut(&mut ast).set_source(code);
            }
            ast
        });
        Script::new(code, path, source, compiled)
    }

    /// Runs `script` on a blocking thread and returns the values of `outputs`
    /// (top-level variables, `()` when the script did not set them).
    ///
    /// The run is first tried inline, on the calling (async) thread, for at most
    /// [`INLINE_BUDGET`] and without side effects: most scripts finish there and
    /// skip the hop to a blocking thread. A run that needs more time or calls a
    /// function with a side effect (kv, webquery, events, pushes, logs…) is
    /// abandoned, uncatchably, and run again from the start on a blocking thread
    /// under the full timeout. Nothing of the abandoned attempt is kept.
    pub async fn run(
        &self,
        script: Arc<Script>,
        ctx: RunContext,
        timeout: Duration,
        outputs: &'static [&'static str],
    ) -> Result<Vec<Dynamic>, RunError> {
        let started = Instant::now();
        let ctx = Arc::new(ctx);
        if let Some(done) = self.try_inline(&script, &ctx, started, timeout, outputs) {
            return done;
        }
        self.run_off_thread(script, ctx, started, timeout, outputs)
            .await
    }

    /// The first half of [`run`](Self::run), for callers that want to answer
    /// right where they are when the run finishes inline: the inline attempt,
    /// or `None` when the run must go to [`run_off_thread`](Self::run_off_thread).
    pub fn try_inline(
        &self,
        script: &Script,
        ctx: &Arc<RunContext>,
        started: Instant,
        timeout: Duration,
        outputs: &[&str],
    ) -> Option<Result<Vec<Dynamic>, RunError>> {
        let done = self.run_inline(script, ctx, started + timeout.min(INLINE_BUDGET), outputs)?;
        crate::telemetry::script_duration(ctx.channel.code(), started.elapsed().as_secs_f64());
        Some(done)
    }

    /// The second half of [`run`](Self::run): the run from its start on a blocking
    /// thread, under the deadline `started + timeout`.
    pub async fn run_off_thread(
        &self,
        script: Arc<Script>,
        ctx: Arc<RunContext>,
        started: Instant,
        timeout: Duration,
        outputs: &'static [&'static str],
    ) -> Result<Vec<Dynamic>, RunError> {
        let channel = ctx.channel.doc.code.clone();
        let request_id = ctx.request_id.clone();
        let engine = self.engine.clone();
        // The answer does not wait for a busy (or low-priority) thread to
        // notice its deadline: past it, the run can no longer have a side
        // effect (see `no_side_effects_inline`) and stops at its next check.
        let answer_by = tokio::time::Instant::from_std(started + timeout + DEADLINE_GRACE);
        // Waiting for a computing slot counts against the deadline too.
        let run = async move {
            let key: Arc<str> = Arc::from(ctx.channel.code());
            let slot = priority::slots().acquire(&key).await;
            tokio::task::spawn_blocking(move || {
                let _watch = priority::Watch::start(Some(slot));
                run_here(&engine, &script, ctx, started + timeout, outputs)
            })
            .await
        };
        let result = match tokio::time::timeout_at(answer_by, run).await {
            Ok(joined) => {
                joined.unwrap_or_else(|e| Err(panicked(&channel, &request_id, e.into_panic())))
            }
            Err(_) => Err(RunError::Timeout),
        };
        crate::telemetry::script_duration(&channel, started.elapsed().as_secs_f64());
        result
    }

    /// The inline attempt; `None` when the run must move to a blocking thread.
    fn run_inline(
        &self,
        script: &Script,
        ctx: &Arc<RunContext>,
        deadline: Instant,
        outputs: &[&str],
    ) -> Option<Result<Vec<Dynamic>, RunError>> {
        INLINE.with(|i| i.set(true));
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_here(&self.engine, script, ctx.clone(), deadline, outputs)
        }));
        INLINE.with(|i| i.set(false));
        match attempt {
            Err(panic) => Some(Err(panicked(&ctx.channel.doc.code, &ctx.request_id, panic))),
            // Out of inline time, or a side effect ahead: start over on a blocking thread.
            Ok(Err(RunError::Timeout)) => None,
            Ok(done) => Some(done),
        }
    }
}

/// A panic in a script run (in the engine or one of our functions): logged with
/// the run's request id, counted in `switchyard_panics_total`, and turned into
/// a failed run; the thread and the process carry on.
fn panicked(channel: &str, request_id: &str, panic: Box<dyn std::any::Any + Send>) -> RunError {
    let what = crate::telemetry::panic_text(panic.as_ref());
    tracing::error!(%channel, request_id, "script run panicked: {what}");
    metrics::counter!("switchyard_panics_total").increment(1);
    RunError::Failed("internal error: the script run panicked".into())
}

/// The token of a run stopped at its deadline.
const TIMEOUT: &str = "timeout";
/// The token of a run stopped for holding more than [`memory::RUN_MEMORY`].
const OUT_OF_MEMORY: &str = "memory";

/// The token of `fail(message)`, which ends a run uncatchably.
#[derive(Clone)]
pub(crate) struct Failed(pub ImmutableString);

/// How long past its deadline a run's answer waits for the run to stop by itself.
pub const DEADLINE_GRACE: Duration = Duration::from_millis(5);

/// The longest a script runs on an async thread before it moves to a blocking one.
pub const INLINE_BUDGET: Duration = Duration::from_millis(1);

/// Called first by every function with a side effect. In an inline attempt it
/// ends the attempt (the run starts over on a blocking thread); past the run's
/// deadline it ends the run as timed out, so a run whose answer has gone out
/// (see [`DEADLINE_GRACE`]) changes nothing more. `ErrorTerminated` cannot be
/// caught by the script.
pub(crate) fn no_side_effects_inline() -> Result<(), Box<EvalAltResult>> {
    if INLINE.with(Cell::get) {
        return Err(EvalAltResult::ErrorTerminated("inline".into(), Position::NONE).into());
    }
    if past_deadline(Instant::now()) {
        return Err(EvalAltResult::ErrorTerminated("timeout".into(), Position::NONE).into());
    }
    Ok(())
}

/// Called first by functions whose cost grows with their input (`parse_json`,
/// `to_json`, hashing…): in an inline attempt, an input over
/// [`limits::INLINE_INPUT`] ends the attempt, so that the work is done on a
/// blocking thread and never holds an async one.
pub(crate) fn heavy(size: usize) -> Result<(), Box<EvalAltResult>> {
    if size > limits::INLINE_INPUT && INLINE.with(Cell::get) {
        return Err(EvalAltResult::ErrorTerminated("inline".into(), Position::NONE).into());
    }
    Ok(())
}

/// [`heavy`] for a value: its rough size, counted only in an inline attempt.
pub(crate) fn heavy_value(value: &Dynamic) -> Result<(), Box<EvalAltResult>> {
    if INLINE.with(Cell::get) {
        heavy(convert::rough_size(value, limits::INLINE_INPUT + 1))?;
    }
    Ok(())
}

/// Runs a script on the current thread under `deadline`.
fn run_here(
    engine: &Engine,
    script: &Script,
    ctx: Arc<RunContext>,
    deadline: Instant,
    outputs: &[&str],
) -> Result<Vec<Dynamic>, RunError> {
    let ast = match &script.compiled {
        Ok(ast) => ast,
        Err(e) => {
            return Err(RunError::Failed(format!(
                "script {} does not compile: {e}",
                script.code
            )))
        }
    };
    let _guard = RunGuard::enter(ctx, deadline);
    let mut scope = Scope::new();
    for name in outputs {
        scope.push_dynamic(*name, Dynamic::UNIT);
    }
    let mut caches = script.caches.take();
    let result = engine.run_ast_with_caches(&mut caches, &mut scope, ast);
    script.caches.give(caches);
    match result {
        // Taken out of the scope, not cloned: the scope is dropped next.
        Ok(()) => Ok(outputs
            .iter()
            .map(|name| scope.get_mut(name).map(std::mem::take).unwrap_or_default())
            .collect()),
        Err(e) => match classify(&script.code, *e) {
            RunError::Failed(message) if STORE_FULL.with(Cell::get) => {
                Err(RunError::StoreFull(message))
            }
            RunError::Failed(message) if CLUSTER_DOWN.with(Cell::get) => {
                Err(RunError::ClusterUnavailable(message))
            }
            other => Err(other),
        },
    }
}

/// Added to an error of an operation on `()`, which is nearly always a missing value.
const UNIT_HINT: &str =
    " (a value is (): a map field or variable that was probably missing; `?.` and `??` handle optional ones)";

/// `true` when `err` is an operation that met `()` where it wanted a value.
fn on_unit(err: &EvalAltResult) -> bool {
    let mut inner = err;
    while let EvalAltResult::ErrorInFunctionCall(_, _, e, _)
    | EvalAltResult::ErrorInModule(_, e, _) = inner
    {
        inner = e;
    }
    match inner {
        // "name (type, type)": one of the arguments is ().
        EvalAltResult::ErrorFunctionNotFound(sig, _) => sig
            .split_once(" (")
            .and_then(|(_, args)| args.strip_suffix(')'))
            .is_some_and(|args| args.split(", ").any(|t| t == "()")),
        EvalAltResult::ErrorIndexingType(ty, _)
        | EvalAltResult::ErrorMismatchDataType(_, ty, _)
        | EvalAltResult::ErrorMismatchOutputType(_, ty, _) => ty == "()",
        EvalAltResult::ErrorDotExpr(msg, _) => msg.contains("()"),
        _ => false,
    }
}

/// Turns an engine error into a [`RunError`], finding a timeout wherever it is nested.
fn classify(code: &str, err: EvalAltResult) -> RunError {
    let mut inner = &err;
    loop {
        match inner {
            EvalAltResult::ErrorTerminated(token, _)
                if token.read_lock::<ImmutableString>().as_deref()
                    == Some(&OUT_OF_MEMORY.into()) =>
            {
                return RunError::Failed(format!(
                    "the run held more than {} MiB of memory ({code}.rhai)",
                    memory::RUN_MEMORY >> 20
                ));
            }
            EvalAltResult::ErrorTerminated(token, pos) if token.is::<Failed>() => {
                let message = token.clone_cast::<Failed>().0;
                let at = match (pos.line(), pos.position()) {
                    (Some(l), Some(c)) => format!(" ({code}.rhai:{l}:{c})"),
                    _ => String::new(),
                };
                return RunError::Fail(format!("{message}{at}"));
            }
            EvalAltResult::ErrorTerminated(..) => return RunError::Timeout,
            EvalAltResult::ErrorInFunctionCall(_, _, e, _)
            | EvalAltResult::ErrorInModule(_, e, _) => inner = e,
            _ => break,
        }
    }
    let pos = err.position();
    let at = match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!(" ({code}.rhai:{l}:{c})"),
        (Some(l), None) => format!(" ({code}.rhai:{l})"),
        _ => format!(" ({code}.rhai)"),
    };
    let mut message = err.to_string();
    // Rhai appends " (line L, position C)"; the position is given once, in our form.
    if let Some(cut) = message.rfind(" (line ") {
        message.truncate(cut);
    }
    if on_unit(&err) {
        message.push_str(UNIT_HINT);
    }
    RunError::Failed(format!("{message}{at}"))
}

/// Resolves `import "name" as m;` to the sibling script `name`, from the run's own table.
struct SiblingResolver;

impl ModuleResolver for SiblingResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<rhai::Shared<Module>, Box<EvalAltResult>> {
        let code = path.trim_start_matches("./");
        let code = code.strip_suffix(".rhai").unwrap_or(code);
        let script = with_context(|c| c.and_then(|c| c.scripts.get(code).cloned()))
            .ok_or_else(|| EvalAltResult::ErrorModuleNotFound(path.to_owned(), pos))?;
        if let Some(module) = MODULES.with(|m| m.borrow().get(code).cloned()) {
            return Ok(module);
        }
        let in_module = |msg: String| {
            Box::new(EvalAltResult::ErrorInModule(
                path.to_owned(),
                EvalAltResult::ErrorRuntime(msg.into(), pos).into(),
                pos,
            ))
        };
        let ast = script
            .compiled
            .as_ref()
            .map_err(|e| in_module(format!("does not compile: {e}")))?;
        let refused = IMPORTING.with(|i| {
            let mut stack = i.borrow_mut();
            if stack.iter().any(|c| c == code) {
                return Some("import cycle".to_string());
            }
            if stack.len() >= limits::IMPORT_DEPTH {
                return Some(format!(
                    "modules import modules more than {} deep",
                    limits::IMPORT_DEPTH
                ));
            }
            stack.push(code.to_owned());
            None
        });
        if let Some(why) = refused {
            return Err(in_module(why));
        }
        // Evaluated for this run only: a module's values (closures' captured
        // variables included) and what its top level read (`token_remote()`…)
        // must never reach another run or another channel.
        let result = Module::eval_ast_as_new(Scope::new(), ast, engine);
        IMPORTING.with(|i| i.borrow_mut().pop());
        let module = rhai::Shared::new(
            result.map_err(|e| Box::new(EvalAltResult::ErrorInModule(path.to_owned(), e, pos)))?,
        );
        MODULES.with(|m| m.borrow_mut().insert(code.to_owned(), module.clone()));
        Ok(module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(engine: &ScriptEngine, scripts: &[(&str, &str)]) -> Arc<ScriptTable> {
        Arc::new(
            scripts
                .iter()
                .map(|(code, src)| {
                    (
                        code.to_string(),
                        Arc::new(engine.load(code, PathBuf::from(code), src.to_string())),
                    )
                })
                .collect(),
        )
    }

    fn run(engine: &ScriptEngine, src: &str, timeout_ms: u64) -> Result<Vec<Dynamic>, RunError> {
        run_with(engine, &[("main", src)], timeout_ms)
    }

    fn run_with(
        engine: &ScriptEngine,
        scripts: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<Vec<Dynamic>, RunError> {
        let scripts = table(engine, scripts);
        let channel = crate::channel::test_channel(r#"{"code":"t","token_remote":"rt"}"#);
        let ctx = RunContext {
            channel: Arc::new(channel),
            request_id: "r1".into(),
            identity: Identity {
                user_id: "u1".into(),
                roles: vec!["admin".into()],
            },
            params: vec!["POST".into(), "/x".into()],
            scripts: scripts.clone(),
            host: Arc::new(NoHost),
            job: None,
            lazy: None,
            trace: opentelemetry::trace::SpanContext::empty_context(),
        };
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        run_here(
            &engine.engine,
            &scripts["main"],
            Arc::new(ctx),
            deadline,
            &["status", "body"],
        )
    }

    fn context(scripts: Arc<ScriptTable>) -> Arc<RunContext> {
        let channel = crate::channel::test_channel(r#"{"code":"t"}"#);
        Arc::new(RunContext {
            channel: Arc::new(channel),
            request_id: "r".into(),
            identity: Identity::default(),
            params: Vec::new(),
            scripts,
            host: Arc::new(NoHost),
            job: None,
            lazy: None,
            trace: opentelemetry::trace::SpanContext::empty_context(),
        })
    }

    #[test]
    fn resolution_caches_are_kept_per_script_and_resolve_by_argument_types() {
        let engine = ScriptEngine::new();
        let source = |n: usize| {
            format!(
                "fn twice(v) {{ {} }}
                 let v = parse_json(startparam(1));
                 body = type_of(v) + \":\" + twice(v);",
                vec!["v"; n].join(" + ")
            )
        };
        let scripts = table(
            &engine,
            &[
                ("main", &source(2)),
                ("lib", "export const K = 1;"),
                ("user", "import \"lib\" as l; body = l::K;"),
            ],
        );
        let run = |script: &Script, input: &str| {
            let mut ctx = Arc::into_inner(context(scripts.clone())).unwrap();
            ctx.params = vec![input.into()];
            let deadline = Instant::now() + Duration::from_secs(5);
            run_here(&engine.engine, script, Arc::new(ctx), deadline, &["body"]).unwrap()[0]
                .to_string()
        };
        // The same calls with other argument types each find their own function.
        for (input, answer) in [
            ("2", "i64:4"),
            ("\"ab\"", "string:abab"),
            ("2.5", "f64:5.0"),
            ("3", "i64:6"),
            ("\"c\"", "string:cc"),
        ] {
            assert_eq!(run(&scripts["main"], input), answer);
        }
        assert!(scripts["main"].caches.kept_calls().unwrap() > 0);
        // A new version of the script starts with caches of its own.
        let reloaded = engine.load("main", "main".into(), source(3));
        assert_eq!(reloaded.caches.kept_calls(), Some(0));
        for _ in 0..3 {
            assert_eq!(run(&reloaded, "2"), "i64:6");
            assert_eq!(run(&scripts["main"], "2"), "i64:4");
        }
        // A script that imports keeps none.
        assert_eq!(run(&scripts["user"], "1"), "1");
        assert_eq!(scripts["user"].caches.kept_calls(), None);
    }

    #[test]
    fn side_effects_are_refused_past_the_deadline() {
        let scripts = table(&ScriptEngine::new(), &[("main", "1")]);
        let guard = RunGuard::enter(context(scripts), Instant::now() + Duration::from_secs(5));
        assert!(no_side_effects_inline().is_ok());
        drop(guard);
        let scripts = table(&ScriptEngine::new(), &[("main", "1")]);
        let _guard = RunGuard::enter(context(scripts), Instant::now() - Duration::from_millis(1));
        let err = no_side_effects_inline().unwrap_err();
        assert!(matches!(*err, EvalAltResult::ErrorTerminated(..)));
        assert!(matches!(classify("main", *err), RunError::Timeout));
    }

    #[test]
    fn every_function_of_the_api_is_classified() {
        // Rhai's own functions are pure; every one Switchyard registers must be
        // listed as a side effect or as pure, so that inline attempts and dry
        // runs cannot miss a new one.
        let ours = lint::Known::of(ScriptEngine::new().engine());
        let rhai = lint::Known::of(&Engine::new());
        let mut missing = Vec::new();
        for name in ours.names() {
            let listed =
                SIDE_EFFECTS.iter().any(|(n, _)| n == name) || PURE.contains(&name.as_str());
            if !rhai.has(name) && !listed && !name.contains('$') {
                missing.push(name.clone());
            }
        }
        missing.sort();
        assert!(
            missing.is_empty(),
            "not classified as side effect or pure: {missing:?}"
        );
        for (name, _) in SIDE_EFFECTS {
            assert!(ours.has(name), "{name} is listed but not registered");
        }
    }

    #[test]
    fn side_effects_move_the_run_off_the_async_thread() {
        let e = ScriptEngine::new();
        let deadline = || Instant::now() + Duration::from_secs(1);
        let listed: Vec<String> = SIDE_EFFECTS
            .iter()
            .map(|(_, call)| format!("{call};"))
            .collect();
        for src in listed.iter().map(String::as_str).chain([
            // A script cannot catch its way past the move.
            "try { kv_set(\"a\", 1); } catch { } body = 1;",
            "loop { }",
        ]) {
            let scripts = table(&e, &[("main", src)]);
            let ctx = context(scripts.clone());
            assert!(
                e.run_inline(&scripts["main"], &ctx, deadline(), &["body"])
                    .is_none(),
                "{src} ran inline"
            );
        }
        let scripts = table(
            &e,
            &[(
                "main",
                "body = parse_json(\"[1]\")[0] + md5_hex(\"a\").len();",
            )],
        );
        let done = e.run_inline(
            &scripts["main"],
            &context(scripts.clone()),
            deadline(),
            &["body"],
        );
        assert_eq!(done.unwrap().unwrap()[0].as_int().unwrap(), 33);
        let scripts = table(&e, &[("main", "throw \"no\";")]);
        let done = e.run_inline(
            &scripts["main"],
            &context(scripts.clone()),
            deadline(),
            &["body"],
        );
        assert!(matches!(done, Some(Err(RunError::Failed(_)))));
    }

    #[test]
    fn outputs_are_read_from_the_scope() {
        let e = ScriptEngine::new();
        let out = run(
            &e,
            r#"status = 201; body = #{ m: startparam(1), p: startparam(2), none: startparam(9) };"#,
            1000,
        )
        .unwrap();
        assert_eq!(out[0].as_int().unwrap(), 201);
        assert_eq!(
            convert::to_json(&out[1]).unwrap(),
            serde_json::json!({"m":"POST","p":"/x","none":""})
        );
        let out = run(&e, "let x = 1;", 1000).unwrap();
        assert!(out[0].is_unit() && out[1].is_unit());
    }

    #[test]
    fn a_runaway_loop_stops_at_its_deadline() {
        let e = ScriptEngine::new();
        let started = Instant::now();
        assert_eq!(run(&e, "loop {}", 100).unwrap_err(), RunError::Timeout);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
    }

    #[test]
    fn errors_name_the_function_and_position() {
        let e = ScriptEngine::new();
        let RunError::Failed(msg) = run(&e, "let x = 1;\nno_such_fn(x);", 1000).unwrap_err() else {
            panic!()
        };
        assert!(msg.contains("no_such_fn"), "{msg}");
        assert!(msg.contains("main.rhai:2:"), "{msg}");
        let RunError::Failed(msg) = run(&e, r#"throw "bad order";"#, 1000).unwrap_err() else {
            panic!()
        };
        assert!(msg.contains("bad order"), "{msg}");
    }

    #[test]
    fn limits_hold() {
        let e = ScriptEngine::new();
        for src in [
            "fn f(n) { f(n + 1) } f(0);",
            "let s = \"xx\"; loop { s += s; }",
            "let a = []; a.pad(200000, 0);",
            "let x = 9223372036854775807; x + 1;",
            "sleep(1);",
        ] {
            let r = run(&e, src, 5000);
            assert!(
                matches!(r, Err(RunError::Failed(_))),
                "{src}: {:?}",
                r.map(|_| ())
            );
        }
        // Growing a map key by key is checked each step; it ends one way or the other, cleanly.
        let grow = "let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; }";
        assert!(run(&e, grow, 300).is_err());
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(e.compile(&deep).is_err());
        let err = e.compile("let x = eval(\"1\");").unwrap_err();
        assert_eq!(err.line, 1);
    }

    #[test]
    fn siblings_import_as_modules_and_cycles_fail() {
        let e = ScriptEngine::new();
        let out = run_with(
            &e,
            &[
                (
                    "main",
                    r#"import "util" as u; body = u::double(21) + u::BASE;"#,
                ),
                ("util", "export const BASE = 100; fn double(x) { x * 2 }"),
            ],
            1000,
        )
        .unwrap();
        assert_eq!(out[1].as_int().unwrap(), 142);
        let err = run_with(
            &e,
            &[
                ("main", r#"import "a" as a;"#),
                ("a", r#"import "b" as b;"#),
                ("b", r#"import "a" as a;"#),
            ],
            1000,
        )
        .unwrap_err();
        assert!(matches!(err, RunError::Failed(m) if m.contains("cycle")));
    }

    #[test]
    fn compile_errors_have_line_and_column() {
        let e = ScriptEngine::new();
        let err = e.compile("let a = 1;\nlet b = ;\n").unwrap_err();
        assert_eq!((err.line, err.col), (2, 9));
    }
}
