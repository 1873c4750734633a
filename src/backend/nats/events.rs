//! Events in cluster mode: the stream `{prefix}_events` and one durable
//! consumer per events channel.
//!
//! - **Publish**: the event goes to subject `{prefix}.ev.<name>` with
//!   `Nats-Msg-Id` = its id, so a publish repeated after a reconnect is
//!   de-duplicated; it resolves on JetStream's acknowledgement, so a `202` is
//!   never answered for an event that is not stored.
//! - **Once per channel, queued**: each events channel has one durable
//!   consumer, `ev_<channel>`, whose subject filters are the channel's
//!   `opts.events` patterns (the events it queues while nobody is connected).
//!   A JetStream consumer gives each message to one puller and forgets it
//!   once acknowledged: that is the "once". Every node holding connections of
//!   the channel pulls from it.
//! - **Once per channel, live only**: an event outside `opts.events` goes
//!   only to connections open when it is published (a connection's own
//!   `subscribe` patterns), as in embedded mode: every node holding
//!   connections of the channel subscribes to `{prefix}.ev.>` in the queue
//!   group `{prefix}.live.<channel>`, and NATS gives each event to one member
//!   of the group.
//! - **Delivery**: a pulled event goes to one local connection that wants
//!   it; if none here does but one on another node does (nodes announce their
//!   channels and patterns, see [`super::live`]), it is forwarded to that node;
//!   the message is acknowledged only after a connection took it. All
//!   connections full: it is given back (`nak`) and comes again shortly.
//! - **At most once across NATS restarts**: before a queued event goes to a
//!   connection, the puller creates its mark `<channel>.<event id>` in the
//!   bucket `{prefix}_delivered` (kept for `event_ttl`). JetStream keeps a
//!   consumer's acknowledgements lazily: a nats-server killed right after an
//!   ack may give the event again once it is back, and the mark that exists
//!   already says it was delivered (acknowledged and dropped). A delivery that
//!   fails (every connection full, none left) takes its mark away again.
//! - **Queue**: while no node holds a connection of the channel, nobody pulls,
//!   and the consumer keeps its place: the events wait in the stream (bounded
//!   by `event_ttl` as the stream's age limit) and are delivered in order when
//!   a connection opens on any node. Only the newest `event_queue_max` are
//!   delivered then; older ones are dropped and counted. Events matching no
//!   pattern of any connection are acknowledged and dropped, as in embedded mode.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::kv as jkv;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::AckKind;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;

use super::live::{Delivery, Live};
use super::{token, unavailable, Cluster};
use crate::backend::EventBus;
use crate::channel::ChannelKind;
use crate::events::{count, frame_of, Event};
use crate::pattern::{disjoint, Pattern};
use crate::store::StoreError;
use crate::AppState;

/// How long one pull stays open before the puller looks around again
/// (whether this node still holds connections of the channel).
const PULL_WAIT: Duration = Duration::from_secs(5);
/// How long a puller waits before it pulls a given-back event again.
const RETRY: Duration = Duration::from_millis(50);
/// How long a pulled event waits for room in a full connection before it is
/// given back (in order: the rest of the batch waits behind it).
const WAIT_FOR_ROOM: Duration = Duration::from_secs(10);
/// How often a full connection is looked at again.
const ROOM_POLL: Duration = Duration::from_millis(5);

/// [`EventBus`] on JetStream.
pub struct NatsBus {
    app: Weak<AppState>,
    cluster: Arc<Cluster>,
    live: Arc<Live>,
    stream: stream::Stream,
    /// The marks of queued events delivered, per channel.
    delivered: jkv::Store,
    /// Channels this node pulls for now.
    pulling: Arc<Mutex<HashSet<String>>>,
    /// Channels whose live-only events this node takes now.
    listening: Arc<Mutex<HashSet<String>>>,
    /// The filters each channel's consumer was last given here.
    filtered: Mutex<HashMap<String, Vec<String>>>,
    queue_max: u64,
    ttl: Duration,
}

fn consumer_name(channel: &str) -> String {
    format!("ev_{}", token(channel))
}

/// The subject filters of events channel `channel` queueing `patterns`:
/// one per pattern (JetStream wants them disjoint; patterns that overlap
/// without covering one another fall back to every event, the puller then
/// skipping what the channel does not queue), and its own queue (`evq`).
fn filters(cluster: &Cluster, channel: &str, patterns: Option<&[Pattern]>) -> Vec<String> {
    let mut out: Vec<String> = match patterns.map(disjoint) {
        Some(Some(ps)) => ps
            .iter()
            .map(|p| cluster.subject(&format!("ev.{}", p.as_str())))
            .collect(),
        _ => vec![cluster.subject("ev.>")],
    };
    out.push(cluster.subject(&format!("evq.{}", token(channel))));
    out
}

