//! The admin routes of script development (SPEC §15):
//! `GET|DELETE /admin/channels/{code}/requests`, `POST …/try`, `POST …/replay`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::dry::{self, DryHost, Input, PickError, Reads};
use super::recordings;
use crate::channel::Channel;
use crate::error::AppError;
use crate::registry::Snapshot;
use crate::script::Script;
use crate::AppState;

/// The routes, under the admin guard, registered from their descriptions.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_requests, clear_requests))
        .routes(routes!(try_run))
        .routes(routes!(replay))
}

fn channel_of(app: &AppState, code: &str) -> Result<Arc<Channel>, AppError> {
    app.registry
        .snapshot()
        .channel(code)
        .cloned()
        .ok_or(AppError::UnknownChannel)
}

fn store_error(e: crate::store::StoreError) -> AppError {
    AppError::store("recordings", &e)
}

#[utoipa::path(
    get, path = "/admin/channels/{code}/requests", tag = "develop",
    params(
        ("code" = String, Path, description = "The channel code"),
        ("limit" = Option<usize>, Query, description = "At most this many (1..1000, default 100)"),
    ),
    responses(
        (status = 200, description = "The channel's recordings, newest first", body = crate::api_doc::RequestList),
        (status = 400, description = "An unknown parameter or a bad limit", body = crate::api_doc::ErrorAnswer),
        (status = 404, description = "No such channel", body = crate::api_doc::ErrorAnswer),
    )
)]
async fn list_requests(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
    uri: Uri,
) -> Result<Json<Value>, AppError> {
    let params = crate::admin::listing_params(&uri, &["limit"])?;
    channel_of(&app, &code)?;
    let limit = match params.get("limit") {
        None => 100,
        Some(n) => n.parse::<usize>().map_err(|_| {
            AppError::BadRequest(format!("limit must be a whole number, not {n:?}"))
        })?,
    }
    .clamp(1, 1000);
    let list = recordings::list(&app, &code, limit)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "requests": list })))
}

#[utoipa::path(
    delete, path = "/admin/channels/{code}/requests", tag = "develop",
    params(("code" = String, Path, description = "The channel code")),
    responses(
        (status = 204, description = "The recordings are cleared"),
        (status = 404, description = "No such channel", body = crate::api_doc::ErrorAnswer),
    )
)]
async fn clear_requests(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<StatusCode, AppError> {
    channel_of(&app, &code)?;
    recordings::clear(&app, &code).await.map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT)
}

fn bad(message: impl Into<String>) -> AppError {
    AppError::BadRequest(message.into())
}

/// The input of a `/try` body: `request` or `record`, `kind`, `data`.
async fn input_of(app: &Arc<AppState>, code: &str, body: &Value) -> Result<Input, AppError> {
    if let Some(id) = body.get("record") {
        let id = id
            .as_str()
            .ok_or_else(|| bad("record is a request id (a string)"))?;
        let rec = recordings::find(app, code, id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                AppError::Missing(
                    "unknown_record",
                    format!("channel {code:?} has no recording {id:?}"),
                )
            })?;
        return Input::of_recording(&rec).map_err(bad);
    }
    match body.get("kind").and_then(Value::as_str).unwrap_or("http") {
        "ws" => Ok(Input::Ws {
            data: body.get("data").cloned().unwrap_or(Value::Null),
        }),
        "http" => {
            let req = body
                .get("request")
                .ok_or_else(|| bad("give \"request\": {method, path, query, headers, body}, or \"record\": request_id"))?;
            http_input(code, req)
        }
        other => Err(bad(format!("kind is \"http\" or \"ws\", not {other:?}"))),
    }
}

