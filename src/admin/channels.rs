//! `/admin/channels`: documents with secrets masked, stop and start, the
//! token shown and regenerated, and the queue switch to production.

use super::*;

/// A channel as the API shows it: secrets masked, plus its load `status`,
/// its `state` (running, stopped, disabled) and whether its `credential` is
/// still valid. None of the three is stored; POST and PUT ignore them.
pub(super) fn shown(app: &AppState, channel: &Channel, snapshot: &Snapshot) -> ChannelShown {
    let mut doc = channel.doc.clone();
    for field in SECRET_FIELDS {
        let secret = secret_mut(&mut doc, field);
        if secret.as_deref().is_some_and(masked) {
            *secret = Some(MASK.into());
        }
    }
    ChannelShown {
        doc,
        status: status_of(snapshot, FileKind::Channel, channel.code()),
        state: state_of(app, channel),
        credential: if channel.credential_expired() {
            Credential::Expired
        } else {
            Credential::Valid
        },
        next_run: app
            .jobs
            .next_run(channel.code())
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    }
}

pub(super) fn state_of(app: &AppState, channel: &Channel) -> ChannelState {
    if channel.doc.opts.disabled {
        ChannelState::Disabled
    } else if app.stopped.contains(channel.code()) {
        ChannelState::Stopped
    } else {
        ChannelState::Running
    }
}

/// A disabled channel is neither stopped nor started: `409 channel_disabled`.
pub(super) fn refuse_disabled(channel: &Channel) -> Result<(), AppError> {
    if channel.doc.opts.disabled {
        return Err(AppError::Conflict(
            "channel_disabled",
            format!(
                "channel {:?} is disabled (opts.disabled); enable it first",
                channel.code()
            ),
        ));
    }
    Ok(())
}

/// `POST /admin/channels/{code}/stop` and `/start`: an operator pauses a
/// channel (nothing runs, nothing queued is lost) or resumes it. Not stored.
#[utoipa::path(
    post, path = "/admin/channels/{code}/stop", tag = "channels",
    params(("code" = String, Path, description = "The channel code")),
    responses(
        (status = 200, description = "Stopped: inbound calls answer 503 channel_stopped, queued work waits", body = StateChange),
        (status = 404, description = "No such channel", body = ErrorAnswer),
        (status = 409, description = "The channel is disabled", body = ErrorAnswer),
    )
)]
pub(super) async fn stop_channel(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<Json<StateChange>, AppError> {
    set_stopped_everywhere(&app, code, true).await
}

#[utoipa::path(
    post, path = "/admin/channels/{code}/start", tag = "channels",
    params(("code" = String, Path, description = "The channel code")),
    responses(
        (status = 200, description = "Running again", body = StateChange),
        (status = 404, description = "No such channel", body = ErrorAnswer),
        (status = 409, description = "The channel is disabled", body = ErrorAnswer),
    )
)]
pub(super) async fn start_channel(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<Json<StateChange>, AppError> {
    set_stopped_everywhere(&app, code, false).await
}

/// [`set_stopped`] here and, in cluster mode, on every other node.
async fn set_stopped_everywhere(
    app: &Arc<AppState>,
    code: String,
    stop: bool,
) -> Result<Json<StateChange>, AppError> {
    let answer = set_stopped(app, code.clone(), stop)?;
    app.peers
        .gather("channel.stopped", json!({"code": code, "stop": stop}))
        .await
        .map_err(|e| AppError::store("stopping a channel on every node", &e))?;
    Ok(Json(answer))
}

/// The other nodes' `stop` and `start` reach this node, and a node that
/// joins later asks which channels are stopped.
pub fn answer_questions(app: &Arc<AppState>) {
    let me = Arc::downgrade(app);
    app.peers.answer(
        "channel.states",
        Arc::new(move |_| {
            let app = me.upgrade();
            Box::pin(async move {
                let Some(app) = app else { return Value::Null };
                let stopped: Vec<String> = app.stopped.iter().map(|c| c.clone()).collect();
                json!({ "stopped": stopped })
            })
        }),
    );
    let me = Arc::downgrade(app);
    app.peers.answer(
        "channel.stopped",
        Arc::new(move |body: Value| {
            let app = me.upgrade();
            Box::pin(async move {
                let (Some(app), Some(code)) = (app, body["code"].as_str()) else {
                    return Value::Null;
                };
                let stop = body["stop"].as_bool().unwrap_or(false);
                match set_stopped(&app, code.to_owned(), stop) {
                    Ok(change) => serde_json::to_value(change).unwrap_or_default(),
                    Err(_) => Value::Null,
                }
            })
        }),
    );
}

/// A node that starts while others run takes their stopped channels (a
/// stop or start is not stored: it lives as long as some node runs); the
/// first node of a cluster starts from each channel's `autostart`.
pub async fn join_cluster_states(app: &AppState) {
    let answers = match app.peers.gather("channel.states", Value::Null).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("cannot ask the other nodes which channels are stopped: {e}");
            return;
        }
    };
    let Some((node, answer)) = answers.into_iter().find(|(_, a)| a["stopped"].is_array()) else {
        return;
    };
    let theirs: std::collections::HashSet<&str> = answer["stopped"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let snapshot = app.registry.snapshot();
    for code in snapshot.channels.keys() {
        if theirs.contains(code.as_str()) {
            app.stopped.insert(code.clone());
        } else {
            app.stopped.remove(code);
        }
    }
    tracing::info!(from = %node, stopped = theirs.len(), "channel states taken from the cluster");
}

