//! `kv_get` / `kv_set`: a persistent key-value map per channel, in the store.

use rusqlite::{params, OptionalExtension};
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

/// Stores `value` (JSON) under `key`, or removes the key for `None`; returns once durable.
/// A new key past `max_keys` keys of the channel is refused (existing keys still change).
pub fn set_blocking(
    store: &Store,
    channel: &str,
    key: &str,
    value: Option<Value>,
    max_keys: usize,
) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError(format!("a key is 1 to {MAX_KEY_BYTES} bytes")));
    }
    let (channel, key) = (channel.to_owned(), key.to_owned());
    let value = value.map(|v| v.to_string());
    let done = store.write_blocking(move |c| {
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
    })?;
    if done {
        Ok(())
    } else {
        Err(StoreError(format!(
            "the channel has {max_keys} keys already (kv_max_keys); delete some first"
        )))
    }
}
