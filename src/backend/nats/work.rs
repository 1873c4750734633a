//! Jobs in cluster mode: JetStream keeps every send job and inbox request
//! until a node has finished it; a node takes one into its own store and
//! runs it there with the same job machinery as in embedded mode.
//!
//! - Streams `{prefix}_inbox` (subject `{prefix}.inbox.<channel>`) and
//!   `{prefix}_send` (`{prefix}.send.<channel>`), work-queue retention, file
//!   storage; a hand-off is published with `Nats-Msg-Id` = the job id and
//!   answered after JetStream's acknowledgement. The inbox stream holds at most
//!   `inbox_max` requests per channel (a publish past it is refused: `429`).
//! - One consumer per `issync = false` channel (`inbox_<channel>`) with one
//!   message in flight at a time: the channel's requests run one at a time,
//!   in arrival order, whichever node takes them. One consumer for send jobs.
//! - A taken job is acknowledged when it reaches its final state here
//!   ([`Work::done`]); until then the node tells JetStream it is in progress
//!   every [`PROGRESS_EVERY`]. A node that dies stops doing so: after
//!   [`ACK_WAIT`] JetStream gives the job to another node (the attempt is
//!   lost, not the job). On a clean stop the node gives back what it holds.
//! - The inbox and send consumers deliver a job at most `[cluster]
//!   max_deliver` times (a node that died with it, a clean stop that gave it
//!   back, a second waiting for a channel no node has). Past that JetStream
//!   publishes a `MAX_DELIVERIES` advisory; one node (a queue group) records
//!   the job failed with the reason and removes it from its stream.
//! - Schedule ticks: the first node to create the key of a tick in the KV
//!   bucket `{prefix}_ticks` runs it.
//! - Shared job state: the bucket `{prefix}_jobs` holds each job as the job
//!   view shows it (state, attempts with their node), kept `job_retention`
//!   after its last change. The job view is served from it, so it lists the
//!   jobs of a node that died and those queued in JetStream and not taken
//!   yet. A node that takes a job adopts its record (the attempts so far
//!   carry on: a job given again does not start counting at 1) and becomes
//!   its holder: each later write of the record expects the revision the
//!   holder wrote last (a fencing token). A node that was frozen or cut off
//!   while another took its job over finds the revision changed before its
//!   next attempt, and drops the job instead of running it again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::kv as jkv;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{AckKind, Message};
use dashmap::DashMap;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;

use super::{token, unavailable, Cluster};
use crate::backend::{HandOff, Handed, Take, Taken, Work};
use crate::channel::ChannelKind;
use crate::store::StoreError;
use crate::AppState;

/// How long JetStream waits for a taken job's progress before another node may take it.
pub const ACK_WAIT: Duration = Duration::from_secs(10);
/// How often a node tells JetStream its jobs are still in progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// Send jobs a node holds at once (as many as it runs at once).
const SEND_HELD: usize = 64;
/// How long one waiting pull stays open before the taker looks around again.
const PULL_WAIT: Duration = Duration::from_secs(1);
/// A refused job comes again after this.
const REFUSED_AGAIN: Duration = Duration::from_secs(1);
/// How long a node waits for the documents a job was made with before it gives the job back.
const DOCS_WAIT: Duration = Duration::from_secs(5);
/// How long a tick's claim is remembered.
const TICKS_KEPT: Duration = Duration::from_secs(3600);
/// Takes over a job record changed meanwhile by another node at most this often.
const ADOPT_TRIES: usize = 5;

/// A job of [`NatsWork::held`].
#[derive(Clone)]
enum Slot {
    /// Being stored here; its message is with the taker.
    Taking,
    /// Finished before the taker got back: the taker acknowledges it.
    Done,
    /// Stored here and not finished: acknowledged when it is.
    Held(Box<Message>),
}

