//! Events in embedded mode: once-per-channel delivery in this process and the
//! durable queue of offline events channels in the store.
//!
//! [`LocalBus`] delivers each event to exactly one matching open connection of
//! every `events` channel, round-robin. An events channel with no connection
//! that takes the event gets it in its queue in the store when it matches
//! `opts.events`; the queue is drained in order, to the channel's connections,
//! as soon as one is open (also after a restart). While a channel's queue is
//! being drained, new events for its queue join the queue, so order holds.
//! Delivery from the queue removes a batch (commit) before pushing it: a
//! crash in between loses at most that batch, never repeats it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use rusqlite::params;
use serde_json::Value;

use crate::backend::EventBus;
use crate::channel::ChannelKind;
use crate::events::{count, frame_of, Event};
use crate::store::StoreError;
use crate::AppState;

/// Events moved from a queue to connections per store round trip.
const DRAIN_BATCH: usize = 64;

/// The in-process bus over the embedded store.
pub struct LocalBus {
    app: Weak<AppState>,
    draining: Arc<Mutex<HashSet<String>>>,
}

impl LocalBus {
    /// A bus for the server state `app`.
    pub fn new(app: Weak<AppState>) -> Self {
        Self {
            app,
            draining: Arc::default(),
        }
    }

    /// Starts a drainer for `channel` unless one runs.
    fn ensure_draining(app: &Arc<AppState>, draining: &Arc<Mutex<HashSet<String>>>, channel: &str) {
        if lock(draining).insert(channel.to_owned()) {
            tokio::spawn(drain(app.clone(), draining.clone(), channel.to_owned()));
        }
    }
}

