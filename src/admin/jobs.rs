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
