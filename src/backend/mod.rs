//! The seam between the runtime and what several nodes must share (SPEC §13).
//!
//! Routes, frames and scripts use these traits, never a concrete backend.
//! Two implementations sit side by side:
//!
//! - [`embedded`]: one process, its SQLite store (the default);
//! - [`nats`]: several nodes on one NATS JetStream system (`--cluster URL`).
//!
//! Every trait states the guarantee both implementations keep; the black-box
//! tests hold both to it. Errors are [`StoreError`]s: in cluster mode a
//! message that starts with [`CLUSTER_UNAVAILABLE`] means NATS could not be
//! reached, and is answered `503 {"error":"cluster_unavailable"}`.

pub mod embedded;
pub mod nats;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::events::Event;
use crate::store::StoreError;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Most keys `kv_keys` returns.
pub const MAX_LISTED_KEYS: usize = 1000;

pub use crate::store::CLUSTER_UNAVAILABLE;

/// The backends a server state is made with.
pub struct Backends {
    /// Events.
    pub events: Box<dyn EventBus>,
    /// Scripts' kv.
    pub kv: Box<dyn Kv>,
    /// The other nodes.
    pub peers: Box<dyn Peers>,
    /// Jobs between nodes.
    pub work: Box<dyn Work>,
    /// Files.
    pub files: Box<dyn Files>,
    /// Recordings.
    pub recordings: Box<dyn Recordings>,
    /// Versions of channel documents and scripts.
    pub versions: Box<dyn Versions>,
    /// The audit log.
    pub audit: Box<dyn Audit>,
    /// The sealed secrets.
    pub secrets: Box<dyn SecretStore>,
}

/// Recordings of one channel on their way to the store: its newest `keep`
/// are kept, these among them, oldest first.
pub struct Recorded {
    /// The channel's code.
    pub channel: String,
    /// How many the channel keeps (`opts.record`).
    pub keep: u32,
    /// The recordings as SPEC §15 shows them (each has its `id`), oldest first.
    pub docs: Vec<Value>,
}

/// Recordings of the channels' traffic (SPEC §15).
///
/// Guarantee: once `write` resolved, `list` on any node shows them; a
/// channel keeps at most its newest `keep` (each write trims it). Recordings
/// are for developing scripts: losing some in an outage is allowed.
pub trait Recordings: Send + Sync {
    /// Stores the recordings of each channel and trims it to its `keep`.
    fn write(&self, batch: Vec<Recorded>) -> BoxFuture<'static, Result<(), StoreError>>;
    /// The newest `limit` recordings of `channel`, newest first.
    fn list(
        &self,
        channel: &str,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Value>, StoreError>>;
    /// Removes every recording of `channel`; how many.
    fn clear(&self, channel: &str) -> BoxFuture<'static, Result<usize, StoreError>>;
    /// Only the channels of `keep` keep recordings, each its newest `n`.
    fn hold_to(&self, keep: Vec<(String, u32)>) -> BoxFuture<'static, Result<(), StoreError>>;
}

/// A version to keep (SPEC §19): the content of a channel document or a
/// script as it is now.
pub struct NewVersion {
    /// `channel` or `script`.
    pub kind: &'static str,
    /// The channel or script code.
    pub code: String,
    /// The file's text; `None`: it was deleted.
    pub content: Option<String>,
    /// Kind `restored` instead of `created` / `changed`.
    pub restored: bool,
    /// RFC 3339.
    pub at: String,
    /// Who made it: `{"by", "address", "request_id"}`.
    pub by: Value,
    /// The versions kept of this code (`versions_keep`): older ones are pruned.
    pub keep: usize,
}

/// What [`Versions::record`] did: the current version's number before and
/// after (`after == before` when the content was the current version's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioned {
    /// The current version before (`None`: the code had none).
    pub before: Option<u64>,
    /// The current version after.
    pub after: Option<u64>,
}

impl Versioned {
    /// `true` when a version was made.
    pub fn made(&self) -> bool {
        self.before != self.after
    }
}

/// The SHA-256 of a version's content, in hex (of nothing for a deletion).
pub fn content_sha(content: Option<&str>) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(content.unwrap_or("").as_bytes()))
}

/// The kind of the next version of a code whose current version is `head`
/// (`(kind, sha256)`), for `content`; `None`: no version (same content, or
/// the deletion of what is deleted or never was).
pub fn next_kind(
    head: Option<(&str, &str)>,
    content: Option<&str>,
    restored: bool,
) -> Option<&'static str> {
    let deleted = head.is_none_or(|(kind, _)| kind == "deleted");
    match content {
        None if deleted => None,
        None => Some("deleted"),
        Some(text) => {
            if !deleted && head.is_some_and(|(_, sha)| sha == content_sha(Some(text))) {
                None
            } else if restored {
                Some("restored")
            } else if deleted {
                Some("created")
            } else {
                Some("changed")
            }
        }
    }
}

