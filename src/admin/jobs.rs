//! `/admin/jobs` and `/admin/queues`: the job-processing view and retries.

use super::*;

/// The filters of `GET /admin/jobs`.
pub(super) const JOB_FILTERS: &[&str] = &[
    "channel", "kind", "state", "queue", "test", "tag", "limit", "offset",
];

#[utoipa::path(
    get, path = "/admin/jobs", tag = "jobs",
    description = "Each filter given narrows the listing; an empty one (`?channel=`) is no filter.",
    params(
        ("channel" = Option<String>, Query, description = "Jobs of this channel"),
        ("kind" = Option<String>, Query, description = "send, recv or schedule"),
        ("state" = Option<String>, Query, description = "queued, running, waiting, succeeded, failed or timed_out"),
        ("queue" = Option<String>, Query, description = "Jobs of every channel of this queue"),
        ("test" = Option<String>, Query, description = "`true`: only jobs made in test mode; `false`: none of them; empty: all", pattern = "^(true|false)?$"),
        ("tag" = Option<String>, Query, description = "Jobs with this business key"),
        ("limit" = Option<String>, Query, description = "At most this many: a whole number, taken into 1..1000; empty or absent: 100", pattern = "^[0-9]*$"),
        ("offset" = Option<String>, Query, description = "Skip this many (a whole number; empty or absent: 0)", pattern = "^[0-9]*$"),
    ),
    responses(
        (status = 200, description = "Newest first", body = JobList),
        (status = 400, description = "An unknown filter or a bad value", body = ErrorAnswer),
    )
)]
pub(super) async fn list_jobs(
    State(app): State<Arc<AppState>>,
    uri: Uri,
) -> Result<Json<Value>, AppError> {
    let mut f = listing_params(&uri, JOB_FILTERS)?;
    let mut take = |k: &str| f.remove(k).filter(|s| !s.is_empty());
    let (channel, kind, state) = (take("channel"), take("kind"), take("state"));
    let (queue, tag) = (take("queue"), take("tag"));
    let test = match take("test").as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(AppError::BadRequest(format!(
                "test must be true or false, not {other:?}"
            )))
        }
    };
    let mut number = |k: &str| -> Result<Option<usize>, AppError> {
        match take(k) {
            None => Ok(None),
            Some(n) => n.parse::<usize>().map(Some).map_err(|_| {
                AppError::BadRequest(format!("{k} must be a whole number, not {n:?}"))
            }),
        }
    };
    let (limit, offset) = (number("limit")?, number("offset")?);
    if let Some(k) = &kind {
        if !crate::jobs::KINDS.contains(&k.as_str()) {
            return Err(AppError::BadRequest(format!(
                "kind must be one of {:?}",
                crate::jobs::KINDS
            )));
        }
    }
    if let Some(s) = &state {
        if !crate::jobs::STATES.contains(&s.as_str()) {
            return Err(AppError::BadRequest(format!(
                "state must be one of {:?}",
                crate::jobs::STATES
            )));
        }
    }
    let filter = crate::jobs::JobFilter {
        channel,
        kind,
        state,
        queue,
        test,
        tag,
        limit: limit.unwrap_or(100).clamp(1, 1000),
        offset: offset.unwrap_or(0),
    };
    let jobs = crate::jobs::list_all(&app, filter)
        .await
        .map_err(|e| AppError::store("jobs", &e))?;
    Ok(Json(json!({ "jobs": jobs })))
}

/// `GET /admin/queues`: the job-processing queues, their channels and jobs by state.
#[utoipa::path(
    get, path = "/admin/queues", tag = "jobs",
    responses(
        (status = 200, description = "Each queue with its channels and its jobs by state", body = QueueList),
        (status = 400, description = "A query parameter (this listing takes none)", body = ErrorAnswer),
    )
)]
pub(super) async fn list_queues(
    State(app): State<Arc<AppState>>,
    uri: Uri,
) -> Result<Json<Value>, AppError> {
    listing_params(&uri, &[])?;
    crate::jobs::queues_all(&app)
        .await
        .map(Json)
        .map_err(|e| AppError::store("queues", &e))
}

#[utoipa::path(
    get, path = "/admin/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job with its attempts", body = Job),
        (status = 404, description = "No such job", body = ErrorAnswer),
    )
)]
pub(super) async fn get_job(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let job = crate::jobs::get_any(&app, &id)
        .await
        .map_err(|e| AppError::store("jobs", &e))?;
    job.map(Json)
        .ok_or_else(|| AppError::Missing("unknown_job", "no such job".into()))
}

#[utoipa::path(
    post, path = "/admin/jobs/{id}/retry", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Queued again", body = Job),
        (status = 404, description = "No such job", body = ErrorAnswer),
        (status = 409, description = "Only failed or timed_out send and recv jobs are retried", body = ErrorAnswer),
    )
)]
pub(super) async fn retry_job(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    match crate::jobs::retry(&app, &id).await {
        Err(e) => Err(AppError::store("job retry", &e)),
        Ok(Ok(job)) => Ok(Json(job)),
        Ok(Err(why)) if why == "unknown" => {
            Err(AppError::Missing("unknown_job", format!("no job {id:?}")))
        }
        Ok(Err(why)) if why == "schedule" => Err(AppError::Conflict(
            "job_not_retryable",
            "schedule runs are not retried; the next tick runs the script again".into(),
        )),
        Ok(Err(state)) => Err(AppError::Conflict(
            "job_not_retryable",
            format!("only failed or timed_out jobs are retried; this one is {state}"),
        )),
    }
}

