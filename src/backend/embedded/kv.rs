//! `kv_get` / `kv_set` in embedded mode: a persistent key-value map per
//! channel, in the SQLite store.
//!
//! A key set with a TTL has an `expires` time (Unix ms): past it, the key is
//! gone for every read and write at once, and housekeeping deletes the row.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use std::sync::Arc;

use crate::backend::{check_key, full, MAX_LISTED_KEYS};
use crate::store::{Store, StoreError};

/// [`crate::backend::Kv`] over the embedded store.
pub struct EmbeddedKv {
    /// The store.
    pub store: Arc<Store>,
    /// `kv_max_keys`.
    pub max_keys: usize,
}

impl crate::backend::Kv for EmbeddedKv {
    fn get(&self, channel: &str, key: &str) -> Result<Option<Value>, StoreError> {
        get(&self.store, channel, key)
    }

    fn keys(&self, channel: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        keys(&self.store, channel, prefix)
    }

    fn set(
        &self,
        channel: &str,
        key: &str,
        value: Option<Value>,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), StoreError> {
        set_blocking(&self.store, channel, key, value, ttl, self.max_keys)
    }

    fn delete(&self, channel: &str, key: &str) -> Result<bool, StoreError> {
        delete_blocking(&self.store, channel, key)
    }

    fn incr(&self, channel: &str, key: &str, n: i64) -> Result<i64, StoreError> {
        incr_blocking(&self.store, channel, key, n, self.max_keys)
    }

    fn cas(
        &self,
        channel: &str,
        key: &str,
        expected: Option<Value>,
        new: Option<Value>,
    ) -> Result<bool, StoreError> {
        cas_blocking(&self.store, channel, key, expected, new, self.max_keys)
    }
}

/// Live: no expiry, or one still ahead of `?3` (now, Unix ms).
const LIVE: &str = "(expires IS NULL OR expires > ?3)";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The value of `key` on `channel`, if any.
pub fn get(store: &Store, channel: &str, key: &str) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = store.read(|c| current(c, channel, key))?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// The channel's live keys that start with `prefix`, sorted, at most [`MAX_LISTED_KEYS`].
pub fn keys(store: &Store, channel: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
    store.read(|c| {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT key FROM kv WHERE channel = ?1 AND key >= ?2 AND {LIVE} ORDER BY key"
        ))?;
        let mut rows = stmt.query(params![channel, prefix, now_ms()])?;
        let mut out = Vec::new();
        // Keys are in order: those with the prefix come first, together.
        while let Some(row) = rows.next()? {
            let key: String = row.get(0)?;
            if !key.starts_with(prefix) || out.len() == MAX_LISTED_KEYS {
                break;
            }
            out.push(key);
        }
        Ok(out)
    })
}

/// Removes `key`; `true` when it was there (and live).
pub fn delete_blocking(store: &Store, channel: &str, key: &str) -> Result<bool, StoreError> {
    check_key(key)?;
    let (channel, key) = (channel.to_owned(), key.to_owned());
    store.write_blocking(move |c| {
        let was = current(c, &channel, &key)?.is_some();
        put(c, &channel, &key, None, usize::MAX, None)?;
        Ok(was)
    })
}

/// Deletes the rows of expired keys; returns how many.
pub async fn prune_expired(store: &Store) -> Result<usize, StoreError> {
    store
        .write(|c| {
            let now = now_ms();
            c.execute(
                "UPDATE kv_counts SET n = n - (SELECT count(*) FROM kv \
                 WHERE kv.channel = kv_counts.channel AND expires <= ?1) \
                 WHERE channel IN (SELECT channel FROM kv WHERE expires <= ?1)",
                params![now],
            )?;
            c.execute("DELETE FROM kv WHERE expires <= ?1", params![now])
        })
        .await
}

/// The stored JSON text of `key` if it is live.
fn current(c: &Connection, channel: &str, key: &str) -> rusqlite::Result<Option<String>> {
    c.prepare_cached(&format!(
        "SELECT value FROM kv WHERE channel = ?1 AND key = ?2 AND {LIVE}"
    ))?
    .query_row(params![channel, key, now_ms()], |r| r.get(0))
    .optional()
}