fn lock(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

impl EventBus for LocalBus {
    fn publish(&self, event: Event) -> BoxFuture<'static, Result<usize, StoreError>> {
        let Some(app) = self.app.upgrade() else {
            return Box::pin(async { Err(StoreError("the server is stopping".into())) });
        };
        let snapshot = app.registry.snapshot();
        // Made once: the frame for live connections and the queued copies share it.
        let text = event.json_text();
        let frame = frame_of(&text);
        let mut reached = 0;
        let mut to_queue = Vec::new();
        for channel in snapshot.channels.values() {
            if channel.kind != ChannelKind::Events || channel.doc.opts.disabled {
                continue;
            }
            let code = channel.code();
            let queueable = channel.events.iter().any(|p| p.matches(&event.name));
            if queueable && lock(&self.draining).contains(code) {
                to_queue.push(code.to_owned());
                continue;
            }
            let outcome = app.connections.with_channel(code, |c| {
                c.and_then(|c| c.deliver_once(&event.name, &frame))
            });
            match outcome {
                Some(true) => {
                    reached += 1;
                    count("switchyard_events_delivered_total", code, 1);
                }
                _ if queueable => to_queue.push(code.to_owned()),
                Some(false) => count("switchyard_events_dropped_total", code, 1),
                None => {}
            }
        }
        metrics::counter!("switchyard_events_published_total").increment(1);
        crate::activity::publish("event", || {
            serde_json::json!({"id": event.id, "name": event.name, "source": event.source,
                "reached": reached, "queued": to_queue.len(), "test": event.test})
        });
        tracing::debug!(event = %event.name, id = %event.id, source = %event.source, reached, queued = to_queue.len(), "event published");
        let draining = self.draining.clone();
        Box::pin(async move {
            if !to_queue.is_empty() {
                enqueue(&app, &to_queue, text).await?;
                // A connection may have opened meanwhile; make sure it gets the queue.
                for code in &to_queue {
                    if app.connections.with_channel(code, |c| c.is_some()) {
                        LocalBus::ensure_draining(&app, &draining, code);
                    }
                }
            }
            Ok(reached)
        })
    }

    fn connection_opened(&self, channel: &str) {
        if let Some(app) = self.app.upgrade() {
            Self::ensure_draining(&app, &self.draining, channel);
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Appends `event` to the queue of each channel, trimming each to `event_queue_max`.
/// `text` is the event's [`Event::json_text`].
async fn enqueue(app: &AppState, channels: &[String], text: String) -> Result<(), StoreError> {
    let max = app.config.event_queue_max as i64;
    let owned = channels.to_vec();
    let dropped = app
        .store
        .write(move |c| {
            let mut insert = c.prepare_cached(
                "INSERT INTO event_queue (channel, event, created) VALUES (?1, ?2, ?3)",
            )?;
            let mut trim = c.prepare_cached(
                "DELETE FROM event_queue WHERE channel = ?1 AND seq <= \
                 (SELECT seq FROM event_queue WHERE channel = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            )?;
            let now = now_ms();
            let mut dropped = Vec::with_capacity(owned.len());
            for ch in &owned {
                insert.execute(params![ch, text, now])?;
                dropped.push(trim.execute(params![ch, max])? as u64);
            }
            Ok(dropped)
        })
        .await?;
    for (code, n) in channels.iter().zip(dropped) {
        count("switchyard_events_queued_total", code, 1);
        if n > 0 {
            count("switchyard_events_dropped_total", code, n);
            tracing::warn!(channel = %code, dropped = n, "event queue full: oldest events dropped");
        }
    }
    Ok(())
}

/// Moves a channel's queue to its open connections, in order, until it is empty.
async fn drain(app: Arc<AppState>, draining: Arc<Mutex<HashSet<String>>>, channel: String) {
    let ttl_ms = app.config.event_ttl.as_millis() as i64;
    loop {
        let batch = match take_batch(&app, &channel, ttl_ms).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(channel = %channel, "event queue: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            lock(&draining).remove(&channel);
            // A publish may have queued between the read and the removal: look once more.
            let left = queue_len(&app, &channel).unwrap_or(0);
            let open = app.connections.with_channel(&channel, |c| c.is_some());
            if left > 0 && open && lock(&draining).insert(channel.clone()) {
                continue;
            }
            return;
        }
        let mut rest = batch.into_iter().peekable();
        while let Some((_, text)) = rest.peek() {
            let name = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v["name"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let frame = frame_of(text);
            let outcome = app
                .connections
                .with_channel(&channel, |c| c.and_then(|c| c.deliver_once(&name, &frame)));
            match outcome {
                Some(true) => {
                    count("switchyard_events_delivered_total", &channel, 1);
                    rest.next();
                }
                // Every connection is busy: wait for room rather than drop.
                Some(false) => tokio::time::sleep(Duration::from_millis(5)).await,
                None => {
                    // The last connection closed: put the rest back where it was.
                    let back: Vec<(i64, String)> = rest.collect();
                    if let Err(e) = requeue(&app, &channel, back).await {
                        tracing::error!(channel = %channel, "event queue: {e}");
                    }
                    lock(&draining).remove(&channel);
                    return;
                }
            }
        }
    }
}

/// Removes and returns the oldest events of a channel's queue (dropping expired ones).
async fn take_batch(
    app: &AppState,
    channel: &str,
    ttl_ms: i64,
) -> Result<Vec<(i64, String)>, StoreError> {
    let ch = channel.to_owned();
    let (batch, expired) = app
        .store
        .write(move |c| {
            let expired = c.execute(
                "DELETE FROM event_queue WHERE channel = ?1 AND created < ?2",
                params![ch, now_ms() - ttl_ms],
            )?;
            let mut stmt = c.prepare_cached(
                "SELECT seq, event FROM event_queue WHERE channel = ?1 ORDER BY seq LIMIT ?2",
            )?;
            let batch = stmt
                .query_map(params![ch, DRAIN_BATCH as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<Vec<(i64, String)>>>()?;
            if let Some((last, _)) = batch.last() {
                c.execute(
                    "DELETE FROM event_queue WHERE channel = ?1 AND seq <= ?2",
                    params![ch, last],
                )?;
            }
            Ok((batch, expired))
        })
        .await?;
    if expired > 0 {
        count("switchyard_events_dropped_total", channel, expired as u64);
    }
    Ok(batch)
}

/// Puts events back with their original sequence numbers, so they stay first.
async fn requeue(
    app: &AppState,
    channel: &str,
    events: Vec<(i64, String)>,
) -> Result<(), StoreError> {
    let ch = channel.to_owned();
    app.store
        .write(move |c| {
            for (seq, text) in &events {
                c.execute(
                    "INSERT INTO event_queue (seq, channel, event, created) VALUES (?1, ?2, ?3, ?4)",
                    params![seq, ch, text, now_ms()],
                )?;
            }
            Ok(())
        })
        .await
}

fn queue_len(app: &AppState, channel: &str) -> Result<i64, StoreError> {
    app.store.read(|c| {
        c.query_row(
            "SELECT count(*) FROM event_queue WHERE channel = ?1",
            [channel],
            |r| r.get(0),
        )
    })
}

/// Drops queued events older than `event_ttl` (housekeeping); returns how many.
pub async fn prune_expired(app: &AppState) -> Result<usize, StoreError> {
    let cutoff = now_ms() - app.config.event_ttl.as_millis() as i64;
    let rows: Vec<(String, i64)> = app
        .store
        .write(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT channel, count(*) FROM event_queue WHERE created < ?1 GROUP BY channel",
            )?;
            let rows = stmt
                .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            c.execute("DELETE FROM event_queue WHERE created < ?1", [cutoff])?;
            Ok(rows)
        })
        .await?;
    for (channel, n) in &rows {
        count("switchyard_events_dropped_total", channel, *n as u64);
    }
    Ok(rows.iter().map(|(_, n)| *n as usize).sum())
}
