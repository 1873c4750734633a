//! Schedules: the table of entries due next, and their runs (never
//! overlapping the previous run of the same entry).

use super::*;

/// A schedule entry: its channel's code and its index in `opts.schedule`.
pub(super) type EntryKey = (String, usize);

/// An entry that is due: its key, the time it was due and its running flag.
pub(super) type DueEntry = (EntryKey, DateTime<Utc>, Arc<AtomicBool>);

/// The schedule entries of every channel, with the next run of each in a
/// time-ordered heap: a tick costs nothing unless an entry is due, and the
/// table is rebuilt only when the channels change (a reload), so idle entries
/// cost nothing however many there are.
#[derive(Default)]
pub(super) struct ScheduleTable {
    /// The snapshot the table was built from.
    built_from: Option<Arc<crate::registry::Snapshot>>,
    entries: HashMap<EntryKey, Entry>,
    /// `every` entries tick at whole multiples of their period since the Unix
    /// epoch (cluster mode: every node computes the same ticks).
    aligned: bool,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(DateTime<Utc>, EntryKey)>>,
}

impl ScheduleTable {
    /// Rebuilds from `snapshot` when it is not the one the table was built from;
    /// an entry whose spec did not change keeps its next time.
    /// `true` when it was rebuilt.
    fn follow(&mut self, snapshot: &Arc<crate::registry::Snapshot>, now: DateTime<Utc>) -> bool {
        if self
            .built_from
            .as_ref()
            .is_some_and(|b| Arc::ptr_eq(b, snapshot))
        {
            return false;
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
                    _ => match next_time(e, now, self.aligned) {
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
        true
    }

    /// Each channel's earliest next run, into `out` (what the admin API shows).
    fn publish_next(&self, out: &DashMap<String, DateTime<Utc>>) {
        let mut next: HashMap<&str, DateTime<Utc>> = HashMap::new();
        for ((code, _), entry) in &self.entries {
            let at = next.entry(code.as_str()).or_insert(entry.next);
            *at = (*at).min(entry.next);
        }
        out.retain(|code, _| next.contains_key(code.as_str()));
        for (code, at) in next {
            out.insert(code.to_owned(), at);
        }
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
            entry.next = next_time(spec, at.max(now), self.aligned)
                .unwrap_or(now + chrono::Duration::days(365));
            self.heap.push(std::cmp::Reverse((entry.next, key.clone())));
            due.push((key, at, entry.running.clone()));
        }
        due
    }
}

/// Runs `opts.schedule` entries on time; a tick that finds the previous run still going is skipped.
pub(super) async fn scheduler(app: Arc<AppState>) {
    let mut tick = tokio::time::interval(SCHEDULER_TICK);
    let mut table = ScheduleTable {
        aligned: app.work.shared(),
        ..ScheduleTable::default()
    };
    loop {
        tick.tick().await;
        let _ticking = Running::start(&app);
        if app.jobs.stopping() {
            return;
        }
        let snapshot = app.registry.snapshot();
        let now = Utc::now();
        let rebuilt = table.follow(&snapshot, now);
        let due = table.due(now);
        if rebuilt || !due.is_empty() {
            table.publish_next(&app.jobs.next_runs);
        }
        for ((code, i), scheduled, running) in due {
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

/// [`next_after`], or with `aligned` the next whole multiple of an `every`
/// period since the Unix epoch.
fn next_time(
    entry: &crate::channel::ScheduleEntry,
    after: DateTime<Utc>,
    aligned: bool,
) -> Option<DateTime<Utc>> {
    match (&entry.every, aligned) {
        (Some(every), true) => {
            let period = humantime::parse_duration(every).ok()?.as_millis() as i64;
            if period <= 0 {
                return None;
            }
            let next = (after.timestamp_millis() / period + 1) * period;
            Utc.timestamp_millis_opt(next).single()
        }
        _ => next_after(entry, after),
    }
}

pub(super) fn next_after(
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

pub(super) async fn run_schedule(
    app: &Arc<AppState>,
    channel: &Arc<Channel>,
    script: &str,
    scheduled: DateTime<Utc>,
) {
    let id = uuid::Uuid::new_v4().to_string();
    let code = channel.code().to_owned();
    let at = scheduled.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // In cluster mode one node runs each tick: the first to claim it.
    let tick = format!("{code}/{script}/{}", scheduled.timestamp_millis());
    match app.work.claim_tick(tick).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(channel = %code, "schedule tick not run: {e}");
            return;
        }
    }
    // ... and never while the entry's previous run goes on, on any node.
    let entry = format!("{code}/{script}");
    match app.work.run_alone(entry.clone()).await {
        Ok(true) => {}
        Ok(false) => {
            metrics::counter!("switchyard_schedule_skipped_total", "channel" => code.clone())
                .increment(1);
            tracing::warn!(channel = %code, script = %script, "schedule tick skipped: the previous run is still going on another node");
            return;
        }
        Err(e) => {
            tracing::warn!(channel = %code, "schedule tick not run: {e}");
            return;
        }
    }
    run_tick(app, channel, script, at, id, code).await;
    app.work.ran(entry);
}

/// Runs one tick of a schedule entry as a job.
async fn run_tick(
    app: &Arc<AppState>,
    channel: &Arc<Channel>,
    script: &str,
    at: String,
    id: String,
    code: String,
) {
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
pub(super) async fn run_once(
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
    let outcome = run_script(app, channel, script, params, identity, job, kind, attempt).await;
    let duration_ms = started.elapsed().as_millis() as i64;
    let state = if outcome.error.is_some() {
        "failed"
    } else {
        "succeeded"
    };
    if !finish_run(app, &id, attempt, started_ms, duration_ms, state, &outcome).await {
        // Stopping on a full disk: the next start records the run as interrupted.
        return;
    }
    if let Some(e) = &outcome.error {
        tracing::warn!(target: "switchyard::jobs", channel = %code, job = %id, kind, "run failed: {e}");
    }
    metrics::histogram!("switchyard_job_attempt_duration_seconds", "channel" => code.clone(), "kind" => kind)
        .record(duration_ms as f64 / 1000.0);
    finished(app, &id, &code, kind, state).await;
}
