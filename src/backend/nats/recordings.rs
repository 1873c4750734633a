//! Recordings in cluster mode: the stream `{prefix}_rec`, subject
//! `{prefix}.rec.<channel>` (the channel a [`token`]), one message a
//! recording. The stream keeps at most [`MOST`] a channel (the largest
//! `opts.record`); each write trims the channel to its own `keep` with a
//! purge that keeps the newest. A list reads the channel's subject with an
//! ordered consumer (at most `keep` messages).

use std::sync::Arc;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde_json::Value;

use super::{token, unavailable, Cluster};
use crate::backend::{Recorded, Recordings};
use crate::store::StoreError;

/// The most recordings a channel keeps (`opts.record` is 0..=1000).
const MOST: i64 = 1000;

/// [`Recordings`] in a JetStream stream.
pub struct NatsRecordings {
    cluster: Arc<Cluster>,
    stream: stream::Stream,
}

impl NatsRecordings {
    /// Opens (or creates) the recordings stream.
    pub async fn open(cluster: Arc<Cluster>) -> Result<NatsRecordings, String> {
        let stream = cluster
            .js
            .get_or_create_stream(stream::Config {
                name: format!("{}_rec", cluster.prefix),
                subjects: vec![cluster.subject("rec.*")],
                max_messages_per_subject: MOST,
                discard: DiscardPolicy::Old,
                storage: StorageType::File,
                num_replicas: cluster.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cluster: recordings stream: {e}"))?;
        Ok(NatsRecordings { cluster, stream })
    }

    fn subject(&self, channel: &str) -> String {
        self.cluster.subject(&format!("rec.{}", token(channel)))
    }

    /// Keeps the newest `keep` of `subject` (`0`: none); how many went.
    async fn trim(stream: &stream::Stream, subject: String, keep: u32) -> Result<u64, StoreError> {
        let purged = if keep == 0 {
            stream.purge().filter(subject).await
        } else {
            stream.purge().filter(subject).keep(u64::from(keep)).await
        };
        purged.map(|p| p.purged).map_err(unavailable)
    }

    /// Publishes recordings as they are (`migrate`), then trims to `keep`.
    pub async fn import(&self, batch: Vec<Recorded>) -> Result<(), StoreError> {
        write(self.cluster.clone(), self.stream.clone(), batch).await
    }
}

async fn write(
    cluster: Arc<Cluster>,
    stream: stream::Stream,
    batch: Vec<Recorded>,
) -> Result<(), StoreError> {
    for item in batch {
        let subject = cluster.subject(&format!("rec.{}", token(&item.channel)));
        let mut acks = Vec::with_capacity(item.docs.len());
        for doc in &item.docs {
            let ack = cluster
                .js
                .publish(subject.clone(), doc.to_string().into())
                .await
                .map_err(unavailable)?;
            acks.push(ack);
        }
        for ack in acks {
            if let Err(e) = ack.await {
                // Too large for NATS (max_payload), most likely: left out.
                tracing::warn!(channel = %item.channel, "cluster: a recording not stored: {e}");
            }
        }
        NatsRecordings::trim(&stream, subject, item.keep).await?;
    }
    Ok(())
}

impl Recordings for NatsRecordings {
    fn write(&self, batch: Vec<Recorded>) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(write(self.cluster.clone(), self.stream.clone(), batch))
    }

    fn list(
        &self,
        channel: &str,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Value>, StoreError>> {
        let (cluster, subject) = (self.cluster.clone(), self.subject(channel));
        Box::pin(async move {
            let stream = format!("{}_rec", cluster.prefix);
            let all = cluster
                .read_stream(&stream, &subject, DeliverPolicy::All)
                .await?;
            Ok(all
                .iter()
                .rev()
                .filter_map(|(_, payload)| serde_json::from_slice::<Value>(payload).ok())
                .take(limit)
                .collect())
        })
    }

    fn clear(&self, channel: &str) -> BoxFuture<'static, Result<usize, StoreError>> {
        let (stream, subject) = (self.stream.clone(), self.subject(channel));
        Box::pin(async move { Ok(Self::trim(&stream, subject, 0).await? as usize) })
    }

    fn hold_to(&self, keep: Vec<(String, u32)>) -> BoxFuture<'static, Result<(), StoreError>> {
        let stream = self.stream.clone();
        let cluster = self.cluster.clone();
        Box::pin(async move {
            let mut info = stream.clone();
            let info = info.info().await.map_err(unavailable)?;
            if info.state.messages == 0 {
                return Ok(());
            }
            let mut subjects = stream
                .info_with_subjects(cluster.subject("rec.*"))
                .await
                .map_err(unavailable)?;
            let mut present = Vec::new();
            while let Some(entry) = subjects.next().await {
                let (subject, _) = entry.map_err(unavailable)?;
                present.push(subject);
            }
            for subject in present {
                let n = keep
                    .iter()
                    .find(|(code, _)| cluster.subject(&format!("rec.{}", token(code))) == subject)
                    .map_or(0, |(_, n)| *n);
                Self::trim(&stream, subject, n).await?;
            }
            Ok(())
        })
    }
}
