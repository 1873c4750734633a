//! Jobs in cluster mode (SPEC §13): what the jobs module does with the
//! [`crate::backend::Work`] hand-off and the other nodes.
//!
//! A new send job or inbox request is handed to the cluster instead of being
//! written here; the node that takes it writes it into its own store as a
//! queued job (carrying on the attempts other nodes made) and runs it with
//! the same machinery as in embedded mode. Each change of a job is shared
//! ([`share`]): the job view is served from the shared records, and a
//! node that finds its job taken over by another drops it. Callbacks and
//! retries ask every node, since a job runs from the store of the node that
//! took it. Rows of this node's store that are not finished when it starts
//! go (back) to the cluster.

use super::view::add_queue;
use super::*;
use crate::backend::{HandOff, Handed, Taken};

/// The row of a new job, as handed to the cluster and taken from it.
pub(super) fn new_job(
    id: &str,
    channel: &str,
    kind: &'static str,
    max_attempts: i64,
    input: String,
    test: bool,
    tags: &[String],
) -> HandOff {
    let job = json!({
        "id": id, "channel": channel, "kind": kind, "max_attempts": max_attempts,
        "input": input, "test": test, "tags": tags, "created": now_ms(),
    });
    HandOff {
        id: id.to_owned(),
        kind,
        channel: channel.to_owned(),
        record: queued_record(&job),
        job,
    }
}

/// A job handed to the cluster and not taken yet, as the job view shows it
/// (the fields of [`job_json`](super::view::job_json), and no attempts).
fn queued_record(job: &Value) -> Value {
    let created = rfc3339_ms(job["created"].as_i64().unwrap_or_else(now_ms));
    json!({
        "id": job["id"], "channel": job["channel"], "kind": job["kind"], "state": "queued",
        "attempt": 0, "max_attempts": job["max_attempts"], "created": created,
        "updated": created, "next_attempt_at": null, "last_error": null, "result": null,
        "test": job["test"].as_bool().unwrap_or(false), "tags": job["tags"].clone(),
        "attempts": [], "node": null,
    })
}

/// Hands a job to the cluster; `Ok(false)`: the inbox is full.
pub(super) async fn hand_off(app: &AppState, job: HandOff) -> Result<bool, StoreError> {
    Ok(app.work.hand_off(job).await? == Handed::Stored)
}

/// [`hand_off`] from a script's (blocking) thread.
pub(super) fn hand_off_blocking(app: &AppState, job: HandOff) -> Result<bool, StoreError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| StoreError(e.to_string()))?;
    crate::script::priority::while_waiting(|| runtime.block_on(hand_off(app, job)))
}

/// The final states of a job.
const FINAL: [&str; 3] = ["succeeded", "failed", "timed_out"];

/// Shares job `id` as this node's store has it now (cluster mode; nothing to
/// do in embedded mode), for every node's job view. `false`: another node took
/// the job over since this node took it (this node was frozen or cut off from
/// NATS meanwhile): the job is dropped here, and this node makes no further
/// attempt and records no outcome for it. When NATS cannot be asked, the
/// node goes on (logged): a node cut off from NATS cannot be given its jobs'
/// messages again either until it reconnects.
pub(super) async fn share(app: &AppState, id: &str) -> bool {
    if !app.work.shared() {
        return true;
    }
    let mut record = match get(app, id) {
        Ok(Some(record)) => record,
        _ => return true,
    };
    fit_shared(&mut record);
    match app.work.share(id, record).await {
        Ok(true) => true,
        Ok(false) => {
            tracing::warn!(
                job = %id,
                "cluster: another node has taken this job over (this node was frozen or cut off): \
                 dropped here, no further attempt"
            );
            metrics::counter!("switchyard_jobs_taken_over_total").increment(1);
            if let Err(e) = forget(&app.store, vec![id.to_owned()]).await {
                tracing::warn!(job = %id, "cluster: forgetting a job taken over: {e}");
            }
            false
        }
        Err(e) => {
            tracing::warn!(job = %id, "cluster: sharing the job's state: {e}");
            true
        }
    }
}

/// The largest input (as JSON text) a job's shared record carries.
const SHARED_INPUT_BYTES: usize = 16 * 1024;
/// The largest shared record (a NATS message is at most 1 MiB).
const SHARED_RECORD_BYTES: usize = 768 * 1024;
/// What an attempt's trail adds to it (see [`crate::script::trail`]).
const TRAIL_KEYS: [&str; 4] = ["calls", "logs", "more_calls", "more_logs"];

