//! Making jobs: send jobs (with their tags) and inbox requests, each
//! committed before the caller hears of it.

use super::*;

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
    if app.work.shared() {
        let job = send_hand_off(app, code, data, tags)?;
        let id = job.id.clone();
        shared::hand_off(app, job).await?;
        count(code, "send", "queued");
        return Ok(id);
    }
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
    if app.work.shared() {
        let job = send_hand_off(app, code, data, tags)?;
        let id = job.id.clone();
        shared::hand_off_blocking(app, job)?;
        count(code, "send", "queued");
        return Ok(id);
    }
    let (id, insert) = send_insert(app, code, data, tags)?;
    app.store.write_blocking(insert)?;
    Ok(queued(app, code, id))
}

/// A send job for the cluster (see [`send_insert`] for the checks).
fn send_hand_off(
    app: &AppState,
    code: &str,
    data: &Value,
    tags: &[String],
) -> Result<crate::backend::HandOff, CreateError> {
    let (tags, max, test) = send_checks(app, code, tags)?;
    let id = uuid::Uuid::new_v4().to_string();
    // No secret's value in a stored job (SPEC §20).
    let input = crate::secrets::redacted(&json!({ "data": data }).to_string());
    Ok(shared::new_job(&id, code, "send", max, input, test, &tags))
}

/// The checks of a new send job: its tags without repeats, and the
/// channel's attempts and test mode.
fn send_checks(
    app: &AppState,
    code: &str,
    tags: &[String],
) -> Result<(Vec<String>, i64, bool), CreateError> {
    let tags = check_tags(tags).map_err(CreateError::BadTags)?;
    let snapshot = app.registry.snapshot();
    let channel = snapshot
        .channel(code)
        .ok_or_else(|| CreateError::UnknownChannel(code.to_owned()))?;
    if channel.script_for(ScriptField::Send).is_none() {
        return Err(CreateError::NoScript(code.to_owned()));
    }
    Ok((tags, max_attempts(channel), channel.test_mode()))
}

/// A committed send job: counted, and the dispatcher woken.
pub(super) fn queued(app: &AppState, code: &str, id: String) -> String {
    count(code, "send", "queued");
    app.jobs.send_wake.notify_one();
    id
}

pub(super) type Insert = Box<dyn FnOnce(&rusqlite::Connection) -> rusqlite::Result<()> + Send>;

pub(super) fn send_insert(
    app: &AppState,
    code: &str,
    data: &Value,
    tags: &[String],
) -> Result<(String, Insert), CreateError> {
    let (tags, max, test) = send_checks(app, code, tags)?;
    let id = uuid::Uuid::new_v4().to_string();
    let (job, channel_code) = (id.clone(), code.to_owned());
    // No secret's value in a stored job (SPEC §20).
    let input = crate::secrets::redacted(&json!({ "data": data }).to_string());
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
pub(super) fn check_tags(tags: &[String]) -> Result<Vec<String>, String> {
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

pub(super) fn tags_json(tags: &[String]) -> Option<String> {
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
    // The request as the script will see it, without any secret's value
    // (a token_local that names a secret is in its headers).
    let input = crate::secrets::redacted(
        &json!({ "params": params, "user": identity.user_id, "roles": identity.roles }).to_string(),
    );
    let (id, channel) = (request_id.to_owned(), code.to_owned());
    let max = app.config.inbox_max as i64;
    let test = app
        .registry
        .snapshot()
        .channel(code)
        .is_some_and(|c| c.test_mode());
    if app.work.shared() {
        let job = shared::new_job(request_id, code, "recv", 1, input, test, &[]);
        if !shared::hand_off(app, job).await? {
            return Ok(Inbox::Full);
        }
        count(code, "recv", "queued");
        return Ok(Inbox::Stored);
    }
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

pub(super) fn wake_inbox(app: &AppState, code: &str) {
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
