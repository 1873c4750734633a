//! Running send jobs: the dispatcher, claims, retries with backoff, waiting
//! for a callback, and a manual retry.

use super::*;

/// Runs due send jobs and times out waiting ones.
pub(super) async fn send_dispatcher(app: Arc<AppState>) {
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
                for (id, channel, attempt, input, test) in jobs {
                    let permit = permits.clone().acquire_owned().await.expect("never closed");
                    let running = Running::start(&app);
                    let app = app.clone();
                    tokio::spawn(async move {
                        run_send(&app, id, channel, attempt, input, test).await;
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

pub(super) async fn claim_sends(
    app: &AppState,
    limit: usize,
    stopped: String,
) -> Result<Vec<(String, String, i64, String, bool)>, StoreError> {
    app.store
        .write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1, updated = ?1 \
                 WHERE seq IN (SELECT seq FROM jobs WHERE kind = 'send' AND state = 'queued' \
                               AND next_attempt_at <= ?1 \
                               AND channel NOT IN (SELECT value FROM json_each(?3)) \
                               ORDER BY next_attempt_at LIMIT ?2) \
                 RETURNING id, channel, attempt, input, test",
            )?;
            let rows = stmt
                .query_map(params![now_ms(), limit as i64, stopped], |r| {
                    let test: i64 = r.get(4)?;
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, test != 0))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
}

pub(super) async fn time_out_waiting(app: &AppState) -> Result<(), StoreError> {
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

pub(super) async fn run_send(
    app: &Arc<AppState>,
    id: String,
    code: String,
    attempt: i64,
    input: String,
    test: bool,
) {
    let _live = Live::start(app, &id);
    // Cluster: the attempt is this node's to make only while it still holds
    // the job (its fencing token is current).
    if !shared::share(app, &id).await {
        return;
    }
    let started = Instant::now();
    let started_ms = now_ms();
    let snapshot = app.registry.snapshot();
    // In the mode the job was made in: a switch to production does not send
    // a test job's next attempt to the production URL with its token.
    let channel = snapshot.channel(&code).map(|c| c.in_mode(test));
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
            trail: None,
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
                "send",
                attempt,
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
    let trail = outcome.trail.clone();
    let written = write_outcome(app, &id, move |c| {
        c.execute(
            "UPDATE jobs SET state = ?2, updated = ?3, next_attempt_at = ?4, last_error = coalesce(?5, last_error), \
             result = coalesce(?6, result), max_attempts = ?7, input = CASE ?2 WHEN 'succeeded' THEN '' ELSE input END \
             WHERE id = ?1",
            params![job_id, state, now, next_at, err, result, max],
        )?;
        let run = Attempt { n: attempt, started_ms, duration_ms, outcome: outcome_label };
        record_attempt(c, &job_id, run, err.clone(), trail.clone())
    })
    .await;
    if written.is_none() {
        // Stopping on a full disk: the next start takes the job up again.
        return;
    }
    metrics::histogram!("switchyard_job_attempt_duration_seconds", "channel" => code.clone(), "kind" => "send")
        .record(duration_ms as f64 / 1000.0);
    if let Some(e) = &outcome.error {
        tracing::warn!(target: "switchyard::jobs", channel = %code, job = %id, attempt, "send attempt failed: {e}");
    }
    match state {
        "queued" => {
            count(&code, "send", "queued");
            shared::share(app, &id).await;
            app.jobs.send_wake.notify_one();
        }
        "waiting" => {
            count(&code, "send", "waiting");
            shared::share(app, &id).await;
        }
        _ => finished(app, &id, &code, "send", state).await,
    }
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

/// Applies an external system's answer to a waiting job of this node's store.
pub(super) async fn callback_here(
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

/// `POST /admin/jobs/{id}/retry` on this node's store: a failed or
/// timed-out job runs again now (here; in cluster mode it stays this node's).
pub(super) async fn retry_here(
    app: &AppState,
    id: &str,
) -> Result<Result<Value, String>, StoreError> {
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
            shared::share(app, id).await;
            if kind == "recv" {
                wake_inbox(app, &channel);
            } else {
                app.jobs.send_wake.notify_one();
            }
            Ok(Ok(get(app, id)?.unwrap_or(Value::Null)))
        }
    }
}