/// Makes a job's record fit one NATS message: a large input stays out (the
/// job view of another node says `null` for it), and so do the calls and
/// logs of the oldest attempts while the record is too large (each such
/// attempt says `"trail_left_out": true`); the node holding the job keeps
/// them all.
fn fit_shared(record: &mut Value) {
    if record["input"].to_string().len() > SHARED_INPUT_BYTES {
        record["input"] = Value::Null;
    }
    let mut len = record.to_string().len();
    let Some(attempts) = record["attempts"].as_array_mut() else {
        return;
    };
    for a in attempts.iter_mut() {
        if len <= SHARED_RECORD_BYTES {
            break;
        }
        let Some(a) = a.as_object_mut() else { continue };
        for key in TRAIL_KEYS {
            if let Some(v) = a.remove(key) {
                len = len.saturating_sub(key.len() + v.to_string().len() + 4);
                a.insert("trail_left_out".into(), true.into());
            }
        }
    }
}

/// What [`take`]'s store write answers for a job recorded as given up.
const GIVEN_UP: &str = "given up";

/// Puts a job taken from the cluster into this node's store, queued (or,
/// when the cluster gave it up, failed with the reason).
pub(super) async fn take(app: Arc<AppState>, job: Value) -> Result<Taken, StoreError> {
    let (Some(id), Some(code), Some(kind)) = (
        job["id"].as_str().map(str::to_owned),
        job["channel"].as_str().map(str::to_owned),
        job["kind"].as_str().map(str::to_owned),
    ) else {
        return Err(StoreError(format!("not a job: {job}")));
    };
    // Given up by the cluster (`max_deliver`): recorded here as failed.
    let given_up = job["given_up"].as_str().map(str::to_owned);
    // Not loaded here (yet): another node, or later. A stopped or disabled
    // channel's job is taken and waits here, as in embedded mode.
    if given_up.is_none() && app.registry.snapshot().channel(&code).is_none() {
        return Ok(Taken::Refused);
    }
    // This node holds the job from now on; its attempts so far come with it.
    let prior = if given_up.is_none() {
        app.work.adopt(&id, queued_record(&job)).await?
    } else {
        Value::Null
    };
    if prior["state"].as_str().is_some_and(|s| FINAL.contains(&s)) {
        // Finished on another node: given again only because its
        // acknowledgement was lost.
        return Ok(Taken::Finished);
    }
    let tags: Vec<String> = job["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let row = (
        id.clone(),
        code.clone(),
        kind.clone(),
        job["max_attempts"].as_i64().unwrap_or(1),
        job["created"].as_i64().unwrap_or_else(now_ms),
        job["input"].as_str().unwrap_or("{}").to_owned(),
        job["test"].as_bool().unwrap_or(false),
    );
    // Attempts other nodes made before (the job given again after its node
    // died or stopped): the count carries on from them.
    let prior = prior_attempts(&prior);
    let state: String = app
        .store
        .write(move |c| {
            let (id, code, kind, max, created, input, test) = row;
            let now: Option<String> = c
                .prepare_cached("SELECT state FROM jobs WHERE id = ?1")?
                .query_row(params![id], |r| r.get(0))
                .optional()?;
            if let Some(state) = &now {
                if given_up.is_none() || FINAL.contains(&state.as_str()) {
                    return Ok(state.clone());
                }
            } else {
                c.execute(
                "INSERT INTO jobs (id, channel, kind, state, attempt, max_attempts, created, updated, next_attempt_at, input, test, tags) \
                 VALUES (?1, ?2, ?3, 'queued', ?10, ?4, ?5, ?6, ?6, ?7, ?8, ?9)",
                params![id, code, kind, max, created, now_ms(), input, test, tags_json(&tags), prior.made],
            )?;
                for a in &prior.attempts {
                    c.prepare_cached(
                        "INSERT OR REPLACE INTO attempts (job, n, started, duration_ms, outcome, error, node, trail) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![id, a.n, a.started, a.duration_ms, a.outcome, a.error, a.node, a.trail])?;
                }
                for tag in &tags {
                    c.prepare_cached("INSERT OR IGNORE INTO job_tags (tag, job) VALUES (?1, ?2)")?
                        .execute(params![tag, id])?;
                }
            }
            if let Some(reason) = &given_up {
                c.execute(
                    "UPDATE jobs SET state = 'failed', updated = ?2, next_attempt_at = NULL, \
                     last_error = ?3 WHERE id = ?1",
                    params![id, now_ms(), reason],
                )?;
                return Ok(GIVEN_UP.to_owned());
            }
            Ok("queued".to_owned())
        })
        .await?;
    tracing::debug!(job = %id, state = %state, "cluster: took a job");
    if state == GIVEN_UP {
        super::finished(&app, &id, &code, &kind, "failed").await;
        return Ok(Taken::Finished);
    }
    if FINAL.contains(&state.as_str()) {
        // It finished here before this node died (or stopped) without
        // telling the cluster: the shared record still says what it said
        // then (`running`); it gets the outcome this store kept.
        share(&app, &id).await;
        return Ok(Taken::Finished);
    }
    if kind == "recv" {
        wake_inbox(&app, &code);
    } else {
        app.jobs.send_wake.notify_one();
    }
    Ok(Taken::Queued)
}

/// One attempt of a job's shared record.
struct PriorAttempt {
    n: i64,
    started: i64,
    duration_ms: i64,
    outcome: String,
    error: Option<String>,
    node: Option<String>,
    /// Its outbound calls and log lines, as stored.
    trail: Option<String>,
}

/// The attempts a job's shared record holds: how many were made (`made`),
/// and each (one that was running when its node went counts, interrupted).
struct Prior {
    made: i64,
    attempts: Vec<PriorAttempt>,
}

fn prior_attempts(record: &Value) -> Prior {
    let ms = |v: &Value| {
        v.as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or(0, |t| t.timestamp_millis())
    };
    let mut attempts: Vec<PriorAttempt> = record["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| PriorAttempt {
            n: a["attempt"].as_i64().unwrap_or(0),
            started: ms(&a["started"]),
            duration_ms: a["duration_ms"].as_i64().unwrap_or(0),
            outcome: a["outcome"].as_str().unwrap_or("failed").to_owned(),
            error: a["error"].as_str().map(str::to_owned),
            node: a["node"].as_str().map(str::to_owned),
            trail: {
                let trail: serde_json::Map<String, Value> = TRAIL_KEYS
                    .into_iter()
                    .filter_map(|k| a.get(k).map(|v| (k.to_owned(), v.clone())))
                    .collect();
                (!trail.is_empty()).then(|| Value::Object(trail).to_string())
            },
        })
        .collect();
    let made = record["attempt"].as_i64().unwrap_or(0);
    if record["state"] == "running" && !attempts.iter().any(|a| a.n == made) && made > 0 {
        attempts.push(PriorAttempt {
            n: made,
            started: ms(&record["updated"]),
            duration_ms: 0,
            outcome: "interrupted".into(),
            error: Some("interrupted: its node stopped (the job was given to another)".into()),
            node: record["node"].as_str().map(str::to_owned),
            trail: None,
        });
    }
    Prior { made, attempts }
}

