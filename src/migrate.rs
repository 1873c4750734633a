//! `switchyard migrate --data DIR --cluster URL`: an embedded store grows
//! into a cluster (SPEC §13). Copies the live kv keys and the files, moves
//! each channel's queued events (in order, to that channel alone) and the
//! unfinished send jobs and inbox requests (in arrival order) into JetStream,
//! and each channel's recordings, then takes what it moved out of the store,
//! so a node that later starts on this folder in cluster mode finds nothing
//! twice. Finished jobs stay in the store: the node that keeps the folder
//! shows them (the job view lists every node's jobs).
//! Re-running it is harmless: kv and files are written again, and what was
//! moved is gone from the store.

use rusqlite::params;
use serde_json::Value;

use crate::backend::nats::{self, events, files, kv, recordings, work, Cluster};
use crate::backend::{Recorded, SecretStore};
use crate::config::Config;
use crate::store::{Store, StoreError};

/// What a migration copied or moved.
#[derive(Debug, Default)]
pub struct Report {
    /// Live kv keys copied.
    pub kv: usize,
    /// Files copied.
    pub files: usize,
    /// Queued events moved.
    pub events: usize,
    /// Unfinished inbox requests moved.
    pub inbox: usize,
    /// Unfinished send jobs moved.
    pub send: usize,
    /// Recordings moved.
    pub recordings: usize,
    /// Sealed secrets copied (a newer one of the same name in the cluster is kept).
    pub secrets: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} kv keys, {} files, {} secrets copied; {} queued events, {} inbox requests, \
             {} send jobs, {} recordings moved",
            self.kv, self.files, self.secrets, self.events, self.inbox, self.send, self.recordings
        )
    }
}

/// Migrates the store of `config.data` into the cluster of `config.cluster`.
pub async fn migrate(config: &Config) -> Result<Report, String> {
    // The folder lock: refused while a server runs on this store.
    let store = Store::open(&config.data).map_err(|e| e.to_string())?;
    let node = format!("migrate@{}", nats::hostname());
    let cluster = Cluster::connect(&config.cluster, node).await?;
    let fail = |what: &str, e: StoreError| format!("{what}: {e}");
    let mut report = Report::default();

    let now = chrono::Utc::now().timestamp_millis();
    let rows: Vec<(String, String, String, Option<i64>)> = store
        .read(|c| {
            c.prepare(
                "SELECT channel, key, value, expires FROM kv WHERE expires IS NULL OR expires > ?1",
            )?
            .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect()
        })
        .map_err(|e| fail("reading kv", e))?;
    let nats_kv = kv::NatsKv {
        cluster: cluster.clone(),
        max_keys: usize::MAX,
    };
    for (channel, key, value, expires) in rows {
        let value: Value = serde_json::from_str(&value).unwrap_or(Value::Null);
        nats_kv
            .import(&channel, &key, &value, expires)
            .await
            .map_err(|e| fail("copying kv", e))?;
        report.kv += 1;
    }

    let nats_files = files::NatsFiles {
        cluster: cluster.clone(),
        store: files::open(&cluster).await?,
        max_count: usize::MAX,
        max_bytes: u64::MAX,
    };
    for (channel, name, bytes) in folder_files(&config.data.join("files")) {
        nats_files
            .import(&channel, &name, &bytes)
            .await
            .map_err(|e| fail("copying files", e))?;
        report.files += 1;
    }

    // The sealed secrets, as they are (the cluster's nodes need the same
    // key): a channel naming one loads on every node. One the cluster has
    // at a newer version (set there since) is left as it is.
    let sealed =
        crate::backend::embedded::secrets::all(&store).map_err(|e| fail("reading secrets", e))?;
    let nats_secrets = crate::backend::nats::secrets::NatsSecrets::open(cluster.clone()).await?;
    let there = nats_secrets
        .all()
        .await
        .map_err(|e| fail("reading the cluster's secrets", e))?;
    for record in sealed {
        let version = |r: &Value| r["version"].as_u64().unwrap_or(0);
        let newer = there
            .iter()
            .any(|t| t["name"] == record["name"] && version(t) > version(&record));
        if newer || !record["name"].is_string() {
            continue;
        }
        nats_secrets
            .put(record)
            .await
            .map_err(|e| fail("copying secrets", e))?;
        report.secrets += 1;
    }

    let (stream, _) = events::NatsBus::open_stream(&cluster, config.event_ttl).await?;
    let queued: Vec<(i64, String, String)> = store
        .read(|c| {
            c.prepare("SELECT seq, channel, event FROM event_queue ORDER BY seq")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(|e| fail("reading event queues", e))?;
    for (seq, channel, text) in queued {
        events::queue_for(&cluster, &stream, config.event_ttl, &channel, text)
            .await
            .map_err(|e| fail("moving queued events", e))?;
        store
            .write(move |c| c.execute("DELETE FROM event_queue WHERE seq = ?1", params![seq]))
            .await
            .map_err(|e| fail("moving queued events", e))?;
        report.events += 1;
    }

    work::NatsWork::open(cluster.clone(), config.inbox_max, config.job_retention).await?;
    let jobs = crate::jobs::unfinished(&store).map_err(|e| fail("reading jobs", e))?;
    for job in jobs {
        let (id, kind) = (job.id.clone(), job.kind);
        work::publish(&cluster, 0, job)
            .await
            .map_err(|e| fail("moving jobs", e))?;
        crate::jobs::forget(&store, vec![id])
            .await
            .map_err(|e| fail("moving jobs", e))?;
        if kind == "recv" {
            report.inbox += 1;
        } else {
            report.send += 1;
        }
    }
    // Each channel's recordings, oldest first; the first node to load the
    // channels trims them to each channel's `opts.record`.
    let recs = crate::backend::embedded::recordings::all(&store)
        .map_err(|e| fail("reading recordings", e))?;
    let mut batch: Vec<Recorded> = Vec::new();
    for (channel, doc) in recs {
        match batch.iter_mut().find(|r| r.channel == channel) {
            Some(r) => r.docs.push(doc),
            None => batch.push(Recorded {
                channel,
                keep: 1000,
                docs: vec![doc],
            }),
        }
    }
    report.recordings = batch.iter().map(|r| r.docs.len()).sum();
    let moved: Vec<String> = batch.iter().map(|r| r.channel.clone()).collect();
    recordings::NatsRecordings::open(cluster.clone())
        .await?
        .import(batch)
        .await
        .map_err(|e| fail("moving recordings", e))?;
    store
        .write(move |c| {
            for channel in &moved {
                c.execute(
                    "DELETE FROM recordings WHERE channel = ?1",
                    params![channel],
                )?;
            }
            Ok(())
        })
        .await
        .map_err(|e| fail("moving recordings", e))?;
    store
        .checkpoint()
        .await
        .map_err(|e| fail("checkpoint", e))?;
    Ok(report)
}

/// Every file under `root` (`<channel>/<name>`): channel, name, bytes.
fn folder_files(root: &std::path::Path) -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(channels) = std::fs::read_dir(root) else {
        return out;
    };
    for channel in channels.flatten() {
        let Ok(files) = std::fs::read_dir(channel.path()) else {
            continue;
        };
        let code = channel.file_name().to_string_lossy().into_owned();
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !file.path().is_file() {
                continue;
            }
            if let Ok(bytes) = std::fs::read(file.path()) {
                out.push((code.clone(), name, bytes));
            }
        }
    }
    out.sort();
    out
}
