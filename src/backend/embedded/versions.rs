//! Versions in the SQLite store: table `versions`, one row a version.
//!
//! A version is made inside the store's writer, so reading the current
//! version and adding the next one is one step; the newest version of a code
//! is never pruned, so `max(number) + 1` never gives a number twice.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use crate::backend::{content_sha, next_kind, Current, NewVersion, Versioned, Versions};
use crate::store::{Store, StoreError};

/// [`Versions`] in this node's store.
pub struct StoreVersions {
    pub store: Arc<Store>,
}

impl Versions for StoreVersions {
    fn record(&self, v: NewVersion) -> BoxFuture<'static, Result<Versioned, StoreError>> {
        let store = self.store.clone();
        Box::pin(async move { store.write(move |c| record(c, &v)).await })
    }

    fn list(
        &self,
        kind: &'static str,
        code: &str,
    ) -> BoxFuture<'static, Result<Vec<Value>, StoreError>> {
        let (store, code) = (self.store.clone(), code.to_owned());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.read(|c| list(c, kind, &code)))
                .await
                .map_err(|e| StoreError(e.to_string()))?
        })
    }

    fn get(
        &self,
        kind: &'static str,
        code: &str,
        number: u64,
    ) -> BoxFuture<'static, Result<Option<Value>, StoreError>> {
        let (store, code) = (self.store.clone(), code.to_owned());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.read(|c| get(c, kind, &code, number)))
                .await
                .map_err(|e| StoreError(e.to_string()))?
        })
    }

    fn current(&self) -> BoxFuture<'static, Result<Vec<Current>, StoreError>> {
        let store = self.store.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                store.read(|c| {
                    c.prepare(
                        "SELECT v.kind, v.code, v.sha256 FROM versions v \
                         WHERE v.action != 'deleted' AND v.number = \
                         (SELECT max(number) FROM versions w WHERE w.kind = v.kind AND w.code = v.code)",
                    )?
                    .query_map([], |r| {
                        Ok(Current {
                            kind: r.get(0)?,
                            code: r.get(1)?,
                            sha256: r.get(2)?,
                        })
                    })?
                    .collect()
                })
            })
            .await
            .map_err(|e| StoreError(e.to_string()))?
        })
    }
}

fn record(c: &Connection, v: &NewVersion) -> rusqlite::Result<Versioned> {
    let head: Option<(u64, String, String)> = c
        .prepare_cached(
            "SELECT number, action, sha256 FROM versions WHERE kind = ?1 AND code = ?2 \
             ORDER BY number DESC LIMIT 1",
        )?
        .query_row(params![v.kind, v.code], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let before = head.as_ref().map(|h| h.0);
    let Some(kind) = next_kind(
        head.as_ref().map(|(_, k, s)| (k.as_str(), s.as_str())),
        v.content.as_deref(),
        v.restored,
    ) else {
        return Ok(Versioned {
            before,
            after: before,
        });
    };
    let number = before.unwrap_or(0) + 1;
    c.prepare_cached(
        "INSERT INTO versions (kind, code, number, at, action, by, sha256, content) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        v.kind,
        v.code,
        number,
        v.at,
        kind,
        v.by.to_string(),
        content_sha(v.content.as_deref()),
        v.content
    ])?;
    c.prepare_cached("DELETE FROM versions WHERE kind = ?1 AND code = ?2 AND number <= ?3 - ?4")?
        .execute(params![v.kind, v.code, number, v.keep.max(1) as i64])?;
    Ok(Versioned {
        before,
        after: Some(number),
    })
}

fn row(r: &rusqlite::Row<'_>, with_content: bool) -> rusqlite::Result<Value> {
    let by: String = r.get(4)?;
    let mut v = json!({
        "number": r.get::<_, u64>(0)?,
        "at": r.get::<_, String>(1)?,
        "kind": r.get::<_, String>(2)?,
        "by": serde_json::from_str::<Value>(&by).unwrap_or(Value::Null),
        "sha256": r.get::<_, String>(3)?,
    });
    if with_content {
        v["content"] = r
            .get::<_, Option<String>>(5)?
            .map_or(Value::Null, Value::String);
    }
    Ok(v)
}

/// The versions of a code, newest first, without content.
pub fn list(c: &Connection, kind: &str, code: &str) -> rusqlite::Result<Vec<Value>> {
    c.prepare_cached(
        "SELECT number, at, action, sha256, by, NULL FROM versions \
         WHERE kind = ?1 AND code = ?2 ORDER BY number DESC",
    )?
    .query_map(params![kind, code], |r| row(r, false))?
    .collect()
}

/// One version with its content.
pub fn get(c: &Connection, kind: &str, code: &str, number: u64) -> rusqlite::Result<Option<Value>> {
    c.prepare_cached(
        "SELECT number, at, action, sha256, by, content FROM versions \
         WHERE kind = ?1 AND code = ?2 AND number = ?3",
    )?
    .query_row(params![kind, code, number], |r| row(r, true))
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(content: Option<&str>) -> NewVersion {
        NewVersion {
            kind: "script",
            code: "s".into(),
            content: content.map(str::to_owned),
            restored: false,
            at: "2026-01-01T00:00:00Z".into(),
            by: json!({"by": "admin"}),
            keep: 3,
        }
    }

    #[tokio::test]
    async fn numbers_grow_same_content_makes_none_and_the_oldest_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let versions = StoreVersions {
            store: store.clone(),
        };
        let r = versions.record(version(Some("a"))).await.unwrap();
        assert_eq!((r.before, r.after), (None, Some(1)));
        let r = versions.record(version(Some("a"))).await.unwrap();
        assert!(!r.made());
        versions.record(version(Some("b"))).await.unwrap();
        versions.record(version(None)).await.unwrap();
        assert!(!versions.record(version(None)).await.unwrap().made());
        let r = versions.record(version(Some("b"))).await.unwrap();
        assert_eq!(r.after, Some(4));
        let list = versions.list("script", "s").await.unwrap();
        let kinds: Vec<&str> = list.iter().map(|v| v["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["created", "deleted", "changed"],
            "newest first, 3 kept"
        );
        assert!(versions.get("script", "s", 1).await.unwrap().is_none());
        assert_eq!(
            versions.get("script", "s", 4).await.unwrap().unwrap()["content"],
            "b"
        );
        assert_eq!(versions.current().await.unwrap().len(), 1);
    }
}
