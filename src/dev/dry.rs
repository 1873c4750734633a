//! Dry runs (SPEC §15): a script run as the runtime would run it (the same
//! inputs, the channel's timeout and limits, its own identity) whose side
//! effects are captured instead of done.
//!
//! Every function with a side effect reaches the world through the run's
//! [`Host`] (see [`crate::script::SIDE_EFFECTS`]); a dry run gives the script a
//! [`DryHost`], which records the writes as effects, answers `webquery` from
//! stubs, and lets the reads see the real store (`/try`) or a fixture
//! (`switchyard test`). Nothing else is needed to keep a dry run from
//! changing anything: the host is the only way out.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::Dynamic;
use serde_json::{json, Value};

use crate::auth::Identity;
use crate::channel::{Channel, ScriptField};
use crate::script::{
    convert, CompileError, Host, JobRun, RunContext, RunError, Script, ScriptEngine, ScriptTable,
};
use crate::AppState;

/// Where a dry run's reads (`kv_get`, `kv_keys`, `file_read`) come from.
pub enum Reads {
    /// The server's store and files.
    Live(Arc<AppState>),
    /// A test case's fixture: kv values and files (empty when not given).
    Fixture {
        kv: serde_json::Map<String, Value>,
        files: HashMap<String, String>,
    },
}

/// The host of a dry run: reads pass, writes are recorded.
pub struct DryHost {
    reads: Reads,
    stubs: Mutex<VecDeque<Value>>,
    calls: AtomicU64,
    effects: Mutex<Vec<Value>>,
    logs: Mutex<Vec<Value>>,
    operations: AtomicU64,
}

impl DryHost {
    /// A host reading from `reads`, answering `webquery` from `stubs` in order.
    pub fn new(reads: Reads, stubs: Vec<Value>) -> Self {
        Self {
            reads,
            stubs: Mutex::new(stubs.into()),
            calls: AtomicU64::new(0),
            effects: Mutex::default(),
            logs: Mutex::default(),
            operations: AtomicU64::new(0),
        }
    }

    fn effect(&self, function: &str, args: Vec<Value>) {
        self.effects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(json!({ "fn": function, "args": args }));
    }

    fn kv_value(&self, channel: &str, key: &str) -> Result<Option<Value>, String> {
        match &self.reads {
            Reads::Live(app) => app.kv.get(channel, key).map_err(|e| e.to_string()),
            Reads::Fixture { kv, .. } => Ok(kv.get(key).cloned()),
        }
    }

