//! `kv_get` / `kv_set`: a persistent key-value map per channel, in the store.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::store::{Store, StoreError};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The value of `key` on `channel`, if any.
pub fn get(store: &Store, channel: &str, key: &str) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = store.read(|c| {
        c.prepare_cached("SELECT value FROM kv WHERE channel = ?1 AND key = ?2")?
            .query_row(params![channel, key], |r| r.get(0))
            .optional()
    })?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError(format!("a key is 1 to {MAX_KEY_BYTES} bytes")));
    }
    Ok(())
}

fn full(max_keys: usize) -> StoreError {
    StoreError(format!(
        "the channel has {max_keys} keys already (kv_max_keys); delete some first"
    ))
}

/// The stored JSON text of `key`, inside the writer's transaction.
fn current(c: &Connection, channel: &str, key: &str) -> rusqlite::Result<Option<String>> {
    c.prepare_cached("SELECT value FROM kv WHERE channel = ?1 AND key = ?2")?
        .query_row(params![channel, key], |r| r.get(0))
        .optional()
}

/// Writes (or with `None` removes) `key`, keeping the channel's key count;
/// `false` when a new key would pass `max_keys`.
fn put(
    c: &Connection,
    channel: &str,
    key: &str,
    value: Option<&str>,
    max_keys: usize,
) -> rusqlite::Result<bool> {
    let exists = c
        .prepare_cached("SELECT 1 FROM kv WHERE channel = ?1 AND key = ?2")?
        .exists(params![channel, key])?;
    match (value, exists) {
        (Some(v), true) => {
            c.prepare_cached("UPDATE kv SET value = ?3 WHERE channel = ?1 AND key = ?2")?
                .execute(params![channel, key, v])?;
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
            c.prepare_cached("INSERT INTO kv (channel, key, value) VALUES (?1, ?2, ?3)")?
                .execute(params![channel, key, v])?;
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

/// Stores `value` (JSON) under `key`, or removes the key for `None`; returns once durable.
/// A new key past `max_keys` keys of the channel is refused (existing keys still change).
pub fn set_blocking(
    store: &Store,
    channel: &str,
    key: &str,
    value: Option<Value>,
    max_keys: usize,
) -> Result<(), StoreError> {
    check_key(key)?;
    let (channel, key) = (channel.to_owned(), key.to_owned());
    let value = value.map(|v| v.to_string());
    let done = store.write_blocking(move |c| put(c, &channel, &key, value.as_deref(), max_keys))?;
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
        if !put(c, &channel, &key, Some(&next.to_string()), max_keys)? {
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
        if !put(c, &channel, &key, new.as_deref(), max_keys)? {
            return Ok(Err(full(max_keys)));
        }
        Ok(Ok(true))
    })?;
    outcome
}
