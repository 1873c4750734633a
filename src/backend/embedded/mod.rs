//! The embedded backend: one process and its SQLite store (the default).

pub mod audit;
pub mod events;
pub mod files;
pub mod kv;
pub mod recordings;
pub mod secrets;
pub mod versions;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::backend::{HandOff, Handed, Handler, Take};
use crate::store::StoreError;

/// [`crate::backend::Peers`] and [`crate::backend::Work`] of a node alone:
/// nobody else to reach, every job and tick is its own.
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

    fn reloading(&self) -> u64 {
        0
    }

    fn reloaded(&self, _: u64) {}

    fn answer(&self, _: &'static str, _: Handler) {}

    fn gather(
        &self,
        _: &'static str,
        _: Value,
    ) -> BoxFuture<'static, Result<Vec<(String, Value)>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

impl crate::backend::Work for Alone {
    fn shared(&self) -> bool {
        false
    }

    fn hand_off(&self, _: HandOff) -> BoxFuture<'static, Result<Handed, StoreError>> {
        Box::pin(async { Err(StoreError("no cluster to hand a job to".into())) })
    }

    fn start(&self, _: Take) {}

    fn done(&self, _: &str) {}

    fn stop(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    fn claim_tick(&self, _: String) -> BoxFuture<'static, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }

    fn run_alone(&self, _: String) -> BoxFuture<'static, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }

    fn ran(&self, _: String) {}

    fn share(&self, _: &str, _: Value) -> BoxFuture<'static, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }

    fn adopt(&self, _: &str, _: Value) -> BoxFuture<'static, Result<Value, StoreError>> {
        Box::pin(async { Ok(Value::Null) })
    }

    fn shared_job(&self, _: &str) -> BoxFuture<'static, Result<Option<Value>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    fn shared_jobs(&self) -> BoxFuture<'static, Result<Vec<Value>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