/// An HTTP input from `{method, path, query, headers, body}`.
pub fn http_input(code: &str, req: &Value) -> Result<Input, AppError> {
    let text = |k: &str| -> Result<String, AppError> {
        match req.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) if k == "body" => Ok(req[k].to_string()),
            Some(_) => Err(bad(format!("request.{k} is a string"))),
        }
    };
    let mut headers = serde_json::Map::new();
    if let Some(h) = req.get("headers") {
        let map = h
            .as_object()
            .ok_or_else(|| bad("request.headers is a map"))?;
        for (k, v) in map {
            let v = v
                .as_str()
                .ok_or_else(|| bad(format!("request.headers.{k} is a string")))?;
            headers.insert(k.to_ascii_lowercase(), v.into());
        }
    }
    let path = text("path")?;
    // The path after /channels/{code}/api, whichever form was given.
    let prefix = format!("/channels/{code}/api");
    let path = path
        .strip_prefix(&prefix)
        .map(str::to_owned)
        .unwrap_or(path);
    let method = text("method")?;
    Ok(Input::Http {
        method: if method.is_empty() {
            "GET".into()
        } else {
            method
        },
        path,
        query: text("query")?.trim_start_matches('?').to_owned(),
        headers,
        body: text("body")?,
    })
}

/// `stubs.webquery` of a `/try` body or a test case: a list, or none.
pub fn stubs_of(body: &Value) -> Result<Vec<Value>, AppError> {
    match body.get("stubs") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(s) => match s.get("webquery") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(list)) => Ok(list.clone()),
            Some(_) => Err(bad("stubs.webquery is a list of {status, headers, body}")),
        },
    }
}

/// A JSON body, whatever its content type says (`curl -d` sends a form type).
fn json_body(bytes: &[u8]) -> Result<Value, AppError> {
    let body: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    if !body.is_object() {
        return Err(bad("the body is a JSON object"));
    }
    Ok(body)
}

#[utoipa::path(
    post, path = "/admin/channels/{code}/try", tag = "develop",
    params(("code" = String, Path, description = "The channel code")),
    request_body(content = crate::api_doc::TryIn, description = "`request` or `record`; nothing the run does is done (SPEC §15)"),
    responses(
        (status = 200, description = "What the script answered, logged and would have done", body = crate::api_doc::TryResult),
        (status = 400, description = "Not a valid body, an unknown record, or no script for it", body = crate::api_doc::ErrorAnswer),
        (status = 404, description = "No such channel", body = crate::api_doc::ErrorAnswer),
        (status = 422, description = "The draft does not compile (`line`, `col`)", body = crate::api_doc::ErrorAnswer),
    )
)]
async fn try_run(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
    crate::http::LimitedBody(bytes): crate::http::LimitedBody,
) -> Result<Json<Value>, AppError> {
    let body = json_body(&bytes)?;
    let channel = channel_of(&app, &code)?;
    let input = input_of(&app, &code, &body).await?;
    let stubs = stubs_of(&body)?;
    let snapshot = app.registry.snapshot();
    let draft = match body.get("script") {
        None | Some(Value::Null) => None,
        Some(Value::String(source)) => Some(source.clone()),
        Some(_) => return Err(bad("script is Rhai source (a string)")),
    };
    let script = pick(&app, &channel, &snapshot, &input, draft).await?;
    let at = setting(&app, &channel, &snapshot);
    let host = Arc::new(DryHost::new(Reads::Live(app.clone()), stubs));
    // No secret's value in a dry run's answer, logs or effects (SPEC §20).
    let mut result = dry::run(&at, script, &input, host).await;
    crate::secrets::redact_json(&mut result);
    Ok(Json(result))
}

fn setting<'a>(
    app: &'a AppState,
    channel: &'a Arc<Channel>,
    snapshot: &'a Snapshot,
) -> dry::Setting<'a> {
    dry::Setting {
        engine: &app.engine,
        channel,
        scripts: &snapshot.scripts,
        identity: crate::auth::channel_identity(channel, &app.config),
    }
}

