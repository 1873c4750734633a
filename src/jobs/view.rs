//! The job-processing view: a job with its attempts, listings by filter,
//! and the queues with their jobs by state.

use super::*;

/// A job as the API shows it.
pub(super) fn job_json(row: &Row<'_>) -> rusqlite::Result<Value> {
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

/// One job with its attempts, or `None`.
pub fn get(app: &AppState, id: &str) -> Result<Option<Value>, StoreError> {
    app.store.read(|c| {
        let job = c
            .query_row("SELECT * FROM jobs WHERE id = ?1", [id], |row| {
                let mut job = job_json(row)?;
                // The data it was made with, while kept (a succeeded job's is dropped).
                job["input"] = serde_json::from_str::<Value>(&row.get::<_, String>("input")?)
                    .map_or(Value::Null, |mut i| i["data"].take());
                Ok(job)
            })
            .optional()?;
        let Some(mut job) = job else { return Ok(None) };
        let mut stmt = c.prepare_cached(
            "SELECT n, started, duration_ms, outcome, error, node, trail FROM attempts WHERE job = ?1 ORDER BY n",
        )?;
        let attempts = stmt
            .query_map([id], |r| {
                let mut a = json!({
                    "attempt": r.get::<_, i64>(0)?,
                    "started": rfc3339_ms(r.get(1)?),
                    "duration_ms": r.get::<_, i64>(2)?,
                    "outcome": r.get::<_, String>(3)?,
                    "error": r.get::<_, Option<String>>(4)?,
                });
                // Made on another node, before the job came here (cluster).
                if let Some(node) = r.get::<_, Option<String>>(5)? {
                    a["node"] = node.into();
                }
                // Its outbound calls and log lines: `calls`, `logs` (and
                // `more_calls`, `more_logs` past the bounds).
                let trail = r.get::<_, Option<String>>(6)?;
                if let Some(Value::Object(trail)) =
                    trail.and_then(|t| serde_json::from_str::<Value>(&t).ok())
                {
                    a.as_object_mut().expect("an object").extend(trail);
                }
                Ok(a)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        job["attempts"] = Value::Array(attempts);
        add_queue(&app.registry.snapshot(), &mut job);
        Ok(Some(job))
    })
}

/// The filters of a job listing (`None`: any).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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
pub(super) fn add_queue(snapshot: &crate::registry::Snapshot, job: &mut Value) {
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
