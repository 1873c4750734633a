//! The sealed secrets in cluster mode: the KV bucket `{prefix}_secrets`, one
//! key a name (a [`token`]); every node watches it and takes a change at once.

use std::sync::Arc;

use async_nats::jetstream::kv as jkv;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde_json::Value;

use super::{token, unavailable, Cluster};
use crate::backend::{OnChange, SecretStore};
use crate::store::StoreError;

/// [`SecretStore`] in a KV bucket.
pub struct NatsSecrets {
    cluster: Arc<Cluster>,
    bucket: jkv::Store,
}

impl NatsSecrets {
    /// Opens (or creates) the bucket.
    pub async fn open(cluster: Arc<Cluster>) -> Result<NatsSecrets, String> {
        let bucket = cluster
            .open_kv("secrets", std::time::Duration::ZERO)
            .await?;
        Ok(NatsSecrets { cluster, bucket })
    }
}

impl SecretStore for NatsSecrets {
    fn all(&self) -> BoxFuture<'static, Result<Vec<Value>, StoreError>> {
        let cluster = self.cluster.clone();
        Box::pin(async move {
            let name = format!("{}_secrets", cluster.prefix);
            let entries = cluster
                .last_per_subject(&format!("KV_{name}"), &format!("$KV.{name}.>"))
                .await?;
            Ok(entries
                .iter()
                .filter_map(|(_, payload)| serde_json::from_slice(payload).ok())
                .collect())
        })
    }

    fn put(&self, record: Value) -> BoxFuture<'static, Result<(), StoreError>> {
        let (bucket, connected) = (self.bucket.clone(), self.cluster.connected());
        Box::pin(async move {
            if !connected {
                return Err(unavailable("NATS is unreachable"));
            }
            let key = token(record["name"].as_str().unwrap_or_default());
            bucket
                .put(key, record.to_string().into())
                .await
                .map(drop)
                .map_err(unavailable)
        })
    }

    fn delete(&self, name: &str) -> BoxFuture<'static, Result<bool, StoreError>> {
        let (bucket, key) = (self.bucket.clone(), token(name));
        Box::pin(async move {
            let there = bucket.get(&key).await.map_err(unavailable)?.is_some();
            if there {
                bucket.purge(&key).await.map_err(unavailable)?;
            }
            Ok(there)
        })
    }

    fn watch(&self, on_change: OnChange) {
        let bucket = self.bucket.clone();
        tokio::spawn(async move {
            loop {
                match bucket.watch_all().await {
                    Ok(mut changes) => {
                        while let Some(change) = changes.next().await {
                            if change.is_ok() {
                                on_change();
                            }
                        }
                    }
                    Err(e) => tracing::warn!("cluster: watching secrets: {e}"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }
}