/// The script for `input`: the channel's, or `draft` (compiled on a blocking thread).
async fn pick(
    app: &AppState,
    channel: &Arc<Channel>,
    snapshot: &Arc<Snapshot>,
    input: &Input,
    draft: Option<String>,
) -> Result<Arc<Script>, AppError> {
    let (engine, channel, snapshot, input) = (
        app.engine.clone(),
        channel.clone(),
        snapshot.clone(),
        input.clone(),
    );
    let picked = tokio::task::spawn_blocking(move || {
        let at = dry::Setting {
            engine: &engine,
            channel: &channel,
            scripts: &snapshot.scripts,
            identity: Default::default(),
        };
        at.script(&input, draft.as_deref())
    })
    .await
    .map_err(|_| AppError::Internal)?;
    picked.map_err(|e| match e {
        PickError::NoScript(m) => bad(m),
        PickError::Draft(e) => AppError::Compile(e),
    })
}

#[utoipa::path(
    post, path = "/admin/channels/{code}/replay", tag = "develop",
    params(("code" = String, Path, description = "The channel code")),
    request_body(content = crate::api_doc::ReplayIn),
    responses(
        (status = 200, description = "The draft's answer against each recording's", body = crate::api_doc::ReplayResult),
        (status = 400, description = "Not a valid body, or no script for a recording", body = crate::api_doc::ErrorAnswer),
        (status = 404, description = "No such channel", body = crate::api_doc::ErrorAnswer),
        (status = 422, description = "The draft does not compile (`line`, `col`)", body = crate::api_doc::ErrorAnswer),
    )
)]
async fn replay(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
    crate::http::LimitedBody(bytes): crate::http::LimitedBody,
) -> Result<Json<Value>, AppError> {
    let body = json_body(&bytes)?;
    let channel = channel_of(&app, &code)?;
    let source = body
        .get("script")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("script is the draft's Rhai source (a string)"))?
        .to_owned();
    let limit = match body.get("limit") {
        None | Some(Value::Null) => 10,
        Some(n) => n.as_u64().ok_or_else(|| bad("limit is a whole number"))? as usize,
    }
    .clamp(1, 1000);
    let snapshot = app.registry.snapshot();
    let list = recordings::list(&app, &code, limit)
        .await
        .map_err(store_error)?;
    let mut drafts: Vec<(&'static str, Arc<Script>)> = Vec::new();
    let mut results = Vec::new();
    let mut changed = 0;
    let at = setting(&app, &channel, &snapshot);
    for rec in &list {
        let Ok(input) = Input::of_recording(rec) else {
            continue;
        };
        let kind = input.kind();
        let script = match drafts.iter().find(|(k, _)| *k == kind) {
            Some((_, s)) => s.clone(),
            None => {
                let s = pick(&app, &channel, &snapshot, &input, Some(source.clone())).await?;
                drafts.push((kind, s.clone()));
                s
            }
        };
        // webquery is not replayed against the network: no stubs, so a call fails as unstubbed.
        let host = Arc::new(DryHost::new(Reads::Live(app.clone()), Vec::new()));
        let outcome = dry::run(&at, script, &input, host).await;
        let before = rec["answer"].clone();
        let after = outcome["answer"].clone();
        let same = dry::same_answer(&before, &after);
        if !same {
            changed += 1;
        }
        // What was asked, so an answer that changes can be read beside its request.
        let request: serde_json::Map<String, Value> = ["kind", "method", "path", "query", "body"]
            .into_iter()
            .filter_map(|k| {
                rec.get(k)
                    .filter(|v| !v.is_null())
                    .map(|v| (k.to_owned(), v.clone()))
            })
            .collect();
        results.push(json!({
            "request_id": rec["id"],
            "request": request,
            "before": before,
            "after": after,
            "same": same,
        }));
    }
    let mut answer = json!({ "results": results, "changed": changed });
    crate::secrets::redact_json(&mut answer);
    Ok(Json(answer))
}
