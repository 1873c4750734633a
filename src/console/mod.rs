//! The web console (SPEC §16), served by the binary at `/console/`.
//!
//! The pages are plain HTML, CSS and JavaScript modules embedded in the
//! binary (`assets/`, no build step); every action they offer is an admin
//! API call, made with the session cookie this module hands out at sign-in.
//! The admin guard (`crate::admin::guard`) takes that cookie as a credential:
//! a change needs the session's CSRF token in `X-CSRF-Token`, and a viewer's
//! session may only read.
//!
//! - `session`: the sessions, their roles and CSRF tokens.

pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::AppError;
use crate::AppState;
pub use session::{Role, Session, Sessions};

#[derive(rust_embed::Embed)]
#[folder = "src/console/assets/"]
struct Assets;

/// Pages and scripts come from this server only; no inline script or style.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// The console's routes (outside the admin guard: signing in is how one gets past it).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(|| async { asset("index.html") }))
        .route(
            "/console/session",
            get(current).post(sign_in).delete(sign_out),
        )
        .route(
            "/console/{*file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

/// The headers every console answer carries.
fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(file: &str) -> Response {
    let Some(content) = Assets::get(file) else {
        return secure(StatusCode::NOT_FOUND.into_response());
    };
    let mime = match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    secure(([(header::CONTENT_TYPE, mime)], content.data.into_owned()).into_response())
}

/// The session of this request's cookie, if it is live.
pub fn session_of(app: &AppState, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = session::cookie_id(headers)?;
    let s = app.sessions.touch(&id)?;
    Some((id, s))
}

fn described(s: &Session) -> Value {
    json!({ "role": s.role.as_str(), "user": s.user, "csrf": s.csrf })
}

async fn current(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match session_of(&app, &headers) {
        Some((_, s)) => secure(Json(described(&s)).into_response()),
        None => secure(AppError::Unauthorized.into_response()),
    }
}

async fn sign_in(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let token = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let sender = crate::net::sender_addr(peer.ip(), &headers, &app.config.trusted_proxies);
    let identity = match app.auth.console_caller(sender, token.trim()) {
        Ok(identity) => identity,
        Err(e) => return secure(e.into_response()),
    };
    let role = if identity.roles.iter().any(|r| r == "admin") {
        Role::Admin
    } else {
        Role::Viewer
    };
    let (id, session) = app.sessions.open(role, identity.user_id);
    tracing::info!(user = %session.user, role = role.as_str(), "console sign-in");
    // A browser-session cookie: the server ends the session after IDLE unused
    // (an expiry here would end an active one). `Secure` is added once the
    // server serves TLS itself (SPEC §17, not built yet).
    let cookie = format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict",
        session::COOKIE
    );
    let mut response = Json(described(&session)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    secure(response)
}

async fn sign_out(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some((id, s)) = session_of(&app, &headers) {
        if let Err(e) = s.check_csrf(&headers) {
            return secure(e.into_response());
        }
        app.sessions.close(&id);
    }
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        session::COOKIE
    );
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    secure(response)
}
