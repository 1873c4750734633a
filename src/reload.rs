//! Hot reload: watch `channels/` and `scripts/`, reload, swap, or keep the last good version.
//!
//! File events are coalesced for [`DEBOUNCE`] (an editor's save or a
//! `git checkout` is many events), then both folders are reloaded on a
//! blocking thread. Unchanged scripts are reused, so a reload costs a
//! directory read and the compile of what changed.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::connections::{why_close, CLOSE_GOING_AWAY};
use crate::registry::{Change, Loaded};
use crate::AppState;

/// How long file events are collected before one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Poll interval when the OS file watcher is not available.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Reloads now and logs what changed and what failed; returns the result.
pub fn reload_now(app: &AppState) -> Loaded {
    let mark = app.peers.reloading();
    let loaded = reload_here(app);
    // In cluster mode, the other nodes get what changed in the folders.
    app.peers.reloaded(mark);
    // What changed in the folders by other hands than the admin API is
    // versioned too (after the publish: it adds no wait to it).
    crate::versions::reconcile(app);
    loaded
}

fn reload_here(app: &AppState) -> Loaded {
    let started = Instant::now();
    let prev = app.registry.snapshot();
    let loaded = app.registry.reload(&app.config, &app.engine);
    for ((kind, code), err) in &loaded.snapshot.errors {
        if prev.error(*kind, code) != Some(err) {
            let kept = match kind {
                crate::registry::FileKind::Channel => loaded.snapshot.channel(code).is_some(),
                crate::registry::FileKind::Script => loaded
                    .snapshot
                    .scripts
                    .get(code)
                    .is_some_and(|s| s.compiled.is_ok()),
            };
            let note = if kept {
                "; the last good version keeps serving"
            } else {
                ""
            };
            tracing::error!("reload failed: {}{note}", err.message);
            metrics::counter!("switchyard_reload_failures_total", "kind" => kind_label(*kind))
                .increment(1);
        }
    }
    for change in &loaded.changes {
        match change {
            Change::Created(code) => {
                tracing::info!(channel = %code, "channel created");
                if loaded
                    .snapshot
                    .channel(code)
                    .is_some_and(|c| !c.autostart())
                {
                    app.stopped.insert(code.clone());
                }
            }
            Change::Updated(code) => {
                tracing::info!(channel = %code, "channel updated");
                let now = loaded.snapshot.channel(code);
                // Disabled, or what admitted the open websockets no longer holds as it did.
                let close = prev
                    .channel(code)
                    .and_then(|before| why_close(before, now.map(|c| &**c), false));
                if let Some((close_code, why)) = close {
                    app.connections.close_channel(code, close_code, why);
                }
                if let (Some(before), Some(now)) = (prev.channel(code), now) {
                    // A change of autostart applies as if the channel were loaded anew.
                    if before.autostart() != now.autostart() {
                        if now.autostart() {
                            app.stopped.remove(code);
                            crate::jobs::resume(app, code);
                        } else {
                            app.stopped.insert(code.clone());
                            app.connections.close_channel(
                                code,
                                CLOSE_GOING_AWAY,
                                "channel stopped",
                            );
                        }
                    }
                    let max = crate::jobs::max_attempts(now);
                    if max < crate::jobs::max_attempts(before) {
                        if let Ok(rt) = tokio::runtime::Handle::try_current() {
                            rt.block_on(crate::jobs::apply_lowered_retries(app, code, max));
                        }
                    }
                }
            }
            Change::Deleted(code) => {
                tracing::info!(channel = %code, "channel deleted");
                app.stopped.remove(code);
                if let Some((close_code, why)) = prev
                    .channel(code)
                    .and_then(|before| why_close(before, None, false))
                {
                    app.connections.close_channel(code, close_code, why);
                }
            }
        }
    }
    // A changed opts.record trims a channel's recordings; a deleted channel drops them.
    let recorded = |s: &crate::registry::Snapshot, code: &str| {
        s.channel(code)
            .map_or(0, |c| c.doc.opts.record.unwrap_or(0))
    };
    let trim = loaded.changes.iter().any(|change| match change {
        Change::Updated(code) | Change::Deleted(code) => {
            recorded(&loaded.snapshot, code) < recorded(&prev, code)
        }
        Change::Created(_) => false,
    });
    if trim {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            if let Err(e) = rt.block_on(crate::dev::recordings::sync(app, &loaded.snapshot)) {
                tracing::warn!("recordings: {e}");
            }
        }
    }
    publish_changes(app, &prev, &loaded);
    metrics::counter!("switchyard_reloads_total").increment(1);
    tracing::debug!(
        reload_ms = started.elapsed().as_millis() as u64,
        channels = loaded.snapshot.channels.len(),
        scripts = loaded.snapshot.scripts.len(),
        "reloaded"
    );
    loaded
}