/// The durable consumer of events channel `channel`: from now on, the events
/// of `filters` are kept for it. `update`: its filters are set to these if it
/// exists; otherwise an existing one is taken as it is.
async fn channel_consumer(
    stream: &stream::Stream,
    channel: &str,
    ttl: Duration,
    filters: Vec<String>,
    update: bool,
) -> Result<PullConsumer, StoreError> {
    let name = consumer_name(channel);
    let config = pull::Config {
        durable_name: Some(name.clone()),
        description: Some(format!("events of channel {channel}")),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        filter_subjects: filters,
        // Unused for a day past the events' age: the channel is gone.
        inactive_threshold: ttl + Duration::from_secs(86_400),
        ..Default::default()
    };
    if update {
        stream.create_consumer(config).await
    } else {
        stream.get_or_create_consumer(&name, config).await
    }
    .map_err(unavailable)
}

/// Queues an event (its JSON text) for `channel` alone, after what its queue
/// holds: `migrate` moving an embedded queue into the cluster.
pub async fn queue_for(
    cluster: &Cluster,
    stream: &stream::Stream,
    ttl: Duration,
    channel: &str,
    text: String,
) -> Result<(), StoreError> {
    // Every event until a node sets the channel's own filters at its start.
    channel_consumer(stream, channel, ttl, filters(cluster, channel, None), false).await?;
    let id = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let publish = PublishMessage::build()
        .payload(text.into())
        .message_id(format!("{id}:{channel}"));
    cluster
        .js
        .send_publish(cluster.subject(&format!("evq.{}", token(channel))), publish)
        .await
        .map_err(unavailable)?
        .await
        .map_err(unavailable)?;
    Ok(())
}

impl NatsBus {
    /// Opens the events stream and the bucket of delivery marks, creating
    /// them when missing.
    pub async fn open_stream(
        cluster: &Cluster,
        ttl: Duration,
    ) -> Result<(stream::Stream, jkv::Store), String> {
        let delivered = cluster.open_kv("delivered", ttl).await?;
        let stream = cluster
            .js
            .get_or_create_stream(stream::Config {
                name: format!("{}_events", cluster.prefix),
                // ev.<name>: every channel's; evq.<channel>: one channel's
                // queue alone (what `migrate` brings from an embedded store).
                subjects: vec![cluster.subject("ev.>"), cluster.subject("evq.>")],
                storage: StorageType::File,
                num_replicas: cluster.replicas,
                max_age: ttl,
                // JetStream wants the window no longer than the age limit.
                duplicate_window: Duration::from_secs(120).min(ttl),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cluster: events stream: {e}"))?;
        Ok((stream, delivered))
    }

    /// The bus of the server state `app`, on `stream`.
    pub fn new(
        cluster: Arc<Cluster>,
        live: Arc<Live>,
        (stream, delivered): (stream::Stream, jkv::Store),
        app: Weak<AppState>,
        queue_max: usize,
        ttl: Duration,
    ) -> Arc<NatsBus> {
        Arc::new(NatsBus {
            app,
            cluster,
            live,
            stream,
            delivered,
            pulling: Arc::default(),
            listening: Arc::default(),
            filtered: Mutex::default(),
            queue_max: queue_max as u64,
            ttl,
        })
    }

    /// Makes sure every events channel has its consumer (from now on, events
    /// are kept for it); called at start and after every reload.
    pub async fn ensure_consumers(&self) {
        let Some(app) = self.app.upgrade() else {
            return;
        };
        let wanted: Vec<(String, Vec<String>)> = app
            .registry
            .snapshot()
            .channels
            .values()
            .filter(|c| c.kind == ChannelKind::Events)
            .map(|c| {
                let code = c.code().to_owned();
                let filters = filters(&self.cluster, &code, Some(&c.events));
                (code, filters)
            })
            .collect();
        drop(app);
        for (code, filters) in wanted {
            let same = lock(&self.filtered).get(&code) == Some(&filters);
            if same {
                continue;
            }
            match channel_consumer(&self.stream, &code, self.ttl, filters.clone(), true).await {
                Ok(_) => {
                    lock(&self.filtered).insert(code, filters);
                }
                Err(e) => tracing::warn!(channel = %code, "cluster: events consumer: {e}"),
            }
        }
    }

    async fn consumer(&self, channel: &str) -> Result<PullConsumer, StoreError> {
        let patterns = self.app.upgrade().and_then(|app| {
            app.registry
                .snapshot()
                .channel(channel)
                .map(|c| c.events.clone())
        });
        let filters = filters(&self.cluster, channel, patterns.as_deref());
        channel_consumer(&self.stream, channel, self.ttl, filters, false).await
    }

    /// `channel` queues events named `name` (its `opts.events`).
    fn queues(app: &AppState, channel: &str, name: &str) -> bool {
        app.registry
            .snapshot()
            .channel(channel)
            .is_some_and(|c| c.events.iter().any(|p| p.matches(name)))
    }

    /// Takes the live-only events of `channel` while this node holds
    /// connections of it: one member of the channel's queue group gets each.
    async fn listen(self: Arc<Self>, channel: String) {
        let group = self.cluster.subject(&format!("live.{}", token(&channel)));
        let mut subscriber = match self
            .cluster
            .client
            .queue_subscribe(self.cluster.subject("ev.>"), group)
            .await
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(channel = %channel, "cluster: live events: {e}");
                None
            }
        };
        let mut look = tokio::time::interval(PULL_WAIT);
        loop {
            let message = match subscriber.as_mut() {
                Some(sub) => tokio::select! {
                    m = sub.next() => m,
                    _ = look.tick() => None,
                },
                None => {
                    look.tick().await;
                    None
                }
            };
            let Some(app) = self.app.upgrade() else {
                return;
            };
            if !self.has_local(&app, &channel) {
                lock(&self.listening).remove(&channel);
                if self.has_local(&app, &channel) {
                    self.ensure_listening(&channel);
                }
                return;
            }
            let Some(message) = message else { continue };
            let text = String::from_utf8_lossy(&message.payload).into_owned();
            let (name, _) = name_and_id(&text);
            if Self::queues(&app, &channel, &name) {
                continue; // the consumer's
            }
            match self.deliver(&app, &channel, &name, text).await {
                Outcome::Taken => count("switchyard_events_delivered_total", &channel, 1),
                Outcome::Full => count("switchyard_events_dropped_total", &channel, 1),
                Outcome::Unwanted | Outcome::Offline => {}
            }
        }
    }

