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
/// (requests, errors, p99), and the event and websocket totals, for the
/// console's Overview; in cluster mode of every node alive, summed.
#[utoipa::path(
    get, path = "/admin/overview", tag = "live",
    responses(
        (status = 200, description = "Requests, errors and p99 a minute, per channel; event and websocket totals (of every node alive)", body = Overview),
        (status = 400, description = "A query parameter (this listing takes none)", body = ErrorAnswer),
    )
)]
pub(super) async fn overview(
    State(app): State<Arc<AppState>>,
    uri: Uri,
) -> Result<Json<Value>, AppError> {
    listing_params(&uri, &[])?;
    let mut all = overview_here(&app);
    let others = app
        .peers
        .gather("overview", Value::Null)
        .await
        .map_err(|e| AppError::store("gathering the overview", &e))?;
    for (_, theirs) in others {
        merge_overview(&mut all, &theirs);
    }
    all["bucket_secs"] = 60.into();
    all["bytes_per_channel"] = crate::history::bytes_per_channel().into();
    Ok(Json(all))
}

/// The counters of the Overview's totals, by their metric.
const TOTALS: [(&str, &str); 4] = [
    ("events_published", "switchyard_events_published_total"),
    ("events_delivered", "switchyard_events_delivered_total"),
    ("events_queued", "switchyard_events_queued_total"),
    ("open_websockets", "switchyard_ws_connections"),
];

/// This node's part of the overview: each channel's last hour, and totals.
fn overview_here(app: &AppState) -> Value {
    let mut codes: Vec<String> = app.registry.snapshot().channels.keys().cloned().collect();
    codes.sort();
    let text = app.metrics.render();
    let mut totals = serde_json::Map::new();
    for (key, metric) in TOTALS {
        totals.insert(key.into(), metric_sum(&text, metric).into());
    }
    json!({ "channels": crate::history::last_hour(&codes), "totals": totals })
}

/// The sum of every series of counter or gauge `name` in Prometheus text
/// (whole numbers: counts).
fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, n| sum + n)
        .max(0.0) as u64
}

/// Adds another node's overview to `into`: requests and errors and totals
/// summed, each minute's p99 the highest of the nodes', the latest last request.
fn merge_overview(into: &mut Value, theirs: &Value) {
    if let Some(channels) = theirs["channels"].as_object() {
        for (code, c) in channels {
            let ours = &mut into["channels"][code];
            if ours.is_null() {
                *ours = c.clone();
                continue;
            }
            for (series, max) in [("requests", false), ("errors", false), ("p99_ms", true)] {
                let (Some(mine), Some(other)) = (ours[series].as_array_mut(), c[series].as_array())
                else {
                    continue;
                };
                for (m, o) in mine.iter_mut().zip(other) {
                    let (a, b) = (m.as_f64().unwrap_or(0.0), o.as_f64().unwrap_or(0.0));
                    *m = if max {
                        a.max(b).into()
                    } else {
                        (m.as_u64().unwrap_or(0) + o.as_u64().unwrap_or(0)).into()
                    };
                }
            }
            // RFC 3339 in UTC with milliseconds sorts as text.
            if c["last_request"].as_str() > ours["last_request"].as_str() {
                ours["last_request"] = c["last_request"].clone();
            }
        }
    }
    if let Some(totals) = theirs["totals"].as_object() {
        for (key, n) in totals {
            let now = into["totals"][key].as_u64().unwrap_or(0);
            into["totals"][key] = (now + n.as_u64().unwrap_or(0)).into();
        }
    }
}

/// The question other nodes ask for the cluster's overview.
pub(super) fn answer_questions(app: &Arc<AppState>) {
    let me = Arc::downgrade(app);
    app.peers.answer(
        "overview",
        Arc::new(move |_| {
            let app = me.upgrade();
            Box::pin(async move { app.map_or(Value::Null, |app| overview_here(&app)) })
        }),
    );
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