/// The current version of a code (see [`Versions::current`]).
pub struct Current {
    /// `channel` or `script`.
    pub kind: String,
    /// The code.
    pub code: String,
    /// Its content's SHA-256.
    pub sha256: String,
}

/// The versions of channel documents and scripts (SPEC §19). A version is
/// `{number, at, kind, by, sha256, content}`; `content` is the file's text
/// (`null` for a deletion).
///
/// Guarantee: once `record` resolved, the version is durable and every
/// node's `list` shows it; numbers grow by code and are never reused; two
/// nodes recording the same content at once make one version.
pub trait Versions: Send + Sync {
    /// Keeps `version` unless its content is the current version's.
    fn record(&self, version: NewVersion) -> BoxFuture<'static, Result<Versioned, StoreError>>;
    /// The versions of a code, newest first, without their content.
    fn list(
        &self,
        kind: &'static str,
        code: &str,
    ) -> BoxFuture<'static, Result<Vec<Value>, StoreError>>;
    /// One version, with its content.
    fn get(
        &self,
        kind: &'static str,
        code: &str,
        number: u64,
    ) -> BoxFuture<'static, Result<Option<Value>, StoreError>>;
    /// The current version of every code not deleted.
    fn current(&self) -> BoxFuture<'static, Result<Vec<Current>, StoreError>>;
}

/// What `GET /admin/audit` asks for.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Entries at or after (Unix ms).
    pub since: Option<i64>,
    /// Entries before (Unix ms).
    pub until: Option<i64>,
    /// `by` equals.
    pub by: Option<String>,
    /// `code` equals.
    pub code: Option<String>,
    /// `action` equals.
    pub action: Option<String>,
    /// Most entries answered.
    pub limit: usize,
    /// Entries skipped (newest first).
    pub offset: usize,
}

impl AuditQuery {
    /// Whether `entry` passes the filters (the time ones included).
    pub fn admits(&self, entry: &Value) -> bool {
        let ms = entry["ms"].as_i64().unwrap_or(0);
        let field = |name: &str, want: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| entry[name].as_str() == Some(w.as_str()))
        };
        self.since.is_none_or(|s| ms >= s)
            && self.until.is_none_or(|u| ms < u)
            && field("by", &self.by)
            && field("code", &self.code)
            && field("action", &self.action)
    }
}

/// The audit log (SPEC §19): append-only, pruned only by age.
///
/// Guarantee: once `append` resolved the entry is durable and every node's
/// `list` shows it; no call changes or deletes an entry; entries older than
/// `audit_retention` go.
pub trait Audit: Send + Sync {
    /// Adds an entry (it has `ms`, its time in Unix ms, beside `at`).
    fn append(&self, entry: Value) -> BoxFuture<'static, Result<(), StoreError>>;
    /// The entries that pass `query`, newest first.
    fn list(&self, query: AuditQuery) -> BoxFuture<'static, Result<Vec<Value>, StoreError>>;
    /// Removes the entries older than `before` (Unix ms); how many.
    fn prune(&self, before: i64) -> BoxFuture<'static, Result<usize, StoreError>>;
}

/// What runs when another node changed the secrets (cluster mode).
pub type OnChange = Arc<dyn Fn() + Send + Sync>;

/// The sealed secrets (SPEC §20): records `{name, channels, updated,
/// version, nonce, sealed}`; values are sealed before they get here.
///
/// Guarantee: once `put` or `delete` resolved, it is durable and every
/// node's `all` shows it; in cluster mode every other node is told
/// (`watch`) within a second or two.
pub trait SecretStore: Send + Sync {
    /// Every record.
    fn all(&self) -> BoxFuture<'static, Result<Vec<Value>, StoreError>>;
    /// Stores (or replaces) the record of `record["name"]`.
    fn put(&self, record: Value) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Removes a record; `true` when it was there.
    fn delete(&self, name: &str) -> BoxFuture<'static, Result<bool, StoreError>>;
    /// Calls `on_change` whenever another node changed a record.
    fn watch(&self, on_change: OnChange);
}

/// Publishing and once-per-channel delivery of system events (SPEC §6).
///
/// Guarantee: each event reaches each subscriber channel **at most once**,
/// through exactly one of its open connections whose patterns match,
/// whichever node holds them; an `events` channel with no connection that
/// takes the event keeps it durably when it matches `opts.events`, in order,
/// and gets it when a connection opens. `publish` resolves only once every
/// durable copy is committed (the embedded store, or JetStream's publish
/// acknowledgement), so a `202` is never answered for a lost event.
pub trait EventBus: Send + Sync {
    /// Delivers or queues `event` for every subscriber channel; resolves once
    /// every durable copy is committed. Returns the number of channels reached
    /// at once (in cluster mode: on this node).
    fn publish(&self, event: Event) -> BoxFuture<'static, Result<usize, StoreError>>;
    /// A connection opened on events channel `channel`: deliver its queue.
    fn connection_opened(&self, channel: &str);
}