pub(super) fn set_stopped(
    app: &AppState,
    code: String,
    stop: bool,
) -> Result<StateChange, AppError> {
    let snapshot = app.registry.snapshot();
    let channel = snapshot.channel(&code).ok_or(AppError::UnknownChannel)?;
    refuse_disabled(channel)?;
    if stop {
        app.stopped.insert(code.clone());
        app.connections.close_channel(
            &code,
            crate::connections::CLOSE_GOING_AWAY,
            "channel stopped",
        );
    } else {
        app.stopped.remove(&code);
        crate::jobs::resume(app, &code);
    }
    let state = state_of(app, channel);
    tracing::info!(channel = %code, state = state.as_str(), "channel {}", if stop { "stopped" } else { "started" });
    Ok(StateChange { code, state })
}

#[utoipa::path(
    get, path = "/admin/channels", tag = "channels",
    responses(
        (status = 200, description = "Every channel, by code, secrets masked", body = ChannelList),
        (status = 400, description = "A query parameter (this listing takes none)", body = ErrorAnswer),
    )
)]
pub(super) async fn list_channels(
    State(app): State<Arc<AppState>>,
    uri: Uri,
) -> Result<Json<ChannelList>, AppError> {
    listing_params(&uri, &[])?;
    let snapshot = app.registry.snapshot();
    let mut codes: Vec<&String> = snapshot.channels.keys().collect();
    codes.sort();
    let channels = codes
        .into_iter()
        .map(|c| shown(&app, &snapshot.channels[c], &snapshot))
        .collect();
    Ok(Json(ChannelList { channels }))
}