    /// The effects recorded so far.
    pub fn effects(&self) -> Vec<Value> {
        self.effects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The log lines written so far.
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Host for DryHost {
    fn channel_send_ws(&self, code: &str, data: Value) -> Result<(), String> {
        self.effect("channel_send_ws", vec![code.into(), data]);
        Ok(())
    }

    fn ws_send(&self, _: &str, to: Option<&str>, data: Value) -> Result<usize, String> {
        match to {
            None => self.effect("ws_send", vec![data]),
            Some(id) => self.effect("ws_send_to", vec![id.into(), data]),
        }
        // A dry run's pushes reach no connection.
        Ok(0)
    }

    fn emit_event(&self, source: &str, name: &str, data: Value) -> Result<String, String> {
        let event = crate::events::Event::new(source, name, data.clone())?;
        self.effect("emit_event", vec![name.into(), data]);
        Ok(event.id.to_string())
    }

    fn channel_send(&self, code: &str, data: Value, tags: &[String]) -> Result<String, String> {
        let mut args = vec![code.into(), data];
        if !tags.is_empty() {
            args.push(json!({ "tag": tags }));
        }
        self.effect("channel_send", args);
        Ok(format!("dry-run-{}", uuid::Uuid::new_v4()))
    }

    fn webquery(
        &self,
        _: &Channel,
        request: Value,
        _: Duration,
        _: &opentelemetry::trace::SpanContext,
        _: Option<&crate::script::trail::Trail>,
    ) -> Result<Value, String> {
        crate::outbound::check_request(&request)?;
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        self.effect("webquery", vec![request]);
        let stub = self
            .stubs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let Some(stub) = stub else {
            return Err(format!(
                "webquery: no stub for call {n} (a dry run answers webquery from \"stubs\": {{\"webquery\": [{{\"status\", \"headers\", \"body\"}}, …]}}, in order)"
            ));
        };
        let body = match stub.get("body") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        Ok(json!({
            "status": stub.get("status").and_then(Value::as_u64).unwrap_or(200),
            "headers": stub.get("headers").cloned().unwrap_or_else(|| json!({})),
            "body": body,
        }))
    }

    fn kv_get(&self, channel: &str, key: &str) -> Result<Option<Value>, String> {
        self.kv_value(channel, key)
    }

    fn kv_set(
        &self,
        _: &str,
        key: &str,
        value: Option<Value>,
        ttl: Option<Duration>,
    ) -> Result<(), String> {
        let mut args = vec![key.into(), value.unwrap_or(Value::Null)];
        if let Some(ttl) = ttl {
            args.push(ttl.as_secs().into());
        }
        self.effect("kv_set", args);
        Ok(())
    }

    fn kv_delete(&self, channel: &str, key: &str) -> Result<bool, String> {
        let was = self.kv_value(channel, key)?.is_some();
        self.effect("kv_delete", vec![key.into()]);
        Ok(was)
    }

    fn kv_keys(&self, channel: &str, prefix: &str) -> Result<Vec<String>, String> {
        match &self.reads {
            Reads::Live(app) => app.kv.keys(channel, prefix).map_err(|e| e.to_string()),
            Reads::Fixture { kv, .. } => {
                let mut keys: Vec<String> = kv
                    .keys()
                    .filter(|k| k.starts_with(prefix))
                    .cloned()
                    .collect();
                keys.sort();
                keys.truncate(crate::backend::MAX_LISTED_KEYS);
                Ok(keys)
            }
        }
    }

    fn job_tag(&self, _: &str, tag: &str) -> Result<(), String> {
        self.effect("job_tag", vec![tag.into()]);
        Ok(())
    }

    fn kv_incr(&self, channel: &str, key: &str, n: i64) -> Result<i64, String> {
        let now = match self.kv_value(channel, key)? {
            None => 0,
            Some(v) => v
                .as_i64()
                .ok_or_else(|| format!("kv_incr: the value of {key:?} is not an integer"))?,
        };
        self.effect("kv_incr", vec![key.into(), n.into()]);
        now.checked_add(n)
            .ok_or_else(|| format!("kv_incr: {now} + {n} overflows"))
    }

    fn kv_cas(
        &self,
        channel: &str,
        key: &str,
        expected: Option<Value>,
        new: Option<Value>,
    ) -> Result<bool, String> {
        let now = self.kv_value(channel, key)?;
        let args = vec![
            key.into(),
            expected.clone().unwrap_or(Value::Null),
            new.unwrap_or(Value::Null),
        ];
        self.effect("kv_cas", args);
        Ok(now == expected)
    }

    fn file_read(&self, channel: &Channel, name: &str) -> Result<String, String> {
        match &self.reads {
            Reads::Live(app) => crate::files::read_text(app, channel, name),
            Reads::Fixture { files, .. } => files
                .get(name)
                .cloned()
                .ok_or_else(|| format!("file_read: no file {name:?}")),
        }
    }

    fn file_write(&self, _: &Channel, name: &str, text: &str) -> Result<(), String> {
        self.effect("file_write", vec![name.into(), text.into()]);
        Ok(())
    }

    fn job_wait(&self, _: &JobRun, secs: u64) -> Result<(), String> {
        self.effect("job_wait", vec![secs.into()]);
        Ok(())
    }

    fn log(&self, level: tracing::Level, _: &str, _: &str, text: &str) {
        let level = level.as_str().to_ascii_lowercase();
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(json!({ "level": level, "message": text }));
    }

    fn finished(&self, operations: u64) {
        self.operations.store(operations, Ordering::Relaxed);
    }
}

/// What a dry run runs: which script, on what input.
#[derive(Debug, Clone)]
pub enum Input {
    /// An HTTP request to the recv script.
    Http {
        method: String,
        /// The path after `/channels/{code}/api`.
        path: String,
        query: String,
        /// Lower-case names to values.
        headers: serde_json::Map<String, Value>,
        body: String,
    },
    /// A websocket `message` frame's data, to the recv_ws script.
    Ws { data: Value },
    /// A send job's data, to the send script.
    Send { data: Value },
    /// A schedule run of entry `entry`, due at `time` (RFC 3339).
    Schedule { entry: usize, time: String },
}

impl Input {
    /// The kind, as recordings and cases name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Input::Http { .. } => "http",
            Input::Ws { .. } => "ws",
            Input::Send { .. } => "send",
            Input::Schedule { .. } => "schedule",
        }
    }

