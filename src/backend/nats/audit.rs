//! The audit log in cluster mode: the stream `{prefix}_audit` (subject
//! `{prefix}.audit`), one message an entry, kept `audit_retention`
//! (JetStream's `max_age` prunes it; nothing else removes a message).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::{self, StorageType};
use futures_util::future::BoxFuture;
use serde_json::Value;

use super::{unavailable, Cluster};
use crate::backend::{Audit, AuditQuery};
use crate::store::StoreError;

/// [`Audit`] in a JetStream stream.
pub struct NatsAudit {
    cluster: Arc<Cluster>,
}

impl NatsAudit {
    /// Opens (or creates) the stream; its age limit follows `retention`.
    pub async fn open(cluster: Arc<Cluster>, retention: Duration) -> Result<NatsAudit, String> {
        let config = stream::Config {
            name: format!("{}_audit", cluster.prefix),
            subjects: vec![cluster.subject("audit")],
            max_age: retention,
            storage: StorageType::File,
            num_replicas: cluster.replicas,
            ..Default::default()
        };
        let made = cluster
            .js
            .get_or_create_stream(config.clone())
            .await
            .map_err(|e| format!("cluster: audit stream: {e}"))?;
        if made.cached_info().config.max_age != retention {
            cluster
                .js
                .update_stream(config)
                .await
                .map_err(|e| format!("cluster: audit stream: {e}"))?;
        }
        Ok(NatsAudit { cluster })
    }
}

impl Audit for NatsAudit {
    fn append(&self, entry: Value) -> BoxFuture<'static, Result<(), StoreError>> {
        let cluster = self.cluster.clone();
        Box::pin(async move {
            if !cluster.connected() {
                return Err(unavailable("NATS is unreachable"));
            }
            cluster
                .js
                .publish(cluster.subject("audit"), entry.to_string().into())
                .await
                .map_err(unavailable)?
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn list(&self, query: AuditQuery) -> BoxFuture<'static, Result<Vec<Value>, StoreError>> {
        let cluster = self.cluster.clone();
        Box::pin(async move {
            let policy = match query.since.and_then(|ms| {
                time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok()
            }) {
                Some(start) => DeliverPolicy::ByStartTime { start_time: start },
                None => DeliverPolicy::All,
            };
            let stream = format!("{}_audit", cluster.prefix);
            let all = cluster
                .read_stream(&stream, &cluster.subject("audit"), policy)
                .await?;
            Ok(all
                .iter()
                .rev()
                .filter_map(|(_, payload)| serde_json::from_slice::<Value>(payload).ok())
                .filter(|entry| query.admits(entry))
                .skip(query.offset)
                .take(query.limit)
                .collect())
        })
    }

    fn prune(&self, _before: i64) -> BoxFuture<'static, Result<usize, StoreError>> {
        // The stream's max_age does it.
        Box::pin(async { Ok(0) })
    }
}
