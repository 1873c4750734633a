//! Jobs: send jobs (retries, backoff, waiting for a callback), the durable
//! inbox (`recv` jobs of `issync = false` channels) and schedule runs.
//!
//! Every job is a row of `jobs` in the store; every run adds a row to
//! `attempts`. A job is claimed (`queued` → `running`) in one write, so it
//! runs once; after a crash, jobs left `running` are queued again at start-up
//! (at-least-once: a run cut by the crash runs again).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use dashmap::DashMap;
use rhai::Dynamic;
use rusqlite::{params, OptionalExtension, Row};
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};

use crate::auth::Identity;
use crate::channel::{Channel, ScriptField};
use crate::script::{convert, JobRun, RunContext, RunError};
use crate::store::StoreError;
use crate::AppState;

/// Send jobs running at once.
const SEND_CONCURRENCY: usize = 64;
/// Longest backoff between send attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// The scheduler looks at the clock this often.
const SCHEDULER_TICK: Duration = Duration::from_millis(100);

/// A job's state.
pub const STATES: [&str; 6] = [
    "queued",
    "running",
    "waiting",
    "succeeded",
    "failed",
    "timed_out",
];
/// A job's kind.
pub const KINDS: [&str; 3] = ["recv", "send", "schedule"];

/// Wake-ups for the job runners.
#[derive(Default)]
pub struct Jobs {
    send_wake: Notify,
    inbox: DashMap<String, Arc<Notify>>,
    /// Set on SIGTERM: no job is claimed or started any more.
    stopping: std::sync::atomic::AtomicBool,
    /// Job scripts running now, and a wake-up for when the last one ends.
    running: std::sync::atomic::AtomicUsize,
    idle: Notify,
    /// Ids of the jobs this process is running now: a job the store says is
    /// `running` but that is not here has lost its worker (see [`take_up_orphans`]).
    live: DashMap<String, ()>,
}

/// A job this process runs, listed in [`Jobs::live`] until dropped (a panic included).
struct Live(Arc<AppState>, String);

impl Live {
    fn start(app: &Arc<AppState>, id: &str) -> Self {
        app.jobs.live.insert(id.to_owned(), ());
        Self(app.clone(), id.to_owned())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.jobs.live.remove(&self.1);
    }
}