const UNFINISHED: &str = "kind IN ('send', 'recv') AND state IN ('queued', 'running', 'waiting')";

/// The unfinished send and inbox jobs of a store, in the order they came.
pub fn unfinished(store: &crate::store::Store) -> Result<Vec<HandOff>, StoreError> {
    store.read(|c| {
        c.prepare(&format!(
            "SELECT id, channel, kind, max_attempts, input, test, tags, created FROM jobs \
             WHERE {UNFINISHED} ORDER BY seq"
        ))?
        .query_map([], |r| {
            let (id, channel, kind): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let tags: Vec<String> = r
                .get::<_, Option<String>>(6)?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let mut job = new_job(
                &id,
                &channel,
                if kind == "recv" { "recv" } else { "send" },
                r.get(3)?,
                r.get(4)?,
                r.get::<_, i64>(5)? != 0,
                &tags,
            );
            job.job["created"] = r.get::<_, i64>(7)?.into();
            job.record = queued_record(&job.job);
            Ok(job)
        })?
        .collect()
    })
}

/// Forgets jobs of a store that the cluster holds now.
pub async fn forget(store: &crate::store::Store, ids: Vec<String>) -> Result<(), StoreError> {
    store
        .write(move |c| {
            for id in &ids {
                c.execute("DELETE FROM attempts WHERE job = ?1", [id])?;
                c.execute("DELETE FROM job_tags WHERE job = ?1", [id])?;
                c.execute("DELETE FROM jobs WHERE id = ?1", [id])?;
            }
            Ok(())
        })
        .await
}