/// Writes (or with `None` removes) `key`, with its expiry (Unix ms, `None`:
/// never), keeping the channel's key count; `false` when a new key would pass
/// `max_keys`. A row that expired but is not pruned yet still counts, and is
/// overwritten in place.
fn put(
    c: &Connection,
    channel: &str,
    key: &str,
    value: Option<&str>,
    max_keys: usize,
    expires: Option<i64>,
) -> rusqlite::Result<bool> {
    let exists = c
        .prepare_cached("SELECT 1 FROM kv WHERE channel = ?1 AND key = ?2")?
        .exists(params![channel, key])?;
    match (value, exists) {
        (Some(v), true) => {
            c.prepare_cached(
                "UPDATE kv SET value = ?3, expires = ?4 WHERE channel = ?1 AND key = ?2",
            )?
            .execute(params![channel, key, v, expires])?;
        }
        (Some(v), false) => {
            let n: i64 = c
                .prepare_cached("SELECT n FROM kv_counts WHERE channel = ?1")?
                .query_row(params![channel], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            if n >= max_keys as i64 {
                return Ok(false);
            }
            c.prepare_cached(
                "INSERT INTO kv (channel, key, value, expires) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![channel, key, v, expires])?;
            c.prepare_cached(
                "INSERT INTO kv_counts (channel, n) VALUES (?1, 1) \
                 ON CONFLICT (channel) DO UPDATE SET n = n + 1",
            )?
            .execute(params![channel])?;
        }
        (None, true) => {
            c.prepare_cached("DELETE FROM kv WHERE channel = ?1 AND key = ?2")?
                .execute(params![channel, key])?;
            c.prepare_cached("UPDATE kv_counts SET n = n - 1 WHERE channel = ?1")?
                .execute(params![channel])?;
        }
        (None, false) => {}
    }
    Ok(true)
}

/// Stores `value` (JSON) under `key`, gone after `ttl` if given, or removes
/// the key for `None`; returns once durable. A new key past `max_keys` keys of
/// the channel is refused (existing keys still change).
pub fn set_blocking(
    store: &Store,
    channel: &str,
    key: &str,
    value: Option<Value>,
    ttl: Option<std::time::Duration>,
    max_keys: usize,
) -> Result<(), StoreError> {
    check_key(key)?;
    let (channel, key) = (channel.to_owned(), key.to_owned());
    let value = value.map(|v| v.to_string());
    let expires = ttl.map(|t| now_ms().saturating_add(t.as_millis().min(i64::MAX as u128) as i64));
    let done = store
        .write_blocking(move |c| put(c, &channel, &key, value.as_deref(), max_keys, expires))?;
    if done {
        Ok(())
    } else {
        Err(full(max_keys))
    }
}

/// `kv_incr`: adds `n` to the integer under `key` (a missing key counts as 0)
/// and returns the new value, atomically against every other write (one writer).
pub fn incr_blocking(
    store: &Store,
    channel: &str,
    key: &str,
    n: i64,
    max_keys: usize,
) -> Result<i64, StoreError> {
    check_key(key)?;
    let (channel, key) = (channel.to_owned(), key.to_owned());
    let outcome = store.write_blocking(move |c| {
        let now = match current(c, &channel, &key)? {
            None => 0,
            Some(text) => match serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.as_i64())
            {
                Some(i) => i,
                None => return Ok(Err(format!("the value of {key:?} is not an integer"))),
            },
        };
        let Some(next) = now.checked_add(n) else {
            return Ok(Err(format!("{now} + {n} overflows")));
        };
        // A counter keeps its expiry, if it has one.
        let keep: Option<i64> = c
            .prepare_cached(&format!(
                "SELECT expires FROM kv WHERE channel = ?1 AND key = ?2 AND {LIVE}"
            ))?
            .query_row(params![&channel, &key, now_ms()], |r| r.get(0))
            .optional()?
            .flatten();
        if !put(c, &channel, &key, Some(&next.to_string()), max_keys, keep)? {
            return Ok(Err(full(max_keys).0));
        }
        Ok(Ok(next))
    })?;
    outcome.map_err(StoreError)
}

/// `kv_cas`: sets `key` to `new` (`None`: removes it) only when its value now
/// equals `expected` (`None`: absent); returns whether it did, atomically.
pub fn cas_blocking(
    store: &Store,
    channel: &str,
    key: &str,
    expected: Option<Value>,
    new: Option<Value>,
    max_keys: usize,
) -> Result<bool, StoreError> {
    check_key(key)?;
    let (channel, key) = (channel.to_owned(), key.to_owned());
    let new = new.map(|v| v.to_string());
    let outcome = store.write_blocking(move |c| {
        let now = current(c, &channel, &key)?
            .map(|text| serde_json::from_str::<Value>(&text).unwrap_or(Value::Null));
        if now != expected {
            return Ok(Ok(false));
        }
        if !put(c, &channel, &key, new.as_deref(), max_keys, None)? {
            return Ok(Err(full(max_keys)));
        }
        Ok(Ok(true))
    })?;
    outcome
}
