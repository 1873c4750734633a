//! What crosses nodes about open websockets, on core NATS subjects (no
//! persistence: a push, like a frame on a socket, is at most once):
//!
//! | subject | what |
//! |---|---|
//! | `{prefix}.push.all` | `ws_send`: every other node pushes to its connections of the channel |
//! | `{prefix}.push.to` | `ws_send_to`: request; the node holding the connection answers |
//! | `{prefix}.ask.<topic>` | a question to every node (its connections, its jobs…); each answers |
//! | `{prefix}.presence` | every [`PRESENCE_EVERY`], and when a connection opens: each node's channels with connections, and their patterns |
//! | `{prefix}.node.<node>.deliver` | an event a node pulled for a channel whose wanting connection is on `<node>` |

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{token, unavailable, Cluster, NODE_TTL};
use crate::backend::Handler;
use crate::pattern::Pattern;
use crate::store::StoreError;
use crate::AppState;

/// How often a node tells the others where its connections are.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(2);
/// How long a request to other nodes waits for answers.
const GATHER: Duration = Duration::from_millis(500);

/// Another node's channels with open connections, and their patterns.
struct Presence {
    seen: Instant,
    channels: HashMap<String, Vec<Pattern>>,
}

/// The node's part in cross-node websocket traffic.
pub struct Live {
    cluster: Arc<Cluster>,
    app: Weak<AppState>,
    others: Mutex<HashMap<String, Presence>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Push {
    from: String,
    channel: String,
    #[serde(default)]
    id: Option<String>,
    frame: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Delivery {
    pub channel: String,
    pub name: String,
    pub event: String,
}

impl Live {
    /// The node's part, for the server state `app`; [`start`](Self::start) it.
    pub fn new(cluster: Arc<Cluster>, app: Weak<AppState>) -> Arc<Live> {
        Arc::new(Live {
            cluster,
            app,
            others: Mutex::default(),
        })
    }

    /// Subscribes to the subjects above and starts announcing this node's presence.
    pub async fn start(self: &Arc<Self>) -> Result<(), String> {
        let live = self.clone();
        let cluster = self.cluster.clone();
        let client = &cluster.client;
        let sub = |subject: String| async move {
            client
                .subscribe(subject.clone())
                .await
                .map_err(|e| format!("cluster: subscribing to {subject}: {e}"))
        };
        let mut push_all = sub(cluster.subject("push.all")).await?;
        let mut push_to = sub(cluster.subject("push.to")).await?;
        let mut presence = sub(cluster.subject("presence")).await?;
        let mut deliver =
            sub(cluster.subject(&format!("node.{}.deliver", token(&cluster.node)))).await?;

        let me = live.clone();
        tokio::spawn(async move {
            while let Some(msg) = push_all.next().await {
                if let (Ok(push), Some(app)) = (
                    serde_json::from_slice::<Push>(&msg.payload),
                    me.app.upgrade(),
                ) {
                    if push.from != me.cluster.node {
                        app.connections
                            .push_all(&push.channel, &Utf8Bytes::from(push.frame));
                    }
                }
            }
        });
        let me = live.clone();
        tokio::spawn(async move {
            while let Some(msg) = push_to.next().await {
                let (Ok(push), Some(app), Some(reply)) = (
                    serde_json::from_slice::<Push>(&msg.payload),
                    me.app.upgrade(),
                    msg.reply,
                ) else {
                    continue;
                };
                let Some(id) = push
                    .id
                    .as_deref()
                    .and_then(|i| uuid::Uuid::parse_str(i).ok())
                else {
                    continue;
                };
                // Only the node holding the connection answers.
                if app
                    .connections
                    .push_to(&push.channel, id, &Utf8Bytes::from(push.frame))
                {
                    let _ = me.cluster.client.publish(reply, "1".into()).await;
                }
            }
        });
        let me = Arc::downgrade(&live);
        live.answer(
            "conns",
            Arc::new(move |_| {
                let app = me.upgrade().and_then(|l| l.app.upgrade());
                Box::pin(async move { app.map_or(Value::Null, |app| app.connections.describe()) })
            }),
        );
        let me = live.clone();
        tokio::spawn(async move {
            while let Some(msg) = presence.next().await {
                let Ok(v) = serde_json::from_slice::<Value>(&msg.payload) else {
                    continue;
                };
                let Some(node) = v["node"].as_str().filter(|n| *n != me.cluster.node) else {
                    continue;
                };
                let channels = v["channels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(code, list)| {
                                let patterns = list
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|p| p.as_str().and_then(|p| Pattern::parse(p).ok()))
                                    .collect();
                                (code.clone(), patterns)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                me.others_lock().insert(
                    node.to_owned(),
                    Presence {
                        seen: Instant::now(),
                        channels,
                    },
                );
            }
        });
        let me = live.clone();
        tokio::spawn(async move {
            while let Some(msg) = deliver.next().await {
                let (Ok(d), Some(app), Some(reply)) = (
                    serde_json::from_slice::<Delivery>(&msg.payload),
                    me.app.upgrade(),
                    msg.reply,
                ) else {
                    continue;
                };
                let frame = crate::events::frame_of(&d.event);
                let outcome = app.connections.with_channel(&d.channel, |c| {
                    c.and_then(|c| c.deliver_once(&d.name, &frame))
                });
                let answer = match outcome {
                    Some(true) => "1",
                    Some(false) => "full",
                    None => "0",
                };
                let _ = me.cluster.client.publish(reply, answer.into()).await;
            }
        });
        let me = live.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRESENCE_EVERY);
            loop {
                tick.tick().await;
                me.announce().await;
            }
        });
        Ok(())
    }

    fn others_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Presence>> {
        self.others.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the other nodes which channels this node holds connections of.
    pub async fn announce(&self) {
        let Some(app) = self.app.upgrade() else {
            return;
        };
        let body =
            json!({"node": self.cluster.node, "channels": app.connections.patterns_by_channel()});
        let _ = self
            .cluster
            .client
            .publish(self.cluster.subject("presence"), body.to_string().into())
            .await;
    }

    /// Another node alive with a connection of `channel` whose patterns match `name`.
    pub fn wanted_elsewhere(&self, channel: &str, name: &str) -> Option<String> {
        let mut others = self.others_lock();
        others.retain(|_, p| p.seen.elapsed() < NODE_TTL);
        others
            .iter()
            .find(|(_, p)| {
                p.channels
                    .get(channel)
                    .is_some_and(|ps| ps.iter().any(|p| p.matches(name)))
            })
            .map(|(node, _)| node.clone())
    }

    /// Another node alive holds a connection of `channel`.
    pub fn held_elsewhere(&self, channel: &str) -> bool {
        let mut others = self.others_lock();
        others.retain(|_, p| p.seen.elapsed() < NODE_TTL);
        others.values().any(|p| p.channels.contains_key(channel))
    }

    /// Hands an event to `node` for one of its connections of `channel`:
    /// `Some(true)` delivered, `Some(false)` its connections are full, `None`
    /// it has none that wants it (or did not answer).
    pub(super) async fn forward(&self, node: &str, delivery: &Delivery) -> Option<bool> {
        let subject = self
            .cluster
            .subject(&format!("node.{}.deliver", token(node)));
        let body = serde_json::to_vec(delivery).ok()?;
        let answer =
            tokio::time::timeout(GATHER, self.cluster.client.request(subject, body.into()))
                .await
                .ok()?
                .ok()?;
        match &answer.payload[..] {
            b"1" => Some(true),
            b"full" => Some(false),
            _ => None,
        }
    }

    /// `ws_send` to the other nodes' connections of `channel`.
    pub fn push_all(&self, channel: &str, frame: &str) {
        let push = Push {
            from: self.cluster.node.clone(),
            channel: channel.to_owned(),
            id: None,
            frame: frame.to_owned(),
        };
        let Ok(body) = serde_json::to_vec(&push) else {
            return;
        };
        let client = self.cluster.client.clone();
        let subject = self.cluster.subject("push.all");
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = client.publish(subject, body.into()).await;
            });
        }
    }

    /// `ws_send_to` a connection of another node; `true` when it took the frame.
    pub fn push_to(&self, channel: &str, id: &str, frame: &str) -> Result<bool, StoreError> {
        let push = Push {
            from: self.cluster.node.clone(),
            channel: channel.to_owned(),
            id: Some(id.to_owned()),
            frame: frame.to_owned(),
        };
        let body = serde_json::to_vec(&push).map_err(|e| StoreError(e.to_string()))?;
        let subject = self.cluster.subject("push.to");
        self.cluster.block(async {
            match tokio::time::timeout(GATHER, self.cluster.client.request(subject, body.into()))
                .await
            {
                Ok(Ok(_)) => Ok(true),
                // Nobody holds it (no answer, or no node listening).
                _ => Ok(false),
            }
        })
    }

    /// Answers questions on `topic` from the other nodes with `handler`.
    pub fn answer(self: &Arc<Self>, topic: &'static str, handler: Handler) {
        let me = self.clone();
        tokio::spawn(async move {
            let subject = me.cluster.subject(&format!("ask.{topic}"));
            let mut questions = match me.cluster.client.subscribe(subject).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cluster: cannot answer {topic}: {e}");
                    return;
                }
            };
            while let Some(msg) = questions.next().await {
                let Some(reply) = msg.reply else { continue };
                let body = serde_json::from_slice::<Value>(&msg.payload).unwrap_or(Value::Null);
                let (handler, me) = (handler.clone(), me.clone());
                // Each answer on its own task: a slow one holds up no other.
                tokio::spawn(async move {
                    let answer = json!({"node": me.cluster.node, "answer": handler(body).await});
                    let _ = me
                        .cluster
                        .client
                        .publish(reply, answer.to_string().into())
                        .await;
                });
            }
        });
    }

    /// Asks every other node alive on `topic`: `(node, answer)` of each that
    /// answered within [`GATHER`].
    pub async fn gather(
        &self,
        topic: &str,
        body: Value,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        if !self.cluster.connected() {
            return Err(unavailable("NATS is unreachable"));
        }
        // The others, whether or not this node's first heartbeat is written yet.
        let me = &self.cluster.node;
        let expected = self
            .cluster
            .nodes_alive()
            .await?
            .iter()
            .filter(|n| *n != me)
            .count();
        if expected == 0 {
            return Ok(Vec::new());
        }
        let inbox = self.cluster.client.new_inbox();
        let mut answers = self
            .cluster
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(unavailable)?;
        self.cluster
            .client
            .publish_with_reply(
                self.cluster.subject(&format!("ask.{topic}")),
                inbox,
                body.to_string().into(),
            )
            .await
            .map_err(unavailable)?;
        let deadline = tokio::time::Instant::now() + GATHER;
        let mut got = Vec::new();
        while got.len() < expected {
            let Ok(Some(msg)) = tokio::time::timeout_at(deadline, answers.next()).await else {
                break;
            };
            let Ok(mut v) = serde_json::from_slice::<Value>(&msg.payload) else {
                continue;
            };
            let node = v["node"].as_str().unwrap_or_default().to_owned();
            if node != self.cluster.node {
                got.push((node, v["answer"].take()));
            }
        }
        Ok(got)
    }

    /// Every node's open connections: `{"<channel>": [{…, "node"}]}`.
    pub async fn connections(&self, local: Value) -> Result<Value, StoreError> {
        let mut merged = serde_json::Map::new();
        let mut add = |node: &str, conns: &Value| {
            for (channel, list) in conns.as_object().into_iter().flatten() {
                let entry = merged
                    .entry(channel.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                for conn in list.as_array().into_iter().flatten() {
                    let mut conn = conn.clone();
                    conn["node"] = node.into();
                    if let Value::Array(a) = entry {
                        a.push(conn);
                    }
                }
            }
        };
        add(&self.cluster.node, &local);
        for (node, conns) in self.gather("conns", Value::Null).await? {
            add(&node, &conns);
        }
        Ok(Value::Object(merged))
    }
}
