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
pub fn set_blocking(
    store: &Store,
    channel: &str,
    key: &str,
    value: Option<Value>,
) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError(format!("a key is 1 to {MAX_KEY_BYTES} bytes")));
    }
    let (channel, key) = (channel.to_owned(), key.to_owned());
    let value = value.map(|v| v.to_string());
    store.write_blocking(move |c| {
        match value {
            Some(v) => c
                .prepare_cached(
                    "INSERT OR REPLACE INTO kv (channel, key, value) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![channel, key, v])?,
            None => c
                .prepare_cached("DELETE FROM kv WHERE channel = ?1 AND key = ?2")?
                .execute(params![channel, key])?,
        };
        Ok(())
    })
}