/// At start in cluster mode: the unfinished send and inbox jobs of this
/// node's store go to the cluster (a job taken from it before a crash comes
/// back de-duplicated by its id within JetStream's 2-minute window; one made
/// in embedded mode joins it), then leave this store.
pub(super) async fn hand_back_unfinished(app: &AppState) -> Result<usize, StoreError> {
    let jobs = unfinished(&app.store)?;
    let mut ids = Vec::with_capacity(jobs.len());
    for job in jobs {
        let id = job.id.clone();
        app.work.hand_off(job).await?;
        ids.push(id);
    }
    let n = ids.len();
    forget(&app.store, ids).await?;
    Ok(n)
}

/// The questions other nodes ask about this node's jobs.
pub(super) fn answer_questions(app: &Arc<AppState>) {
    let me = Arc::downgrade(app);
    let ask = move |f: fn(Arc<AppState>, Value) -> BoxedAnswer| {
        let me = me.clone();
        Arc::new(move |body: Value| -> BoxedAnswer {
            match me.upgrade() {
                Some(app) => f(app, body),
                None => Box::pin(async { Value::Null }),
            }
        }) as crate::backend::Handler
    };
    app.peers.answer(
        "jobs.list",
        ask(|app, body| {
            Box::pin(async move {
                let filter: JobFilter = serde_json::from_value(body).unwrap_or_default();
                blocking(move || list(&app, &filter).map(Value::from)).await
            })
        }),
    );
    app.peers.answer(
        "jobs.get",
        ask(|app, body| {
            Box::pin(async move {
                let id = body.as_str().unwrap_or_default().to_owned();
                blocking(move || get(&app, &id).map(|j| j.unwrap_or(Value::Null))).await
            })
        }),
    );
    app.peers.answer(
        "jobs.queues",
        ask(|app, _| Box::pin(async move { blocking(move || queues(&app)).await })),
    );
    app.peers.answer(
        "jobs.retry",
        ask(|app, body| {
            Box::pin(async move {
                let id = body.as_str().unwrap_or_default().to_owned();
                match retry_here(&app, &id).await {
                    Ok(Ok(job)) => json!({"job": job}),
                    Ok(Err(why)) if why != "unknown" => json!({"refused": why}),
                    _ => Value::Null,
                }
            })
        }),
    );
    app.peers.answer(
        "jobs.result",
        ask(|app, body| {
            Box::pin(async move {
                let (code, id) = (body["channel"].as_str(), body["id"].as_str());
                let (Some(code), Some(id)) = (code, id) else {
                    return Value::Null;
                };
                let reason = body["reason"].as_str().map(str::to_owned);
                let outcome = callback_here(
                    &app,
                    code,
                    id,
                    body["success"].as_bool().unwrap_or(false),
                    reason,
                    body["data"].clone(),
                )
                .await;
                match outcome {
                    Ok(Callback::Done(state)) => json!({"done": state}),
                    Ok(Callback::NotWaiting(state)) => json!({"not_waiting": state}),
                    Ok(Callback::Unknown) | Err(_) => Value::Null,
                }
            })
        }),
    );
}

type BoxedAnswer = futures_util::future::BoxFuture<'static, Value>;

/// Runs a store read off the async threads; `null` when it fails.
async fn blocking(f: impl FnOnce() -> Result<Value, StoreError> + Send + 'static) -> Value {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => v,
        _ => Value::Null,
    }
}

