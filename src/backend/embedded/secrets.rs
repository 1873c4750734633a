//! The sealed secrets in the SQLite store: table `secrets`, one row a name.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use rusqlite::params;
use serde_json::Value;

use crate::backend::{OnChange, SecretStore};
use crate::store::{Store, StoreError};

/// [`SecretStore`] in this node's store.
pub struct StoreSecrets {
    pub store: Arc<Store>,
}

impl SecretStore for StoreSecrets {
    fn all(&self) -> BoxFuture<'static, Result<Vec<Value>, StoreError>> {
        let store = self.store.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || all(&store))
                .await
                .map_err(|e| StoreError(e.to_string()))?
        })
    }

    fn put(&self, record: Value) -> BoxFuture<'static, Result<(), StoreError>> {
        let store = self.store.clone();
        Box::pin(async move {
            let name = record["name"].as_str().unwrap_or_default().to_owned();
            store
                .write(move |c| {
                    c.execute(
                        "INSERT INTO secrets (name, record) VALUES (?1, ?2) \
                         ON CONFLICT (name) DO UPDATE SET record = excluded.record",
                        params![name, record.to_string()],
                    )
                    .map(drop)
                })
                .await
        })
    }

    fn delete(&self, name: &str) -> BoxFuture<'static, Result<bool, StoreError>> {
        let (store, name) = (self.store.clone(), name.to_owned());
        Box::pin(async move {
            store
                .write(move |c| c.execute("DELETE FROM secrets WHERE name = ?1", params![name]))
                .await
                .map(|n| n > 0)
        })
    }

    fn watch(&self, _: OnChange) {}
}

/// Every record of a store (also for `secrets rekey`).
pub fn all(store: &Store) -> Result<Vec<Value>, StoreError> {
    store.read(|c| {
        c.prepare("SELECT record FROM secrets ORDER BY name")?
            .query_map([], |r| r.get::<_, String>(0))?
            .map(|r| r.map(|t| serde_json::from_str(&t).unwrap_or(Value::Null)))
            .collect()
    })
}
