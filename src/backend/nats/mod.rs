//! The NATS JetStream backend (SPEC §13): several `switchyard serve` nodes
//! share one NATS system.
//!
//! What lives where (every name starts with the configured `prefix`):
//!
//! | what | NATS | module |
//! |---|---|---|
//! | channel documents and scripts | KV bucket `{prefix}_docs` | [`docs`] |
//! | kv of scripts | KV bucket `{prefix}_kv` | [`kv`] |
//! | files | object store `{prefix}_files` | [`files`] |
//! | send jobs, inbox requests | streams `{prefix}_send`, `{prefix}_inbox`; ticks in KV bucket `{prefix}_ticks` | [`work`] |
//! | events, per-channel queues | stream `{prefix}_events`, a durable consumer per events channel | [`events`] |
//! | pushes, connection lists | core subjects `{prefix}.push.*`, `{prefix}.node.*` | [`live`] |
//! | nodes alive | KV bucket `{prefix}_nodes`, entries expire after [`NODE_TTL`] | here |
//! | versions of documents and scripts | KV bucket `{prefix}_versions` | [`versions`] |
//! | the audit log | stream `{prefix}_audit`, entries kept `audit_retention` | [`audit`] |
//! | secrets, sealed | KV bucket `{prefix}_secrets` | [`secrets`] |
//!
//! A call that needs NATS while it is unreachable fails at once with a
//! [`CLUSTER_UNAVAILABLE`] error rather than waiting; the client reconnects
//! by itself.

pub mod audit;
pub mod docs;
pub mod events;
pub mod files;
pub mod kv;
pub mod live;
pub mod recordings;
pub mod secrets;
pub mod versions;
pub mod work;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::sync::Weak;

use async_nats::jetstream::{self, kv as jkv, stream::StorageType};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde_json::Value;

use crate::backend::{Backends, Handler, Peers, CLUSTER_UNAVAILABLE};
use crate::config::{ClusterConfig, Config};
use crate::store::StoreError;
use crate::AppState;

/// A node is alive while its entry in the nodes bucket is younger than this.
pub const NODE_TTL: Duration = Duration::from_secs(15);
/// How often a node renews its entry.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// The longest a single NATS operation may take before it counts as unavailable.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// The oldest nats-server release SPEC §13 accepts.
const OLDEST_SERVER: (u64, u64, u64) = (2, 10, 23);

/// One node's handle on the cluster.
pub struct Cluster {
    /// The NATS connection.
    pub client: async_nats::Client,
    /// JetStream on it.
    pub js: jetstream::Context,
    /// This node's name.
    pub node: String,
    /// This process's own id (a UUID made at start): a node restarted under
    /// its name is another process, and what the one before claimed is not
    /// its own (see `NatsWork::run_alone`).
    pub boot: String,
    /// The prefix of every stream, bucket and subject.
    pub prefix: String,
    /// JetStream replicas of what the node creates.
    pub replicas: usize,
    /// Deliveries of a job before it is given up (`[cluster] max_deliver`).
    pub max_deliver: i64,
    /// Channel documents and scripts.
    pub docs: jkv::Store,
    /// Scripts' key-value maps.
    pub kv: jkv::Store,
    /// Nodes alive.
    pub nodes: jkv::Store,
}

/// The message of an operation that found NATS unreachable.
pub fn unavailable(what: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{CLUSTER_UNAVAILABLE}: {what}"))
}

