//! Jobs: send jobs (retries, backoff, waiting for a callback), the durable
//! inbox (`recv` jobs of `issync = false` channels) and schedule runs.
//!
//! Every job is a row of `jobs` in the store; every run adds a row to
//! `attempts`. A job is claimed (`queued` → `running`) in one write, so it
//! runs once; after a crash, jobs left `running` are queued again at start-up
//! (at-least-once: a run cut by the crash runs again).
//!
//! - `create`: send jobs and inbox requests, committed before anyone hears of them.
//! - `send`: the send dispatcher, retries, callbacks, manual retries.
//! - `inbox`: the per-channel inbox workers.
//! - `schedule`: the schedule table and its runs.
//! - `view`: one job, listings, queues.
//! - `shared`: cluster mode: jobs handed to the cluster, views across nodes.

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

mod create;
mod inbox;
mod schedule;
mod send;
mod shared;
mod view;

use self::{create::*, inbox::*, schedule::*, send::*};
pub use create::{
    create_recv, create_send, create_send_blocking, tag_blocking, CreateError, Inbox, MAX_TAGS,
    MAX_TAG_BYTES,
};
pub use send::Callback;
pub use shared::{
    callback_any as callback, forget, get_any, list_all, queues_all, retry_any as retry, unfinished,
};
pub use view::{get, list, queues, JobFilter};

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
    /// Each scheduled channel's next run (the earliest of its entries), as
    /// the scheduler last computed it.
    next_runs: DashMap<String, DateTime<Utc>>,
}