#[utoipa::path(
    get, path = "/admin/channels/{code}", tag = "channels",
    params(("code" = String, Path, description = "The channel code")),
    responses(
        (status = 200, description = "The document, secrets masked", body = ChannelShown),
        (status = 404, description = "No such channel, or its file does not load", body = ErrorAnswer),
    )
)]
pub(super) async fn get_channel(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<Json<ChannelShown>, AppError> {
    let snapshot = app.registry.snapshot();
    match snapshot.channel(&code) {
        Some(ch) => Ok(Json(shown(&app, ch, &snapshot))),
        None => Err(match snapshot.error(FileKind::Channel, &code) {
            Some(e) => {
                AppError::Missing("unknown_channel", format!("does not load: {}", e.message))
            }
            None => AppError::UnknownChannel,
        }),
    }
}

/// Parses an API body into a document; `status` (as shown by GET) is ignored.
pub(super) fn parse_doc(bytes: &[u8]) -> Result<ChannelDoc, AppError> {
    let mut value: Value = serde_json::from_slice(bytes)
        .map_err(|e| AppError::InvalidChannel(format!("the body is not JSON: {e}")))?;
    let Some(object) = value.as_object_mut() else {
        return Err(AppError::InvalidChannel(
            "the body must be a JSON object".into(),
        ));
    };
    // What GET adds and the document does not hold.
    for shown_only in ["status", "state", "credential", "next_run"] {
        object.remove(shown_only);
    }
    ChannelDoc::parse(&value.to_string()).map_err(|e| AppError::InvalidChannel(e.to_string()))
}

pub(super) fn validate(
    app: &AppState,
    doc: ChannelDoc,
    snapshot: &Snapshot,
) -> Result<Channel, AppError> {
    let names = snapshot.scripts.keys().cloned().collect();
    let ctx = ValidationContext {
        solution_types: &app.config.solution_types,
        scripts: &names,
    };
    let channel = doc
        .validate(None, &ctx)
        .map_err(|e| AppError::InvalidChannel(e.to_string()))?;
    let taken = snapshot
        .channels
        .values()
        .find(|other| other.id == channel.id && other.code() != channel.code());
    if let Some(other) = taken {
        return Err(AppError::InvalidChannel(format!(
            "id: {} is already the id of channel {:?}",
            channel.id,
            other.code()
        )));
    }
    Ok(channel)
}

#[utoipa::path(
    post, path = "/admin/channels", tag = "channels",
    request_body(content = ChannelDoc, description = "A channel document (SPEC §2); `state`, `credential` and `status` are ignored"),
    responses(
        (status = 201, description = "Created and loaded", body = ChannelShown),
        (status = 400, description = "Not a valid document: the message names the field", body = ErrorAnswer),
        (status = 409, description = "The code exists", body = ErrorAnswer),
    )
)]
pub(super) async fn create_channel(
    State(app): State<Arc<AppState>>,
    crate::http::LimitedBody(bytes): crate::http::LimitedBody,
) -> Result<Response, AppError> {
    let mut doc = parse_doc(&bytes)?;
    for field in SECRET_FIELDS {
        if secret_mut(&mut doc, field).as_deref() == Some(MASK) {
            return Err(AppError::InvalidChannel(format!(
                "{field}: {MASK:?} is the mask shown by GET, not a secret"
            )));
        }
    }
    if doc.id.as_deref().is_none_or(str::is_empty) {
        doc.id = Some(uuid::Uuid::new_v4().to_string());
    }
    let stamp = now();
    doc.ext.insert("ct".into(), stamp.clone().into());
    doc.ext.insert("lwt".into(), stamp.into());

    let _serial = app.admin_lock.lock().await;
    let snapshot = app.registry.snapshot();
    if channel::valid_code(&doc.code) && channel_file(&app, &doc.code).exists() {
        return Err(AppError::Conflict(
            "channel_exists",
            format!("channel {:?} exists", doc.code),
        ));
    }
    let ch = validate(&app, doc, &snapshot)?;
    let code = ch.code().to_owned();
    crate::audit::code(&code);
    let (snapshot, _) = write_and_reload(
        &app,
        FileKind::Channel,
        &code,
        Some(doc_bytes(&ch.doc)?),
        false,
    )
    .await?;
    count_change("channel", "create");
    let shown = snapshot
        .channel(&code)
        .map(|c| shown(&app, c, &snapshot))
        .ok_or(AppError::Internal)?;
    Ok((StatusCode::CREATED, Json(shown)).into_response())
}