/// Why a file was not written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// `files_max_count` or `files_max_bytes` of the channel would be passed (`507`).
    #[error("{0}")]
    Quota(String),
    /// The store (the disk, or NATS) failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The files of the files API and `file_read` / `file_write` (SPEC §8). Every
/// call blocks (callers are scripts, or handlers on a blocking thread); the
/// name is checked already (one safe path segment).
///
/// Guarantee: once a write returned, a read on any node sees it; a write
/// replaces the whole file at once (a reader sees the old one or the new
/// one); a channel holds at most `files_max_count` files and
/// `files_max_bytes` bytes.
pub trait Files: Send + Sync {
    /// The file's bytes, or `None`.
    fn read(&self, channel: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes the file; `true` when it replaced one.
    fn write(&self, channel: &str, name: &str, bytes: &[u8]) -> Result<bool, FileError>;
    /// Removes the file; `true` when it was there.
    fn delete(&self, channel: &str, name: &str) -> Result<bool, StoreError>;
}

/// The other nodes: websocket pushes and connection lists that cross nodes,
/// the cluster's health, documents changed on this node. Embedded mode has
/// no other node: pushes reach nobody else and the lists are this node's.
///
/// Guarantee: `ws_send` reaches the channel's connections on every node;
/// `ws_send_to(id)` reaches the connection wherever it is; a push is at most
/// once (like a frame on a socket). A change to the folders of one node
/// reaches every node's folders within 2 s.
pub trait Peers: Send + Sync {
    /// Starts following the other nodes (after the server state exists).
    fn start(&self) -> BoxFuture<'static, Result<(), String>>;
    /// `ws_send`: the frame for the channel's connections on the other nodes.
    fn push_all(&self, channel: &str, frame: &str);
    /// `ws_send_to` a connection that is not on this node; `true` when one
    /// took the frame. Blocks (scripts call it).
    fn push_to(&self, channel: &str, id: &str, frame: &str) -> Result<bool, StoreError>;
    /// Every node's open connections, given this node's
    /// (`{"<channel>": [connection]}`); in cluster mode each has its `node`.
    fn connections(&self, local: Value) -> BoxFuture<'static, Result<Value, StoreError>>;
    /// `None` in embedded mode; in cluster mode the node's name and whether
    /// NATS is reachable now.
    fn cluster(&self) -> Option<(String, bool)>;
    /// A reload of this node's folders begins; what it returns goes to
    /// [`reloaded`](Peers::reloaded) (which changes from other nodes it holds).
    fn reloading(&self) -> u64;
    /// This node reloaded its folders: share what changed with the others.
    fn reloaded(&self, mark: u64);
    /// Answers the other nodes' questions on `topic` with `handler`.
    fn answer(&self, topic: &'static str, handler: Handler);
    /// Asks every other node alive on `topic`: `(node, answer)` of each (none
    /// in embedded mode). A node that does not answer within 500 ms is left out.
    fn gather(
        &self,
        topic: &'static str,
        body: Value,
    ) -> BoxFuture<'static, Result<Vec<(String, Value)>, StoreError>>;
}

/// A node's answer to a question of another node (see [`Peers::answer`]).
pub type Handler = Arc<dyn Fn(Value) -> BoxFuture<'static, Value> + Send + Sync>;

/// A send job or inbox request for the cluster to keep until it is done.
pub struct HandOff {
    /// The job id (the request id of an inbox request).
    pub id: String,
    /// `send` or `recv`.
    pub kind: &'static str,
    /// The channel's code.
    pub channel: String,
    /// What the node that takes it needs to run it.
    pub job: Value,
    /// The job as the job view shows it while it waits for a node.
    pub record: Value,
}

/// What became of a [`HandOff`].
#[derive(Debug, PartialEq, Eq)]
pub enum Handed {
    /// Stored: it runs at least once.
    Stored,
    /// The channel's inbox holds `inbox_max` requests already; nothing was stored.
    Full,
}

/// What the jobs module did with a job taken from the cluster.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// It is in this node's store and runs here; [`Work::done`] follows.
    Queued,
    /// It finished here already (a redelivery): done in the cluster too.
    Finished,
    /// Not here, not now (its channel is not loaded here yet): give it back.
    Refused,
}

/// Puts a job taken from the cluster into this node's store.
pub type Take = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Taken, StoreError>> + Send + Sync>;

/// Durable hand-off of jobs between nodes (SPEC §13): send jobs, the inbox
/// of `issync = false` channels, schedule ticks. In embedded mode jobs are
/// made straight in the local store and every tick is this node's.
///
/// Guarantee (cluster mode): a hand-off resolves only once JetStream stored
/// it (de-duplicated by the job id); a job is run by one node at a time and
/// stays in the cluster until [`done`](Work::done), so a node that dies
/// mid-attempt loses the attempt, not the job; inbox requests of a channel
/// run one at a time, in arrival order, on any node; each schedule tick is
/// claimed by one node.
pub trait Work: Send + Sync {
    /// `true` in cluster mode: jobs go through [`hand_off`](Work::hand_off).
    fn shared(&self) -> bool;
    /// Stores a new job in the cluster.
    fn hand_off(&self, job: HandOff) -> BoxFuture<'static, Result<Handed, StoreError>>;
    /// Starts taking jobs from the cluster into this node with `take`.
    fn start(&self, take: Take);
    /// A job taken from the cluster reached its final state here.
    fn done(&self, id: &str);
    /// The node stops: jobs taken but not finished go back to the cluster now.
    fn stop(&self) -> BoxFuture<'static, ()>;
    /// Whether this node runs schedule tick `key` (`<channel>/<entry>/<time>`).
    fn claim_tick(&self, key: String) -> BoxFuture<'static, Result<bool, StoreError>>;
    /// Whether no run of schedule entry `entry` is under way on another node
    /// (then this node's run holds the entry until [`ran`](Work::ran)).
    fn run_alone(&self, entry: String) -> BoxFuture<'static, Result<bool, StoreError>>;
    /// The run of `entry` that [`run_alone`](Work::run_alone) let start ended.
    fn ran(&self, entry: String);
    /// Shares job `id` as this node has it now (`record`: the job as the job
    /// view shows it, with its attempts), for the job view of every node.
    /// `Ok(false)`: another node took the job over since this node took it
    /// (this node was frozen or cut off); this node must then drop the job,
    /// making no further attempt. Embedded: nothing to share.
    fn share(&self, id: &str, record: Value) -> BoxFuture<'static, Result<bool, StoreError>>;
    /// This node takes job `id` from the cluster: it holds the job's shared
    /// record from now on (created as `record` when there is none). Answers
    /// the record as it was before (`null` when new; in embedded mode).
    fn adopt(&self, id: &str, record: Value) -> BoxFuture<'static, Result<Value, StoreError>>;
    /// The shared record of job `id` (`None` in embedded mode).
    fn shared_job(&self, id: &str) -> BoxFuture<'static, Result<Option<Value>, StoreError>>;
    /// Every shared job record (none in embedded mode).
    fn shared_jobs(&self) -> BoxFuture<'static, Result<Vec<Value>, StoreError>>;
}

/// The per-channel key-value map of `kv_*` (SPEC §10). Every call blocks: the
/// callers are scripts on their own threads.
///
/// Guarantee: once a write returned, a read on any node sees it; `incr` and
/// `cas` are atomic against every other write of the key; a key set with a
/// TTL is gone for every read and write once it has passed; a channel holds
/// at most `kv_max_keys` keys (a new key past it is refused).
pub trait Kv: Send + Sync {
    /// The value of `key` on `channel`, if any.
    fn get(&self, channel: &str, key: &str) -> Result<Option<Value>, StoreError>;
    /// The channel's live keys that start with `prefix`, sorted, at most
    /// [`MAX_LISTED_KEYS`].
    fn keys(&self, channel: &str, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Stores `value` (`None`: removes the key), gone after `ttl` if given.
    fn set(
        &self,
        channel: &str,
        key: &str,
        value: Option<Value>,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), StoreError>;
    /// Removes `key`; `true` when it was there.
    fn delete(&self, channel: &str, key: &str) -> Result<bool, StoreError>;
    /// Adds `n` to the integer under `key` (missing: 0); the new value.
    fn incr(&self, channel: &str, key: &str, n: i64) -> Result<i64, StoreError>;
    /// Sets `key` to `new` only when its value equals `expected` (`None`: absent).
    fn cas(
        &self,
        channel: &str,
        key: &str,
        expected: Option<Value>,
        new: Option<Value>,
    ) -> Result<bool, StoreError>;
}

/// Refuses an empty or too long key.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError(format!("a key is 1 to {MAX_KEY_BYTES} bytes")));
    }
    Ok(())
}

/// The error of a new key past `kv_max_keys`.
pub fn full(max_keys: usize) -> StoreError {
    StoreError(format!(
        "the channel has {max_keys} keys already (kv_max_keys); delete some first"
    ))
}