/// The jobs of every node that pass `filter`, newest first; each with its `node`.
pub async fn list_all(app: &Arc<AppState>, filter: JobFilter) -> Result<Vec<Value>, StoreError> {
    let Some((node, _)) = app.peers.cluster() else {
        // Embedded: the store's own paging.
        let app = app.clone();
        return tokio::task::spawn_blocking(move || list(&app, &filter))
            .await
            .map_err(|e| StoreError(e.to_string()))?;
    };
    // The shared records: every job handed to the cluster, whichever node
    // holds it now, took it and died, or none yet.
    let snapshot = app.registry.snapshot();
    let mut jobs: Vec<Value> = app
        .work
        .shared_jobs()
        .await?
        .into_iter()
        .filter(|job| passes(&snapshot, &filter, job))
        .map(|mut job| {
            add_queue(&snapshot, &mut job);
            if let Some(o) = job.as_object_mut() {
                o.remove("attempts");
            }
            job
        })
        .collect();
    let shared: std::collections::HashSet<String> = jobs
        .iter()
        .filter_map(|j| j["id"].as_str().map(str::to_owned))
        .collect();
    // And what the nodes alive hold that was not shared (made before).
    let wanted = filter.offset + filter.limit;
    let here_filter = JobFilter {
        limit: wanted,
        offset: 0,
        ..filter.clone()
    };
    let here_app = app.clone();
    let here = tokio::task::spawn_blocking(move || list(&here_app, &here_filter))
        .await
        .map_err(|e| StoreError(e.to_string()))??;
    for mut job in here {
        if !job["id"].as_str().is_some_and(|id| shared.contains(id)) {
            job["node"] = node.clone().into();
            jobs.push(job);
        }
    }
    let body = serde_json::to_value(JobFilter {
        limit: wanted,
        offset: 0,
        ..filter.clone()
    })
    .unwrap_or(Value::Null);
    for (node, answer) in app.peers.gather("jobs.list", body).await? {
        for mut job in answer.as_array().cloned().unwrap_or_default() {
            if !job["id"].as_str().is_some_and(|id| shared.contains(id)) {
                job["node"] = node.clone().into();
                jobs.push(job);
            }
        }
    }
    // Newest first across nodes (RFC 3339 in UTC sorts as text).
    jobs.sort_by(|a, b| {
        b["created"]
            .as_str()
            .cmp(&a["created"].as_str())
            .then_with(|| b["id"].as_str().cmp(&a["id"].as_str()))
    });
    Ok(jobs
        .into_iter()
        .skip(filter.offset)
        .take(filter.limit)
        .collect())
}

/// Whether a job (as the view shows it) passes `filter`.
fn passes(snapshot: &crate::registry::Snapshot, filter: &JobFilter, job: &Value) -> bool {
    let is = |field: &str, want: &Option<String>| {
        want.as_deref()
            .is_none_or(|w| job[field].as_str() == Some(w))
    };
    let queue = job["channel"]
        .as_str()
        .map(|code| snapshot.channel(code).map_or(code, |c| c.queue()));
    is("channel", &filter.channel)
        && is("kind", &filter.kind)
        && is("state", &filter.state)
        && filter.queue.as_deref().is_none_or(|q| queue == Some(q))
        && filter.test.is_none_or(|t| job["test"].as_bool() == Some(t))
        && filter.tag.as_deref().is_none_or(|t| {
            job["tags"]
                .as_array()
                .is_some_and(|tags| tags.iter().any(|x| x.as_str() == Some(t)))
        })
}

/// One job, on whichever node it is; with its `node` in cluster mode: its
/// shared record (so also a job no node alive holds, or none took yet).
pub async fn get_any(app: &Arc<AppState>, id: &str) -> Result<Option<Value>, StoreError> {
    if let Some(mut job) = app.work.shared_job(id).await? {
        add_queue(&app.registry.snapshot(), &mut job);
        return Ok(Some(job));
    }
    let (here_app, here_id) = (app.clone(), id.to_owned());
    let here = tokio::task::spawn_blocking(move || get(&here_app, &here_id))
        .await
        .map_err(|e| StoreError(e.to_string()))??;
    let Some((node, _)) = app.peers.cluster() else {
        return Ok(here);
    };
    if let Some(mut job) = here {
        ran_on(&mut job, &node);
        return Ok(Some(job));
    }
    for (node, mut job) in app.peers.gather("jobs.get", json!(id)).await? {
        if !job.is_null() {
            ran_on(&mut job, &node);
            return Ok(Some(job));
        }
    }
    Ok(None)
}

/// Marks a job with the node that holds it, and each of its attempts not
/// made on another node before with it too.
fn ran_on(job: &mut Value, node: &str) {
    job["node"] = node.into();
    if let Some(attempts) = job["attempts"].as_array_mut() {
        for a in attempts.iter_mut().filter(|a| a["node"].is_null()) {
            a["node"] = node.into();
        }
    }
}

