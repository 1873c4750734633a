//! The server state, the router, start-up and graceful shutdown (the
//! connections themselves are [`crate::listener`]'s).

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::{Json, Router};
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{Authenticator, Iam, Throttle};
use crate::backend::embedded::audit::StoreAudit;
use crate::backend::embedded::events::LocalBus;
use crate::backend::embedded::files::FolderFiles;
use crate::backend::embedded::kv::EmbeddedKv;
use crate::backend::embedded::recordings::StoreRecordings;
use crate::backend::embedded::versions::StoreVersions;
use crate::backend::embedded::Alone;
use crate::backend::Backends;
use crate::config::Config;
use crate::connections::{ConnectionTable, CLOSE_GOING_AWAY};
use crate::error::AppError;
use crate::registry::{self, Registry};
use crate::script::ScriptEngine;
use crate::store::Store;
use crate::{admin, files, http, reload, telemetry, ws, AppState};

/// Builds the shared state of an embedded node: loads channels and scripts,
/// logging every problem.
pub fn state(config: Config) -> Result<Arc<AppState>, String> {
    state_with(config, None)
}

/// Builds the shared state, on the cluster `cluster` joined already, or embedded.
pub fn state_with(
    config: Config,
    cluster: Option<crate::backend::nats::Prepared>,
) -> Result<Arc<AppState>, String> {
    let config = Arc::new(config);
    let store = Arc::new(Store::open(&config.data).map_err(|e| e.to_string())?);
    let iam = Iam::from_config(&config)?;
    let engine = ScriptEngine::new();
    // The secrets are open before the first load: channels resolve them.
    let (secrets_key, key_from) = crate::secrets::load_key(&config)?;
    let records = match &cluster {
        Some(prepared) => prepared.secret_records.clone(),
        None => crate::backend::embedded::secrets::all(&store).map_err(|e| e.to_string())?,
    };
    crate::secrets::install(crate::secrets::open_all(&secrets_key, &records));
    tracing::info!(secrets = records.len(), key = %key_from, "secrets opened");
    let started = std::time::Instant::now();
    let loaded = registry::load(&config, &engine, None);
    for p in &loaded.problems {
        tracing::warn!("skipped: {p}");
    }
    let snapshot = loaded.snapshot;
    let (errors, warnings) = crate::authoring::review(&snapshot, &engine);
    for p in errors.iter().chain(&warnings) {
        tracing::warn!("{p}");
    }
    // A channel that does not start by itself is stopped when the server starts.
    let stopped: dashmap::DashSet<String> = snapshot
        .channels
        .values()
        .filter(|c| !c.autostart())
        .map(|c| c.code().to_owned())
        .collect();
    tracing::info!(
        channels = snapshot.channels.len(),
        scripts = snapshot.scripts.len(),
        problems = loaded.problems.len(),
        load_ms = started.elapsed().as_millis() as u64,
        "loaded"
    );
    Ok(Arc::new_cyclic(|me| {
        let Backends {
            events,
            kv,
            peers,
            work,
            files,
            recordings,
            versions,
            audit,
            secrets,
        } = match cluster {
            Some(prepared) => prepared.backends(me.clone(), &config),
            None => Backends {
                events: Box::new(LocalBus::new(me.clone())),
                kv: Box::new(EmbeddedKv {
                    store: store.clone(),
                    max_keys: config.kv_max_keys,
                }),
                peers: Box::new(Alone),
                work: Box::new(Alone),
                files: Box::new(FolderFiles {
                    root: config.data.join("files"),
                    max_count: config.files_max_count,
                    max_bytes: config.files_max_bytes,
                }),
                recordings: Box::new(StoreRecordings {
                    store: store.clone(),
                }),
                versions: Box::new(StoreVersions {
                    store: store.clone(),
                }),
                audit: Box::new(StoreAudit {
                    store: store.clone(),
                }),
                secrets: Box::new(crate::backend::embedded::secrets::StoreSecrets {
                    store: store.clone(),
                }),
            },
        };
        AppState {
            auth: Authenticator {
                config: config.clone(),
                iam,
                throttle: Throttle::default(),
            },
            config,
            registry: Registry::new(snapshot),
            engine,
            metrics: telemetry::metrics_handle(),
            admin_lock: tokio::sync::Mutex::new(()),
            connections: ConnectionTable::default(),
            kv,
            store,
            events,
            peers,
            work,
            files,
            recordings,
            versions,
            audit,
            secrets,
            secrets_key,
            seen: crate::versions::Seen::default(),
            jobs: crate::jobs::Jobs::default(),
            http: crate::outbound::client(),
            me: me.clone(),
            listening: std::sync::OnceLock::new(),
            recorder: crate::dev::recordings::Recorder::default(),
            sessions: crate::console::Sessions::default(),
            stopped,
        }
    }))
}