impl Cluster {
    /// Connects to `config.nats_url` (comma-separated URLs), checks the server,
    /// and creates the buckets the node needs when they are missing.
    pub async fn connect(config: &ClusterConfig, node: String) -> Result<Arc<Cluster>, String> {
        let urls: Vec<&str> = config
            .nats_url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let mut options = if !config.creds_file.is_empty() {
            async_nats::ConnectOptions::with_credentials_file(&config.creds_file)
                .await
                .map_err(|e| format!("cluster.creds_file {}: {e}", config.creds_file))?
        } else if !config.token.is_empty() {
            async_nats::ConnectOptions::with_token(config.token.clone())
        } else {
            async_nats::ConnectOptions::new()
        };
        options = options
            .name(format!("switchyard {node}"))
            .connection_timeout(Duration::from_secs(5))
            .ping_interval(Duration::from_secs(5))
            // Reconnect quickly after an outage, at most once a second.
            .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(1000)))
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!("cluster: NATS disconnected; shared state unavailable")
                    }
                    async_nats::Event::Connected => tracing::info!("cluster: NATS connected"),
                    other => tracing::debug!("cluster: {other}"),
                }
            });
        let client = async_nats::connect_with_options(urls.as_slice(), options)
            .await
            .map_err(|e| format!("cannot reach NATS at {}: {e}", config.nats_url))?;
        let info = client.server_info();
        if !info.jetstream {
            return Err(format!(
                "NATS at {} has no JetStream: start nats-server with -js",
                config.nats_url
            ));
        }
        if version_of(&info.version) < OLDEST_SERVER {
            tracing::warn!(
                version = %info.version,
                "nats-server older than 2.10.23: JetStream may lose streams after a crash (SPEC §13)"
            );
        }
        let mut js = jetstream::new(client.clone());
        js.set_timeout(OP_TIMEOUT);
        let prefix = config.prefix.clone();
        let replicas = config.replicas;
        let bucket = |name: &str, history: i64, max_age: Duration| jkv::Config {
            bucket: format!("{prefix}_{name}"),
            history,
            max_age,
            storage: StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let docs = open_bucket(&js, bucket("docs", 5, Duration::ZERO)).await?;
        let kv = open_bucket(&js, bucket("kv", 1, Duration::ZERO)).await?;
        let nodes = open_bucket(&js, bucket("nodes", 1, NODE_TTL)).await?;
        let cluster = Arc::new(Cluster {
            client,
            js,
            node,
            boot: uuid::Uuid::new_v4().to_string(),
            prefix,
            replicas,
            max_deliver: config.max_deliver,
            docs,
            kv,
            nodes,
        });
        cluster.beat().await.map_err(|e| e.to_string())?;
        tracing::info!(node = %cluster.node, server = %info.version, "cluster: joined");
        Ok(cluster)
    }

    /// `true` while the NATS connection is up.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// `{prefix}.{rest}`.
    pub fn subject(&self, rest: &str) -> String {
        format!("{}.{rest}", self.prefix)
    }

    /// Runs `fut` on the runtime from a script's (blocking) thread: fails at
    /// once when NATS is unreachable, and after [`OP_TIMEOUT`].
    pub fn block<T>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if !self.connected() {
            return Err(unavailable("NATS is unreachable"));
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|e| StoreError(e.to_string()))?;
        crate::script::priority::while_waiting(|| {
            runtime.block_on(async {
                tokio::time::timeout(OP_TIMEOUT, fut)
                    .await
                    .unwrap_or_else(|_| Err(unavailable("NATS did not answer in time")))
            })
        })
    }

    /// Writes this node's entry in the nodes bucket.
    async fn beat(&self) -> Result<(), StoreError> {
        let entry = serde_json::json!({"node": self.node, "ts": chrono::Utc::now().to_rfc3339()});
        self.nodes
            .put(node_key(&self.node), entry.to_string().into())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    /// Renews this node's entry every [`HEARTBEAT`] while the process runs.
    pub fn spawn_heartbeat(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                if let Err(e) = me.beat().await {
                    tracing::debug!("cluster heartbeat: {e}");
                }
            }
        });
    }

    /// The names of the nodes alive (their entry is younger than [`NODE_TTL`]).
    pub async fn nodes_alive(&self) -> Result<Vec<String>, StoreError> {
        let keys = self.nodes.keys().await.map_err(unavailable)?;
        let keys: Vec<String> = keys.filter_map(|k| async { k.ok() }).collect().await;
        let mut names = Vec::with_capacity(keys.len());
        for key in keys {
            if let Ok(Some(value)) = self.nodes.get(&key).await {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&value) {
                    if let Some(name) = v["node"].as_str() {
                        names.push(name.to_owned());
                    }
                }
            }
        }
        names.sort();
        Ok(names)
    }
}

/// What a node sets up before its server state exists: the connection, the
/// folders in step with the cluster (before the first load), the events stream.
pub struct Prepared {
    cluster: Arc<Cluster>,
    docs: Arc<docs::Docs>,
    stream: (jetstream::stream::Stream, jkv::Store),
    work: (
        jetstream::stream::Stream,
        jetstream::stream::Stream,
        jkv::Store,
        jkv::Store,
    ),
    files: jetstream::object_store::ObjectStore,
    recordings: recordings::NatsRecordings,
    versions: versions::NatsVersions,
    audit: audit::NatsAudit,
    secrets: secrets::NatsSecrets,
    /// The sealed secrets as they were at connect (for the first load).
    pub secret_records: Vec<Value>,
}

