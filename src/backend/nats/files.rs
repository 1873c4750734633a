//! Files in cluster mode: the JetStream object store `{prefix}_files`, an
//! object `<channel>/<name>` a file (the channel part a [`token`]). A put
//! replaces the object whole: a reader gets the old object or the new one.

use std::sync::Arc;

use async_nats::jetstream::object_store::{self, GetErrorKind, ObjectStore};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use super::{token, unavailable, Cluster};
use crate::backend::embedded::files::quota;
use crate::backend::{FileError, Files};
use crate::store::StoreError;

/// [`Files`] in an object store.
pub struct NatsFiles {
    /// The cluster.
    pub cluster: Arc<Cluster>,
    /// The bucket.
    pub store: ObjectStore,
    /// `files_max_count`.
    pub max_count: usize,
    /// `files_max_bytes`.
    pub max_bytes: u64,
}

/// Opens (or creates) the files bucket.
pub async fn open(cluster: &Cluster) -> Result<ObjectStore, String> {
    let name = format!("{}_files", cluster.prefix);
    if let Ok(store) = cluster.js.get_object_store(&name).await {
        return Ok(store);
    }
    cluster
        .js
        .create_object_store(object_store::Config {
            bucket: name.clone(),
            storage: async_nats::jetstream::stream::StorageType::File,
            num_replicas: cluster.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cluster: cannot create object store {name}: {e}"))
}

fn object(channel: &str, name: &str) -> String {
    format!("{}/{name}", token(channel))
}

impl NatsFiles {
    /// Writes a file as it is (`migrate`): no quota check.
    pub async fn import(&self, channel: &str, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let mut reader = bytes;
        self.store
            .put(object(channel, name).as_str(), &mut reader)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    /// The channel's files now: how many, how many bytes, and the size of `name` if there.
    async fn usage(
        &self,
        channel: &str,
        name: &str,
    ) -> Result<(usize, u64, Option<usize>), StoreError> {
        let prefix = format!("{}/", token(channel));
        let mut list = self.store.list().await.map_err(unavailable)?;
        let (mut count, mut bytes, mut replaced) = (0, 0u64, None);
        while let Some(info) = list.next().await {
            let info = info.map_err(unavailable)?;
            if info.deleted || !info.name.starts_with(&prefix) {
                continue;
            }
            count += 1;
            bytes += info.size as u64;
            if info.name[prefix.len()..] == *name {
                replaced = Some(info.size);
            }
        }
        Ok((count, bytes, replaced))
    }
}

impl Files for NatsFiles {
    fn read(&self, channel: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = object(channel, name);
        self.cluster.block(async {
            let mut object = match self.store.get(&key).await {
                Ok(o) => o,
                Err(e) if matches!(e.kind(), GetErrorKind::NotFound) => return Ok(None),
                Err(e) => return Err(unavailable(e)),
            };
            let mut bytes = Vec::new();
            object.read_to_end(&mut bytes).await.map_err(unavailable)?;
            Ok(Some(bytes))
        })
    }

    fn write(&self, channel: &str, name: &str, bytes: &[u8]) -> Result<bool, FileError> {
        let key = object(channel, name);
        let checked = self.cluster.block(async {
            let (count, used, replaced) = self.usage(channel, name).await?;
            let fits = quota(
                count,
                used,
                replaced,
                bytes.len() as u64,
                self.max_count,
                self.max_bytes,
            );
            if fits.is_ok() {
                let mut reader = bytes;
                self.store
                    .put(key.as_str(), &mut reader)
                    .await
                    .map_err(unavailable)?;
            }
            Ok((fits, replaced.is_some()))
        })?;
        let (fits, existed) = checked;
        fits.map(|()| existed)
    }

    fn delete(&self, channel: &str, name: &str) -> Result<bool, StoreError> {
        let key = object(channel, name);
        self.cluster.block(async {
            match self.store.info(&key).await {
                Ok(info) if !info.deleted => {}
                _ => return Ok(false),
            }
            self.store.delete(&key).await.map_err(unavailable)?;
            Ok(true)
        })
    }
}
