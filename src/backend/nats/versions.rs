//! Versions in cluster mode: the KV bucket `{prefix}_versions`.
//!
//! Per code two kinds of key (`<kind>.<token of the code>.…`):
//!
//! - `….head`: the current version's number, kind and SHA-256, and the
//!   list of the versions kept (newest first, without content);
//! - `….<number>`: one version with its content.
//!
//! A node makes version `n` by creating key `n` (only one node can) and then
//! moving the head to it against the head's revision; a node that loses the
//! race takes its key back and starts again from the new head, where the
//! same content makes no version. A number is visible only once the head
//! names it, so none is ever shown twice.

use std::sync::Arc;

use async_nats::jetstream::kv as jkv;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::{token, unavailable, untoken, Cluster};
use crate::backend::{content_sha, next_kind, Current, NewVersion, Versioned, Versions};
use crate::store::StoreError;

/// How often a record is tried again after losing a race to another node.
const TRIES: usize = 20;

/// [`Versions`] in a KV bucket.
pub struct NatsVersions {
    cluster: Arc<Cluster>,
    bucket: jkv::Store,
}

fn head_key(kind: &str, code: &str) -> String {
    format!("{kind}.{}.head", token(code))
}

fn version_key(kind: &str, code: &str, number: u64) -> String {
    format!("{kind}.{}.{number}", token(code))
}

impl NatsVersions {
    /// Opens (or creates) the bucket.
    pub async fn open(cluster: Arc<Cluster>) -> Result<NatsVersions, String> {
        let bucket = cluster
            .open_kv("versions", std::time::Duration::ZERO)
            .await?;
        Ok(NatsVersions { cluster, bucket })
    }

    /// The head of a code and its revision (0: none).
    async fn head(bucket: &jkv::Store, key: &str) -> Result<(Value, u64), StoreError> {
        match bucket.entry(key).await.map_err(unavailable)? {
            Some(e) if e.operation == jkv::Operation::Put => Ok((
                serde_json::from_slice(&e.value).unwrap_or(Value::Null),
                e.revision,
            )),
            Some(e) => Ok((Value::Null, e.revision)),
            None => Ok((Value::Null, 0)),
        }
    }
}

async fn record(bucket: jkv::Store, v: NewVersion) -> Result<Versioned, StoreError> {
    let hkey = head_key(v.kind, &v.code);
    let sha = content_sha(v.content.as_deref());
    for _ in 0..TRIES {
        let (head, revision) = NatsVersions::head(&bucket, &hkey).await?;
        let before = head["number"].as_u64();
        let current = before.map(|_| {
            (
                head["kind"].as_str().unwrap_or(""),
                head["sha256"].as_str().unwrap_or(""),
            )
        });
        let Some(kind) = next_kind(current, v.content.as_deref(), v.restored) else {
            return Ok(Versioned {
                before,
                after: before,
            });
        };
        // Claim the next free number.
        let mut number = before.unwrap_or(0) + 1;
        let mut summary = json!({
            "number": number, "at": v.at, "kind": kind, "by": v.by, "sha256": sha,
        });
        loop {
            summary["number"] = number.into();
            let mut full = summary.clone();
            full["content"] = v.content.clone().map_or(Value::Null, Value::String);
            match bucket
                .create(
                    version_key(v.kind, &v.code, number),
                    full.to_string().into(),
                )
                .await
            {
                Ok(_) => break,
                Err(e) if matches!(e.kind(), jkv::CreateErrorKind::AlreadyExists) => number += 1,
                Err(e) => return Err(unavailable(e)),
            }
        }
        let mut kept: Vec<Value> = head["versions"].as_array().cloned().unwrap_or_default();
        kept.insert(0, summary);
        let dropped: Vec<Value> = kept.split_off(v.keep.max(1).min(kept.len()));
        let next = json!({"number": number, "kind": kind, "sha256": sha, "versions": kept});
        let moved = if revision == 0 {
            bucket
                .create(&hkey, next.to_string().into())
                .await
                .map(drop)
                .map_err(|e| {
                    (
                        matches!(e.kind(), jkv::CreateErrorKind::AlreadyExists),
                        e.to_string(),
                    )
                })
        } else {
            bucket
                .update(&hkey, next.to_string().into(), revision)
                .await
                .map(drop)
                .map_err(|e| {
                    (
                        matches!(e.kind(), jkv::UpdateErrorKind::WrongLastRevision),
                        e.to_string(),
                    )
                })
        };
        match moved {
            Ok(()) => {
                for old in dropped {
                    if let Some(n) = old["number"].as_u64() {
                        let _ = bucket.purge(version_key(v.kind, &v.code, n)).await;
                    }
                }
                return Ok(Versioned {
                    before,
                    after: Some(number),
                });
            }
            Err((true, _)) => {
                // Another node moved the head first: our number was never shown.
                let _ = bucket.purge(version_key(v.kind, &v.code, number)).await;
            }
            Err((false, e)) => return Err(unavailable(e)),
        }
    }
    Err(StoreError(format!(
        "versions: {} {:?} changed on other nodes {TRIES} times while recording",
        v.kind, v.code
    )))
}

impl Versions for NatsVersions {
    fn record(&self, v: NewVersion) -> BoxFuture<'static, Result<Versioned, StoreError>> {
        let (bucket, connected) = (self.bucket.clone(), self.cluster.connected());
        Box::pin(async move {
            if !connected {
                return Err(unavailable("NATS is unreachable"));
            }
            record(bucket, v).await
        })
    }

    fn list(
        &self,
        kind: &'static str,
        code: &str,
    ) -> BoxFuture<'static, Result<Vec<Value>, StoreError>> {
        let (bucket, key) = (self.bucket.clone(), head_key(kind, code));
        Box::pin(async move {
            let (head, _) = NatsVersions::head(&bucket, &key).await?;
            Ok(head["versions"].as_array().cloned().unwrap_or_default())
        })
    }

    fn get(
        &self,
        kind: &'static str,
        code: &str,
        number: u64,
    ) -> BoxFuture<'static, Result<Option<Value>, StoreError>> {
        let bucket = self.bucket.clone();
        let (hkey, key) = (head_key(kind, code), version_key(kind, code, number));
        Box::pin(async move {
            // Only what the head names is a version (not a number being claimed).
            let (head, _) = NatsVersions::head(&bucket, &hkey).await?;
            let named = head["versions"]
                .as_array()
                .is_some_and(|l| l.iter().any(|v| v["number"].as_u64() == Some(number)));
            if !named {
                return Ok(None);
            }
            let value = bucket.get(key).await.map_err(unavailable)?;
            Ok(value.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
        })
    }

    fn current(&self) -> BoxFuture<'static, Result<Vec<Current>, StoreError>> {
        let cluster = self.cluster.clone();
        Box::pin(async move {
            let name = format!("{}_versions", cluster.prefix);
            let filter = format!("$KV.{name}.*.*.head");
            let heads = cluster
                .last_per_subject(&format!("KV_{name}"), &filter)
                .await?;
            let mut out = Vec::new();
            for (subject, payload) in heads {
                let mut parts = subject.rsplit('.');
                let (_, Some(code), Some(kind)) = (parts.next(), parts.next(), parts.next()) else {
                    continue;
                };
                let head: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                if head["kind"] == "deleted" || head.is_null() {
                    continue;
                }
                if let (Some(code), Some(sha)) = (untoken(code), head["sha256"].as_str()) {
                    out.push(Current {
                        kind: kind.to_owned(),
                        code,
                        sha256: sha.to_owned(),
                    });
                }
            }
            Ok(out)
        })
    }
}
