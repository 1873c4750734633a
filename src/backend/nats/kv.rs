//! `kv_*` in cluster mode: one JetStream KV bucket, `{prefix}_kv`.
//!
//! A key is `<channel>.<key>`, each part a [`token`] (base64url), so any
//! channel code and key text is a valid NATS key and a channel's keys are one
//! subject filter. A value is `{"v": JSON, "x": expiry in Unix ms}`; past its
//! expiry a key counts as absent for every read and write, and is removed the
//! next time it is read. `incr` and `cas` are optimistic: they write with the
//! revision they read (JetStream's expected-last-sequence check) and try again
//! when another node wrote in between.

use std::sync::Arc;

use async_nats::jetstream::consumer::{push, Consumer, DeliverPolicy};
use async_nats::jetstream::kv::Operation;
use serde_json::{json, Value};

use super::{token, unavailable, untoken, Cluster};
use crate::backend::{check_key, full, MAX_LISTED_KEYS};
use crate::store::StoreError;

/// Tries of an optimistic write before giving up (only under heavy contention).
const TRIES: usize = 100;

/// [`crate::backend::Kv`] on the cluster's KV bucket.
pub struct NatsKv {
    /// The cluster.
    pub cluster: Arc<Cluster>,
    /// `kv_max_keys`.
    pub max_keys: usize,
}

/// The live value of a key and the revision to write against (`None`: the
/// key was never written).
struct Current {
    value: Option<Value>,
    expires: Option<i64>,
    revision: Option<u64>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn nats_key(channel: &str, key: &str) -> String {
    format!("{}.{}", token(channel), token(key))
}

fn envelope(value: &Value, expires: Option<i64>) -> axum::body::Bytes {
    let mut v = json!({ "v": value });
    if let Some(x) = expires {
        v["x"] = x.into();
    }
    v.to_string().into()
}

/// The value and expiry of a stored envelope.
fn open(bytes: &[u8]) -> (Value, Option<i64>) {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    (v["v"].clone(), v["x"].as_i64())
}

enum Outcome {
    Done,
    /// Another writer came first: read again.
    Conflict,
}

impl NatsKv {
    async fn current(&self, key: &str) -> Result<Current, StoreError> {
        let entry = self.cluster.kv.entry(key).await.map_err(unavailable)?;
        Ok(match entry {
            None => Current {
                value: None,
                expires: None,
                revision: None,
            },
            Some(e) if e.operation != Operation::Put => Current {
                value: None,
                expires: None,
                revision: Some(e.revision),
            },
            Some(e) => {
                let (value, expires) = open(&e.value);
                let live = expires.is_none_or(|x| x > now_ms());
                Current {
                    value: live.then_some(value),
                    expires: expires.filter(|_| live),
                    revision: Some(e.revision),
                }
            }
        })
    }

    /// Writes `new` (`None`: deletes) if the key is still at `revision`.
    async fn write(
        &self,
        key: &str,
        revision: Option<u64>,
        new: Option<axum::body::Bytes>,
    ) -> Result<Outcome, StoreError> {
        let kv = &self.cluster.kv;
        let result = match (new, revision) {
            (Some(bytes), Some(rev)) => kv.update(key, bytes, rev).await.map(drop).map_err(|e| {
                use async_nats::jetstream::kv::UpdateErrorKind as K;
                (matches!(e.kind(), K::WrongLastRevision), e.to_string())
            }),
            (Some(bytes), None) => kv.create(key, bytes).await.map(drop).map_err(|e| {
                use async_nats::jetstream::kv::CreateErrorKind as K;
                (matches!(e.kind(), K::AlreadyExists), e.to_string())
            }),
            (None, Some(rev)) => kv
                .delete_expect_revision(key, Some(rev))
                .await
                .map_err(|e| (e.to_string().contains("wrong last sequence"), e.to_string())),
            (None, None) => Ok(()),
        };
        match result {
            Ok(()) => Ok(Outcome::Done),
            Err((true, _)) => Ok(Outcome::Conflict),
            Err((false, e)) => Err(unavailable(e)),
        }
    }

    /// An ordered consumer of the newest entry of every key of `channel`
    /// (deleted ones included), and its subject filter.
    async fn last_entries(
        &self,
        channel: &str,
    ) -> Result<(Consumer<push::OrderedConfig>, String), StoreError> {
        let stream = self
            .cluster
            .js
            .get_stream(format!("KV_{}", self.cluster.kv_bucket_name()))
            .await
            .map_err(unavailable)?;
        let filter = format!("$KV.{}.{}.>", self.cluster.kv_bucket_name(), token(channel));
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.cluster.client.new_inbox(),
                filter_subject: filter.clone(),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        Ok((consumer, filter))
    }

    /// The channel's keys as stored (live or not), with their envelopes.
    async fn list(&self, channel: &str) -> Result<Vec<(String, Value, Option<i64>)>, StoreError> {
        let bucket = self.cluster.kv_bucket_name();
        let filter = format!("$KV.{bucket}.{}.>", token(channel));
        let entries = self
            .cluster
            .last_per_subject(&format!("KV_{bucket}"), &filter)
            .await?;
        let strip = filter.len() - 1;
        Ok(entries
            .into_iter()
            .filter_map(|(subject, payload)| {
                let key = subject.get(strip..).and_then(untoken)?;
                let (value, expires) = open(&payload);
                Some((key, value, expires))
            })
            .collect())
    }

