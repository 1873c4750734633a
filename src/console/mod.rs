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

/// The console's pages (outside the admin guard: signing in is how one gets past it).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(|| async { asset("index.html") }))
        .route(
            "/console/{*file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

/// The console's session routes, described in the API description.
pub fn session_routes() -> utoipa_axum::router::OpenApiRouter<Arc<AppState>> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(current, sign_in, sign_out))
}

/// A console session as `GET` and `POST /console/session` show it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SessionShown {
    /// `admin` or `viewer`.
    pub role: String,
    /// The signed-in user (`admin` for the admin token, else the JWT's `sub`).
    pub user: String,
    /// The token every change must carry in `X-CSRF-Token`.
    pub csrf: String,
}

/// `POST /console/session`'s body.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct SignIn {
    /// The admin token, or an IAM JWT with role `admin` or `viewer`.
    pub token: String,
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
        Some("txt") => "text/plain; charset=utf-8",
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

/// `GET /console/session`: the session of the request's cookie.
#[utoipa::path(
    get, path = "/console/session", tag = "console", security(()),
    responses(
        (status = 200, description = "Signed in", body = SessionShown),
        (status = 401, description = "No live session (`unauthorized`)", body = crate::api_doc::ErrorAnswer),
    )
)]
async fn current(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match session_of(&app, &headers) {
        Some((_, s)) => secure(Json(described(&s)).into_response()),
        None => secure(AppError::Unauthorized.into_response()),
    }
}

/// `POST /console/session`: signs in; the session cookie is set for
/// `/console` and `/admin` only.
#[utoipa::path(
    post, path = "/console/session", tag = "console", security(()),
    request_body(content = SignIn),
    responses(
        (status = 200, description = "Signed in: the session cookie is set (`Path=/console` and `Path=/admin`, HttpOnly, SameSite=Strict, Secure over TLS)", body = SessionShown),
        (status = 401, description = "Not the admin token nor a JWT with role admin or viewer (`unauthorized`)", body = crate::api_doc::ErrorAnswer),
        (status = 429, description = "Too many failed sign-ins from this sender (`throttled`, Retry-After)", body = crate::api_doc::ErrorAnswer),
    )
)]
async fn sign_in(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    crate::http::LimitedBody(body): crate::http::LimitedBody,
) -> Response {
    let token = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let sender = crate::net::sender_addr(peer.ip(), &headers, &app.config.trusted_proxies);
    let (identity, ends) = match app.auth.console_caller(sender, token.trim()) {
        Ok(caller) => caller,
        Err(e) => return secure(e.into_response()),
    };
    let role = if identity.roles.iter().any(|r| r == "admin") {
        Role::Admin
    } else {
        Role::Viewer
    };
    crate::audit::identified(crate::audit::by_of(&identity.user_id));
    let (id, session) = app.sessions.open(role, identity.user_id, ends);
    tracing::info!(user = %session.user, role = role.as_str(), "console sign-in");
    let mut response = Json(described(&session)).into_response();
    set_cookie(&app, &mut response, &id, "");
    secure(response)
}

/// Sets the session cookie `value` (with `attrs` after it) on the two paths
/// that take it, `/console` and `/admin`: a browser never sends it to a
/// channel's routes, and a channel's page can never read it. A
/// browser-session cookie: the server ends the session after IDLE unused or
/// at the end of its credential. `Secure` whenever the server serves TLS.
fn set_cookie(app: &AppState, response: &mut Response, value: &str, attrs: &str) {
    let secure = if app.config.tls_cert.is_empty() {
        ""
    } else {
        "; Secure"
    };
    for path in ["/console", "/admin"] {
        let cookie = format!(
            "{}={value}; Path={path}; HttpOnly; SameSite=Strict{secure}{attrs}",
            session::COOKIE
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

/// `DELETE /console/session`: signs out (with the session's CSRF token).
#[utoipa::path(
    delete, path = "/console/session", tag = "console", security(()),
    params(("X-CSRF-Token" = Option<String>, Header, description = "The session's CSRF token (needed while a session is live)")),
    responses(
        (status = 204, description = "Signed out; the cookie is cleared"),
        (status = 403, description = "A live session without its CSRF token (`csrf`)", body = crate::api_doc::ErrorAnswer),
    )
)]
async fn sign_out(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some((id, s)) = session_of(&app, &headers) {
        crate::audit::identified(crate::audit::by_of(&s.user));
        if let Err(e) = s.check_csrf(&headers) {
            return secure(e.into_response());
        }
        app.sessions.close(&id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(&app, &mut response, "", "; Max-Age=0");
    secure(response)
}
