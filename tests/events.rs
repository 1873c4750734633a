//! System events against the real binary: durable queues, bounds, restarts, slow consumers.

mod common;

use std::time::Duration;

use common::{client, json_of, Project, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn project(extra_config: &str) -> Project {
    Project::new()
        .config(&format!("admin_token = \"adm\"\n{extra_config}"))
        .channel(
            json!({"code": "erp", "type": "events", "token_local": "erp-token",
            "opts": {"events": ["order.>"], "ws_apis": ["*"]}}),
        )
}

async fn connect(srv: &Server, code: &str, token: &str) -> Ws {
    let url = srv
        .url(&format!("/channels/{code}/ws?token={token}"))
        .replacen("http", "ws", 1);
    tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade")
        .0
}

async fn publish(srv: &Server, name: &str, data: Value) -> String {
    let (status, _, body) = json_of(
        client()
            .post(srv.url("/events"))
            .bearer_auth("adm")
            .json(&json!({"name": name, "data": data}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// The next `event` frame, within `wait`; `None` when nothing comes.
async fn next_event(ws: &mut Ws, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v[0] == "event" {
                    return Some(v[1].clone());
                }
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn queued_events_survive_kill_9_and_arrive_in_order() {
    let srv = project("").start();
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(publish(&srv, "order.created", json!({"i": i})).await);
    }
    // Not matching opts.events: not queued.
    publish(&srv, "invoice.created", json!({})).await;
    let project = srv.kill9();

    let srv = project.start();
    let mut ws = connect(&srv, "erp", "erp-token").await;
    for (i, id) in ids.iter().enumerate() {
        let ev = next_event(&mut ws, Duration::from_secs(10))
            .await
            .expect("a queued event");
        assert_eq!(&ev["id"], id, "event {i} out of order");
        assert_eq!(ev["name"], "order.created");
        assert_eq!(ev["source"], "system");
        assert_eq!(ev["data"]["i"], i);
        assert!(chrono::DateTime::parse_from_rfc3339(ev["ts"].as_str().unwrap()).is_ok());
    }
    assert!(
        next_event(&mut ws, Duration::from_millis(400))
            .await
            .is_none(),
        "each once"
    );

    // Live events follow, and the queue is empty for the next connection.
    let live = publish(&srv, "order.shipped", json!({})).await;
    assert_eq!(
        next_event(&mut ws, Duration::from_secs(5)).await.unwrap()["id"],
        live.as_str()
    );
    drop(ws);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect(&srv, "erp", "erp-token").await;
    assert!(next_event(&mut again, Duration::from_millis(500))
        .await
        .is_none());
}

#[tokio::test]
async fn the_queue_keeps_the_newest_event_queue_max() {
    let srv = project("event_queue_max = 5").start();
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(publish(&srv, "order.created", json!({"i": i})).await);
    }
    let mut ws = connect(&srv, "erp", "erp-token").await;
    for id in &ids[3..] {
        assert_eq!(
            &next_event(&mut ws, Duration::from_secs(5)).await.unwrap()["id"],
            id
        );
    }
    assert!(next_event(&mut ws, Duration::from_millis(400))
        .await
        .is_none());
    let metrics = common::metrics_text(&srv).await;
    assert!(
        metrics.contains("switchyard_events_dropped_total{channel=\"erp\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn events_older_than_event_ttl_are_not_delivered() {
    let srv = project("event_ttl = \"1s\"").start();
    publish(&srv, "order.created", json!({"old": true})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fresh = publish(&srv, "order.created", json!({"old": false})).await;
    let mut ws = connect(&srv, "erp", "erp-token").await;
    let ev = next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev["id"], fresh.as_str());
    assert!(next_event(&mut ws, Duration::from_millis(400))
        .await
        .is_none());
}

#[tokio::test]
async fn a_stalled_connection_loses_its_share_to_the_one_that_reads() {
    let srv = project("").start();
    let _stalled = connect(&srv, "erp", "erp-token").await;
    let mut reader = connect(&srv, "erp", "erp-token").await;
    let blob = "z".repeat(60_000);
    let total = 400;
    let mut ids = Vec::new();
    for i in 0..total {
        ids.push(publish(&srv, "order.updated", json!({"i": i, "blob": blob})).await);
    }
    let mut got = Vec::new();
    while let Some(ev) = next_event(&mut reader, Duration::from_secs(2)).await {
        got.push(ev["data"]["i"].as_u64().unwrap());
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
    // Once the stalled connection's buffers are full, every event goes to the reader.
    let tail: Vec<u64> = (total - 100..total).collect();
    assert!(
        got.ends_with(&tail),
        "the last 100 events all reached the reader; got {} in all",
        got.len()
    );
}

#[tokio::test]
async fn channel_changes_are_published_as_system_events() {
    let srv = project("").start();
    let mut ws = connect(&srv, "erp", "erp-token").await;
    ws.send(Message::Text(
        json!(["subscribe", {"qid": 1, "data": {"events": ["channel.>"]}}])
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let doc = json!({"code": "crm", "token_local": "t"});
    let resp = client()
        .post(srv.url("/admin/channels"))
        .bearer_auth("adm")
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let ev = next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (ev["name"].as_str(), ev["source"].as_str()),
        (Some("channel.created"), Some("system"))
    );
    assert_eq!(ev["data"]["code"], "crm");
    let resp = client()
        .delete(srv.url("/admin/channels/crm"))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let ev = next_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev["name"], "channel.deleted");
}

#[tokio::test]
async fn bad_event_names_are_refused() {
    let srv = project("").start();
    for name in ["", "order.*", "a..b", "order.>"] {
        let (status, _, body) = json_of(
            client()
                .post(srv.url("/events"))
                .bearer_auth("adm")
                .json(&json!({"name": name}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_request")),
            "{name:?}"
        );
    }
    let resp = client()
        .post(srv.url("/events"))
        .json(&json!({"name": "a.b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}
