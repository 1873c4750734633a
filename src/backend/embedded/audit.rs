//! The audit log in the SQLite store: table `audit`, one row an entry, in
//! the order they were written. Nothing updates a row; `prune` deletes by age.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use rusqlite::params;
use serde_json::Value;

use crate::backend::{Audit, AuditQuery};
use crate::store::{Store, StoreError};

/// [`Audit`] in this node's store.
pub struct StoreAudit {
    pub store: Arc<Store>,
}

impl Audit for StoreAudit {
    fn append(&self, entry: Value) -> BoxFuture<'static, Result<(), StoreError>> {
        let store = self.store.clone();
        Box::pin(async move {
            let ms = entry["ms"].as_i64().unwrap_or(0);
            store
                .write(move |c| {
                    c.prepare_cached("INSERT INTO audit (ms, entry) VALUES (?1, ?2)")?
                        .execute(params![ms, entry.to_string()])
                        .map(|_| ())
                })
                .await
        })
    }

    fn list(&self, query: AuditQuery) -> BoxFuture<'static, Result<Vec<Value>, StoreError>> {
        let store = self.store.clone();
        Box::pin(async move {
            let read = move || {
                store.read(|c| {
                    let mut stmt = c.prepare_cached(
                        "SELECT entry FROM audit WHERE ms >= ?1 AND ms < ?2 ORDER BY seq DESC",
                    )?;
                    let rows = stmt.query_map(
                        params![
                            query.since.unwrap_or(i64::MIN),
                            query.until.unwrap_or(i64::MAX)
                        ],
                        |r| r.get::<_, String>(0),
                    )?;
                    let mut out = Vec::new();
                    let mut skipped = 0;
                    for text in rows {
                        let Ok(entry) = serde_json::from_str::<Value>(&text?) else {
                            continue;
                        };
                        if !query.admits(&entry) {
                            continue;
                        }
                        if skipped < query.offset {
                            skipped += 1;
                            continue;
                        }
                        out.push(entry);
                        if out.len() >= query.limit {
                            break;
                        }
                    }
                    Ok(out)
                })
            };
            tokio::task::spawn_blocking(read)
                .await
                .map_err(|e| StoreError(e.to_string()))?
        })
    }

    fn prune(&self, before: i64) -> BoxFuture<'static, Result<usize, StoreError>> {
        let store = self.store.clone();
        Box::pin(async move {
            store
                .write(move |c| c.execute("DELETE FROM audit WHERE ms < ?1", params![before]))
                .await
        })
    }
}
