//! What is happening now: open connections, `POST /events`, each channel's
//! last hour (`/admin/overview`) and the activity stream (`/admin/stream`).

use super::*;

#[utoipa::path(
    get, path = "/admin/connections", tag = "live",
    responses(
        (status = 200, description = "Open websockets per channel, of every node", body = ConnectionList),
        (status = 400, description = "A query parameter (this listing takes none)", body = ErrorAnswer),
    )
)]
pub(super) async fn list_connections(
    State(app): State<Arc<AppState>>,
    uri: Uri,
) -> Result<Json<Value>, AppError> {
    listing_params(&uri, &[])?;
    let all = app
        .peers
        .connections(app.connections.describe())
        .await
        .map_err(|e| AppError::store("listing connections", &e))?;
    Ok(Json(json!({ "connections": all })))
}

/// `POST /events` (admin credentials): publishes `{"name", "data"}` as source `system`.
#[utoipa::path(
    post, path = "/events", tag = "live",
    security(("admin" = [])),
    request_body(content = EventIn),
    responses(
        (status = 202, description = "Published to the events channels", body = EventAccepted),
        (status = 400, description = "Not JSON, or not a valid event name", body = ErrorAnswer),
        (status = 401, description = "No admin credentials", body = ErrorAnswer),
    )
)]
pub async fn post_event(
    State(app): State<Arc<AppState>>,
    crate::http::LimitedBody(bytes): crate::http::LimitedBody,
) -> Result<Response, AppError> {
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| AppError::BadRequest(format!("the body is not JSON: {e}")))?;
    let name = body.get("name").and_then(Value::as_str).unwrap_or("");
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    let event = crate::events::Event::new("system", name, data).map_err(AppError::BadRequest)?;
    let id = event.id;
    app.events
        .publish(event)
        .await
        .map_err(|e| AppError::store("publishing", &e))?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id }))).into_response())
}

/// `GET /admin/overview`: each channel's last hour, a bucket a minute
/// (requests, errors, p99), for the console's charts.
#[utoipa::path(
    get, path = "/admin/overview", tag = "live",
    responses(
        (status = 200, description = "Requests, errors and p99 a minute, per channel", body = Overview),
        (status = 400, description = "A query parameter (this listing takes none)", body = ErrorAnswer),
    )
)]
pub(super) async fn overview(
    State(app): State<Arc<AppState>>,
    uri: Uri,
) -> Result<Json<Value>, AppError> {
    listing_params(&uri, &[])?;
    let mut codes: Vec<String> = app.registry.snapshot().channels.keys().cloned().collect();
    codes.sort();
    Ok(Json(json!({
        "bucket_secs": 60,
        "channels": crate::history::last_hour(&codes),
        "bytes_per_channel": crate::history::bytes_per_channel(),
    })))
}

/// `GET /admin/stream`: server-sent events of the server's activity
/// (`request`, `event`, `job`), one JSON object each, as they happen.
#[utoipa::path(
    get, path = "/admin/stream", tag = "live",
    responses(
        (status = 200, description = "Server-sent events, one JSON object each (`type`: request, event, job, lagged)", content_type = "text/event-stream"),
    )
)]
pub(super) async fn stream() -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let rx = crate::activity::subscribe();
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let data = match rx.recv().await {
            Ok(text) => text.to_string(),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                json!({"type": "lagged", "missed": n}).to_string()
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(Event::default().data(data)), rx))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
