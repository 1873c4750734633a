//! Switchyard: a scriptable integration-channel runtime.
//!
//! External systems call **channels** over HTTP; each channel routes its
//! traffic to **service scripts** written in Rhai. The contract (routes,
//! inputs, outputs, status codes) is `SPEC.md`; the README is the user guide.
//!
//! # Layout
//!
//! - `config`: `switchyard.toml`, every key with its default.
//! - `error`: the one error type, rendered as `{"error", "message", "request_id"}`.
//! - `channel`: the channel document, its serde types and validation.
//! - `registry`: channels and compiled scripts in memory, swapped whole.
//! - `script`: the shared Rhai engine, limits, deadline, the script API.
//! - `net`: CIDR masks, `X-Forwarded-For`, address text (a leaf).
//! - `auth`: tokens, IAM JWTs, roles, the throttle.
//! - `http`: inbound HTTP routes → recv scripts.
//! - `admin`: `/admin` routes for channels and scripts, atomic file writes.
//! - `reload`: the folder watcher; reload, swap or keep the last good version.
//! - `ws`: websocket sessions: frames, the in-flight cap, token APIs, pushes.
//! - `connections`: open websockets by channel, bounded send queues.
//! - `pattern`: event names and subscription patterns (a leaf).
//! - `events`: the event and its frame.
//! - `backend`: the seam to what nodes share (events, kv…), embedded or NATS.
//! - `jobs`: send jobs, the durable inbox, schedules, the job view.
//! - `outbound`: `webquery`, a script's call to its external system.
//! - `files`: the files API and `file_read` / `file_write`.
//! - `migrate`: `switchyard migrate`, an embedded store into a cluster.
//! - `store`: the embedded SQLite store, group commit (event queues, kv…).
//! - `telemetry`: logs, metrics, the per-request layer.
//! - `server`: binding, the router, connection limits, graceful shutdown.
//! - `conn_io`: one accepted socket shared by hyper and the server, with a write timeout.

pub mod activity;
pub mod admin;
pub mod answer;
pub mod api_doc;
pub mod audit;
pub mod auth;
pub mod authoring;
pub mod backend;
pub mod channel;
pub mod config;
pub mod conn_io;
pub mod connections;
pub mod console;
pub mod dev;
pub mod disk;
pub mod error;
pub mod events;
pub mod files;
pub mod headers;
pub mod history;
pub mod http;
pub mod jobs;
pub mod listener;
pub mod log_format;
pub mod log_writer;
pub mod migrate;
pub mod net;
pub mod outbound;
pub mod pattern;
pub mod registry;
pub mod rekey;
pub mod reload;
pub mod restore;
pub mod script;
pub mod secrets;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod versions;
pub mod ws;

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::connections::ConnectionTable;
use crate::registry::Registry;
use crate::script::ScriptEngine;

pub use server::{app, serve};

/// Everything the handlers share.
pub struct AppState {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Channels and scripts.
    pub registry: Registry,
    /// The script engine.
    pub engine: ScriptEngine,
    /// Authentication and the throttle.
    pub auth: Authenticator,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Serialises admin changes (check, write, reload).
    pub admin_lock: tokio::sync::Mutex<()>,
    /// Open websocket connections.
    pub connections: ConnectionTable,
    /// The embedded store.
    pub store: Arc<store::Store>,
    /// Publishing and once-per-channel delivery.
    pub events: Box<dyn backend::EventBus>,
    /// The per-channel key-value maps.
    pub kv: Box<dyn backend::Kv>,
    /// The other nodes (cluster mode), or nobody.
    pub peers: Box<dyn backend::Peers>,
    /// Jobs handed between nodes (cluster mode), or kept here.
    pub work: Box<dyn backend::Work>,
    /// The files of the files API.
    pub files: Box<dyn backend::Files>,
    /// Recordings of the channels' traffic (`opts.record`).
    pub recordings: Box<dyn backend::Recordings>,
    /// Versions of channel documents and scripts (SPEC §19).
    pub versions: Box<dyn backend::Versions>,
    /// The audit log (SPEC §19).
    pub audit: Box<dyn backend::Audit>,
    /// The sealed secrets (SPEC §20).
    pub secrets: Box<dyn backend::SecretStore>,
    /// The key that seals and opens them.
    pub secrets_key: secrets::Key,
    /// The content of each file as this node last versioned or saw it.
    pub seen: versions::Seen,
    /// Job runner wake-ups and schedule state.
    pub jobs: jobs::Jobs,
    /// The outbound HTTP client.
    pub http: reqwest::Client,
    /// This state itself, for work spawned from script calls.
    pub me: std::sync::Weak<AppState>,
    /// The address the server listens on, once bound: a channel `url` that is
    /// a path (`/channels/orders/api/`) is a channel of this same server.
    pub listening: std::sync::OnceLock<std::net::SocketAddr>,
    /// Recordings on their way to the store (`opts.record`).
    pub recorder: dev::recordings::Recorder,
    /// Console sessions.
    pub sessions: console::Sessions,
    /// Codes of the channels an operator stopped (or that do not start by
    /// themselves, `opts.autostart = false`); not stored: a restart returns
    /// every channel to its `autostart`.
    pub stopped: dashmap::DashSet<String>,
}