    /// The input a recording was made from.
    pub fn of_recording(rec: &Value) -> Result<Input, String> {
        let text = |k: &str| rec[k].as_str().unwrap_or("").to_owned();
        match rec["kind"].as_str() {
            Some("ws") => Ok(Input::Ws {
                data: serde_json::from_str(&text("body")).unwrap_or(Value::Null),
            }),
            Some("http") => Ok(Input::Http {
                method: text("method"),
                path: text("path"),
                query: text("query"),
                headers: rec["headers"].as_object().cloned().unwrap_or_default(),
                body: text("body"),
            }),
            _ => Err("not a recording".into()),
        }
    }
}

/// The script a dry run runs for `input` on `channel`: its own, from `scripts`.
pub fn script_of(
    channel: &Channel,
    input: &Input,
    scripts: &ScriptTable,
) -> Result<Arc<Script>, String> {
    let code = match input {
        Input::Http { .. } => channel.script_for(ScriptField::Recv),
        Input::Ws { .. } => channel.script_for(ScriptField::RecvWs),
        Input::Send { .. } => channel.script_for(ScriptField::Send),
        Input::Schedule { entry, .. } => channel
            .doc
            .opts
            .schedule
            .get(*entry)
            .map(|e| e.script.as_str()),
    };
    let code = code.ok_or_else(|| {
        format!(
            "channel {:?} has no script for a {} run",
            channel.code(),
            input.kind()
        )
    })?;
    let script = scripts
        .get(code)
        .cloned()
        .ok_or_else(|| format!("script {code:?} is not loaded"))?;
    if let Err(e) = &script.compiled {
        return Err(format!("script {code:?} does not compile: {e}"));
    }
    Ok(script)
}

/// A draft script, compiled and checked like a saved one, named `code`.
pub fn draft(
    engine: &ScriptEngine,
    code: &str,
    source: &str,
    scripts: &ScriptTable,
) -> Result<Arc<Script>, CompileError> {
    let mut ast = engine.compile(source)?;
    if let Some(first) = engine.unknown_calls(&ast, scripts).into_iter().next() {
        return Err(CompileError {
            line: first.line,
            col: first.col,
            message: first.message,
        });
    }
    ast.set_source(code);
    Ok(Arc::new(Script::new(
        code,
        format!("{code}.rhai").into(),
        source.to_owned(),
        Ok(Arc::new(ast)),
    )))
}

/// Where a dry run runs: the engine, the channel and the scripts it sees.
pub struct Setting<'a> {
    pub engine: &'a ScriptEngine,
    pub channel: &'a Arc<Channel>,
    pub scripts: &'a Arc<ScriptTable>,
    /// The channel's own identity (its `opts.userid` and roles).
    pub identity: Identity,
}

impl Setting<'_> {
    /// The script to run for `input`: the channel's own, or `draft` compiled
    /// and checked like a saved script (and named like the channel's).
    pub fn script(&self, input: &Input, draft: Option<&str>) -> Result<Arc<Script>, PickError> {
        let own = script_of(self.channel, input, self.scripts);
        match draft {
            None => own.map_err(PickError::NoScript),
            Some(source) => {
                let code = own.map_or_else(|_| "draft".to_owned(), |s| s.code.clone());
                self::draft(self.engine, &code, source, self.scripts).map_err(PickError::Draft)
            }
        }
    }
}