/// The router with every route of the contract.
pub fn app(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    if telemetry::fault_injection() {
        router = router.route("/admin/fault/panic", get(fault_panic));
    }
    // Every route but the channel API's (any method, any rest of the path:
    // described by `http::ChannelApi`) is registered from its description.
    let (described, doc) = OpenApiRouter::with_openapi(http::ChannelApi::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(ws::upgrade))
        .routes(routes!(http::send))
        .routes(routes!(http::job_result))
        .routes(routes!(files::handle))
        .routes(routes!(crate::api_doc::openapi))
        .merge(admin::routes())
        .merge(crate::dev::api::routes())
        .merge(crate::console::session_routes())
        .split_for_parts();
    crate::api_doc::publish(doc);
    router
        .route("/channels/{code}/api", any(http::api))
        .route("/channels/{code}/api/", any(http::api))
        .route("/channels/{code}/api/{*path}", any(http::api))
        .merge(described)
        .merge(crate::console::routes())
        .fallback(|| async { AppError::NotFound })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http::framing_guard,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            telemetry::panicked,
        ))
        .layer(axum::middleware::from_fn(telemetry::request_layer))
        .with_state(state)
}

/// `GET /healthz`: `200 {"status":"ok"}`, or `503 {"status":"degraded","store":"full"}`
/// while store writes fail for lack of space (reads are still served).
#[utoipa::path(
    get, path = "/healthz", tag = "server", security(()),
    responses(
        (status = 200, description = "Serving; in cluster mode with the node and `cluster: connected`", body = crate::api_doc::Health),
        (status = 503, description = "Degraded: the store is full, or NATS is unreachable", body = crate::api_doc::Health),
    )
)]
async fn healthz(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
) -> axum::response::Response {
    let cluster = app.peers.cluster();
    if let Some((node, false)) = &cluster {
        let body =
            serde_json::json!({"status": "degraded", "node": node, "cluster": "disconnected"});
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    if app.store.is_full() {
        let body = serde_json::json!({"status": "degraded", "store": "full"});
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    match cluster {
        Some((node, _)) => {
            Json(serde_json::json!({"status": "ok", "node": node, "cluster": "connected"}))
                .into_response()
        }
        None => Json(serde_json::json!({"status": "ok"})).into_response(),
    }
}

/// `GET /admin/fault/panic`, routed only with fault injection on (tests).
async fn fault_panic() -> AppError {
    panic!("injected fault: handler panic")
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(
    get, path = "/metrics", tag = "server", security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")),
)]
async fn metrics(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
) -> impl IntoResponse {
    // Seconds until each channel's token_local expires (negative: expired), so
    // operators can alert ahead; set when the page is asked for.
    metrics::counter!("switchyard_log_lines_dropped_total")
        .absolute(telemetry::log_lines_dropped());
    let now = chrono::Utc::now();
    for channel in app.registry.snapshot().channels.values() {
        if let Some(until) = channel.valid_until {
            let left = (until - now).num_milliseconds() as f64 / 1000.0;
            metrics::gauge!("switchyard_credential_expiry_seconds", "channel" => channel.code().to_owned())
                .set(left);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

/// Serves until SIGINT or SIGTERM, then lets in-flight requests finish.
pub async fn serve(config: Config) -> Result<(), String> {
    // Every socket is a file: take all the open files the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    for dir in [&config.data, &config.channels, &config.scripts] {
        std::fs::create_dir_all(dir).map_err(|e| format!("folder {}: {e}", dir.display()))?;
    }
    let listen = config.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Traces over OTLP (the exporter's HTTP client is made off the runtime).
    if !config.otlp_endpoint.is_empty() {
        let endpoint = config.otlp_endpoint.clone();
        std::thread::spawn(move || crate::trace::export_to(&endpoint))
            .join()
            .map_err(|_| "otlp_endpoint: the exporter could not be made".to_owned())??;
    }
    // HTTPS: a certificate that does not load stops start-up.
    let tls = if config.tls_cert.is_empty() {
        None
    } else {
        let tls = crate::tls::Tls::new(
            config.tls_cert.clone().into(),
            config.tls_key.clone().into(),
        )?;
        Some(Arc::new(tls))
    };
    // In cluster mode the folders come into step with the cluster before the first load.
    let cluster = if config.cluster.nats_url.is_empty() {
        None
    } else {
        Some(crate::backend::nats::Prepared::connect(&config, addr).await?)
    };
    let state = state_with(config, cluster)?;
    let _ = state.listening.set(addr);
    state.peers.start().await?;
    crate::versions::start(&state).await;
    admin::follow_secrets(&state);
    admin::answer_questions(&state);
    if state.work.shared() {
        admin::join_cluster_states(&state).await;
    }
    // The handlers exist before anyone is told where to connect.
    let signals = Signals::new().map_err(|e| format!("cannot handle signals: {e}"))?;
    crate::jobs::start(&state)
        .await
        .map_err(|e| e.to_string())?;
    crate::dev::recordings::Recorder::start(&state);
    if let Err(e) = crate::dev::recordings::sync(&state, &state.registry.snapshot()).await {
        tracing::warn!("recordings: {e}");
    }
    spawn_housekeeping(state.clone());
    reload::spawn_watcher(state.clone());
    if let Some(tls) = &tls {
        tls.watch();
    }
    // Built (its OpenAPI description included) before the address is announced.
    let router = app(state.clone());
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let _ = writeln!(out, "listening on {scheme}://{addr}");
        let _ = out.flush();
    }
    tracing::info!(%addr, "serving");
    let shutdown = shutdown_signal(state.clone(), signals);
    crate::listener::accept_loop(listener, router, state.clone(), tls, shutdown).await;
    // Every connection is done; jobs stopped claiming at the signal. Let the
    // job scripts already running finish and record their outcome.
    let longest_script = Duration::from_secs(crate::channel::MAX_RECV_TIMEOUT + 5);
    let left = crate::jobs::wait_running(&state, longest_script).await;
    if left > 0 {
        tracing::warn!(jobs = left, "stopping with job runs still under way");
    }
    // In cluster mode, what this node took and did not finish goes to another node now.
    state.work.stop().await;
    // The spans still waiting go out (off the runtime: the exporter blocks).
    if crate::trace::exporting() {
        let _ = tokio::task::spawn_blocking(crate::trace::flush).await;
    }
    match state.store.checkpoint().await {
        Ok(()) => tracing::info!(store = %state.store.path().display(), "store checkpointed"),
        Err(e) => tracing::error!("checkpoint on stop: {e}"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT and SIGTERM, registered when made.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}

/// Periodic chores: forget finished throttle windows, keep histograms fresh.
fn spawn_housekeeping(state: Arc<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        // Audit entries past audit_retention: at start, then hourly (or every
        // audit_retention when it is shorter).
        let prune_every = state.config.audit_retention.min(Duration::from_secs(3600));
        let mut pruned: Option<std::time::Instant> = None;
        loop {
            tick.tick().await;
            if pruned.is_none_or(|at| at.elapsed() >= prune_every) {
                crate::audit::prune(&state).await;
                pruned = Some(std::time::Instant::now());
            }
            state.auth.throttle.sweep();
            state.metrics.run_upkeep();
            if let Err(e) = crate::backend::embedded::events::prune_expired(&state).await {
                tracing::error!("pruning expired events: {e}");
            }
            if let Err(e) = crate::jobs::prune(&state).await {
                tracing::error!("pruning finished jobs: {e}");
            }
            if let Err(e) = crate::backend::embedded::kv::prune_expired(&state.store).await {
                tracing::error!("pruning expired kv keys: {e}");
            }
            if let Err(e) = crate::jobs::take_up_orphans(&state).await {
                tracing::error!("taking up orphaned jobs: {e}");
            }
            state.store.recover().await;
        }
    });
}

/// Waits for SIGINT or SIGTERM, then closes every websocket with 1001 (they are
/// not HTTP connections the server's graceful shutdown waits for).
async fn shutdown_signal(state: Arc<AppState>, mut signals: Signals) {
    signals.next().await;
    tracing::info!(websockets = state.connections.len(), "shutting down");
    crate::jobs::stop_claiming(&state);
    // A second signal stops at once.
    tokio::spawn(async move {
        signals.next().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(1);
    });
    state
        .connections
        .close_all(CLOSE_GOING_AWAY, "server shutting down");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !state.connections.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
