//! Recordings in the SQLite store: table `recordings`, one row a recording.

use futures_util::future::BoxFuture;
use rusqlite::params;
use serde_json::Value;

use crate::backend::{Recorded, Recordings};
use crate::store::{Store, StoreError};

/// [`Recordings`] in this node's store.
pub struct StoreRecordings {
    pub store: std::sync::Arc<Store>,
}

impl Recordings for StoreRecordings {
    fn write(&self, batch: Vec<Recorded>) -> BoxFuture<'static, Result<(), StoreError>> {
        let store = self.store.clone();
        Box::pin(async move {
            store
                .write(move |c| {
                    for item in &batch {
                        for doc in &item.docs {
                            c.prepare_cached(
                                "INSERT INTO recordings (channel, id, doc) VALUES (?1, ?2, ?3)",
                            )?
                            .execute(params![
                                item.channel,
                                doc["id"].as_str().unwrap_or_default(),
                                doc.to_string()
                            ])?;
                        }
                        trim(c, &item.channel, item.keep)?;
                    }
                    Ok(())
                })
                .await
        })
    }

    fn list(
        &self,
        channel: &str,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Value>, StoreError>> {
        let (store, channel) = (self.store.clone(), channel.to_owned());
        Box::pin(async move {
            let read = move || {
                store.read(|c| {
                    let mut stmt = c.prepare_cached(
                        "SELECT doc FROM recordings WHERE channel = ?1 ORDER BY seq DESC LIMIT ?2",
                    )?;
                    let rows = stmt
                        .query_map(params![channel, limit as i64], |r| r.get::<_, String>(0))?
                        .filter_map(|r| r.ok())
                        .filter_map(|t| serde_json::from_str(&t).ok())
                        .collect();
                    Ok(rows)
                })
            };
            tokio::task::spawn_blocking(read)
                .await
                .map_err(|e| StoreError(e.to_string()))?
        })
    }

    fn clear(&self, channel: &str) -> BoxFuture<'static, Result<usize, StoreError>> {
        let (store, channel) = (self.store.clone(), channel.to_owned());
        Box::pin(async move {
            store
                .write(move |c| {
                    c.execute(
                        "DELETE FROM recordings WHERE channel = ?1",
                        params![channel],
                    )
                })
                .await
        })
    }

    fn hold_to(&self, keep: Vec<(String, u32)>) -> BoxFuture<'static, Result<(), StoreError>> {
        let store = self.store.clone();
        Box::pin(async move {
            store
                .write(move |c| {
                    let codes: Vec<String> = c
                        .prepare_cached("SELECT DISTINCT channel FROM recordings")?
                        .query_map([], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?;
                    for code in codes {
                        match keep.iter().find(|(k, _)| *k == code) {
                            Some((_, n)) => trim(c, &code, *n)?,
                            None => c.execute(
                                "DELETE FROM recordings WHERE channel = ?1",
                                params![code],
                            )?,
                        };
                    }
                    Ok(())
                })
                .await
        })
    }
}

/// Keeps the newest `keep` recordings of `channel`.
fn trim(c: &rusqlite::Connection, channel: &str, keep: u32) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "DELETE FROM recordings WHERE channel = ?1 AND seq <= coalesce((SELECT seq FROM recordings \
         WHERE channel = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2), -1)",
    )?
    .execute(params![channel, keep])
}

/// Every recording of a store, by channel, oldest first (for `migrate`).
pub fn all(store: &Store) -> Result<Vec<(String, Value)>, StoreError> {
    store.read(|c| {
        c.prepare("SELECT channel, doc FROM recordings ORDER BY seq")?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .map(|r| r.map(|(ch, doc)| (ch, serde_json::from_str(&doc).unwrap_or(Value::Null))))
            .collect()
    })
}
