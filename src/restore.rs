//! The offline commands of SPEC §19: `switchyard history CODE` prints the
//! versions of a channel or script, `switchyard restore CODE N` brings one
//! back without a server, from the data folder or from the cluster.
//!
//! `history` reads the store without its folder lock (a server may be
//! running). `restore` takes the lock in embedded mode (no server may run on
//! the folder); in cluster mode it records the version in the shared store
//! and puts the file into the cluster's documents, which every running node
//! writes into its folder and loads.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::backend::nats::{self, Cluster};
use crate::backend::{Audit, NewVersion, Versions};
use crate::config::Config;
use crate::registry::FileKind;
use crate::versions::kind_name;

/// Where the versions are: the data folder's store, or the cluster.
async fn cluster_of(config: &Config) -> Result<Option<Arc<Cluster>>, String> {
    if config.cluster.nats_url.is_empty() {
        return Ok(None);
    }
    let node = format!("cli@{}", nats::hostname());
    Cluster::connect(&config.cluster, node).await.map(Some)
}

/// The versions of a code, newest first.
async fn list(config: &Config, kind: FileKind, code: &str) -> Result<Vec<Value>, String> {
    match cluster_of(config).await? {
        Some(cluster) => nats::versions::NatsVersions::open(cluster)
            .await?
            .list(kind_name(kind), code)
            .await
            .map_err(|e| e.to_string()),
        None => {
            let conn = read_only(&config.data)?;
            crate::backend::embedded::versions::list(&conn, kind_name(kind), code)
                .map_err(|e| e.to_string())
        }
    }
}

fn read_only(data: &Path) -> Result<rusqlite::Connection, String> {
    let db = data.join("switchyard.db");
    if !db.exists() {
        return Err(format!("no store at {}", db.display()));
    }
    rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: {e}", db.display()))
}

/// `switchyard history`: one line a version, newest first.
pub async fn history(config: &Config, kind: FileKind, code: &str) -> Result<String, String> {
    let versions = list(config, kind, code).await?;
    if versions.is_empty() {
        return Err(format!("{} {code:?} has no versions", kind_name(kind)));
    }
    let mut out = String::new();
    for v in versions {
        let by = &v["by"];
        let who = match (by["by"].as_str(), by["address"].as_str()) {
            (Some(who), Some(address)) => format!("{who} from {address}"),
            (Some(who), None) => who.to_owned(),
            _ => "?".into(),
        };
        out.push_str(&format!(
            "{:>4}  {}  {:<8}  {}  sha256:{}\n",
            v["number"].as_u64().unwrap_or(0),
            v["at"].as_str().unwrap_or(""),
            v["kind"].as_str().unwrap_or(""),
            who,
            &v["sha256"].as_str().unwrap_or("")[..12.min(v["sha256"].as_str().unwrap_or("").len())]
        ));
    }
    Ok(out)
}

/// Checks that `content` would load as `kind` `code` with the folders as they are.
fn check(config: &Config, kind: FileKind, code: &str, content: &str) -> Result<(), String> {
    let engine = crate::script::ScriptEngine::new();
    match kind {
        FileKind::Channel => {
            let loaded = crate::registry::load(config, &engine, None);
            let names = loaded.snapshot.scripts.keys().cloned().collect();
            let ctx = crate::channel::ValidationContext {
                solution_types: &config.solution_types,
                scripts: &names,
            };
            let doc = crate::channel::ChannelDoc::parse(content).map_err(|e| e.to_string())?;
            if doc.code != code {
                return Err(format!("its code is {:?}", doc.code));
            }
            doc.validate(None, &ctx)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        FileKind::Script => engine
            .compile(content)
            .map(drop)
            .map_err(|e| format!("{}:{}: {}", e.line, e.col, e.message)),
    }
}

/// `switchyard restore`: brings version `n` back (see the module docs).
pub async fn restore(
    config: &Config,
    kind: FileKind,
    code: &str,
    n: u64,
) -> Result<String, String> {
    let by = json!({"by": "admin", "address": "local", "request_id": null});
    let at = crate::channel::rfc3339(std::time::SystemTime::now());
    let cluster = cluster_of(config).await?;
    let version = match &cluster {
        Some(c) => nats::versions::NatsVersions::open(c.clone())
            .await?
            .get(kind_name(kind), code, n)
            .await
            .map_err(|e| e.to_string())?,
        None => crate::backend::embedded::versions::get(
            &read_only(&config.data)?,
            kind_name(kind),
            code,
            n,
        )
        .map_err(|e| e.to_string())?,
    };
    let version =
        version.ok_or_else(|| format!("{} {code:?} has no version {n}", kind_name(kind)))?;
    let content = version["content"]
        .as_str()
        .ok_or_else(|| {
            format!("version {n} is the deletion of {code:?}: restore a version before it")
        })?
        .to_owned();
    check(config, kind, code, &content)
        .map_err(|e| format!("version {n} would not load today, nothing changed: {e}"))?;
    let new = NewVersion {
        kind: kind_name(kind),
        code: code.to_owned(),
        content: Some(content.clone()),
        restored: true,
        at: at.clone(),
        by: by.clone(),
        keep: config.versions_keep,
    };
    let file_name = match kind {
        FileKind::Channel => format!("{code}.json"),
        FileKind::Script => format!("{code}.rhai"),
    };
    let audit_entry = |before: Option<u64>, after: Option<u64>| {
        json!({
            "at": at, "ms": chrono::Utc::now().timestamp_millis(),
            "action": format!("{}.restore", kind_name(kind)), "code": code,
            "by": "admin", "address": "local", "request_id": "", "status": 200,
            "before": before, "after": after,
        })
    };
    let versioned = match cluster {
        Some(c) => {
            let versioned = nats::versions::NatsVersions::open(c.clone())
                .await?
                .record(new)
                .await
                .map_err(|e| e.to_string())?;
            let folder = if kind == FileKind::Channel {
                "channels"
            } else {
                "scripts"
            };
            c.docs
                .put(
                    format!("{folder}.{}", nats::token(&file_name)),
                    content.into_bytes().into(),
                )
                .await
                .map_err(|e| format!("cluster: {e}"))?;
            let audit = nats::audit::NatsAudit::open(c, config.audit_retention).await?;
            audit
                .append(audit_entry(versioned.before, versioned.after))
                .await
                .map_err(|e| e.to_string())?;
            versioned
        }
        None => {
            // The folder lock: refused while a server runs on this store.
            let store =
                Arc::new(crate::store::Store::open(&config.data).map_err(|e| e.to_string())?);
            let versions = crate::backend::embedded::versions::StoreVersions {
                store: store.clone(),
            };
            let versioned = versions.record(new).await.map_err(|e| e.to_string())?;
            let dir = if kind == FileKind::Channel {
                &config.channels
            } else {
                &config.scripts
            };
            crate::disk::write_atomic(&dir.join(&file_name), content.as_bytes())
                .map_err(|e| format!("{}: {e}", dir.join(&file_name).display()))?;
            let audit = crate::backend::embedded::audit::StoreAudit {
                store: store.clone(),
            };
            audit
                .append(audit_entry(versioned.before, versioned.after))
                .await
                .map_err(|e| e.to_string())?;
            store.checkpoint().await.map_err(|e| e.to_string())?;
            versioned
        }
    };
    Ok(match versioned.after {
        Some(after) if versioned.made() => {
            format!(
                "restored {} {code:?} version {n} as version {after}",
                kind_name(kind)
            )
        }
        _ => format!("{} {code:?} is version {n} already", kind_name(kind)),
    })
}