    fn ensure_listening(self: &Arc<Self>, channel: &str) {
        if lock(&self.listening).insert(channel.to_owned()) {
            tokio::spawn(self.clone().listen(channel.to_owned()));
        }
    }

    fn ensure_pulling(self: &Arc<Self>, channel: &str) {
        if self
            .pulling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel.to_owned())
        {
            tokio::spawn(self.clone().pull(channel.to_owned()));
        }
    }

    fn has_local(&self, app: &AppState, channel: &str) -> bool {
        app.connections.with_channel(channel, |c| c.is_some())
    }

    /// Pulls the channel's events while this node holds connections of it.
    async fn pull(self: Arc<Self>, channel: String) {
        let mut consumer = None;
        loop {
            let Some(app) = self.app.upgrade() else {
                return;
            };
            if !self.has_local(&app, &channel) {
                self.pulling
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&channel);
                // A connection may have opened between the look and the removal.
                if self.has_local(&app, &channel) {
                    self.ensure_pulling(&channel);
                }
                return;
            }
            if consumer.is_none() {
                match self.consumer(&channel).await {
                    Ok(c) => consumer = Some(c),
                    Err(e) => {
                        tracing::debug!(channel = %channel, "events consumer: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let Some(c) = consumer.as_ref() else { continue };
            // One waiting pull for one event at a time: it comes the moment
            // it is published, and is taken or given back before the next
            // pull, so a given-back event is the next to come again (order
            // holds) and nothing is pulled that the puller cannot deal with.
            let batch = c
                .batch()
                .max_messages(1)
                .expires(PULL_WAIT)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(channel = %channel, "events pull: {e}");
                    consumer = None;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut stalled = false;
            while let Some(message) = batch.next().await {
                let Ok(message) = message else { break };
                let pending = message.info().map(|i| i.pending).unwrap_or(0);
                if pending >= self.queue_max {
                    // Past the queue's bound: the oldest are dropped.
                    count("switchyard_events_dropped_total", &channel, 1);
                    let _ = message.ack().await;
                    continue;
                }
                let text = String::from_utf8_lossy(&message.payload).into_owned();
                let (name, id) = name_and_id(&text);
                let own_queue = message
                    .subject
                    .as_str()
                    .starts_with(&self.cluster.subject("evq."));
                if !own_queue && !Self::queues(&app, &channel, &name) {
                    // Live only (filters that fell back to every event): the
                    // queue group's.
                    let _ = message.ack().await;
                    continue;
                }
                let mark = format!("{}.{}", token(&channel), token(&id));
                match self.delivered.create(&mark, Default::default()).await {
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), jkv::CreateErrorKind::AlreadyExists) => {
                        // Delivered before: its acknowledgement was lost (a
                        // nats-server restart). Not again.
                        metrics::counter!("switchyard_events_redelivery_dropped_total")
                            .increment(1);
                        let _ = message.double_ack().await;
                        continue;
                    }
                    Err(e) => {
                        // Not known whether it went out: it comes again.
                        tracing::debug!(channel = %channel, "events: delivery mark: {e}");
                        stalled = true;
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        break;
                    }
                }
                let mut outcome = self.deliver(&app, &channel, &name, text.clone()).await;
                // Every connection that wants it is full: wait for room rather
                // than drop, keeping the order.
                let waiting_since = tokio::time::Instant::now();
                while outcome == Outcome::Full && waiting_since.elapsed() < WAIT_FOR_ROOM {
                    tokio::time::sleep(ROOM_POLL).await;
                    outcome = self.deliver(&app, &channel, &name, text.clone()).await;
                }
                match outcome {
                    Outcome::Taken => {
                        count("switchyard_events_delivered_total", &channel, 1);
                        let _ = message.ack().await;
                    }
                    Outcome::Full | Outcome::Offline => {
                        // Given back: it comes again first, and stays queued
                        // for the channel (Offline: its last connection closed).
                        // No delay on JetStream's side, so nothing newer can
                        // overtake it; the puller waits before its next pull.
                        // Not delivered: its mark goes.
                        let _ = self.delivered.purge(&mark).await;
                        stalled = true;
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                    }
                    Outcome::Unwanted => {
                        let _ = message.ack().await;
                    }
                }
            }
            if stalled {
                tokio::time::sleep(RETRY).await;
            }
        }
    }

    /// One connection of the channel, here or on another node, takes the event.
    async fn deliver(&self, app: &AppState, channel: &str, name: &str, text: String) -> Outcome {
        let frame = frame_of(&text);
        let (held_here, here) = app.connections.with_channel(channel, |c| match c {
            Some(c) => (true, c.deliver_once(name, &frame)),
            None => (false, None),
        });
        match here {
            Some(true) => return Outcome::Taken,
            Some(false) => return Outcome::Full,
            None => {}
        }
        if let Some(node) = self.live.wanted_elsewhere(channel, name) {
            let delivery = Delivery {
                channel: channel.to_owned(),
                name: name.to_owned(),
                event: text,
            };
            match self.live.forward(&node, &delivery).await {
                Some(true) => return Outcome::Taken,
                Some(false) => return Outcome::Full,
                // The node did not answer: give it back, it comes again.
                None if self.live.wanted_elsewhere(channel, name).is_some() => {
                    return Outcome::Full
                }
                None => {}
            }
        }
        if held_here || self.live.held_elsewhere(channel) {
            Outcome::Unwanted
        } else {
            Outcome::Offline
        }
    }
}

