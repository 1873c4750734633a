//! The durable inbox: one worker per channel runs its queued requests in order.

use super::*;

/// Runs a channel's stored requests one at a time, in arrival order.
pub(super) async fn inbox_worker(app: Arc<AppState>, code: String, wake: Arc<Notify>) {
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
        let (id, attempt, input, test) = match claimed {
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
        // In the mode the request arrived in (as send jobs).
        let channel = channel
            .expect("claimed only for a loaded channel")
            .in_mode(test);
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
        // Cluster: run only while this node still holds the request.
        if !shared::share(&app, &id).await {
            continue;
        }
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

pub(super) async fn claim_recv(
    app: &AppState,
    code: &str,
) -> Result<Option<(String, i64, String, bool)>, StoreError> {
    let channel = code.to_owned();
    app.store
        .write(move |c| {
            c.prepare_cached(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1, updated = ?2 \
                 WHERE seq = (SELECT seq FROM jobs WHERE channel = ?1 AND kind = 'recv' AND state = 'queued' ORDER BY seq LIMIT 1) \
                 RETURNING id, attempt, input, test",
            )?
            .query_row(params![channel, now_ms()], |r| {
                let test: i64 = r.get(3)?;
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, test != 0))
            })
            .optional()
        })
        .await
}