/// Every node's queues with their jobs by state, summed.
pub async fn queues_all(app: &Arc<AppState>) -> Result<Value, StoreError> {
    let here_app = app.clone();
    let mut all = tokio::task::spawn_blocking(move || queues(&here_app))
        .await
        .map_err(|e| StoreError(e.to_string()))??;
    for (_, other) in app.peers.gather("jobs.queues", Value::Null).await? {
        let Some(theirs) = other["queues"].as_array() else {
            continue;
        };
        let Some(ours) = all["queues"].as_array_mut() else {
            continue;
        };
        for q in theirs {
            match ours.iter_mut().find(|o| o["name"] == q["name"]) {
                Some(o) => {
                    for (state, n) in q["jobs"].as_object().into_iter().flatten() {
                        let now = o["jobs"][state].as_i64().unwrap_or(0);
                        o["jobs"][state] = (now + n.as_i64().unwrap_or(0)).into();
                    }
                }
                None => ours.push(q.clone()),
            }
        }
    }
    Ok(all)
}

/// A callback for a waiting job, on whichever node holds it.
pub async fn callback_any(
    app: &Arc<AppState>,
    code: &str,
    id: &str,
    success: bool,
    reason: Option<String>,
    data: Value,
) -> Result<Callback, StoreError> {
    let here = callback_here(app, code, id, success, reason.clone(), data.clone()).await?;
    if !matches!(here, Callback::Unknown) || app.peers.cluster().is_none() {
        return Ok(here);
    }
    let body =
        json!({"channel": code, "id": id, "success": success, "reason": reason, "data": data});
    for (_, answer) in app.peers.gather("jobs.result", body).await? {
        if let Some(state) = answer["done"].as_str() {
            let state = if state == "succeeded" {
                "succeeded"
            } else {
                "failed"
            };
            return Ok(Callback::Done(state));
        }
        if let Some(state) = answer["not_waiting"].as_str() {
            return Ok(Callback::NotWaiting(state.to_owned()));
        }
    }
    Ok(Callback::Unknown)
}

/// `POST /admin/jobs/{id}/retry` on whichever node holds the job: the job
/// (with its `node` in cluster mode), or why not (`unknown`, its state, `schedule`).
pub async fn retry_any(app: &Arc<AppState>, id: &str) -> Result<Result<Value, String>, StoreError> {
    let here = retry_here(app, id).await?;
    let Some((node, _)) = app.peers.cluster() else {
        return Ok(here);
    };
    match here {
        Ok(mut job) => {
            job["node"] = node.into();
            return Ok(Ok(job));
        }
        Err(why) if why != "unknown" => return Ok(Err(why)),
        Err(_) => {}
    }
    for (node, answer) in app.peers.gather("jobs.retry", json!(id)).await? {
        if let Some(why) = answer["refused"].as_str() {
            return Ok(Err(why.to_owned()));
        }
        if !answer["job"].is_null() {
            let mut job = answer["job"].clone();
            job["node"] = node.into();
            return Ok(Ok(job));
        }
    }
    Ok(Err("unknown".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_record_fits_one_nats_message_leaving_out_the_oldest_trails() {
        let call = json!({"method": "POST", "response": {"body": "x".repeat(100 * 1024)}});
        let attempt = |n: i64| json!({"attempt": n, "calls": [call.clone()], "logs": []});
        let mut record = json!({"input": "y".repeat(20 * 1024),
            "attempts": (1..=10).map(attempt).collect::<Vec<_>>()});
        fit_shared(&mut record);
        assert!(record.to_string().len() <= SHARED_RECORD_BYTES);
        assert_eq!(record["input"], Value::Null);
        let attempts = record["attempts"].as_array().unwrap();
        assert_eq!(attempts[0]["trail_left_out"], true);
        assert!(attempts[0].get("calls").is_none());
        // The newest keep theirs.
        assert!(attempts[9]["calls"].is_array());
        assert!(attempts[9].get("trail_left_out").is_none());
        // A small record is left as it is.
        let mut small = json!({"input": {"order": 1}, "attempts": [attempt(1)]});
        let before = small.clone();
        fit_shared(&mut small);
        assert_eq!(small, before);
    }
}