/// Acknowledges a finished job (a double ack: it counts as done only once
/// JetStream confirms it, so no other node runs it again).
async fn finished(message: Message) {
    if let Err(e) = message.double_ack().await {
        tracing::warn!("cluster: acknowledging a finished job: {e}");
    }
}

/// [`Work`] on JetStream.
pub struct NatsWork {
    cluster: Arc<Cluster>,
    app: Weak<AppState>,
    inbox: stream::Stream,
    send: stream::Stream,
    ticks: jkv::Store,
    /// The shared job records (see the module's description).
    jobs: jkv::Store,
    /// The revision of each job record this node wrote last as its holder.
    fences: DashMap<String, u64>,
    /// Jobs being taken or taken and not finished here, by id.
    held: Arc<DashMap<String, Slot>>,
    /// The channels whose inbox this node takes from.
    taking: Arc<Mutex<HashSet<String>>>,
    take: Mutex<Option<Take>>,
    /// The mirror of the documents: a job waits for the version it was made with.
    docs: Arc<super::docs::Docs>,
}

impl NatsWork {
    /// Opens (or creates) the streams and the ticks bucket.
    pub async fn open(
        cluster: Arc<Cluster>,
        inbox_max: usize,
        job_retention: Duration,
    ) -> Result<(stream::Stream, stream::Stream, jkv::Store, jkv::Store), String> {
        let config = |name: &str| stream::Config {
            name: format!("{}_{name}", cluster.prefix),
            subjects: vec![cluster.subject(&format!("{name}.*"))],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            num_replicas: cluster.replicas,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let inbox = cluster
            .js
            .get_or_create_stream(stream::Config {
                max_messages_per_subject: inbox_max as i64,
                discard: DiscardPolicy::New,
                discard_new_per_subject: true,
                ..config("inbox")
            })
            .await
            .map_err(|e| format!("cluster: inbox stream: {e}"))?;
        let send = cluster
            .js
            .get_or_create_stream(config("send"))
            .await
            .map_err(|e| format!("cluster: send stream: {e}"))?;
        let ticks = cluster.open_kv("ticks", TICKS_KEPT).await?;
        let jobs = cluster.open_kv("jobs", job_retention).await?;
        Ok((inbox, send, ticks, jobs))
    }

    /// The hand-off of the server state `app`.
    pub fn new(
        cluster: Arc<Cluster>,
        app: Weak<AppState>,
        (inbox, send, ticks, jobs): (stream::Stream, stream::Stream, jkv::Store, jkv::Store),
        docs: Arc<super::docs::Docs>,
    ) -> Arc<NatsWork> {
        Arc::new(NatsWork {
            cluster,
            app,
            inbox,
            send,
            ticks,
            jobs,
            fences: DashMap::new(),
            held: Arc::default(),
            taking: Arc::default(),
            take: Mutex::default(),
            docs,
        })
    }

    fn take_fn(&self) -> Option<Take> {
        self.take.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The durable consumer `name`, created or brought to this node's config.
    async fn consumer(
        &self,
        stream: &stream::Stream,
        name: &str,
        filter: String,
        in_flight: i64,
    ) -> Result<PullConsumer, StoreError> {
        stream
            .create_consumer(pull::Config {
                durable_name: Some(name.to_owned()),
                filter_subject: filter,
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: in_flight,
                max_deliver: self.cluster.max_deliver,
                ..Default::default()
            })
            .await
            .map_err(unavailable)
    }

    /// Records as failed, here, each job JetStream gave up on after
    /// `max_deliver` deliveries (its advisory goes to one node of the
    /// queue group), and removes it from its stream: a job no node could
    /// finish shows in the job view with the reason instead of vanishing.
    async fn record_given_up(self: Arc<Self>, take: Take) {
        // Wildcards match whole tokens: every stream's, ours picked below.
        let subject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.*.*".to_owned();
        let group = self.cluster.subject("given_up");
        let mut advisories = loop {
            match self
                .cluster
                .client
                .queue_subscribe(subject.clone(), group.clone())
                .await
            {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!("cluster: cannot follow given-up jobs: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        while let Some(advisory) = advisories.next().await {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&advisory.payload) else {
                continue;
            };
            let (Some(name), Some(seq)) = (v["stream"].as_str(), v["stream_seq"].as_u64()) else {
                continue;
            };
            let stream = if name == self.inbox.cached_info().config.name {
                &self.inbox
            } else if name == self.send.cached_info().config.name {
                &self.send
            } else {
                continue;
            };
            if let Err(e) = self.give_up(&take, stream, seq, &v).await {
                tracing::warn!(stream = name, seq, "cluster: recording a given-up job: {e}");
            }
        }
    }

    async fn give_up(
        &self,
        take: &Take,
        stream: &stream::Stream,
        seq: u64,
        advisory: &serde_json::Value,
    ) -> Result<(), String> {
        let message = stream
            .get_raw_message(seq)
            .await
            .map_err(|e| e.to_string())?;
        let mut job: serde_json::Value =
            serde_json::from_slice(&message.payload).map_err(|e| e.to_string())?;
        let deliveries = advisory["deliveries"].as_u64().unwrap_or(0);
        let channel = job["channel"].as_str().unwrap_or_default().to_owned();
        job["given_up"] = format!(
            "given up after {deliveries} deliveries (cluster.max_deliver): no node finished it \
             (nodes that died running it, or channel {channel:?} loaded on no node)"
        )
        .into();
        tracing::error!(job = %job["id"], channel = %channel, deliveries, "cluster: job given up");
        take(job).await.map_err(|e| e.to_string())?;
        stream
            .delete_message(seq)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Gives one message to the jobs module; holds it while the job runs here.
    async fn offer(&self, take: &Take, message: Message) {
        let job: serde_json::Value = match serde_json::from_slice(&message.payload) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("cluster: a job that is not JSON, dropped: {e}");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let id = job["id"].as_str().unwrap_or_default().to_owned();
        if self.app.upgrade().is_none_or(|a| a.jobs.is_stopping()) {
            // Pulled as the node began to stop: given back at once.
            let _ = message.ack_with(AckKind::Nak(None)).await;
            return;
        }
        // Made after a change of channels or scripts this node has not got
        // yet: waited for here (a give-back would count a delivery).
        let rev = job["docs_rev"].as_u64().unwrap_or(0);
        let deadline = tokio::time::Instant::now() + DOCS_WAIT;
        while rev > self.docs.applied() {
            if tokio::time::Instant::now() >= deadline {
                let _ = message.ack_with(AckKind::Nak(None)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Marked before the job is stored: a job that runs and finishes
        // before `take` returns finds its mark and leaves the ack to us.
        self.held.insert(id.clone(), Slot::Taking);
        let taken = take(job).await;
        if !matches!(taken, Ok(Taken::Queued)) {
            self.held.remove(&id);
            self.fences.remove(&id);
        }
        match taken {
            Ok(Taken::Queued) => {
                let done_already = match self.held.entry(id) {
                    dashmap::Entry::Occupied(mut e) if matches!(e.get(), Slot::Taking) => {
                        e.insert(Slot::Held(Box::new(message.clone())));
                        false
                    }
                    dashmap::Entry::Occupied(e) => {
                        e.remove();
                        true
                    }
                    dashmap::Entry::Vacant(e) => {
                        e.insert(Slot::Held(Box::new(message.clone())));
                        false
                    }
                };
                if done_already {
                    finished(message).await;
                }
            }
            Ok(Taken::Finished) => {
                let _ = message.ack().await;
            }
            Ok(Taken::Refused) => {
                let _ = message.ack_with(AckKind::Nak(Some(REFUSED_AGAIN))).await;
            }
            Err(e) => {
                tracing::warn!(job = %id, "cluster: cannot take a job yet: {e}");
                let _ = message.ack_with(AckKind::Nak(Some(REFUSED_AGAIN))).await;
            }
        }
    }

    /// Takes send jobs while this node holds fewer than [`SEND_HELD`].
    async fn take_sends(self: Arc<Self>, take: Take) {
        let filter = self.cluster.subject("send.*");
        let mut consumer = None;
        loop {
            if self.app.upgrade().is_none_or(|a| a.jobs.is_stopping()) {
                return;
            }
            let held = self.held.len();
            if held >= SEND_HELD {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            if consumer.is_none() {
                match self.consumer(&self.send, "send", filter.clone(), -1).await {
                    Ok(c) => consumer = Some(c),
                    Err(e) => {
                        tracing::debug!("cluster: send consumer: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            self.pull(&take, &mut consumer, SEND_HELD - held, "send jobs")
                .await;
        }
    }

    /// One waiting pull of at most `max` jobs from `consumer`, each offered
    /// as it comes (no polling); on an error the consumer is looked up again.
    async fn pull(&self, take: &Take, consumer: &mut Option<PullConsumer>, max: usize, what: &str) {
        let Some(c) = consumer.as_ref() else { return };
        match c
            .batch()
            .max_messages(max)
            .expires(PULL_WAIT)
            .messages()
            .await
        {
            Ok(mut batch) => {
                while let Some(Ok(message)) = batch.next().await {
                    self.offer(take, message).await;
                }
            }
            Err(e) => {
                tracing::debug!("cluster: taking {what}: {e}");
                *consumer = None;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// Takes the inbox requests of `channel`, one at a time, while the
    /// channel exists and is an inbox channel.
    async fn take_inbox(self: Arc<Self>, take: Take, channel: String) {
        let name = format!("inbox_{}", token(&channel));
        let filter = self.cluster.subject(&format!("inbox.{}", token(&channel)));
        let mut consumer = None;
        loop {
            let Some(app) = self.app.upgrade() else {
                return;
            };
            let still = app
                .registry
                .snapshot()
                .channel(&channel)
                .is_some_and(|c| !c.doc.opts.issync && c.kind != ChannelKind::Events);
            if !still || app.jobs.is_stopping() {
                self.taking
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&channel);
                return;
            }
            drop(app);
            if consumer.is_none() {
                match self.consumer(&self.inbox, &name, filter.clone(), 1).await {
                    Ok(c) => consumer = Some(c),
                    Err(e) => {
                        tracing::debug!(channel = %channel, "cluster: inbox consumer: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            // With one request in flight per channel, the next comes the
            // moment the one held here is acknowledged.
            self.pull(
                &take,
                &mut consumer,
                1,
                &format!("inbox requests of {channel}"),
            )
            .await;
        }
    }

    /// Starts an inbox taker for every inbox channel that has none.
    fn take_inboxes(self: &Arc<Self>, take: &Take) {
        let Some(app) = self.app.upgrade() else {
            return;
        };
        let codes: Vec<String> = app
            .registry
            .snapshot()
            .channels
            .values()
            .filter(|c| !c.doc.opts.issync && c.kind != ChannelKind::Events)
            .map(|c| c.code().to_owned())
            .collect();
        for code in codes {
            if self
                .taking
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(code.clone())
            {
                tokio::spawn(self.clone().take_inbox(take.clone(), code));
            }
        }
    }
}

/// The node and boot of a schedule entry's claim: `{"node", "boot"}`, or a
/// bare node name (claims made before boots were recorded: no boot).
fn claim_holder(value: &[u8]) -> (String, String) {
    match serde_json::from_slice::<serde_json::Value>(value) {
        Ok(v) if v["node"].is_string() => (
            v["node"].as_str().unwrap_or_default().to_owned(),
            v["boot"].as_str().unwrap_or_default().to_owned(),
        ),
        _ => (String::from_utf8_lossy(value).into_owned(), String::new()),
    }
}

/// Publishes a job to its stream (`Nats-Msg-Id`: its id), made with the
/// channel documents of bucket revision `docs_rev`; resolves on JetStream's
/// acknowledgement.
pub async fn publish(cluster: &Cluster, docs_rev: u64, job: HandOff) -> Result<Handed, StoreError> {
    if !cluster.connected() {
        return Err(unavailable("NATS is unreachable"));
    }
    let stream = if job.kind == "recv" { "inbox" } else { "send" };
    let subject = cluster.subject(&format!("{stream}.{}", token(&job.channel)));
    let mut body = job.job;
    body["docs_rev"] = docs_rev.into();
    let publish = PublishMessage::build()
        .payload(body.to_string().into())
        .message_id(&job.id);
    let ack = cluster
        .js
        .send_publish(subject, publish)
        .await
        .map_err(unavailable)?;
    match tokio::time::timeout(super::OP_TIMEOUT, ack).await {
        Err(_) => Err(unavailable("JetStream did not acknowledge the job in time")),
        Ok(Ok(_)) => Ok(Handed::Stored),
        Ok(Err(e)) if e.to_string().contains("maximum messages") => Ok(Handed::Full),
        Ok(Err(e)) => Err(unavailable(e)),
    }
}

/// Writes the shared record of a job being handed to the cluster (queued,
/// no holder), unless a node took it already; `true` when this wrote it.
async fn record_queued(jobs: &jkv::Store, id: &str, record: &serde_json::Value) -> bool {
    match jobs.create(id, record.to_string().into()).await {
        Ok(_) => true,
        Err(e) if matches!(e.kind(), jkv::CreateErrorKind::AlreadyExists) => false,
        Err(e) => {
            tracing::warn!(job = %id, "cluster: recording a queued job: {e}");
            false
        }
    }
}

/// The handle the runtime holds.
pub struct Jobs(pub Arc<NatsWork>);

impl Work for Jobs {
    fn shared(&self) -> bool {
        true
    }

    fn hand_off(&self, job: HandOff) -> BoxFuture<'static, Result<Handed, StoreError>> {
        let work = self.0.clone();
        Box::pin(async move {
            let (id, record) = (job.id.clone(), job.record.clone());
            // The job and its record go out together (one wait, not two);
            // a record of a job JetStream did not store is taken back.
            let (handed, recorded) = futures_util::join!(
                publish(&work.cluster, work.docs.applied(), job),
                record_queued(&work.jobs, &id, &record)
            );
            if recorded && !matches!(handed, Ok(Handed::Stored)) {
                if let Err(e) = work.jobs.purge(&id).await {
                    tracing::warn!(job = %id, "cluster: taking back the record of a job not stored: {e}");
                }
            }
            handed
        })
    }

    fn share(
        &self,
        id: &str,
        record: serde_json::Value,
    ) -> BoxFuture<'static, Result<bool, StoreError>> {
        let work = self.0.clone();
        let id = id.to_owned();
        Box::pin(async move {
            let mut record = record;
            let node = work.cluster.node.clone();
            record["node"] = node.clone().into();
            if let Some(attempts) = record["attempts"].as_array_mut() {
                for a in attempts.iter_mut().filter(|a| a["node"].is_null()) {
                    a["node"] = node.clone().into();
                }
            }
            let value: axum::body::Bytes = record.to_string().into();
            let fence = work.fences.get(&id).map(|r| *r);
            let Some(revision) = fence else {
                // Not a job this node holds through the cluster (a schedule run).
                work.jobs.put(&id, value).await.map_err(unavailable)?;
                return Ok(true);
            };
            match work.jobs.update(&id, value, revision).await {
                Ok(rev) => {
                    // Until `done`, which forgets it.
                    work.fences.insert(id, rev);
                    Ok(true)
                }
                Err(e) if matches!(e.kind(), jkv::UpdateErrorKind::WrongLastRevision) => {
                    // Another node holds the job now: its message is theirs.
                    work.fences.remove(&id);
                    work.held.remove(&id);
                    Ok(false)
                }
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn adopt(
        &self,
        id: &str,
        record: serde_json::Value,
    ) -> BoxFuture<'static, Result<serde_json::Value, StoreError>> {
        let work = self.0.clone();
        let id = id.to_owned();
        Box::pin(async move {
            for _ in 0..ADOPT_TRIES {
                let entry = work.jobs.entry(&id).await.map_err(unavailable)?;
                let (prior, revision) = match entry {
                    Some(e) if matches!(e.operation, jkv::Operation::Put) => (
                        serde_json::from_slice(&e.value).unwrap_or(serde_json::Value::Null),
                        Some(e.revision),
                    ),
                    _ => (serde_json::Value::Null, None),
                };
                let mut mine = if prior.is_object() {
                    prior.clone()
                } else {
                    record.clone()
                };
                mine["node"] = work.cluster.node.clone().into();
                let value = mine.to_string().into();
                // `Err(None)`: changed meanwhile (its old holder writing still): again.
                let written = match revision {
                    Some(rev) => work.jobs.update(&id, value, rev).await.map_err(|e| {
                        (!matches!(e.kind(), jkv::UpdateErrorKind::WrongLastRevision))
                            .then(|| unavailable(e))
                    }),
                    None => work.jobs.create(&id, value).await.map_err(|e| {
                        (!matches!(e.kind(), jkv::CreateErrorKind::AlreadyExists))
                            .then(|| unavailable(e))
                    }),
                };
                match written {
                    Ok(rev) => {
                        work.fences.insert(id, rev);
                        return Ok(prior);
                    }
                    Err(None) => continue,
                    Err(Some(e)) => return Err(e),
                }
            }
            Err(unavailable("the job's shared record keeps changing"))
        })
    }

    fn shared_job(
        &self,
        id: &str,
    ) -> BoxFuture<'static, Result<Option<serde_json::Value>, StoreError>> {
        let work = self.0.clone();
        let id = id.to_owned();
        Box::pin(async move {
            // Job ids are UUIDs; anything else is no key of the bucket.
            if uuid::Uuid::parse_str(&id).is_err() {
                return Ok(None);
            }
            let value = work.jobs.get(&id).await.map_err(unavailable)?;
            Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
        })
    }

    fn shared_jobs(&self) -> BoxFuture<'static, Result<Vec<serde_json::Value>, StoreError>> {
        let work = self.0.clone();
        Box::pin(async move {
            // The bucket's stream as it is now (the store's own status is
            // what it was when opened): a watch of an empty one waits forever.
            let mut stream = work
                .cluster
                .js
                .get_stream(format!("KV_{}_jobs", work.cluster.prefix))
                .await
                .map_err(unavailable)?;
            let info = stream.info().await.map_err(unavailable)?;
            if info.state.messages == 0 {
                return Ok(Vec::new());
            }
            let mut watch = work
                .jobs
                .watch_with_history(">")
                .await
                .map_err(unavailable)?;
            let mut out = Vec::new();
            loop {
                let next = tokio::time::timeout(super::OP_TIMEOUT, watch.next()).await;
                let Ok(Some(Ok(entry))) = next else {
                    return Err(unavailable("listing the shared jobs timed out"));
                };
                if matches!(entry.operation, jkv::Operation::Put) {
                    if let Ok(v) = serde_json::from_slice(&entry.value) {
                        out.push(v);
                    }
                }
                if entry.delta == 0 {
                    return Ok(out);
                }
            }
        })
    }

    fn start(&self, take: Take) {
        let work = self.0.clone();
        *work.take.lock().unwrap_or_else(|p| p.into_inner()) = Some(take.clone());
        tokio::spawn(work.clone().take_sends(take.clone()));
        tokio::spawn(work.clone().record_given_up(take.clone()));
        work.take_inboxes(&take);
        // New inbox channels (a reload) get a taker; held jobs stay ours.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            let mut inboxes = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let held: Vec<Message> = work
                            .held
                            .iter()
                            .filter_map(|m| match m.value() {
                                Slot::Held(message) => Some((**message).clone()),
                                _ => None,
                            })
                            .collect();
                        for message in held {
                            let _ = message.ack_with(AckKind::Progress).await;
                        }
                    }
                    _ = inboxes.tick() => {
                        if let Some(take) = work.take_fn() {
                            work.take_inboxes(&take);
                        }
                    }
                }
            }
        });
    }

    fn done(&self, id: &str) {
        self.0.fences.remove(id);
        let message = match self.0.held.get_mut(id) {
            Some(mut slot) if matches!(*slot, Slot::Taking) => {
                *slot = Slot::Done;
                None
            }
            Some(slot) if matches!(*slot, Slot::Done) => None,
            Some(slot) => {
                drop(slot);
                match self.0.held.remove(id) {
                    Some((_, Slot::Held(message))) => Some(*message),
                    _ => None,
                }
            }
            None => None,
        };
        if let Some(message) = message {
            tokio::spawn(finished(message));
        }
    }

    fn stop(&self) -> BoxFuture<'static, ()> {
        let held: Vec<(String, Message)> = self
            .0
            .held
            .iter()
            .filter_map(|m| match m.value() {
                Slot::Held(message) => Some((m.key().clone(), (**message).clone())),
                _ => None,
            })
            .collect();
        self.0.held.retain(|_, slot| !matches!(slot, Slot::Held(_)));
        Box::pin(async move {
            for (id, message) in held {
                tracing::info!(job = %id, "cluster: job given back on stop");
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
        })
    }

    fn claim_tick(&self, key: String) -> BoxFuture<'static, Result<bool, StoreError>> {
        let work = self.0.clone();
        Box::pin(async move {
            let key = token(&key);
            match work
                .ticks
                .create(&key, work.cluster.node.clone().into())
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if matches!(e.kind(), jkv::CreateErrorKind::AlreadyExists) => Ok(false),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn run_alone(&self, entry: String) -> BoxFuture<'static, Result<bool, StoreError>> {
        let work = self.0.clone();
        Box::pin(async move {
            let key = format!("run.{}", token(&entry));
            let me = serde_json::json!({"node": work.cluster.node, "boot": work.cluster.boot})
                .to_string();
            match work.ticks.create(&key, me.clone().into()).await {
                Ok(_) => return Ok(true),
                Err(e) if matches!(e.kind(), jkv::CreateErrorKind::AlreadyExists) => {}
                Err(e) => return Err(unavailable(e)),
            }
            // Held: by a node alive, or left behind by one that died mid-run
            // (also one that came back since under the same name: another boot).
            let Some(held) = work.ticks.entry(&key).await.map_err(unavailable)? else {
                return Ok(false);
            };
            let (node, boot) = claim_holder(&held.value);
            let left_behind = if node == work.cluster.node {
                boot != work.cluster.boot
            } else {
                !work.cluster.nodes_alive().await?.contains(&node)
            };
            if !left_behind {
                return Ok(false);
            }
            tracing::info!(entry = %entry, node = %node, "cluster: a schedule run left behind by a node that is gone is taken over");
            Ok(work
                .ticks
                .update(&key, me.into(), held.revision)
                .await
                .is_ok())
        })
    }

    fn ran(&self, entry: String) {
        let work = self.0.clone();
        tokio::spawn(async move {
            let key = format!("run.{}", token(&entry));
            if let Err(e) = work.ticks.purge(&key).await {
                tracing::warn!("cluster: releasing schedule entry {entry}: {e}");
            }
        });
    }
}