impl AppState {
    fn arc(&self) -> Result<Arc<AppState>, String> {
        self.me
            .upgrade()
            .ok_or_else(|| "the server is stopping".to_string())
    }
}

/// The message of a store failure in a script function; a full disk is also
/// noted for the run, so its caller is answered `507`, not `500`.
fn store_failure(function: &str, e: &store::StoreError) -> String {
    if e.is_full() {
        script::note_store_full();
    }
    if e.is_cluster_unavailable() {
        script::note_cluster_unavailable();
    }
    format!("{function}: {e}")
}

impl script::Host for AppState {
    fn channel_send_ws(&self, code: &str, data: serde_json::Value) -> Result<(), String> {
        ws::run_send_ws(&self.arc()?, code, data)
    }

    fn ws_send(
        &self,
        channel: &str,
        to: Option<&str>,
        data: serde_json::Value,
    ) -> Result<usize, String> {
        let frame = ws::push_frame(data);
        Ok(match to {
            None => {
                self.peers.push_all(channel, &frame);
                self.connections.push_all(channel, &frame)
            }
            Some(id) => match uuid::Uuid::parse_str(id) {
                Ok(uuid) if self.connections.push_to(channel, uuid, &frame) => 1,
                Ok(_) => usize::from(
                    self.peers
                        .push_to(channel, id, &frame)
                        .map_err(|e| store_failure("ws_send_to", &e))?,
                ),
                Err(_) => 0,
            },
        })
    }

    fn emit_event(
        &self,
        source: &str,
        name: &str,
        data: serde_json::Value,
    ) -> Result<String, String> {
        let mut event = events::Event::new(source, name, data)?;
        event.test = self
            .registry
            .snapshot()
            .channel(source)
            .is_some_and(|c| c.test_mode());
        let id = event.id.to_string();
        // Scripts run on blocking threads: wait here until queued copies are committed.
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
        crate::script::priority::while_waiting(|| runtime.block_on(self.events.publish(event)))
            .map_err(|e| store_failure("emit_event", &e))?;
        Ok(id)
    }

    fn channel_send(
        &self,
        code: &str,
        data: serde_json::Value,
        tags: &[String],
    ) -> Result<String, String> {
        jobs::create_send_blocking(self, code, &data, tags).map_err(|e| match e {
            jobs::CreateError::Store(e) => store_failure("channel_send", &e),
            other => other.to_string(),
        })
    }

    fn webquery(
        &self,
        channel: &channel::Channel,
        request: serde_json::Value,
        budget: std::time::Duration,
        trace: &opentelemetry::trace::SpanContext,
        trail: Option<&script::trail::Trail>,
    ) -> Result<serde_json::Value, String> {
        outbound::webquery(self, channel, request, budget, trace, trail)
    }

    fn kv_get(&self, channel: &str, key: &str) -> Result<Option<serde_json::Value>, String> {
        self.kv
            .get(channel, key)
            .map_err(|e| store_failure("kv_get", &e))
    }

    fn kv_set(
        &self,
        channel: &str,
        key: &str,
        value: Option<serde_json::Value>,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), String> {
        self.kv
            .set(channel, key, value, ttl)
            .map_err(|e| store_failure("kv_set", &e))
    }

    fn kv_delete(&self, channel: &str, key: &str) -> Result<bool, String> {
        self.kv
            .delete(channel, key)
            .map_err(|e| store_failure("kv_delete", &e))
    }

    fn kv_keys(&self, channel: &str, prefix: &str) -> Result<Vec<String>, String> {
        self.kv
            .keys(channel, prefix)
            .map_err(|e| store_failure("kv_keys", &e))
    }

    fn job_tag(&self, job: &str, tag: &str) -> Result<(), String> {
        jobs::tag_blocking(self, job, tag).map_err(|e| store_failure("job_tag", &e))
    }

    fn kv_incr(&self, channel: &str, key: &str, n: i64) -> Result<i64, String> {
        self.kv
            .incr(channel, key, n)
            .map_err(|e| store_failure("kv_incr", &e))
    }

    fn kv_cas(
        &self,
        channel: &str,
        key: &str,
        expected: Option<serde_json::Value>,
        new: Option<serde_json::Value>,
    ) -> Result<bool, String> {
        self.kv
            .cas(channel, key, expected, new)
            .map_err(|e| store_failure("kv_cas", &e))
    }

    fn file_read(&self, channel: &channel::Channel, name: &str) -> Result<String, String> {
        files::read_text(self, channel, name)
    }

    fn file_write(&self, channel: &channel::Channel, name: &str, text: &str) -> Result<(), String> {
        files::write_text(self, channel, name, text)
    }

    fn job_wait(&self, job: &script::JobRun, secs: u64) -> Result<(), String> {
        *job.wait_secs.lock().unwrap_or_else(|p| p.into_inner()) = Some(secs);
        Ok(())
    }

    fn log(&self, level: tracing::Level, channel: &str, request_id: &str, text: &str) {
        script::trace(level, channel, request_id, text);
    }

    fn finished(&self, _: u64) {}
}
