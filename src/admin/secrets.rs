//! `/admin/secrets` (SPEC §20): set, list and delete secrets. Values go in
//! once and never come out: answers, logs and the audit log hold names only.

use super::*;
use crate::api_doc::{SecretIn, SecretList, SecretShown};

/// Reads every record again, opens them, puts them in force and reloads the
/// registry (the channels naming a secret are resolved again).
pub async fn refresh(app: &Arc<AppState>) -> Result<(), crate::store::StoreError> {
    let records = app.secrets.all().await?;
    crate::secrets::install(crate::secrets::open_all(&app.secrets_key, &records));
    let app = app.clone();
    let _ = tokio::task::spawn_blocking(move || crate::reload::reload_now(&app)).await;
    Ok(())
}

/// In cluster mode: takes the other nodes' changes as they come.
pub fn follow(app: &Arc<AppState>) {
    let me = Arc::downgrade(app);
    app.secrets.watch(Arc::new(move || {
        let Some(app) = me.upgrade() else { return };
        tokio::spawn(async move {
            if let Err(e) = refresh(&app).await {
                tracing::warn!("secrets: taking another node's change: {e}");
            }
        });
    }));
}

fn shown(name: &str, secret: &crate::secrets::Secret) -> SecretShown {
    SecretShown {
        name: name.to_owned(),
        channels: secret.channels.clone(),
        updated: secret.updated.clone(),
        version: secret.version,
    }
}

fn check_name(name: &str) -> Result<(), AppError> {
    if crate::secrets::valid_name(name) {
        return Ok(());
    }
    Err(AppError::Invalid(
        "bad_secret_name",
        "a secret name is 1 to 64 of a-z 0-9 _ . -".into(),
    ))
}

#[utoipa::path(
    get, path = "/admin/secrets", tag = "secrets",
    responses(
        (status = 200, description = "Every secret by name, without its value", body = SecretList),
    )
)]
pub(super) async fn list_secrets(State(_app): State<Arc<AppState>>) -> Json<SecretList> {
    let mut secrets: Vec<SecretShown> = crate::secrets::table()
        .map(|t| t.all().iter().map(|(n, s)| shown(n, s)).collect())
        .unwrap_or_default();
    secrets.sort_by(|a, b| a.name.cmp(&b.name));
    Json(SecretList { secrets })
}

#[utoipa::path(
    put, path = "/admin/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "The secret's name: 1 to 64 of a-z 0-9 _ . -")),
    request_body(content = SecretIn),
    responses(
        (status = 200, description = "Stored sealed; every channel naming it is resolved again at once", body = SecretShown),
        (status = 400, description = "A bad name or body (the message never holds the value)", body = ErrorAnswer),
    )
)]
pub(super) async fn put_secret(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    crate::http::LimitedBody(bytes): crate::http::LimitedBody,
) -> Result<Json<SecretShown>, AppError> {
    check_name(&name)?;
    // serde's message could quote the value: say what is wrong in our words.
    let body: SecretIn = serde_json::from_slice(&bytes).map_err(|e| {
        let at = if e.is_syntax() || e.is_eof() {
            "not JSON"
        } else {
            "not {\"value\": \"…\", \"channels\": [\"code\" | \"*\", …]}"
        };
        AppError::BadRequest(format!("the body is {at}"))
    })?;
    if let Some(bad) = body
        .channels
        .iter()
        .find(|c| *c != "*" && !channel::valid_code(c))
    {
        return Err(AppError::BadRequest(format!(
            "channels: {bad:?} is not a channel code nor \"*\""
        )));
    }
    let _serial = app.admin_lock.lock().await;
    let version = crate::secrets::table()
        .and_then(|t| t.all().get(&name).map(|s| s.version))
        .unwrap_or(0)
        + 1;
    let mut record = app.secrets_key.seal(&name, &body.value);
    record["name"] = name.clone().into();
    record["channels"] = json!(body.channels);
    record["updated"] = now().into();
    record["version"] = version.into();
    app.secrets
        .put(record)
        .await
        .map_err(|e| AppError::store("storing a secret", &e))?;
    refresh(&app)
        .await
        .map_err(|e| AppError::store("reading the secrets", &e))?;
    count_change("secret", "set");
    tracing::info!(secret = %name, version, "secret set");
    let table = crate::secrets::table().ok_or(AppError::Internal)?;
    let secret = table.all().get(&name).ok_or(AppError::Internal)?;
    Ok(Json(shown(&name, secret)))
}

#[utoipa::path(
    delete, path = "/admin/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "The secret's name")),
    responses(
        (status = 204, description = "Removed; channels naming it no longer load, secret() of it is a script error"),
        (status = 404, description = "No such secret", body = ErrorAnswer),
    )
)]
pub(super) async fn delete_secret(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    let _serial = app.admin_lock.lock().await;
    let gone = app
        .secrets
        .delete(&name)
        .await
        .map_err(|e| AppError::store("deleting a secret", &e))?;
    if !gone {
        return Err(AppError::Missing(
            "unknown_secret",
            format!("no secret {name:?}"),
        ));
    }
    refresh(&app)
        .await
        .map_err(|e| AppError::store("reading the secrets", &e))?;
    count_change("secret", "delete");
    tracing::info!(secret = %name, "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}