/// Publishes `channel.created`, `channel.updated`, `channel.deleted` (source `system`).
fn publish_changes(app: &AppState, prev: &crate::registry::Snapshot, loaded: &Loaded) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for change in &loaded.changes {
        let (name, code) = match change {
            Change::Created(c) => ("channel.created", c),
            Change::Updated(c) => ("channel.updated", c),
            Change::Deleted(c) => ("channel.deleted", c),
        };
        let id = loaded
            .snapshot
            .channel(code)
            .or_else(|| prev.channel(code))
            .map(|c| c.id.to_string());
        let data = serde_json::json!({ "code": code, "id": id });
        if let Ok(event) = crate::events::Event::new("system", name, data) {
            // Reloads run on blocking threads; queued copies are committed before we go on.
            if let Err(e) = runtime.block_on(app.events.publish(event)) {
                tracing::error!("publishing {name}: {e}");
            }
        }
    }
}

fn kind_label(kind: crate::registry::FileKind) -> &'static str {
    match kind {
        crate::registry::FileKind::Channel => "channel",
        crate::registry::FileKind::Script => "script",
    }
}

/// Starts watching both folders; reloads on every relevant change.
pub fn spawn_watcher(app: Arc<AppState>) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let tx_for_compiles = tx.clone();
    let handler = move |res: notify::Result<Event>| {
        if let Ok(event) = res {
            if relevant(&event) {
                // A full queue already means "reload pending"; nothing is lost.
                let _ = tx.try_send(());
            }
        }
    };
    let dirs = [app.config.channels.clone(), app.config.scripts.clone()];
    let native = notify::recommended_watcher(handler.clone()).and_then(|mut w| {
        for d in &dirs {
            w.watch(d, RecursiveMode::NonRecursive)?;
        }
        Ok(w)
    });
    let watcher: Box<dyn Watcher + Send> = match native {
        Ok(w) => Box::new(w),
        Err(e) => {
            tracing::warn!("file watcher unavailable ({e}); polling the folders every 500 ms");
            let config = notify::Config::default().with_poll_interval(POLL_EVERY);
            let polled = notify::PollWatcher::new(handler, config).and_then(|mut w| {
                for d in &dirs {
                    w.watch(d, RecursiveMode::NonRecursive)?;
                }
                Ok(w)
            });
            match polled {
                Ok(w) => Box::new(w),
                Err(e) => {
                    tracing::error!("hot reload is off: {e}");
                    return;
                }
            }
        }
    };
    // A large script compiles on its own thread; when it is done, reload again.
    let done_tx = tx_for_compiles;
    app.engine.compile_in_background(move || {
        let _ = done_tx.try_send(());
    });
    tokio::spawn(async move {
        let _keep_alive = watcher;
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let app = app.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || reload_now(&app)).await {
                tracing::error!("reload panicked: {e}");
            }
        }
    });
}

fn relevant(event: &Event) -> bool {
    !matches!(event.kind, EventKind::Access(_)) && event.paths.iter().any(|p| watched_file(p))
}

fn watched_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str());
    !hidden && matches!(ext, Some("json") | Some("rhai"))
}