/// The `name` of an event (its JSON text; empty when it has none) and its
/// `id` (the text itself when it has none), from one parse.
fn name_and_id(text: &str) -> (String, String) {
    let v = serde_json::from_str::<serde_json::Value>(text).unwrap_or_default();
    let name = v["name"].as_str().unwrap_or_default().to_owned();
    let id = v["id"].as_str().unwrap_or(text).to_owned();
    (name, id)
}

/// What became of one pulled event.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A connection took it.
    Taken,
    /// Every connection that wants it is full.
    Full,
    /// The channel has connections, none of which wants it: dropped, as in
    /// embedded mode.
    Unwanted,
    /// The channel has no connection left anywhere: it stays queued.
    Offline,
}

/// The handle the runtime holds: [`EventBus`] needs `&self`, the pullers an `Arc`.
pub struct Bus(pub Arc<NatsBus>);

impl EventBus for Bus {
    fn publish(&self, event: Event) -> BoxFuture<'static, Result<usize, StoreError>> {
        let bus = self.0.clone();
        Box::pin(async move {
            if !bus.cluster.connected() {
                return Err(unavailable("NATS is unreachable"));
            }
            let text = event.json_text();
            let publish = PublishMessage::build()
                .payload(text.into())
                .message_id(event.id.to_string());
            let ack = bus
                .cluster
                .js
                .send_publish(bus.cluster.subject(&format!("ev.{}", event.name)), publish)
                .await
                .map_err(unavailable)?;
            tokio::time::timeout(super::OP_TIMEOUT, ack)
                .await
                .map_err(|_| unavailable("JetStream did not acknowledge the event in time"))?
                .map_err(unavailable)?;
            metrics::counter!("switchyard_events_published_total").increment(1);
            crate::activity::publish("event", || {
                serde_json::json!({"id": event.id, "name": event.name, "source": event.source,
                    "test": event.test})
            });
            Ok(0)
        })
    }

    fn connection_opened(&self, channel: &str) {
        self.0.ensure_pulling(channel);
        self.0.ensure_listening(channel);
        let live = self.0.live.clone();
        tokio::spawn(async move { live.announce().await });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