/// Writes a job's outcome, trying again (100 ms, doubling to 5 s) until the
/// store takes it: a job is never left `running` because one write failed
/// (a full disk, a busy file). Logged once.
async fn write_outcome<T: Send + 'static>(
    app: &AppState,
    id: &str,
    op: impl Fn(&rusqlite::Connection) -> rusqlite::Result<T> + Clone + Send + 'static,
) -> T {
    let mut wait = Duration::from_millis(100);
    let mut logged = false;
    loop {
        let once = op.clone();
        match app.store.write(once).await {
            Ok(v) => {
                if logged {
                    tracing::info!(job = %id, "job outcome written after all");
                }
                return v;
            }
            Err(e) => {
                if !logged {
                    tracing::error!(job = %id, "cannot write the job's outcome yet, trying again: {e}");
                    logged = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// How long a job may stay `running` without a worker before it is taken up again.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(30);

/// Takes up `running` jobs whose worker is gone (not running in this process)
/// once their channel's timeout + [`ORPHAN_GRACE`] has passed since they were
/// claimed: the attempt is recorded as interrupted, send and inbox jobs are
/// queued again (an inbox job keeps its place), a schedule run fails.
pub async fn take_up_orphans(app: &AppState) -> Result<usize, StoreError> {
    let rows: Vec<(String, String, i64)> = app.store.read(|c| {
        c.prepare_cached("SELECT id, channel, updated FROM jobs WHERE state = 'running'")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect()
    })?;
    let snapshot = app.registry.snapshot();
    let now = now_ms();
    let orphans: Vec<String> = rows
        .into_iter()
        .filter(|(id, channel, updated)| {
            let timeout = snapshot
                .channel(channel)
                .map_or(Duration::from_secs(crate::channel::MAX_RECV_TIMEOUT), |c| {
                    c.timeout
                });
            let limit = (timeout + ORPHAN_GRACE).as_millis() as i64;
            !app.jobs.live.contains_key(id) && now - updated > limit
        })
        .map(|(id, ..)| id)
        .collect();
    if orphans.is_empty() {
        return Ok(0);
    }
    let ids = orphans.clone();
    let channels: Vec<String> = app
        .store
        .write(move |c| {
            let mut woken = Vec::new();
            for id in &ids {
                interrupt(c, id, "its worker is gone", now)?;
                let channel: Option<String> = c
                    .prepare_cached("SELECT channel FROM jobs WHERE id = ?1 AND kind = 'recv'")?
                    .query_row(params![id], |r| r.get(0))
                    .optional()?;
                woken.extend(channel);
            }
            Ok(woken)
        })
        .await?;
    for id in &orphans {
        tracing::warn!(job = %id, "job taken up again: its worker is gone");
    }
    for code in channels {
        wake_inbox(app, &code);
    }
    app.jobs.send_wake.notify_one();
    Ok(orphans.len())
}

/// Records the current attempt of a `running` job as interrupted (`why`) and
/// queues it again (a schedule run fails instead), in the caller's transaction.
fn interrupt(c: &rusqlite::Connection, id: &str, why: &str, now: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR IGNORE INTO attempts (job, n, started, duration_ms, outcome, error) \
         SELECT id, attempt, updated, max(0, ?2 - updated), 'interrupted', ?3 FROM jobs \
         WHERE id = ?1 AND state = 'running'",
    )?
    .execute(params![id, now, format!("interrupted: {why}")])?;
    c.prepare_cached(
        "UPDATE jobs SET state = CASE kind WHEN 'schedule' THEN 'failed' ELSE 'queued' END, \
         next_attempt_at = CASE kind WHEN 'send' THEN ?2 ELSE NULL END, updated = ?2, \
         last_error = 'interrupted: ' || ?3 WHERE id = ?1 AND state = 'running'",
    )?
    .execute(params![id, now, why])?;
    Ok(())
}

/// A claim or a job script under way, counted until dropped (see
/// [`wait_running`]). Taken *before* a runner looks at `stopping` and claims,
/// so a stop never misses a job that was claimed just as it began.
struct Running(Arc<AppState>);

impl Running {
    fn start(app: &Arc<AppState>) -> Self {
        app.jobs.running.fetch_add(1, Ordering::SeqCst);
        Self(app.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.jobs.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.jobs.idle.notify_waiters();
        }
    }
}

impl Jobs {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// `send_retries` of `code` was lowered to allow `max` attempts: its send jobs
/// queued for a next attempt that have made `max` or more close as failed now.
pub async fn apply_lowered_retries(app: &AppState, code: &str, max: i64) {
    let channel = code.to_owned();
    let closed = app
        .store
        .write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE jobs SET state = 'failed', max_attempts = ?2, updated = ?3, next_attempt_at = NULL, \
                 last_error = 'send_retries was lowered: ' || attempt || ' attempt(s) made, ' || ?2 || \
                 ' allowed now; no further attempt' \
                 WHERE channel = ?1 AND kind = 'send' AND state = 'queued' AND attempt >= ?2 RETURNING id",
            )?;
            let ids = stmt
                .query_map(params![channel, max, now_ms()], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids)
        })
        .await;
    match closed {
        Ok(ids) => {
            for id in ids {
                finished(app, &id, code, "send", "failed").await;
            }
        }
        Err(e) => tracing::error!(channel = %code, "closing jobs past a lowered send_retries: {e}"),
    }
}

/// A channel was started again: its inbox and its send jobs go on.
pub fn resume(app: &AppState, code: &str) {
    wake_inbox(app, code);
    app.jobs.send_wake.notify_one();
}

/// The server is stopping: claim no more jobs and start no schedule run.
pub fn stop_claiming(app: &AppState) {
    app.jobs.stopping.store(true, Ordering::SeqCst);
    app.jobs.send_wake.notify_waiters();
    for notify in app.jobs.inbox.iter() {
        notify.notify_waiters();
    }
}

/// Waits (up to `limit`) until every job script already running has ended
/// and its outcome is recorded; returns how many were still running then.
pub async fn wait_running(app: &AppState, limit: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let idle = app.jobs.idle.notified();
        tokio::pin!(idle);
        // Registered before the count is read, so the last job's wake-up is not missed.
        idle.as_mut().enable();
        if app.jobs.running.load(Ordering::SeqCst) == 0 {
            return 0;
        }
        if tokio::time::timeout_at(deadline, idle).await.is_err() {
            return app.jobs.running.load(Ordering::SeqCst);
        }
    }
}

struct Entry {
    spec: String,
    next: DateTime<Utc>,
    running: Arc<AtomicBool>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn rfc3339_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Exponential backoff after `attempt` failed attempts: 1 s, 2 s, 4 s … capped at 5 min, ± 20 %.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_secs(1u64 << attempt.saturating_sub(1).min(16)).min(BACKOFF_CAP);
    let jitter = 0.8 + 0.4 * (rand_unit());
    base.mul_f64(jitter)
}

fn rand_unit() -> f64 {
    // A UUID v4 is 122 random bits; 53 of them make a uniform float.
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

fn count(channel: &str, kind: &str, state: &str) {
    metrics::counter!("switchyard_job_transitions_total", "channel" => channel.to_owned(),
        "kind" => kind.to_owned(), "state" => state.to_owned())
    .increment(1);
    crate::activity::publish(
        "job",
        json!({ "channel": channel, "kind": kind, "state": state }),
    );
}

/// A job as the API shows it.
fn job_json(row: &Row<'_>) -> rusqlite::Result<Value> {
    let next: Option<i64> = row.get("next_attempt_at")?;
    let result: Option<String> = row.get("result")?;
    Ok(json!({
        "id": row.get::<_, String>("id")?,
        "channel": row.get::<_, String>("channel")?,
        "kind": row.get::<_, String>("kind")?,
        "state": row.get::<_, String>("state")?,
        "attempt": row.get::<_, i64>("attempt")?,
        "max_attempts": row.get::<_, i64>("max_attempts")?,
        "created": rfc3339_ms(row.get("created")?),
        "updated": rfc3339_ms(row.get("updated")?),
        "next_attempt_at": next.map(rfc3339_ms),
        "last_error": row.get::<_, Option<String>>("last_error")?,
        "result": result.and_then(|r| serde_json::from_str::<Value>(&r).ok()),
        "test": row.get::<_, i64>("test")? != 0,
        "tags": row
            .get::<_, Option<String>>("tags")?
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .unwrap_or_else(|| json!([])),
    }))
}

pub fn max_attempts(channel: &Channel) -> i64 {
    1 + i64::from(channel.doc.opts.send_retries)
}

/// Why a job could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The channel is unknown.
    #[error("unknown channel {0:?}")]
    UnknownChannel(String),
    /// The channel has no send script.
    #[error("channel {0:?} has no send_svcscriptcode")]
    NoScript(String),
    /// A tag is empty, too long, or one too many.
    #[error("{0}")]
    BadTags(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a send job for channel `code` with `data` and `tags` (business
/// keys, see [`tag_blocking`]); returns its id once committed.
pub async fn create_send(
    app: &AppState,
    code: &str,
    data: &Value,
    tags: &[String],
) -> Result<String, CreateError> {
    let (id, insert) = send_insert(app, code, data, tags)?;
    app.store.write(insert).await?;
    Ok(queued(app, code, id))
}

/// [`create_send`] for blocking threads (scripts).
pub fn create_send_blocking(
    app: &AppState,
    code: &str,
    data: &Value,
    tags: &[String],
) -> Result<String, CreateError> {
    let (id, insert) = send_insert(app, code, data, tags)?;
    app.store.write_blocking(insert)?;
    Ok(queued(app, code, id))
}

/// A committed send job: counted, and the dispatcher woken.
fn queued(app: &AppState, code: &str, id: String) -> String {
    count(code, "send", "queued");
    app.jobs.send_wake.notify_one();
    id
}

type Insert = Box<dyn FnOnce(&rusqlite::Connection) -> rusqlite::Result<()> + Send>;

fn send_insert(
    app: &AppState,
    code: &str,
    data: &Value,
    tags: &[String],
) -> Result<(String, Insert), CreateError> {
    let tags = check_tags(tags).map_err(CreateError::BadTags)?;
    let snapshot = app.registry.snapshot();
    let channel = snapshot
        .channel(code)
        .ok_or_else(|| CreateError::UnknownChannel(code.to_owned()))?;
    if channel.script_for(ScriptField::Send).is_none() {
        return Err(CreateError::NoScript(code.to_owned()));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let (job, channel_code, max) = (id.clone(), code.to_owned(), max_attempts(channel));
    let test = channel.test_mode();
    let input = json!({ "data": data }).to_string();
    let insert: Insert = Box::new(move |c| {
        let now = now_ms();
        c.execute(
            "INSERT INTO jobs (id, channel, kind, state, attempt, max_attempts, created, updated, next_attempt_at, input, test, tags) \
             VALUES (?1, ?2, 'send', 'queued', 0, ?3, ?4, ?4, ?4, ?5, ?6, ?7)",
            params![job, channel_code, max, now, input, test, tags_json(&tags)],
        )?;
        for tag in &tags {
            c.prepare_cached("INSERT OR IGNORE INTO job_tags (tag, job) VALUES (?1, ?2)")?
                .execute(params![tag, job])?;
        }
        Ok(())
    });
    Ok((id, insert))
}

/// Most tags one job carries.
pub const MAX_TAGS: usize = 8;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 256;

/// `tags` without repeats, or why they are refused.
fn check_tags(tags: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for tag in tags {
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
            return Err(format!("a tag is 1 to {MAX_TAG_BYTES} bytes"));
        }
        if !out.contains(tag) {
            out.push(tag.clone());
        }
    }
    if out.len() > MAX_TAGS {
        return Err(format!("a job has at most {MAX_TAGS} tags"));
    }
    Ok(out)
}

fn tags_json(tags: &[String]) -> Option<String> {
    (!tags.is_empty()).then(|| serde_json::to_string(tags).unwrap_or_default())
}

/// `job_tag(tag)`: adds a business key (an order number…) to job `job`, so
/// `GET /admin/jobs?tag=` finds it; at most [`MAX_TAGS`] a job.
pub fn tag_blocking(app: &AppState, job: &str, tag: &str) -> Result<(), StoreError> {
    check_tags(&[tag.to_owned()]).map_err(StoreError)?;
    let (job, tag) = (job.to_owned(), tag.to_owned());
    app.store
        .write_blocking(move |c| {
            let now: Option<Option<String>> = c
                .prepare_cached("SELECT tags FROM jobs WHERE id = ?1")?
                .query_row(params![job], |r| r.get(0))
                .optional()?;
            let Some(now) = now else {
                return Ok(Err(format!("job {job} is gone")));
            };
            let mut tags: Vec<String> = now
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            if tags.contains(&tag) {
                return Ok(Ok(()));
            }
            if tags.len() >= MAX_TAGS {
                return Ok(Err(format!("a job has at most {MAX_TAGS} tags")));
            }
            tags.push(tag.clone());
            c.prepare_cached("UPDATE jobs SET tags = ?2 WHERE id = ?1")?
                .execute(params![job, tags_json(&tags)])?;
            c.prepare_cached("INSERT OR IGNORE INTO job_tags (tag, job) VALUES (?1, ?2)")?
                .execute(params![tag, job])?;
            Ok(Ok(()))
        })?
        .map_err(StoreError)
}

/// Stores an inbound request for the channel's inbox; returns once it is committed.
pub async fn create_recv(
    app: &AppState,
    code: &str,
    request_id: &str,
    params: &[String],
    identity: &Identity,
) -> Result<Inbox, StoreError> {
    let input =
        json!({ "params": params, "user": identity.user_id, "roles": identity.roles }).to_string();
    let (id, channel) = (request_id.to_owned(), code.to_owned());
    let max = app.config.inbox_max as i64;
    let test = app
        .registry
        .snapshot()
        .channel(code)
        .is_some_and(|c| c.test_mode());
    let stored = app
        .store
        .write(move |c| {
            let waiting: i64 = c
                .prepare_cached(
                    "SELECT count(*) FROM jobs WHERE channel = ?1 AND kind = 'recv' AND state IN ('queued', 'running')",
                )?
                .query_row(params![channel], |r| r.get(0))?;
            if waiting >= max {
                return Ok(false);
            }
            let now = now_ms();
            c.execute(
                "INSERT INTO jobs (id, channel, kind, state, attempt, max_attempts, created, updated, input, test) \
                 VALUES (?1, ?2, 'recv', 'queued', 0, 1, ?3, ?3, ?4, ?5)",
                params![id, channel, now, input, test],
            )?;
            Ok(true)
        })
        .await?;
    if !stored {
        return Ok(Inbox::Full);
    }
    count(code, "recv", "queued");
    wake_inbox(app, code);
    Ok(Inbox::Stored)
}

/// What became of a request for the inbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbox {
    /// Committed; the channel's queue will run it.
    Stored,
    /// The channel's inbox holds `inbox_max` requests already; nothing was stored.
    Full,
}

fn wake_inbox(app: &AppState, code: &str) {
    if let Some(n) = app.jobs.inbox.get(code) {
        n.notify_one();
        return;
    }
    let notify = app.jobs.inbox.entry(code.to_owned()).or_insert_with(|| {
        let notify = Arc::new(Notify::new());
        if let Some(app) = app.me.upgrade() {
            tokio::spawn(inbox_worker(app, code.to_owned(), notify.clone()));
        }
        notify
    });
    notify.notify_one();
}

/// Re-queues jobs a crash left running, then starts the runners.
pub async fn start(app: &Arc<AppState>) -> Result<(), StoreError> {
    let recovered: Vec<String> = app
        .store
        .write(|c| {
            // A job found running at start was cut by the stop: that attempt is
            // recorded as interrupted, and the job queued again (a schedule run fails).
            let running: Vec<String> = c
                .prepare("SELECT id FROM jobs WHERE state = 'running'")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let now = now_ms();
            for id in &running {
                interrupt(c, id, "a restart", now)?;
            }
            let mut stmt = c.prepare(
                "SELECT DISTINCT channel FROM jobs WHERE kind = 'recv' AND state = 'queued'",
            )?;
            let rows = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(rows)
        })
        .await?;
    for code in recovered {
        wake_inbox(app, &code);
    }
    tokio::spawn(send_dispatcher(app.clone()));
    tokio::spawn(scheduler(app.clone()));
    Ok(())
}

/// Runs due send jobs and times out waiting ones.
async fn send_dispatcher(app: Arc<AppState>) {
    let permits = Arc::new(Semaphore::new(SEND_CONCURRENCY));
    loop {
        let claiming = Running::start(&app);
        if app.jobs.stopping() {
            return;
        }
        if let Err(e) = time_out_waiting(&app).await {
            tracing::error!("jobs: {e}");
        }
        let free = permits.available_permits();
        // Jobs of stopped channels wait: neither claimed nor waited for.
        let stopped = stopped_json(&app);
        let claimed = if free > 0 {
            claim_sends(&app, free, stopped.clone()).await
        } else {
            Ok(Vec::new())
        };
        match claimed {
            Ok(jobs) => {
                for (id, channel, attempt, input) in jobs {
                    let permit = permits.clone().acquire_owned().await.expect("never closed");
                    let running = Running::start(&app);
                    let app = app.clone();
                    tokio::spawn(async move {
                        run_send(&app, id, channel, attempt, input).await;
                        drop((permit, running));
                    });
                }
            }
            Err(e) => tracing::error!("jobs: {e}"),
        }
        drop(claiming);
        let next_due: Option<i64> = app
            .store
            .read(|c| {
                c.query_row(
                    "SELECT min(next_attempt_at) FROM jobs WHERE kind = 'send' AND state IN ('queued', 'waiting') \
                     AND channel NOT IN (SELECT value FROM json_each(?1))",
                    [stopped],
                    |r| r.get(0),
                )
            })
            .unwrap_or(None);
        let wait = next_due
            .map(|t| Duration::from_millis((t - now_ms()).clamp(0, 1000) as u64))
            .unwrap_or(Duration::from_secs(1));
        tokio::select! {
            _ = app.jobs.send_wake.notified() => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
        }
    }
}

/// Channel codes as a JSON array, for `channel IN (SELECT value FROM json_each(?))`.
fn codes_json<'a>(codes: impl IntoIterator<Item = &'a str>) -> String {
    let codes: Vec<&str> = codes.into_iter().collect();
    serde_json::to_string(&codes).unwrap_or_else(|_| "[]".into())
}

/// The codes of the stopped channels as a JSON array (their jobs wait).
fn stopped_json(app: &AppState) -> String {
    let codes: Vec<String> = app.stopped.iter().map(|c| c.key().clone()).collect();
    codes_json(codes.iter().map(String::as_str))
}

async fn claim_sends(
    app: &AppState,
    limit: usize,
    stopped: String,
) -> Result<Vec<(String, String, i64, String)>, StoreError> {
    app.store
        .write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1, updated = ?1 \
                 WHERE seq IN (SELECT seq FROM jobs WHERE kind = 'send' AND state = 'queued' \
                               AND next_attempt_at <= ?1 \
                               AND channel NOT IN (SELECT value FROM json_each(?3)) \
                               ORDER BY next_attempt_at LIMIT ?2) \
                 RETURNING id, channel, attempt, input",
            )?;
            let rows = stmt
                .query_map(params![now_ms(), limit as i64, stopped], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
}

async fn time_out_waiting(app: &AppState) -> Result<(), StoreError> {
    let timed_out: Vec<(String, String, String)> = app
        .store
        .write(|c| {
            let mut stmt = c.prepare_cached(
                "UPDATE jobs SET state = 'timed_out', updated = ?1, last_error = 'no result in time' \
                 WHERE state = 'waiting' AND next_attempt_at <= ?1 RETURNING id, channel, kind",
            )?;
            let rows = stmt
                .query_map([now_ms()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await?;
    for (id, channel, kind) in timed_out {
        finished(app, &id, &channel, &kind, "timed_out").await;
    }
    Ok(())
}

/// Counts the final state and publishes `job.finished`.
async fn finished(app: &AppState, id: &str, channel: &str, kind: &str, state: &str) {
    count(channel, kind, state);
    tracing::info!(target: "switchyard::jobs", channel, job = id, kind, state, "job finished");
    let data = json!({ "id": id, "channel": channel, "kind": kind, "state": state });
    if let Ok(event) = crate::events::Event::new("system", "job.finished", data) {
        if let Err(e) = app.events.publish(event).await {
            tracing::error!("publishing job.finished: {e}");
        }
    }
}

/// What one run of a job's script came to.
struct Outcome {
    result: Option<String>,
    error: Option<String>,
    wait_secs: Option<u64>,
    /// The script called `fail`: no further retry.
    permanent: bool,
}

/// The variables a job's script may set: `result`, and for inbox runs also the
/// HTTP answer variables of a recv script (accepted, not sent anywhere).
const JOB_OUTPUTS: &[&str] = &["result", "status", "body", "content_type", "headers"];

async fn run_script(
    app: &Arc<AppState>,
    channel: &Arc<Channel>,
    script_code: Option<&str>,
    params: Vec<String>,
    identity: Identity,
    job: Arc<JobRun>,
) -> Outcome {
    let snapshot = app.registry.snapshot();
    let Some(script) = script_code.and_then(|c| snapshot.scripts.get(c).cloned()) else {
        return Outcome {
            result: None,
            error: Some("the channel has no script for this job".into()),
            wait_secs: None,
            permanent: false,
        };
    };
    let ctx = RunContext {
        channel: channel.clone(),
        request_id: job.id.clone(),
        identity,
        params: params.into_iter().map(Into::into).collect(),
        scripts: snapshot.scripts.clone(),
        host: app.clone(),
        job: Some(job.clone()),
        lazy: None,
    };
    match app
        .engine
        .run(script, ctx, channel.timeout, JOB_OUTPUTS)
        .await
    {
        Ok(outputs) => {
            let result = result_text(&outputs[0]);
            let wait_secs = *job.wait_secs.lock().unwrap_or_else(|p| p.into_inner());
            Outcome {
                result,
                error: None,
                wait_secs,
                permanent: false,
            }
        }
        Err(RunError::Timeout) => Outcome {
            result: None,
            error: Some(format!("timed out after {} s", channel.timeout.as_secs())),
            wait_secs: None,
            permanent: false,
        },
        Err(RunError::Failed(message) | RunError::StoreFull(message)) => Outcome {
            result: None,
            error: Some(message),
            wait_secs: None,
            permanent: false,
        },
        Err(RunError::Fail(message)) => Outcome {
            result: None,
            error: Some(message),
            wait_secs: None,
            permanent: true,
        },
    }
}

fn result_text(value: &Dynamic) -> Option<String> {
    if value.is_unit() {
        return None;
    }
    convert::to_json(value).ok().map(|v| v.to_string())
}

async fn run_send(app: &Arc<AppState>, id: String, code: String, attempt: i64, input: String) {
    let _live = Live::start(app, &id);
    let started = Instant::now();
    let started_ms = now_ms();
    let snapshot = app.registry.snapshot();
    let channel = snapshot.channel(&code).cloned();
    let data = serde_json::from_str::<Value>(&input)
        .ok()
        .map(|v| v["data"].clone())
        .unwrap_or(Value::Null);
    let job = Arc::new(JobRun {
        id: id.clone(),
        can_wait: true,
        ..JobRun::default()
    });
    let outcome = match &channel {
        None => Outcome {
            result: None,
            error: Some(format!("channel {code:?} no longer exists")),
            wait_secs: None,
            permanent: false,
        },
        Some(ch) => {
            let params = vec![
                data.to_string(),
                code.clone(),
                id.clone(),
                attempt.to_string(),
            ];
            let identity = crate::auth::channel_identity(ch, &app.config);
            run_script(
                app,
                ch,
                ch.script_for(ScriptField::Send),
                params,
                identity,
                job,
            )
            .await
        }
    };
    let duration_ms = started.elapsed().as_millis() as i64;
    // send_retries is read now, so a changed setting applies to running jobs.
    // A manual retry past the last attempt counts: it never shows as x / y with x > y.
    let max = channel
        .as_ref()
        .map_or(attempt, |c| max_attempts(c))
        .max(attempt);
    let now = now_ms();
    let (state, next_at, outcome_label) =
        match (&outcome.error, outcome.wait_secs) {
            (None, Some(secs)) => (
                "waiting",
                Some(now.saturating_add(
                    secs.min(crate::script::limits::JOB_WAIT.as_secs()) as i64 * 1000,
                )),
                "waiting",
            ),
            (None, None) => ("succeeded", None, "succeeded"),
            (Some(_), _) if attempt < max && channel.is_some() && !outcome.permanent => (
                "queued",
                Some(now + backoff(attempt as u32).as_millis() as i64),
                "failed",
            ),
            (Some(_), _) => ("failed", None, "failed"),
        };
    let (job_id, err, result) = (id.clone(), outcome.error.clone(), outcome.result.clone());
    write_outcome(app, &id, move |c| {
        c.execute(
            "UPDATE jobs SET state = ?2, updated = ?3, next_attempt_at = ?4, last_error = coalesce(?5, last_error), \
             result = coalesce(?6, result), max_attempts = ?7, input = CASE ?2 WHEN 'succeeded' THEN '' ELSE input END \
             WHERE id = ?1",
            params![job_id, state, now, next_at, err, result, max],
        )?;
        record_attempt(c, &job_id, attempt, started_ms, duration_ms, outcome_label, err.clone())
    })
    .await;
    metrics::histogram!("switchyard_job_attempt_duration_seconds", "channel" => code.clone(), "kind" => "send")
        .record(duration_ms as f64 / 1000.0);
    if let Some(e) = &outcome.error {
        tracing::warn!(target: "switchyard::jobs", channel = %code, job = %id, attempt, "send attempt failed: {e}");
    }
    match state {
        "queued" => {
            count(&code, "send", "queued");
            app.jobs.send_wake.notify_one();
        }
        "waiting" => count(&code, "send", "waiting"),
        _ => finished(app, &id, &code, "send", state).await,
    }
}

/// Runs a channel's stored requests one at a time, in arrival order.
async fn inbox_worker(app: Arc<AppState>, code: String, wake: Arc<Notify>) {
    loop {
        let running = Running::start(&app);
        if app.jobs.stopping() {
            return;
        }
        let snapshot = app.registry.snapshot();
        let channel = snapshot.channel(&code).cloned();
        // Disabled or stopped: its requests wait, in order, for it to run again.
        let paused =
            channel.as_ref().is_none_or(|c| c.doc.opts.disabled) || app.stopped.contains(&code);
        let claimed = if paused {
            Ok(None)
        } else {
            claim_recv(&app, &code).await
        };
        let (id, attempt, input) = match claimed {
            Ok(Some(job)) => job,
            Ok(None) => {
                drop(running);
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            Err(e) => {
                drop(running);
                tracing::error!(channel = %code, "inbox: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let channel = channel.expect("claimed only for a loaded channel");
        let input: Value = serde_json::from_str(&input).unwrap_or(Value::Null);
        let params: Vec<String> = input["params"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let identity = Identity {
            user_id: input["user"].as_str().unwrap_or("").to_owned(),
            roles: input["roles"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let job = Arc::new(JobRun {
            id: id.clone(),
            ..JobRun::default()
        });
        let script = channel.script_for(ScriptField::Recv);
        run_once(
            &app, &channel, script, params, identity, job, attempt, "recv",
        )
        .await;
    }
}

async fn finish_run(
    app: &AppState,
    id: &str,
    attempt: i64,
    started_ms: i64,
    duration_ms: i64,
    state: &'static str,
    outcome: &Outcome,
) {
    let (job, err, result) = (id.to_owned(), outcome.error.clone(), outcome.result.clone());
    write_outcome(app, id, move |c| {
        c.execute(
            "UPDATE jobs SET state = ?2, updated = ?3, last_error = ?4, result = ?5, next_attempt_at = NULL, \
             input = CASE ?2 WHEN 'succeeded' THEN '' ELSE input END WHERE id = ?1",
            params![job, state, now_ms(), err, result],
        )?;
        record_attempt(c, &job, attempt, started_ms, duration_ms, state, err.clone())
    })
    .await
}

/// Writes (or rewrites) the row of one attempt of a job, in the caller's transaction.
fn record_attempt(
    c: &rusqlite::Connection,
    job: &str,
    attempt: i64,
    started_ms: i64,
    duration_ms: i64,
    outcome: &str,
    error: Option<String>,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO attempts (job, n, started, duration_ms, outcome, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![job, attempt, started_ms, duration_ms, outcome, error])?;
    Ok(())
}

async fn claim_recv(
    app: &AppState,
    code: &str,
) -> Result<Option<(String, i64, String)>, StoreError> {
    let channel = code.to_owned();
    app.store
        .write(move |c| {
            c.prepare_cached(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1, updated = ?2 \
                 WHERE seq = (SELECT seq FROM jobs WHERE channel = ?1 AND kind = 'recv' AND state = 'queued' ORDER BY seq LIMIT 1) \
                 RETURNING id, attempt, input",
            )?
            .query_row(params![channel, now_ms()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
        })
        .await
}

/// A schedule entry: its channel's code and its index in `opts.schedule`.
type EntryKey = (String, usize);

/// An entry that is due: its key, the time it was due and its running flag.
type DueEntry = (EntryKey, DateTime<Utc>, Arc<AtomicBool>);

/// The schedule entries of every channel, with the next run of each in a
/// time-ordered heap: a tick costs nothing unless an entry is due, and the
/// table is rebuilt only when the channels change (a reload), so idle entries
/// cost nothing however many there are.
#[derive(Default)]
struct ScheduleTable {
    /// The snapshot the table was built from.
    built_from: Option<Arc<crate::registry::Snapshot>>,
    entries: HashMap<EntryKey, Entry>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(DateTime<Utc>, EntryKey)>>,
}

impl ScheduleTable {
    /// Rebuilds from `snapshot` when it is not the one the table was built from;
    /// an entry whose spec did not change keeps its next time.
    fn follow(&mut self, snapshot: &Arc<crate::registry::Snapshot>, now: DateTime<Utc>) {
        if self
            .built_from
            .as_ref()
            .is_some_and(|b| Arc::ptr_eq(b, snapshot))
        {
            return;
        }
        self.built_from = Some(snapshot.clone());
        let mut entries = HashMap::new();
        for channel in snapshot.channels.values() {
            if !channel.is_general() || channel.doc.opts.schedule.is_empty() {
                continue;
            }
            for (i, e) in channel.doc.opts.schedule.iter().enumerate() {
                let key = (channel.code().to_owned(), i);
                let spec = format!("{:?}|{:?}|{}", e.every, e.cron, e.script);
                let entry = match self.entries.remove(&key) {
                    Some(old) if old.spec == spec => old,
                    _ => match next_after(e, now) {
                        Some(next) => Entry {
                            spec,
                            next,
                            running: Arc::default(),
                        },
                        None => continue,
                    },
                };
                entries.insert(key, entry);
            }
        }
        self.entries = entries;
        self.heap = self
            .entries
            .iter()
            .map(|(k, e)| std::cmp::Reverse((e.next, k.clone())))
            .collect();
    }

    /// The entries due at `now`, each moved on to its next time.
    fn due(&mut self, now: DateTime<Utc>) -> Vec<DueEntry> {
        let mut due = Vec::new();
        while let Some(std::cmp::Reverse((at, _))) = self.heap.peek() {
            if *at > now {
                break;
            }
            let Some(std::cmp::Reverse((at, key))) = self.heap.pop() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            if entry.next != at {
                continue;
            }
            let channel = self.built_from.as_ref().and_then(|s| s.channel(&key.0));
            let Some(spec) = channel.and_then(|c| c.doc.opts.schedule.get(key.1)) else {
                continue;
            };
            entry.next = next_after(spec, at.max(now)).unwrap_or(now + chrono::Duration::days(365));
            self.heap.push(std::cmp::Reverse((entry.next, key.clone())));
            due.push((key, at, entry.running.clone()));
        }
        due
    }
}

/// Runs `opts.schedule` entries on time; a tick that finds the previous run still going is skipped.
async fn scheduler(app: Arc<AppState>) {
    let mut tick = tokio::time::interval(SCHEDULER_TICK);
    let mut table = ScheduleTable::default();
    loop {
        tick.tick().await;
        let _ticking = Running::start(&app);
        if app.jobs.stopping() {
            return;
        }
        let snapshot = app.registry.snapshot();
        let now = Utc::now();
        table.follow(&snapshot, now);
        for ((code, i), scheduled, running) in table.due(now) {
            let Some(channel) = snapshot.channel(&code).cloned() else {
                continue;
            };
            // Disabled and stopped channels do not run their schedules (their entries keep time).
            if channel.doc.opts.disabled || app.stopped.contains(&code) {
                continue;
            }
            let script = channel.doc.opts.schedule[i].script.clone();
            if running.swap(true, Ordering::AcqRel) {
                metrics::counter!("switchyard_schedule_skipped_total", "channel" => code.clone())
                    .increment(1);
                tracing::warn!(channel = %code, script = %script, "schedule tick skipped: the previous run is still going");
                continue;
            }
            let counted = Running::start(&app);
            let app = app.clone();
            tokio::spawn(async move {
                run_schedule(&app, &channel, &script, scheduled).await;
                running.store(false, Ordering::Release);
                drop(counted);
            });
        }
    }
}

fn next_after(
    entry: &crate::channel::ScheduleEntry,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if let Some(every) = &entry.every {
        let d = humantime::parse_duration(every).ok()?;
        return Some(after + chrono::Duration::from_std(d).ok()?);
    }
    let cron = cron::Schedule::from_str(entry.cron.as_deref()?).ok()?;
    cron.after(&after).next()
}

async fn run_schedule(
    app: &Arc<AppState>,
    channel: &Arc<Channel>,
    script: &str,
    scheduled: DateTime<Utc>,
) {
    let id = uuid::Uuid::new_v4().to_string();
    let code = channel.code().to_owned();
    let at = scheduled.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let input = json!({ "script": script, "scheduled": at }).to_string();
    let (job, ch, test) = (id.clone(), code.clone(), channel.test_mode());
    let created = app
        .store
        .write(move |c| {
            let now = now_ms();
            c.execute(
                "INSERT INTO jobs (id, channel, kind, state, attempt, max_attempts, created, updated, input, test) \
                 VALUES (?1, ?2, 'schedule', 'running', 1, 1, ?3, ?3, ?4, ?5)",
                params![job, ch, now, input, test],
            )
        })
        .await;
    if let Err(e) = created {
        tracing::error!(channel = %code, "schedule: {e}");
        return;
    }
    let job = Arc::new(JobRun {
        id: id.clone(),
        ..JobRun::default()
    });
    let identity = crate::auth::channel_identity(channel, &app.config);
    let params = vec![at, code];
    run_once(
        app,
        channel,
        Some(script),
        params,
        identity,
        job,
        1,
        "schedule",
    )
    .await;
}

/// Runs a job that is not retried (an inbox request, a schedule tick), records the
/// attempt and the final state, and publishes `job.finished`.
#[allow(clippy::too_many_arguments)]
async fn run_once(
    app: &Arc<AppState>,
    channel: &Arc<Channel>,
    script: Option<&str>,
    params: Vec<String>,
    identity: Identity,
    job: Arc<JobRun>,
    attempt: i64,
    kind: &'static str,
) {
    let _running = Running::start(app);
    let _live = Live::start(app, &job.id);
    let (id, code) = (job.id.clone(), channel.code().to_owned());
    let started = Instant::now();
    let started_ms = now_ms();
    let outcome = run_script(app, channel, script, params, identity, job).await;
    let duration_ms = started.elapsed().as_millis() as i64;
    let state = if outcome.error.is_some() {
        "failed"
    } else {
        "succeeded"
    };
    finish_run(app, &id, attempt, started_ms, duration_ms, state, &outcome).await;
    if let Some(e) = &outcome.error {
        tracing::warn!(target: "switchyard::jobs", channel = %code, job = %id, kind, "run failed: {e}");
    }
    metrics::histogram!("switchyard_job_attempt_duration_seconds", "channel" => code.clone(), "kind" => kind)
        .record(duration_ms as f64 / 1000.0);
    finished(app, &id, &code, kind, state).await;
}

/// The answer to `POST /channels/{code}/jobs/{id}/result`.
pub enum Callback {
    /// The job moved to this state.
    Done(&'static str),
    /// No such job on this channel.
    Unknown,
    /// The job is not waiting.
    NotWaiting(String),
}

/// Applies an external system's answer to a waiting job.
pub async fn callback(
    app: &AppState,
    code: &str,
    id: &str,
    success: bool,
    reason: Option<String>,
    data: Value,
) -> Result<Callback, StoreError> {
    let (job, channel) = (id.to_owned(), code.to_owned());
    let state: &'static str = if success { "succeeded" } else { "failed" };
    let result = (!data.is_null()).then(|| data.to_string());
    let outcome = app
        .store
        .write(move |c| {
            let current: Option<(String, String)> = c
                .query_row(
                    "SELECT state, kind FROM jobs WHERE id = ?1 AND channel = ?2",
                    params![job, channel],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match current {
                None => Ok(Callback::Unknown),
                Some((s, _)) if s != "waiting" => Ok(Callback::NotWaiting(s)),
                Some(_) => {
                    c.execute(
                        "UPDATE jobs SET state = ?2, updated = ?3, next_attempt_at = NULL, \
                         last_error = ?4, result = coalesce(?5, result) WHERE id = ?1",
                        params![job, state, now_ms(), reason, result],
                    )?;
                    Ok(Callback::Done(state))
                }
            }
        })
        .await?;
    if let Callback::Done(state) = &outcome {
        finished(app, id, code, "send", state).await;
    }
    Ok(outcome)
}

/// `POST /admin/jobs/{id}/retry`: a failed or timed-out job runs again now.
pub async fn retry(app: &AppState, id: &str) -> Result<Result<Value, String>, StoreError> {
    let job = id.to_owned();
    let outcome = app
        .store
        .write(move |c| {
            let row: Option<(String, String, String)> = c
                .query_row(
                    "SELECT state, kind, channel FROM jobs WHERE id = ?1",
                    [&job],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            match row {
                None => Ok(Err("unknown".to_string())),
                Some((state, _, _)) if state != "failed" && state != "timed_out" => Ok(Err(state)),
                Some((_, kind, _)) if kind == "schedule" => Ok(Err("schedule".to_string())),
                Some((_, kind, channel)) => {
                    // The retry is one more attempt beyond the limit it already reached.
                    c.execute(
                        "UPDATE jobs SET state = 'queued', next_attempt_at = ?2, updated = ?2, \
                         max_attempts = max(max_attempts, attempt + 1) WHERE id = ?1",
                        params![job, now_ms()],
                    )?;
                    Ok(Ok((kind, channel)))
                }
            }
        })
        .await?;
    match outcome {
        Err(why) => Ok(Err(why)),
        Ok((kind, channel)) => {
            count(&channel, &kind, "queued");
            if kind == "recv" {
                wake_inbox(app, &channel);
            } else {
                app.jobs.send_wake.notify_one();
            }
            Ok(Ok(get(app, id)?.unwrap_or(Value::Null)))
        }
    }
}

/// One job with its attempts, or `None`.
pub fn get(app: &AppState, id: &str) -> Result<Option<Value>, StoreError> {
    app.store.read(|c| {
        let job = c
            .query_row("SELECT * FROM jobs WHERE id = ?1", [id], job_json)
            .optional()?;
        let Some(mut job) = job else { return Ok(None) };
        let mut stmt = c.prepare_cached(
            "SELECT n, started, duration_ms, outcome, error FROM attempts WHERE job = ?1 ORDER BY n",
        )?;
        let attempts = stmt
            .query_map([id], |r| {
                Ok(json!({
                    "attempt": r.get::<_, i64>(0)?,
                    "started": rfc3339_ms(r.get(1)?),
                    "duration_ms": r.get::<_, i64>(2)?,
                    "outcome": r.get::<_, String>(3)?,
                    "error": r.get::<_, Option<String>>(4)?,
                }))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        job["attempts"] = Value::Array(attempts);
        add_queue(&app.registry.snapshot(), &mut job);
        Ok(Some(job))
    })
}

/// The filters of a job listing (`None`: any).
#[derive(Debug, Default)]
pub struct JobFilter {
    pub channel: Option<String>,
    pub kind: Option<String>,
    pub state: Option<String>,
    /// The channels whose queue this is.
    pub queue: Option<String>,
    pub test: Option<bool>,
    /// A business key given by `job_tag` or at creation.
    pub tag: Option<String>,
    /// At most this many.
    pub limit: usize,
    /// After skipping this many (paging).
    pub offset: usize,
}

/// Jobs that pass `filter`, newest first.
pub fn list(app: &AppState, filter: &JobFilter) -> Result<Vec<Value>, StoreError> {
    let JobFilter {
        channel,
        kind,
        state,
        queue,
        test,
        tag,
        limit,
        offset,
    } = filter;
    let snapshot = app.registry.snapshot();
    // A queue is the channels whose `opts.queue` (or code) names it.
    let members = queue.as_deref().map(|q| {
        codes_json(
            snapshot
                .channels
                .values()
                .filter(|c| c.queue() == q)
                .map(|c| c.code()),
        )
    });
    let mut rows = app.store.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT * FROM jobs WHERE (?1 IS NULL OR channel = ?1) AND (?2 IS NULL OR kind = ?2) \
             AND (?3 IS NULL OR state = ?3) \
             AND (?5 IS NULL OR channel IN (SELECT value FROM json_each(?5))) \
             AND (?6 IS NULL OR test = ?6) \
             AND (?7 IS NULL OR id IN (SELECT job FROM job_tags WHERE tag = ?7)) \
             ORDER BY seq DESC LIMIT ?4 OFFSET ?8",
        )?;
        let rows = stmt
            .query_map(
                params![
                    channel,
                    kind,
                    state,
                    *limit as i64,
                    members,
                    test,
                    tag,
                    *offset as i64
                ],
                job_json,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })?;
    for job in &mut rows {
        add_queue(&snapshot, job);
    }
    Ok(rows)
}

/// Adds `queue` to a job: its channel's queue now (its code if the channel is gone).
fn add_queue(snapshot: &crate::registry::Snapshot, job: &mut Value) {
    let code = job["channel"].as_str().unwrap_or("").to_owned();
    let queue = snapshot
        .channel(&code)
        .map_or(code.clone(), |c| c.queue().to_owned());
    job["queue"] = queue.into();
}

/// `GET /admin/queues`: every queue with its channels and its jobs by state.
pub fn queues(app: &AppState) -> Result<Value, StoreError> {
    let snapshot = app.registry.snapshot();
    let counts: Vec<(String, String, i64)> = app.store.read(|c| {
        c.prepare_cached("SELECT channel, state, count(*) FROM jobs GROUP BY channel, state")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect()
    })?;
    let mut queues: std::collections::BTreeMap<
        String,
        (Vec<String>, serde_json::Map<String, Value>),
    > = Default::default();
    for channel in snapshot.channels.values() {
        queues
            .entry(channel.queue().to_owned())
            .or_default()
            .0
            .push(channel.code().to_owned());
    }
    for (code, state, n) in counts {
        let queue = snapshot
            .channel(&code)
            .map_or(code.clone(), |c| c.queue().to_owned());
        let jobs = &mut queues.entry(queue).or_default().1;
        let now = jobs.get(&state).and_then(Value::as_i64).unwrap_or(0);
        jobs.insert(state, (now + n).into());
    }
    let list: Vec<Value> = queues
        .into_iter()
        .map(|(name, (mut channels, jobs))| {
            channels.sort();
            json!({ "name": name, "channels": channels, "jobs": jobs })
        })
        .collect();
    Ok(json!({ "queues": list }))
}

/// Deletes finished jobs older than `job_retention`; returns how many.
pub async fn prune(app: &AppState) -> Result<usize, StoreError> {
    let now = now_ms();
    let cutoff = now - app.config.job_retention.as_millis() as i64;
    // Schedule runs come every tick of every entry: they have their own, shorter retention.
    let schedule_cutoff = now - app.config.schedule_run_retention.as_millis() as i64;
    app.store
        .write(move |c| {
            const DONE: &str = "state IN ('succeeded', 'failed', 'timed_out') \
                AND updated < CASE kind WHEN 'schedule' THEN ?2 ELSE ?1 END";
            c.execute(
                &format!("DELETE FROM attempts WHERE job IN (SELECT id FROM jobs WHERE {DONE})"),
                [cutoff, schedule_cutoff],
            )?;
            c.execute(
                &format!("DELETE FROM job_tags WHERE job IN (SELECT id FROM jobs WHERE {DONE})"),
                [cutoff, schedule_cutoff],
            )?;
            c.execute(
                &format!("DELETE FROM jobs WHERE {DONE}"),
                [cutoff, schedule_cutoff],
            )
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for (attempt, base) in [
            (1u32, 1.0f64),
            (2, 2.0),
            (3, 4.0),
            (9, 256.0),
            (10, 300.0),
            (40, 300.0),
        ] {
            for _ in 0..50 {
                let d = backoff(attempt).as_secs_f64();
                assert!(
                    d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9,
                    "attempt {attempt}: {d}"
                );
            }
        }
    }

    #[test]
    fn schedules_compute_their_next_time() {
        let e = |every: Option<&str>, cron: Option<&str>| crate::channel::ScheduleEntry {
            every: every.map(Into::into),
            cron: cron.map(Into::into),
            script: "s".into(),
        };
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap();
        assert_eq!(
            next_after(&e(Some("30s"), None), t),
            Some(t + chrono::Duration::seconds(30))
        );
        assert_eq!(
            next_after(
                &e(None, Some("0 */5 * * * *")),
                t + chrono::Duration::seconds(1)
            ),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 0).unwrap())
        );
    }
}
