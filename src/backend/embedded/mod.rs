//! The embedded backend: one process and its SQLite store (the default).

pub mod events;
pub mod kv;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::store::StoreError;

/// [`crate::backend::Peers`] of a node alone: nobody else to reach.
pub struct Alone;

impl crate::backend::Peers for Alone {
    fn start(&self) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn push_all(&self, _: &str, _: &str) {}

    fn push_to(&self, _: &str, _: &str, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    fn connections(&self, local: Value) -> BoxFuture<'static, Result<Value, StoreError>> {
        Box::pin(async move { Ok(local) })
    }

    fn cluster(&self) -> Option<(String, bool)> {
        None
    }

    fn reloaded(&self) {}
}
