//! Channel documents and scripts in cluster mode: one set for the cluster, in
//! the KV bucket `{prefix}_docs`, mirrored into every node's folders.
//!
//! The folders stay what the registry loads and the hot reload watches; this
//! module keeps them and the bucket the same:
//!
//! - at start ([`Docs::start`]), before the first load, the node takes the
//!   bucket's version of every file, and publishes its own files the bucket
//!   lacks;
//! - a change in the bucket from another node is written into the folder
//!   (atomically), and the node's hot reload picks it up;
//! - after every reload of this node (an admin write, a hand edit), the files
//!   that differ from what was last in step with the bucket are published, and
//!   the ones removed are deleted from it.
//!
//! A key is `channels.<token>` or `scripts.<token>` of the file name. Both
//! sides remember the bytes last seen in step, so a change never echoes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt;

use super::{token, unavailable, untoken, Cluster};
use crate::store::StoreError;

/// The two mirrored folders and the file kind each holds.
const KINDS: [(&str, &str); 2] = [("channels", "json"), ("scripts", "rhai")];

/// The mirror of the folders in the bucket.
pub struct Docs {
    cluster: Arc<Cluster>,
    channels: PathBuf,
    scripts: PathBuf,
    /// Key → bytes as last in step with the bucket.
    synced: Mutex<HashMap<String, Vec<u8>>>,
    /// The newest bucket revision this node's registry has loaded.
    applied: AtomicU64,
    /// The newest bucket revision written into the folders (loaded at the next reload).
    written: AtomicU64,
}

impl Docs {
    /// Brings the folders and the bucket into step (see the module docs),
    /// then follows the bucket.
    pub async fn start(
        cluster: Arc<Cluster>,
        channels: PathBuf,
        scripts: PathBuf,
    ) -> Result<Arc<Docs>, String> {
        let docs = Arc::new(Docs {
            cluster,
            channels,
            scripts,
            synced: Mutex::default(),
            applied: AtomicU64::new(0),
            written: AtomicU64::new(0),
        });
        // Watch first, so nothing written meanwhile is missed; applying twice is harmless.
        let watch = docs
            .cluster
            .docs
            .watch_all()
            .await
            .map_err(|e| format!("cluster: watching documents: {e}"))?;
        let keys: Vec<String> = docs
            .cluster
            .docs
            .keys()
            .await
            .map_err(|e| format!("cluster: listing documents: {e}"))?
            .filter_map(|k| async { k.ok() })
            .collect()
            .await;
        let (mut taken, mut published) = (0, 0);
        for key in &keys {
            if let Ok(Some(entry)) = docs.cluster.docs.entry(key).await {
                docs.seen(entry.revision);
                if docs.apply(key, Some(entry.value.to_vec())) {
                    taken += 1;
                }
            }
        }
        for (key, bytes) in docs.local_files() {
            if keys.contains(&key) {
                continue;
            }
            match docs.cluster.docs.create(&key, bytes.clone().into()).await {
                Ok(revision) => {
                    docs.seen(revision);
                    docs.remember(&key, Some(bytes));
                    published += 1;
                }
                // Another node published it first: take that one.
                Err(_) => {
                    if let Ok(Some(theirs)) = docs.cluster.docs.get(&key).await {
                        docs.apply(&key, Some(theirs.to_vec()));
                    }
                }
            }
        }
        tracing::info!(
            in_bucket = keys.len(),
            taken,
            published,
            "cluster: channel documents and scripts in step"
        );
        let follower = docs.clone();
        tokio::spawn(async move {
            let mut watch = watch;
            while let Some(entry) = watch.next().await {
                match entry {
                    Ok(e) => {
                        let bytes = (e.operation == Operation::Put).then(|| e.value.to_vec());
                        if follower.apply(&e.key, bytes) {
                            // In the registry once the reload that follows has run.
                            follower.written.fetch_max(e.revision, Ordering::AcqRel);
                        } else {
                            follower.seen(e.revision);
                        }
                    }
                    Err(e) => tracing::warn!("cluster: document watch: {e}"),
                }
            }
            tracing::error!(
                "cluster: the document watch ended; restart the node to follow changes"
            );
        });
        Ok(docs)
    }