    /// Refuses a new key past `kv_max_keys` (keys expired but not yet read
    /// count, as in embedded mode until housekeeping prunes them).
    async fn room_for_new_key(&self, channel: &str) -> Result<(), StoreError> {
        if self.max_keys == usize::MAX {
            return Ok(());
        }
        // Fewer entries than the bound, deleted keys included: room, without
        // reading them. Otherwise the live keys are counted.
        let (consumer, _) = self.last_entries(channel).await?;
        if (consumer.cached_info().num_pending as usize) < self.max_keys {
            return Ok(());
        }
        if self.list(channel).await?.len() >= self.max_keys {
            return Err(full(self.max_keys));
        }
        Ok(())
    }

    /// Reads, computes the new value with `f`, writes against the revision
    /// read; again on conflict. `f` returns the new value (`None`: delete)
    /// and what to answer, or `Err` to stop without writing.
    async fn update<T>(
        &self,
        channel: &str,
        key: &str,
        mut f: impl FnMut(&Current) -> Result<(Option<axum::body::Bytes>, T), StoreError>,
    ) -> Result<T, StoreError> {
        check_key(key)?;
        let nkey = nats_key(channel, key);
        for _ in 0..TRIES {
            let now = self.current(&nkey).await?;
            let (new, answer) = f(&now)?;
            if now.value.is_none() && new.is_some() {
                self.room_for_new_key(channel).await?;
            }
            if now.value.is_none() && new.is_none() {
                return Ok(answer);
            }
            match self.write(&nkey, now.revision, new).await? {
                Outcome::Done => return Ok(answer),
                Outcome::Conflict => continue,
            }
        }
        Err(StoreError(format!(
            "{key:?} changed {TRIES} times while being written; try again"
        )))
    }
}

impl NatsKv {
    /// Writes a key as it is (`migrate`): no quota check, the expiry kept.
    pub async fn import(
        &self,
        channel: &str,
        key: &str,
        value: &Value,
        expires: Option<i64>,
    ) -> Result<(), StoreError> {
        self.cluster
            .kv
            .put(nats_key(channel, key), envelope(value, expires))
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

impl Cluster {
    fn kv_bucket_name(&self) -> String {
        format!("{}_kv", self.prefix)
    }
}

impl crate::backend::Kv for NatsKv {
    fn get(&self, channel: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let nkey = nats_key(channel, key);
        self.cluster
            .block(async { Ok(self.current(&nkey).await?.value) })
    }

    fn keys(&self, channel: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        let mut keys: Vec<String> = self
            .cluster
            .block(self.list(channel))?
            .into_iter()
            .filter(|(k, _, x)| k.starts_with(prefix) && x.is_none_or(|x| x > now))
            .map(|(k, _, _)| k)
            .collect();
        keys.sort();
        keys.truncate(MAX_LISTED_KEYS);
        Ok(keys)
    }

    fn set(
        &self,
        channel: &str,
        key: &str,
        value: Option<Value>,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), StoreError> {
        let expires =
            ttl.map(|t| now_ms().saturating_add(t.as_millis().min(i64::MAX as u128) as i64));
        let bytes = value.as_ref().map(|v| envelope(v, expires));
        self.cluster
            .block(self.update(channel, key, |_| Ok((bytes.clone(), ()))))
    }

    fn delete(&self, channel: &str, key: &str) -> Result<bool, StoreError> {
        self.cluster
            .block(self.update(channel, key, |now| Ok((None, now.value.is_some()))))
    }

    fn incr(&self, channel: &str, key: &str, n: i64) -> Result<i64, StoreError> {
        self.cluster.block(self.update(channel, key, |now| {
            let base = match &now.value {
                None => 0,
                Some(v) => v
                    .as_i64()
                    .ok_or_else(|| StoreError(format!("the value of {key:?} is not an integer")))?,
            };
            let next = base
                .checked_add(n)
                .ok_or_else(|| StoreError(format!("{base} + {n} overflows")))?;
            // A counter keeps its expiry, if it has one.
            Ok((Some(envelope(&next.into(), now.expires)), next))
        }))
    }

    fn cas(
        &self,
        channel: &str,
        key: &str,
        expected: Option<Value>,
        new: Option<Value>,
    ) -> Result<bool, StoreError> {
        let bytes = new.as_ref().map(|v| envelope(v, None));
        // A mismatch answers `false` without writing; `update` writes nothing
        // for an absent key that stays absent.
        let outcome = self.cluster.block(self.update(channel, key, |now| {
            if now.value != expected {
                return Err(StoreError(MISMATCH.into()));
            }
            Ok((bytes.clone(), true))
        }));
        match outcome {
            Err(e) if e.0 == MISMATCH => Ok(false),
            other => other,
        }
    }
}

const MISMATCH: &str = "\u{0}cas mismatch";