/// Why a dry run has no script to run.
#[derive(Debug)]
pub enum PickError {
    /// The channel has none for this input.
    NoScript(String),
    /// The draft does not compile, or calls a function that exists nowhere.
    Draft(CompileError),
}

impl std::fmt::Display for PickError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PickError::NoScript(m) => f.write_str(m),
            PickError::Draft(e) => write!(f, "{e}"),
        }
    }
}

/// Runs `script` for `input` with `host`; the outcome as §15 shows it:
/// `{answer, logs, effects, duration_ms, operations}`.
pub async fn run(
    at: &Setting<'_>,
    script: Arc<Script>,
    input: &Input,
    host: Arc<DryHost>,
) -> Value {
    let (engine, channel) = (at.engine, at.channel);
    let request_id = format!("dry-run-{}", uuid::Uuid::new_v4());
    let code = channel.code();
    let inbox = !channel.doc.opts.issync;
    let (params, outputs, job): (Vec<String>, &'static [&'static str], Option<JobRun>) = match input
    {
        Input::Http {
            method,
            path,
            query,
            headers,
            body,
        } => (
            vec![
                method.to_ascii_uppercase(),
                path.clone(),
                crate::auth::strip_token(query),
                body.clone(),
                // As a real run sees them: the credential left out.
                Value::Object(
                    headers
                        .iter()
                        .filter(|(k, _)| !crate::headers::HIDDEN_FROM_SCRIPTS.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                )
                .to_string(),
                "127.0.0.1".into(),
                code.into(),
                request_id.clone(),
            ],
            // An inbox request runs as a job does (it may set `result`).
            if inbox {
                crate::jobs::JOB_OUTPUTS
            } else {
                crate::answer::RECV_OUTPUTS
            },
            inbox.then(|| JobRun {
                id: request_id.clone(),
                ..JobRun::default()
            }),
        ),
        Input::Ws { data } => (
            vec![
                data.to_string(),
                "1".into(),
                "dry-run".into(),
                "127.0.0.1".into(),
                code.into(),
            ],
            crate::ws::MESSAGE_OUTPUTS,
            None,
        ),
        Input::Send { data } => (
            vec![
                data.to_string(),
                code.into(),
                request_id.clone(),
                "1".into(),
            ],
            &["result"],
            Some(JobRun {
                id: request_id.clone(),
                can_wait: true,
                ..JobRun::default()
            }),
        ),
        Input::Schedule { time, .. } => (
            vec![time.clone(), code.into()],
            &["result"],
            Some(JobRun {
                id: request_id.clone(),
                ..JobRun::default()
            }),
        ),
    };
    let dry_id = request_id.clone();
    let ctx = RunContext {
        channel: channel.clone(),
        request_id,
        identity: at.identity.clone(),
        params: params.into_iter().map(Into::into).collect(),
        scripts: at.scripts.clone(),
        host: host.clone(),
        job: job.map(Arc::new),
        lazy: None,
        trace: opentelemetry::trace::SpanContext::empty_context(),
    };
    let started = Instant::now();
    // Straight to a blocking thread: an inline attempt would log its prints twice.
    let done = engine
        .run_off_thread(script, Arc::new(ctx), started, channel.timeout, outputs)
        .await;
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    // An inbox request: its caller got `202 {request_id}`; what matters is
    // how its run ends, as the job view would show it.
    let answer = if inbox && matches!(input, Input::Http { .. }) {
        let mut run = answer(&Input::Send { data: Value::Null }, done);
        run["status"] = 202.into();
        run["body"] = json!({ "request_id": dry_id });
        run
    } else {
        answer(input, done)
    };
    json!({
        "answer": answer,
        "logs": host.logs(),
        "effects": host.effects(),
        "duration_ms": (duration_ms * 1000.0).round() / 1000.0,
        "operations": host.operations.load(Ordering::Relaxed),
    })
}