/// Most jobs one bulk retry takes up (the rest: run it again).
const BULK_MOST: usize = 10_000;

/// `POST /admin/jobs/retry`: which jobs a bulk retry takes.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRetryIn {
    /// Jobs of every channel of this queue.
    pub queue: Option<String>,
    /// Jobs of this channel.
    pub channel: Option<String>,
    /// `failed` or `timed_out` (default: both).
    pub state: Option<String>,
    /// Jobs whose last error holds this text (case-insensitive).
    pub error: Option<String>,
    /// Jobs created at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Jobs created before this time (RFC 3339).
    pub until: Option<String>,
    /// `true`: only count what would be retried ("N jobs will be retried").
    #[serde(default)]
    pub dry_run: bool,
}

#[utoipa::path(
    post, path = "/admin/jobs/retry", tag = "jobs",
    request_body(content = BulkRetryIn),
    responses(
        (status = 200, description = "`{matched, retried, ids}`: the failed or timed_out send and recv jobs that pass every filter, queued again (none with dry_run)", body = Object),
        (status = 400, description = "An unknown field, a bad state or time", body = ErrorAnswer),
    )
)]
pub(super) async fn retry_jobs(
    State(app): State<Arc<AppState>>,
    crate::http::LimitedBody(bytes): crate::http::LimitedBody,
) -> Result<Json<Value>, AppError> {
    // The filters are asked for: `{}` (every failed job) is said, never assumed.
    if bytes.is_empty() {
        return Err(AppError::BadRequest(
            "give the filters as a JSON object ({} takes every failed or timed_out job)".into(),
        ));
    }
    let ask: BulkRetryIn = serde_json::from_slice(&bytes)
        .map_err(|e| AppError::BadRequest(format!("the body: {e}")))?;
    let states: Vec<&str> = match ask.state.as_deref() {
        None | Some("") => vec!["failed", "timed_out"],
        Some(s @ ("failed" | "timed_out")) => vec![s],
        Some(other) => {
            return Err(AppError::BadRequest(format!(
                "state: only failed or timed_out jobs are retried, not {other:?}"
            )))
        }
    };
    let time = |name: &str,
                t: &Option<String>|
     -> Result<Option<chrono::DateTime<chrono::FixedOffset>>, AppError> {
        t.as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(t).map_err(|_| {
                    AppError::BadRequest(format!("{name}: {t:?} is not an RFC 3339 time"))
                })
            })
            .transpose()
    };
    let (since, until) = (time("since", &ask.since)?, time("until", &ask.until)?);
    let needle = ask.error.as_deref().map(str::to_lowercase);
    if let Some(code) = ask.channel.as_deref() {
        crate::audit::code(code);
    }
    let mut matched = Vec::new();
    for state in states {
        let mut offset = 0;
        loop {
            let filter = crate::jobs::JobFilter {
                channel: ask.channel.clone().filter(|c| !c.is_empty()),
                kind: None,
                state: Some(state.to_owned()),
                queue: ask.queue.clone().filter(|q| !q.is_empty()),
                test: None,
                tag: None,
                limit: 1000,
                offset,
            };
            let page = crate::jobs::list_all(&app, filter)
                .await
                .map_err(|e| AppError::store("jobs", &e))?;
            let n = page.len();
            for job in page {
                let created = job["created"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                let kind_ok = matches!(job["kind"].as_str(), Some("send" | "recv"));
                let error_ok = needle.as_ref().is_none_or(|n| {
                    job["last_error"]
                        .as_str()
                        .is_some_and(|e| e.to_lowercase().contains(n))
                });
                let time_ok = since.is_none_or(|s| created.is_some_and(|c| c >= s))
                    && until.is_none_or(|u| created.is_some_and(|c| c < u));
                if kind_ok && error_ok && time_ok {
                    matched.push(job["id"].as_str().unwrap_or_default().to_owned());
                }
            }
            offset += n;
            if n < 1000 || matched.len() >= BULK_MOST {
                break;
            }
        }
    }
    matched.truncate(BULK_MOST);
    if ask.dry_run {
        return Ok(Json(
            json!({ "matched": matched.len(), "retried": 0, "ids": matched }),
        ));
    }
    let mut retried = Vec::new();
    for id in &matched {
        // A job that moved on meanwhile (retried by someone else) is left as it is.
        if let Ok(Ok(_)) = crate::jobs::retry(&app, id).await {
            retried.push(id.clone());
        }
    }
    tracing::info!(
        matched = matched.len(),
        retried = retried.len(),
        "bulk retry"
    );
    Ok(Json(
        json!({ "matched": matched.len(), "retried": retried.len(), "ids": retried }),
    ))
}