impl Jobs {
    /// When channel `code`'s schedule runs next, if it has one.
    pub fn next_run(&self, code: &str) -> Option<DateTime<Utc>> {
        self.next_runs.get(code).map(|t| *t)
    }
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

/// How long, once the server is stopping, a job's outcome that cannot be
/// written (a full disk) is tried again before the stop goes on without it.
pub const STOP_OUTCOME_GRACE: Duration = Duration::from_secs(5);

/// Writes a job's outcome, trying again (100 ms, doubling to 5 s) until the
/// store takes it: a job is never left `running` because one write failed
/// (a full disk, a busy file). Logged once. While the server stops, it is
/// tried for [`STOP_OUTCOME_GRACE`] at most: then the job stays `running` in
/// the store, and the next start records the attempt as interrupted and
/// queues the job again (`None`).
async fn write_outcome<T: Send + 'static>(
    app: &AppState,
    id: &str,
    op: impl Fn(&rusqlite::Connection) -> rusqlite::Result<T> + Clone + Send + 'static,
) -> Option<T> {
    let mut wait = Duration::from_millis(100);
    let mut logged = false;
    let mut stop_seen: Option<tokio::time::Instant> = None;
    loop {
        let once = op.clone();
        match app.store.write(once).await {
            Ok(v) => {
                if logged {
                    tracing::info!(job = %id, "job outcome written after all");
                }
                return Some(v);
            }
            Err(e) => {
                if !logged {
                    tracing::error!(job = %id, "cannot write the job's outcome yet, trying again: {e}");
                    logged = true;
                }
                if app.jobs.is_stopping() {
                    let since = *stop_seen.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= STOP_OUTCOME_GRACE {
                        tracing::error!(
                            job = %id,
                            "stopping without the job's outcome ({e}): it stays running, and the \
                             next start records the attempt as interrupted and queues the job again"
                        );
                        return None;
                    }
                    wait = wait.min(Duration::from_millis(500));
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

    /// `true` once the server is stopping (no job is claimed any more).
    pub fn is_stopping(&self) -> bool {
        self.stopping()
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
        || json!({ "channel": channel, "kind": kind, "state": state }),
    );
}

pub fn max_attempts(channel: &Channel) -> i64 {
    1 + i64::from(channel.doc.opts.send_retries)
}

/// Re-queues jobs a crash left running, then starts the runners. In cluster
/// mode the unfinished send and inbox jobs go to the cluster instead, and the
/// node starts taking jobs from the cluster.
pub async fn start(app: &Arc<AppState>) -> Result<(), StoreError> {
    if app.work.shared() {
        let handed = shared::hand_back_unfinished(app).await?;
        if handed > 0 {
            tracing::info!(
                jobs = handed,
                "unfinished jobs of this store handed to the cluster"
            );
        }
        shared::answer_questions(app);
        let me = Arc::downgrade(app);
        app.work.start(Arc::new(move |job| {
            let me = me.clone();
            Box::pin(async move {
                match me.upgrade() {
                    Some(app) => shared::take(app, job).await,
                    None => Ok(crate::backend::Taken::Refused),
                }
            })
        }));
    }
    let interrupted = app
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
            Ok(())
        })
        .await;
    match interrupted {
        Ok(()) => {}
        // SPEC §1: a store on a full disk still starts and serves reads. The
        // jobs stay `running` without a worker: taken up as orphans once the
        // store has room (see `take_up_orphans`).
        Err(e) if e.is_full() => tracing::warn!(
            "jobs cut by the last stop stay running until the disk has room, then are taken up: {e}"
        ),
        Err(e) => return Err(e),
    }
    let recovered: Vec<String> = app.store.read(|c| {
        c.prepare("SELECT DISTINCT channel FROM jobs WHERE kind = 'recv' AND state = 'queued'")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()
    })?;
    for code in recovered {
        wake_inbox(app, &code);
    }
    tokio::spawn(send_dispatcher(app.clone()));
    tokio::spawn(scheduler(app.clone()));
    Ok(())
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

/// Counts the final state and publishes `job.finished`.
async fn finished(app: &AppState, id: &str, channel: &str, kind: &str, state: &str) {
    // In cluster mode the job is done in the cluster too (no other node runs
    // it again), and every node's job view shows its outcome.
    shared::share(app, id).await;
    app.work.done(id);
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
    /// What the attempt did (see [`crate::script::trail`]), as stored.
    trail: Option<String>,
}

/// The variables a job's script may set: `result`, and for inbox runs also the
/// HTTP answer variables of a recv script (accepted, not sent anywhere).
pub const JOB_OUTPUTS: &[&str] = &["result", "status", "body", "content_type", "headers"];

/// Runs attempt `attempt` of a job of `kind` (`send`, `recv`, `schedule`), in its span.
#[allow(clippy::too_many_arguments)]
async fn run_script(
    app: &Arc<AppState>,
    channel: &Arc<Channel>,
    script_code: Option<&str>,
    params: Vec<String>,
    identity: Identity,
    job: Arc<JobRun>,
    kind: &str,
    attempt: i64,
) -> Outcome {
    let mut span = crate::trace::job_span(kind, channel.code(), &job.id, attempt);
    let mut outcome = run_script_in(
        app,
        channel,
        script_code,
        params,
        identity,
        job.clone(),
        &span,
    )
    .await;
    outcome.trail = job.trail.take_json();
    // No secret's value in a job's record (SPEC §20): its error and result
    // are stored and shown.
    outcome.error = outcome.error.map(|e| crate::secrets::redacted(&e));
    outcome.result = outcome.result.map(|r| crate::secrets::redacted(&r));
    if let Some(error) = &outcome.error {
        span.fail(|| error.clone());
    }
    outcome
}

async fn run_script_in(
    app: &Arc<AppState>,
    channel: &Arc<Channel>,
    script_code: Option<&str>,
    params: Vec<String>,
    identity: Identity,
    job: Arc<JobRun>,
    span: &crate::trace::Span,
) -> Outcome {
    let snapshot = app.registry.snapshot();
    let Some(script) = script_code.and_then(|c| snapshot.scripts.get(c).cloned()) else {
        return Outcome {
            result: None,
            error: Some("the channel has no script for this job".into()),
            wait_secs: None,
            permanent: false,
            trail: None,
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
        trace: span.context().clone(),
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
                trail: None,
            }
        }
        Err(RunError::Timeout) => Outcome {
            result: None,
            error: Some(format!("timed out after {} s", channel.timeout.as_secs())),
            wait_secs: None,
            permanent: false,
            trail: None,
        },
        Err(
            RunError::Failed(message)
            | RunError::StoreFull(message)
            | RunError::ClusterUnavailable(message),
        ) => Outcome {
            result: None,
            error: Some(message),
            wait_secs: None,
            permanent: false,
            trail: None,
        },
        Err(RunError::Fail(message)) => Outcome {
            result: None,
            error: Some(message),
            wait_secs: None,
            permanent: true,
            trail: None,
        },
    }
}

fn result_text(value: &Dynamic) -> Option<String> {
    if value.is_unit() {
        return None;
    }
    convert::to_json(value).ok().map(|v| v.to_string())
}

/// Writes a run's outcome; `false` when the stop went on without it (see [`write_outcome`]).
async fn finish_run(
    app: &AppState,
    id: &str,
    attempt: i64,
    started_ms: i64,
    duration_ms: i64,
    state: &'static str,
    outcome: &Outcome,
) -> bool {
    let (job, err, result) = (id.to_owned(), outcome.error.clone(), outcome.result.clone());
    let trail = outcome.trail.clone();
    write_outcome(app, id, move |c| {
        c.execute(
            "UPDATE jobs SET state = ?2, updated = ?3, last_error = ?4, result = ?5, next_attempt_at = NULL, \
             input = CASE ?2 WHEN 'succeeded' THEN '' ELSE input END WHERE id = ?1",
            params![job, state, now_ms(), err, result],
        )?;
        let run = Attempt { n: attempt, started_ms, duration_ms, outcome: state };
        record_attempt(c, &job, run, err.clone(), trail.clone())
    })
    .await
    .is_some()
}

/// One attempt of a job: its number, when it started, how long it took, how it ended.
struct Attempt {
    n: i64,
    started_ms: i64,
    duration_ms: i64,
    outcome: &'static str,
}

/// Writes (or rewrites) the row of one attempt of a job, in the caller's transaction.
fn record_attempt(
    c: &rusqlite::Connection,
    job: &str,
    run: Attempt,
    error: Option<String>,
    trail: Option<String>,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO attempts (job, n, started, duration_ms, outcome, error, trail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        job,
        run.n,
        run.started_ms,
        run.duration_ms,
        run.outcome,
        error,
        trail
    ])?;
    Ok(())
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