impl Prepared {
    /// Joins the cluster of `config.cluster` as the node listening on `listen`.
    pub async fn connect(
        config: &Config,
        listen: std::net::SocketAddr,
    ) -> Result<Prepared, String> {
        let node = if config.cluster.node.is_empty() {
            format!("{}:{}", hostname(), listen.port())
        } else {
            config.cluster.node.clone()
        };
        let cluster = Cluster::connect(&config.cluster, node).await?;
        let docs = docs::Docs::start(
            cluster.clone(),
            config.channels.clone(),
            config.scripts.clone(),
        )
        .await?;
        let stream = events::NatsBus::open_stream(&cluster, config.event_ttl).await?;
        let work =
            work::NatsWork::open(cluster.clone(), config.inbox_max, config.job_retention).await?;
        let files = files::open(&cluster).await?;
        let recordings = recordings::NatsRecordings::open(cluster.clone()).await?;
        let versions = versions::NatsVersions::open(cluster.clone()).await?;
        let audit = audit::NatsAudit::open(cluster.clone(), config.audit_retention).await?;
        let secrets = secrets::NatsSecrets::open(cluster.clone()).await?;
        let secret_records = crate::backend::SecretStore::all(&secrets)
            .await
            .map_err(|e| format!("cluster: reading secrets: {e}"))?;
        Ok(Prepared {
            cluster,
            docs,
            stream,
            work,
            files,
            recordings,
            versions,
            audit,
            secrets,
            secret_records,
        })
    }

    /// The backends of the server state `app` (made inside `Arc::new_cyclic`).
    pub fn backends(self, app: Weak<AppState>, config: &Config) -> Backends {
        let live = live::Live::new(self.cluster.clone(), app.clone());
        let work = work::NatsWork::new(
            self.cluster.clone(),
            app.clone(),
            self.work,
            self.docs.clone(),
        );
        let bus = events::NatsBus::new(
            self.cluster.clone(),
            live.clone(),
            self.stream,
            app,
            config.event_queue_max,
            config.event_ttl,
        );
        let kv = kv::NatsKv {
            cluster: self.cluster.clone(),
            max_keys: config.kv_max_keys,
        };
        let peers = NatsPeers {
            cluster: self.cluster.clone(),
            live,
            docs: self.docs,
            bus: bus.clone(),
        };
        Backends {
            events: Box::new(events::Bus(bus)),
            kv: Box::new(kv),
            peers: Box::new(peers),
            work: Box::new(work::Jobs(work)),
            files: Box::new(files::NatsFiles {
                cluster: self.cluster.clone(),
                store: self.files,
                max_count: config.files_max_count,
                max_bytes: config.files_max_bytes,
            }),
            recordings: Box::new(self.recordings),
            versions: Box::new(self.versions),
            audit: Box::new(self.audit),
            secrets: Box::new(self.secrets),
        }
    }
}

/// [`Peers`] on NATS.
struct NatsPeers {
    cluster: Arc<Cluster>,
    live: Arc<live::Live>,
    docs: Arc<docs::Docs>,
    bus: Arc<events::NatsBus>,
}

/// How often a node makes sure every events channel has its consumer.
const CONSUMERS_EVERY: Duration = Duration::from_secs(60);

impl Peers for NatsPeers {
    fn start(&self) -> BoxFuture<'static, Result<(), String>> {
        let (cluster, live, bus) = (self.cluster.clone(), self.live.clone(), self.bus.clone());
        Box::pin(async move {
            live.start().await?;
            bus.ensure_consumers().await;
            // Listed among the nodes alive before the server answers anyone.
            if let Err(e) = cluster.beat().await {
                tracing::warn!("cluster heartbeat: {e}");
            }
            cluster.spawn_heartbeat();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(CONSUMERS_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    bus.ensure_consumers().await;
                }
            });
            Ok(())
        })
    }

    fn push_all(&self, channel: &str, frame: &str) {
        self.live.push_all(channel, frame);
    }

    fn push_to(&self, channel: &str, id: &str, frame: &str) -> Result<bool, StoreError> {
        self.live.push_to(channel, id, frame)
    }

    fn connections(&self, local: Value) -> BoxFuture<'static, Result<Value, StoreError>> {
        let live = self.live.clone();
        Box::pin(async move { live.connections(local).await })
    }

    fn cluster(&self) -> Option<(String, bool)> {
        Some((self.cluster.node.clone(), self.cluster.connected()))
    }

    fn answer(&self, topic: &'static str, handler: Handler) {
        self.live.answer(topic, handler);
    }

    fn gather(
        &self,
        topic: &'static str,
        body: Value,
    ) -> BoxFuture<'static, Result<Vec<(String, Value)>, StoreError>> {
        let live = self.live.clone();
        Box::pin(async move { live.gather(topic, body).await })
    }

    fn reloading(&self) -> u64 {
        self.docs.written()
    }

    fn reloaded(&self, mark: u64) {
        self.docs.loaded(mark);
        // Published before the change is answered (reloads run on blocking
        // threads), so work made after it never runs with the older version.
        if self.cluster.block(self.docs.publish_changes()).is_err() {
            self.docs.publish_soon();
        }
        let bus = self.bus.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { bus.ensure_consumers().await });
        }
    }
}