    /// The newest revision of the bucket this node's folders hold: work made
    /// on a node that held a newer one waits until this node has it too.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The newest revision written into the folders so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// A reload that began when [`written`](Self::written) was `mark` has run.
    pub fn loaded(&self, mark: u64) {
        self.seen(mark);
    }

    fn seen(&self, revision: u64) {
        self.applied.fetch_max(revision, Ordering::AcqRel);
    }

    fn remember(&self, key: &str, bytes: Option<Vec<u8>>) {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        match bytes {
            Some(b) => synced.insert(key.to_owned(), b),
            None => synced.remove(key),
        };
    }

    /// The file a key stands for, if it is one of ours.
    fn path_of(&self, key: &str) -> Option<PathBuf> {
        let (kind, name) = key.split_once('.')?;
        let name = untoken(name)?;
        let (dir, ext) = match kind {
            "channels" => (&self.channels, "json"),
            "scripts" => (&self.scripts, "rhai"),
            _ => return None,
        };
        // Only a plain file name of the folder's kind: never a path elsewhere.
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains(['/', '\\'])
            && Path::new(&name).extension().and_then(|e| e.to_str()) == Some(ext);
        plain.then(|| dir.join(name))
    }

    /// Writes a bucket version into the folder (`None`: removes the file);
    /// `true` when the folder changed.
    fn apply(&self, key: &str, bytes: Option<Vec<u8>>) -> bool {
        let Some(path) = self.path_of(key) else {
            return false;
        };
        // What this node last published or took for the key (its own put
        // coming back through the watch, most often): the folder may have
        // moved on since (a hand edit the next reload publishes), and must
        // not be put back.
        let in_step = self
            .synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        if in_step.is_some() && in_step == bytes {
            return false;
        }
        let now = std::fs::read(&path).ok();
        self.remember(key, bytes.clone());
        if now == bytes {
            return false;
        }
        let result = match &bytes {
            Some(b) => crate::disk::write_atomic(&path, b),
            None => std::fs::remove_file(&path).map(|()| crate::disk::sync_dir(&path)),
        };
        match result {
            Ok(()) => {
                tracing::info!(file = %path.display(), "cluster: took a change from another node");
                true
            }
            Err(e) => {
                tracing::error!(file = %path.display(), "cluster: cannot apply a change: {e}");
                false
            }
        }
    }

    /// Every mirrored file of the folders, by key.
    fn local_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for ((kind, ext), dir) in KINDS.iter().zip([&self.channels, &self.scripts]) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if name.starts_with('.')
                    || path.extension().and_then(|e| e.to_str()) != Some(ext)
                    || !path.is_file()
                {
                    continue;
                }
                if let Ok(bytes) = std::fs::read(&path) {
                    out.push((format!("{kind}.{}", token(name)), bytes));
                }
            }
        }
        out
    }

    /// Publishes what changed in the folders since they were last in step
    /// with the bucket: called after every reload of this node.
    pub async fn publish_changes(&self) -> Result<usize, StoreError> {
        let files = self.local_files();
        let (changed, removed) = {
            let synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
            let changed: Vec<(String, Vec<u8>)> = files
                .iter()
                .filter(|(k, b)| synced.get(k) != Some(b))
                .cloned()
                .collect();
            let removed: Vec<String> = synced
                .keys()
                .filter(|k| !files.iter().any(|(f, _)| f == *k))
                .cloned()
                .collect();
            (changed, removed)
        };
        let n = changed.len() + removed.len();
        for (key, bytes) in changed {
            let revision = self
                .cluster
                .docs
                .put(&key, bytes.clone().into())
                .await
                .map_err(unavailable)?;
            self.remember(&key, Some(bytes));
            self.seen(revision);
        }
        for key in removed {
            self.cluster.docs.delete(&key).await.map_err(unavailable)?;
            self.remember(&key, None);
            if let Ok(Some(marker)) = self.cluster.docs.entry(&key).await {
                self.seen(marker.revision);
            }
        }
        if n > 0 {
            tracing::info!(files = n, "cluster: published this node's changes");
        }
        Ok(n)
    }

    /// [`publish_changes`](Self::publish_changes) in the background; a
    /// failure (NATS unreachable) is tried again every second until it lands.
    pub fn publish_soon(self: &Arc<Self>) {
        let me = self.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            loop {
                match me.publish_changes().await {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!("cluster: publishing document changes: {e}");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
}