#[utoipa::path(
    put, path = "/admin/channels/{code}", tag = "channels",
    params(("code" = String, Path, description = "The channel code")),
    request_body(content = ChannelDoc, description = "The whole document; a secret sent as `\"***\"` keeps the stored one"),
    responses(
        (status = 200, description = "Replaced and loaded", body = ChannelShown),
        (status = 400, description = "Not a valid document, or its code is not the path's", body = ErrorAnswer),
        (status = 404, description = "No such channel", body = ErrorAnswer),
    )
)]
pub(super) async fn replace_channel(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
    crate::http::LimitedBody(bytes): crate::http::LimitedBody,
) -> Result<Json<ChannelShown>, AppError> {
    let mut doc = parse_doc(&bytes)?;
    if doc.code != code {
        return Err(AppError::InvalidChannel(format!(
            "code: {:?} does not match the path's {code:?}",
            doc.code
        )));
    }
    let _serial = app.admin_lock.lock().await;
    let snapshot = app.registry.snapshot();
    let stored = snapshot
        .channel(&code)
        .cloned()
        .ok_or(AppError::UnknownChannel)?;
    let mut stored_doc = stored.doc.clone();
    for field in SECRET_FIELDS {
        let slot = secret_mut(&mut doc, field);
        if slot.as_deref() == Some(MASK) {
            *slot = secret_mut(&mut stored_doc, field).take();
        }
    }
    doc.id = stored.doc.id.clone();
    let ct = stored
        .doc
        .ext
        .get("ct")
        .cloned()
        .unwrap_or_else(|| now().into());
    doc.ext.insert("ct".into(), ct);
    // Saving what is stored changes nothing (no new lwt, no version).
    let lwt = stored.doc.ext.get("lwt").cloned();
    doc.ext
        .insert("lwt".into(), lwt.clone().unwrap_or_else(|| now().into()));
    if serde_json::to_value(&doc).ok() != serde_json::to_value(&stored.doc).ok() || lwt.is_none() {
        doc.ext.insert("lwt".into(), now().into());
    }
    match (stored.doc.opts.disabled, doc.opts.disabled) {
        (true, false) => crate::audit::action("channel.activate"),
        (false, true) => crate::audit::action("channel.deactivate"),
        _ => {}
    }
    let ch = validate(&app, doc, &snapshot)?;
    let (snapshot, _) = write_and_reload(
        &app,
        FileKind::Channel,
        &code,
        Some(doc_bytes(&ch.doc)?),
        false,
    )
    .await?;
    count_change("channel", "update");
    snapshot
        .channel(&code)
        .map(|c| Json(shown(&app, c, &snapshot)))
        .ok_or(AppError::Internal)
}

/// `GET /admin/channels/{code}/token`: the channel's `token_local`, shown on
/// demand (to an admin: a console viewer sees the mask only).
#[utoipa::path(
    get, path = "/admin/channels/{code}/token", tag = "channels",
    params(("code" = String, Path, description = "The channel code")),
    responses(
        (status = 200, description = "The channel's token_local", body = TokenShown),
        (status = 403, description = "A console viewer does not see secrets", body = ErrorAnswer),
        (status = 404, description = "No such channel", body = ErrorAnswer),
    )
)]
pub(super) async fn reveal_token(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
    role: Option<axum::Extension<crate::console::Role>>,
) -> Result<Json<TokenShown>, AppError> {
    if role.is_some_and(|r| r.0 != crate::console::Role::Admin) {
        return Err(AppError::Forbidden(
            "read_only",
            "a viewer does not see secrets".into(),
        ));
    }
    let snapshot = app.registry.snapshot();
    let channel = snapshot.channel(&code).ok_or(AppError::UnknownChannel)?;
    Ok(Json(TokenShown {
        token_local: channel.doc.token_local.clone().unwrap_or_default(),
        token_valid_until: channel.doc.opts.token_valid_until.clone(),
        code,
    }))
}