impl Cluster {
    /// Opens (or creates) the bucket `{prefix}_{name}`: one value a key, on
    /// file, each kept `max_age` after it was written (zero: for ever).
    pub async fn open_kv(&self, name: &str, max_age: Duration) -> Result<jkv::Store, String> {
        open_bucket(
            &self.js,
            jkv::Config {
                bucket: format!("{}_{name}", self.prefix),
                history: 1,
                max_age,
                storage: StorageType::File,
                num_replicas: self.replicas,
                ..Default::default()
            },
        )
        .await
    }
}

impl Cluster {
    /// Every message of stream `stream` on `filter` that `policy` delivers,
    /// as `(subject, payload)`, in stream order; the deletes and purges of a
    /// KV bucket are left out. One ordered consumer, read to its end.
    pub async fn read_stream(
        &self,
        stream: &str,
        filter: &str,
        policy: async_nats::jetstream::consumer::DeliverPolicy,
    ) -> Result<Vec<(String, axum::body::Bytes)>, StoreError> {
        use async_nats::jetstream::consumer::push;
        if !self.connected() {
            return Err(unavailable("NATS is unreachable"));
        }
        let stream = self.js.get_stream(stream).await.map_err(unavailable)?;
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: filter.to_owned(),
                deliver_policy: policy,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer.messages().await.map_err(unavailable)?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(unavailable)?;
            let pending = message.info().map(|i| i.pending).unwrap_or(0);
            let deleted = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some();
            if !deleted {
                out.push((message.subject.to_string(), message.payload.clone()));
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// The newest message of every subject of `filter` in `stream` (a KV
    /// bucket's live keys), as `(subject, payload)`.
    pub async fn last_per_subject(
        &self,
        stream: &str,
        filter: &str,
    ) -> Result<Vec<(String, axum::body::Bytes)>, StoreError> {
        use async_nats::jetstream::consumer::DeliverPolicy;
        self.read_stream(stream, filter, DeliverPolicy::LastPerSubject)
            .await
    }
}

async fn open_bucket(js: &jetstream::Context, config: jkv::Config) -> Result<jkv::Store, String> {
    let name = config.bucket.clone();
    match js.get_key_value(&name).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(config)
            .await
            .map_err(|e| format!("cluster: cannot create KV bucket {name}: {e}")),
    }
}

/// A token safe in a NATS subject or KV key for any text: base64url.
pub fn token(text: &str) -> String {
    use base64::Engine as _;
    if text.is_empty() {
        return "_".into();
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// The text a [`token`] was made of.
pub fn untoken(token: &str) -> Option<String> {
    use base64::Engine as _;
    if token == "_" {
        return Some(String::new());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn node_key(node: &str) -> String {
    token(node)
}

/// `"2.10.23"` → `(2, 10, 23)`; what does not parse counts as 0.
fn version_of(text: &str) -> (u64, u64, u64) {
    let mut parts = text
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// This machine's host name, for the default node name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_any_text() {
        for text in ["", "a", "orders.v2", "ü/é *>", "a b\tc"] {
            let t = token(text);
            assert!(t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            assert_eq!(untoken(&t).as_deref(), Some(text));
        }
    }

    #[test]
    fn server_versions_compare() {
        assert!(version_of("2.9.25") < OLDEST_SERVER);
        assert!(version_of("v2.10.23") >= OLDEST_SERVER);
        assert!(version_of("2.15.1") >= OLDEST_SERVER);
        assert!(version_of("2.11.0-RC.1") >= OLDEST_SERVER);
    }
}
