//! The audit log (SPEC §19): one entry for every admin action, successful
//! or refused, written before the answer goes out.
//!
//! [`layer`] sits outside the admin guard: it names the action from the
//! method and the route, runs the request in a context the guard and the
//! handlers fill in (who the caller is, the code, the version numbers
//! before and after), and appends the entry with the status answered. An
//! entry holds no body, no header and no token: only who did what to which
//! code, from where, and how it ended.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{json, Value};

use crate::backend::Versioned;
use crate::telemetry::RequestId;
use crate::AppState;

/// What the guard and the handler tell the entry of their request.
#[derive(Default)]
struct Noted {
    by: Option<String>,
    code: Option<String>,
    action: Option<&'static str>,
    versions: Option<Versioned>,
}

/// The request an entry is about.
struct Context {
    address: String,
    request_id: String,
    noted: Mutex<Noted>,
}

tokio::task_local! {
    static CONTEXT: Arc<Context>;
}

fn note(f: impl FnOnce(&mut Noted)) {
    let _ = CONTEXT.try_with(|c| f(&mut c.noted.lock().unwrap_or_else(|p| p.into_inner())));
}

/// `by` of an authenticated caller: `admin` (the admin token) or `user:<id>`.
pub fn by_of(user_id: &str) -> String {
    if user_id == "admin" {
        "admin".into()
    } else {
        format!("user:{user_id}")
    }
}

/// The guard (or the sign-in) knows who the caller is.
pub fn identified(by: String) {
    note(|n| n.by = Some(by));
}

/// The handler names the code acted on (when the route does not).
pub fn code(code: &str) {
    note(|n| n.code = Some(code.to_owned()));
}

/// The handler names the action more precisely than the route does
/// (`channel.activate` for a PUT that enables a channel).
pub fn action(action: &'static str) {
    note(|n| n.action = Some(action));
}

/// The version numbers before and after a change.
pub fn versions(v: Versioned) {
    note(|n| {
        n.versions = Some(match n.versions {
            // Several documents changed by one action: the first before, the last after.
            Some(first) => Versioned {
                before: first.before,
                after: v.after,
            },
            None => v,
        })
    });
}

/// Who is making the change under way: `{"by", "address", "request_id"}`;
/// outside an admin request (a hand edit picked up by the reload): `file`.
pub fn actor() -> Value {
    CONTEXT
        .try_with(|c| {
            let n = c.noted.lock().unwrap_or_else(|p| p.into_inner());
            json!({
                "by": n.by.clone().unwrap_or_else(|| "admin".into()),
                "address": c.address,
                "request_id": c.request_id,
            })
        })
        .unwrap_or_else(|_| json!({"by": "file", "address": null, "request_id": null}))
}

/// The action of a request and the code its path names; `None`: not an
/// action (reads, and routes outside the admin API).
fn action_of(method: &Method, path: &str) -> Option<(&'static str, Option<String>)> {
    // Only the admin API and the console's session hold actions.
    if !(path.starts_with("/admin/") || path.starts_with("/console/")) {
        return None;
    }
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let code = |i: usize| segments.get(i).map(|s| (*s).to_owned());
    let action = match (method.as_str(), segments.as_slice()) {
        ("POST", ["console", "session"]) => "console.sign_in",
        ("DELETE", ["console", "session"]) => "console.sign_out",
        ("POST", ["admin", "channels"]) => "channel.create",
        ("PUT", ["admin", "channels", _]) => "channel.change",
        ("DELETE", ["admin", "channels", _]) => "channel.delete",
        ("POST", ["admin", "channels", _, "restore"]) => "channel.restore",
        ("POST", ["admin", "channels", _, "stop"]) => "channel.stop",
        ("POST", ["admin", "channels", _, "start"]) => "channel.start",
        ("GET", ["admin", "channels", _, "token"]) => "token.show",
        ("POST", ["admin", "channels", _, "token"]) => "token.regenerate",
        ("POST", ["admin", "channels", _, "try"]) => "try",
        ("POST", ["admin", "channels", _, "replay"]) => "replay",
        ("DELETE", ["admin", "channels", _, "requests"]) => "recordings.delete",
        ("PUT", ["admin", "scripts", _]) => "script.change",
        ("DELETE", ["admin", "scripts", _]) => "script.delete",
        ("POST", ["admin", "scripts", _, "restore"]) => "script.restore",
        ("POST", ["admin", "jobs", _, "retry"]) => "job.retry",
        ("POST", ["admin", "jobs", "retry"]) => "job.retry",
        ("POST", ["admin", "queues", _, "production"]) => "queue.production",
        ("POST", ["admin", "events"]) => "event.publish",
        ("PUT", ["admin", "secrets", _]) => "secret.set",
        ("DELETE", ["admin", "secrets", _]) => "secret.delete",
        _ => return None,
    };
    let code = match segments.as_slice() {
        ["admin", "channels" | "scripts" | "secrets", _, ..] => code(2),
        _ => None,
    };
    Some((action, code))
}

/// Writes the audit entry of every admin action (see the module docs).
pub async fn layer(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let Some((action, code)) = action_of(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let address = crate::net::sender_addr(peer.ip(), req.headers(), &app.config.trusted_proxies);
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.to_string())
        .unwrap_or_default();
    let context = Arc::new(Context {
        address: address.to_string(),
        request_id,
        noted: Mutex::default(),
    });
    let response = CONTEXT.scope(context.clone(), next.run(req)).await;
    let noted = std::mem::take(&mut *context.noted.lock().unwrap_or_else(|p| p.into_inner()));
    let status = response.status();
    let action = match noted.action.unwrap_or(action) {
        "console.sign_in" if !status.is_success() => "console.sign_in_failed",
        "script.change" if noted.versions.is_some_and(|v| v.before.is_none()) => "script.create",
        other => other,
    };
    let at = chrono::Utc::now();
    let mut entry = json!({
        "at": crate::channel::rfc3339(at.into()),
        "ms": at.timestamp_millis(),
        "action": action,
        "code": noted.code.or(code),
        "by": noted.by.unwrap_or_else(|| "anonymous".into()),
        "address": context.address,
        "request_id": context.request_id,
        "status": status.as_u16(),
    });
    if let Some(v) = noted.versions {
        entry["before"] = v.before.into();
        entry["after"] = v.after.into();
    }
    if let Err(e) = app.audit.append(entry).await {
        tracing::error!(action, "audit: the entry could not be written: {e}");
    }
    response
}

/// Prunes the entries older than `audit_retention` (housekeeping).
pub async fn prune(app: &AppState) {
    let before = chrono::Utc::now().timestamp_millis()
        - app.config.audit_retention.as_millis().min(i64::MAX as u128) as i64;
    match app.audit.prune(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "audit: pruned past audit_retention"),
        Err(e) => tracing::warn!("audit: pruning: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_codes_come_from_the_route() {
        let post = Method::POST;
        assert_eq!(
            action_of(&post, "/admin/channels/orders/restore"),
            Some(("channel.restore", Some("orders".into())))
        );
        assert_eq!(
            action_of(&post, "/admin/jobs/retry"),
            Some(("job.retry", None))
        );
        assert_eq!(action_of(&Method::GET, "/admin/channels/orders"), None);
        assert_eq!(
            action_of(&Method::GET, "/admin/channels/orders/token"),
            Some(("token.show", Some("orders".into())))
        );
        assert_eq!(action_of(&post, "/channels/orders/api"), None);
    }
}