/// The answer a run makes, as the caller would see it.
fn answer(input: &Input, done: Result<Vec<Dynamic>, RunError>) -> Value {
    let (status, error, message) = match &done {
        Ok(_) => (0, "", String::new()),
        Err(RunError::Timeout) => (
            504,
            "timeout",
            "the script ran past the channel's timeout".into(),
        ),
        Err(RunError::StoreFull(m)) => (507, "insufficient_storage", m.clone()),
        Err(RunError::ClusterUnavailable(m)) => (503, "cluster_unavailable", m.clone()),
        Err(RunError::Failed(m) | RunError::Fail(m)) => (500, "script_error", m.clone()),
    };
    match (input, done) {
        (Input::Http { .. }, Ok(outputs)) => match crate::answer::http_answer(&outputs) {
            Ok(a) => a.to_json(),
            Err(m) => json!({"status": 500, "body": {"error": "script_error", "message": m}}),
        },
        (Input::Http { .. }, Err(_)) => {
            json!({"status": status, "body": {"error": error, "message": message}})
        }
        (Input::Ws { .. }, Ok(outputs)) => {
            let success = if outputs[1].is_unit() {
                Some(true)
            } else {
                outputs[1].as_bool().ok()
            };
            match (success, convert::to_json(&outputs[0])) {
                (Some(success), Ok(data)) => json!({"success": success, "data": data}),
                (None, _) => {
                    json!({"success": false, "data": {"error": "script_error", "message": "success must be true or false"}})
                }
                (_, Err(m)) => {
                    json!({"success": false, "data": {"error": "script_error", "message": m}})
                }
            }
        }
        (Input::Ws { .. }, Err(_)) => {
            json!({"success": false, "data": {"error": error, "message": message}})
        }
        (_, Ok(outputs)) => json!({
            "state": "succeeded",
            "result": convert::to_json(&outputs[0]).unwrap_or(Value::Null),
        }),
        (_, Err(e)) => json!({
            "state": "failed",
            "error": message,
            "retried": !matches!(e, RunError::Fail(_)),
        }),
    }
}

/// `true` when two answers are the same to their caller: status (or success)
/// and body (or data), bodies compared as JSON when both are JSON.
pub fn same_answer(before: &Value, after: &Value) -> bool {
    let fields: &[&str] = if before.get("success").is_some() {
        &["success", "data"]
    } else {
        &["status", "body"]
    };
    fields.iter().all(|f| before.get(*f) == after.get(*f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{READS, SIDE_EFFECTS};

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn every_side_effect_is_captured_not_done() {
        // A send job's run, where every function of the list is allowed.
        let engine = ScriptEngine::new();
        let channel = Arc::new(crate::channel::test_channel(r#"{"code":"t"}"#));
        for (name, call) in SIDE_EFFECTS {
            let source = format!("{call};");
            let script = draft(&engine, "s", &source, &ScriptTable::new()).unwrap();
            let stubs = vec![json!({"status": 200})];
            let reads = Reads::Fixture {
                kv: serde_json::Map::new(),
                files: HashMap::from([("f".to_owned(), "text".to_owned())]),
            };
            let host = Arc::new(DryHost::new(reads, stubs));
            let input = Input::Send { data: json!(1) };
            let scripts = Arc::new(ScriptTable::new());
            let at = Setting {
                engine: &engine,
                channel: &channel,
                scripts: &scripts,
                identity: Identity::default(),
            };
            let out = run(&at, script, &input, host).await;
            assert_eq!(out["answer"]["state"], "succeeded", "{name}: {out}");
            let effects: Vec<&str> = out["effects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["fn"].as_str().unwrap())
                .collect();
            if READS.contains(name) {
                assert!(effects.is_empty(), "{name} only reads: {effects:?}");
            } else if name.starts_with("log_") {
                assert_eq!(out["logs"].as_array().unwrap().len(), 1, "{name}");
            } else {
                assert_eq!(effects, [*name], "{name} is captured as an effect");
            }
        }
    }
}