/// `POST /admin/channels/{code}/token`: a new random `token_local`, written as
/// a PUT would; the old one stops working at once (the reload closes the
/// websockets it admitted). The new token is in this answer only.
#[utoipa::path(
    post, path = "/admin/channels/{code}/token", tag = "channels",
    params(("code" = String, Path, description = "The channel code")),
    responses(
        (status = 200, description = "A new token_local, shown this once; the old one stops working", body = TokenNew),
        (status = 404, description = "No such channel", body = ErrorAnswer),
    )
)]
pub(super) async fn regenerate_token(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<Json<TokenNew>, AppError> {
    let _serial = app.admin_lock.lock().await;
    let snapshot = app.registry.snapshot();
    let channel = snapshot.channel(&code).ok_or(AppError::UnknownChannel)?;
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut doc = channel.doc.clone();
    doc.token_local = Some(token.clone());
    doc.ext.insert("lwt".into(), now().into());
    let bytes = doc_bytes(&doc)?;
    write_and_reload(&app, FileKind::Channel, &code, Some(bytes), false).await?;
    count_change("channel", "update");
    tracing::info!(channel = %code, "token_local regenerated");
    Ok(Json(TokenNew {
        code,
        token_local: token,
    }))
}

#[utoipa::path(
    delete, path = "/admin/channels/{code}", tag = "channels",
    params(("code" = String, Path, description = "The channel code")),
    responses(
        (status = 204, description = "Removed; its websockets closed with 1001"),
        (status = 404, description = "No such channel", body = ErrorAnswer),
    )
)]
pub(super) async fn delete_channel(
    State(app): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<StatusCode, AppError> {
    let _serial = app.admin_lock.lock().await;
    let path = channel_file(&app, &code);
    if !channel::valid_code(&code) || !path.exists() {
        return Err(AppError::UnknownChannel);
    }
    write_and_reload(&app, FileKind::Channel, &code, None, false).await?;
    count_change("channel", "delete");
    Ok(StatusCode::NO_CONTENT)
}

pub(super) fn secret_mut<'a>(doc: &'a mut ChannelDoc, field: &str) -> &'a mut Option<String> {
    match field {
        "token_local" => &mut doc.token_local,
        "token_remote" => &mut doc.token_remote,
        "token_remote2" => &mut doc.token_remote2,
        _ => &mut doc.token_remote_test,
    }
}

/// `POST /admin/queues/{name}/production`: every channel of the queue in test
/// mode goes to production, its document written as a PUT would; answers the
/// codes switched.
#[utoipa::path(
    post, path = "/admin/queues/{name}/production", tag = "jobs",
    params(("name" = String, Path, description = "The job-processing queue")),
    responses(
        (status = 200, description = "The channels of the queue switched from test to production", body = Switched),
    )
)]
pub(super) async fn queue_to_production(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Switched>, AppError> {
    let _serial = app.admin_lock.lock().await;
    let snapshot = app.registry.snapshot();
    let mut switched = Vec::new();
    let mut writes = Vec::new();
    for channel in snapshot.channels.values() {
        if channel.queue() != name || !channel.test_mode() {
            continue;
        }
        let mut doc = channel.doc.clone();
        doc.opts.mode = Some("production".into());
        doc.ext.insert("lwt".into(), now().into());
        writes.push((channel.code().to_owned(), doc_bytes(&doc)?));
        switched.push(channel.code().to_owned());
    }
    switched.sort();
    if !writes.is_empty() {
        let (app2, by) = (app.clone(), crate::audit::actor());
        let versioned = tokio::task::spawn_blocking(move || {
            let mut versioned = Vec::new();
            for (code, bytes) in writes {
                let kind = FileKind::Channel;
                versioned.push(crate::versions::write(
                    &app2,
                    kind,
                    &code,
                    Some(bytes),
                    false,
                    by.clone(),
                )?);
            }
            crate::reload::reload_now(&app2);
            Ok::<_, AppError>(versioned)
        })
        .await
        .map_err(|_| AppError::Internal)??;
        for v in versioned {
            crate::audit::versions(v);
        }
        count_change("channel", "update");
    }
    Ok(Json(Switched {
        queue: name,
        switched,
    }))
}
