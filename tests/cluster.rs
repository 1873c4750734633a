//! Cluster mode (SPEC §13): two or three real `switchyard serve` nodes on one
//! real `nats-server -js`, started by each test on a free loopback port with
//! its own storage folder.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{client, json_of, ws_connect, ws_recv, ws_send, Nats, Project, Server, Upstream, Ws};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "adm";

/// A node's project: the admin token and what the test gives it.
fn node_project() -> Project {
    Project::new().config(&format!("admin_token = \"{ADMIN}\""))
}

/// The project of the first node: the channels every node then shares.
fn shared_project() -> Project {
    node_project()
        .channel(
            json!({"code": "erp", "type": "events", "token_local": "erp-token",
            "opts": {"events": ["order.>"], "ws_apis": ["*"]}}),
        )
        .channel(json!({"code": "count", "token_local": "count-token",
            "recv_svcscriptcode": "count", "opts": {"issync": true}}))
        .channel(json!({"code": "plain", "token_local": "plain-token",
            "recv_svcscriptcode": "plain", "opts": {"issync": true, "record": 3}}))
        .channel(json!({"code": "feed", "token_local": "feed-token",
            "send_svcscriptcode_ws": "feed_push", "recv_svcscriptcode_ws": "feed_recv"}))
        .channel(json!({"code": "trigger", "token_local": "t-token",
            "recv_svcscriptcode": "trigger", "opts": {"issync": true}}))
        .script(
            "count",
            r#"
            let q = startparam(4);
            if q == "" { body = kv_incr("hits", 1); } else { body = kv_get("hits"); }
        "#,
        )
        .channel(json!({"code": "docs", "token_local": "docs-token",
            "recv_svcscriptcode": "docs", "opts": {"issync": true, "allow_files_api": true}}))
        .script("docs", r#"
            let q = startparam(4);
            if q == "" { body = file_read("note.txt"); } else { file_write("note.txt", q); body = "written"; }
        "#)
        .script("plain", r#"body = #{ ok: true };"#)
        .script(
            "feed_push",
            r#"
            let d = parse_json(startparam(1));
            if "to" in d { ws_send_to(d.to, d); } else { ws_send(d); }
        "#,
        )
        .script("feed_recv", "data = startparam(3);")
        .script(
            "trigger",
            "channel_send_ws(\"feed\", parse_json(startparam(4))); body = #{ queued: true };",
        )
}

/// The ids of events, in the order they came.
fn ids_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Two nodes on `nats`: the first with the shared project, the second with empty folders.
fn two_nodes(nats: &Nats) -> (Server, Server) {
    let a = shared_project().start_node(nats);
    let b = node_project().start_node(nats);
    (a, b)
}

/// An admin request (Bearer `ADMIN`) with no body: status and JSON answer.
async fn admin(srv: &Server, method: reqwest::Method, path: &str) -> (u16, Value) {
    let (status, _, body) = json_of(
        client()
            .request(method, srv.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    (status, body)
}

async fn get_json(srv: &Server, path: &str) -> (u16, Value) {
    admin(srv, reqwest::Method::GET, path).await
}

async fn admin_post(srv: &Server, path: &str) -> (u16, Value) {
    admin(srv, reqwest::Method::POST, path).await
}

async fn call(srv: &Server, path: &str, body: &str) -> (u16, Value) {
    let (status, _, v) = json_of(
        client()
            .post(srv.url(path))
            .body(body.to_owned())
            .send()
            .await
            .unwrap(),
    )
    .await;
    (status, v)
}

async fn publish(srv: &Server, name: &str, data: Value) -> (u16, Value) {
    let (status, _, body) = json_of(
        client()
            .post(srv.url("/events"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": name, "data": data}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    (status, body)
}

/// Polls `f` until it is true, for up to `limit`.
async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Every `event` frame that arrives within `wait` of the previous one.
async fn drain_events(ws: &mut Ws, wait: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(wait, ws.next()).await {
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v[0] == "event" {
                out.push(v[1].clone());
            }
        }
    }
    out
}

#[tokio::test]
async fn nodes_report_their_name_and_the_cluster_in_healthz() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    for srv in [&a, &b] {
        let (status, body) = get_json(srv, "/healthz").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "ok");
        assert_eq!(body["cluster"], "connected");
        let port = srv.base.rsplit(':').next().unwrap();
        assert!(
            body["node"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{port}")),
            "default node name is <hostname>:<port>: {body}"
        );
    }
}

#[tokio::test]
async fn channels_and_scripts_reach_every_node() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    // At start the second node took the first node's channels and scripts.
    let (status, _) = get_json(&b, "/admin/channels/count").await;
    assert_eq!(status, 200, "the second node has the first node's channel");
    assert!(b
        .project
        .as_ref()
        .unwrap()
        .path()
        .join("scripts/count.rhai")
        .exists());
    let (status, body) = call(&b, "/channels/plain/api?token=plain-token", "").await;
    assert_eq!((status, body), (200, json!({"ok": true})));

    // An admin write on b reaches a within 2 s.
    let resp = client()
        .put(b.url("/admin/scripts/plain"))
        .bearer_auth(ADMIN)
        .body(r#"body = #{ ok: "changed" };"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let changed = eventually(Duration::from_secs(2), || async {
        call(&a, "/channels/plain/api?token=plain-token", "")
            .await
            .1
            == json!({"ok": "changed"})
    })
    .await;
    assert!(
        changed,
        "an admin write on one node reaches the other within 2 s"
    );

    // A hand edit in a's folder reaches b.
    let doc = json!({"code": "hand", "token_local": "hand-token", "recv_svcscriptcode": "plain",
        "opts": {"issync": true}});
    std::fs::write(
        a.project
            .as_ref()
            .unwrap()
            .path()
            .join("channels/hand.json"),
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();
    let arrived = eventually(Duration::from_secs(2), || async {
        call(&b, "/channels/hand/api?token=hand-token", "").await.0 == 200
    })
    .await;
    assert!(
        arrived,
        "a hand edit on one node reaches the other within 2 s"
    );

    // A deletion through the admin API on b removes it on a.
    let resp = client()
        .delete(b.url("/admin/channels/hand"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let gone = eventually(Duration::from_secs(2), || async {
        call(&a, "/channels/hand/api?token=hand-token", "").await.0 == 404
    })
    .await;
    assert!(gone, "a deletion on one node reaches the other within 2 s");
    assert!(!a
        .project
        .as_ref()
        .unwrap()
        .path()
        .join("channels/hand.json")
        .exists());
}

#[tokio::test]
async fn a_node_that_joins_later_knows_which_channels_are_stopped() {
    let nats = Nats::start();
    let a = shared_project().start_node(&nats);
    let (status, _) = admin_post(&a, "/admin/channels/plain/stop").await;
    assert_eq!(status, 200);
    // b starts after the stop: it was not there to hear it.
    let b = node_project().start_node(&nats);
    let (_, doc) = get_json(&b, "/admin/channels/plain").await;
    assert_eq!(doc["state"], "stopped", "{doc}");
    let (status, body) = call(&b, "/channels/plain/api?token=plain-token", "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("channel_stopped"))
    );
    // A start on b reaches a.
    let (status, _) = admin_post(&b, "/admin/channels/plain/start").await;
    assert_eq!(status, 200);
    let (status, _) = call(&a, "/channels/plain/api?token=plain-token", "").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn recordings_of_every_node_are_listed_on_any_node() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    let mut made = Vec::new();
    for (srv, path) in [(&a, "a1"), (&a, "a2"), (&b, "b1"), (&b, "b2")] {
        let resp = client()
            .get(srv.url(&format!("/channels/plain/api/{path}?token=plain-token")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        made.push(resp.headers()["x-request-id"].to_str().unwrap().to_owned());
        // Each node writes its recordings every 250 ms.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let newest: Vec<&str> = made.iter().rev().take(3).map(String::as_str).collect();
    for srv in [&a, &b] {
        let (_, list) = get_json(srv, "/admin/channels/plain/requests").await;
        let ids: Vec<&str> = list["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, newest, "opts.record = 3 across the cluster: {list}");
    }
    // A dry run of a recording made on the other node.
    let tried = client()
        .post(b.url("/admin/channels/plain/try"))
        .bearer_auth(ADMIN)
        .json(&json!({"record": made[0]}))
        .send()
        .await
        .unwrap();
    assert_eq!(tried.status(), 404, "a1 was trimmed away");
    let tried = client()
        .post(b.url("/admin/channels/plain/try"))
        .bearer_auth(ADMIN)
        .json(&json!({"record": made[1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(tried.status(), 200);
    let (status, _) = admin(
        &a,
        reqwest::Method::DELETE,
        "/admin/channels/plain/requests",
    )
    .await;
    assert_eq!(status, 204);
    let (_, list) = get_json(&b, "/admin/channels/plain/requests").await;
    assert_eq!(list["requests"], json!([]), "cleared for every node");
}

#[tokio::test]
async fn kv_is_shared_and_kv_incr_loses_nothing_across_nodes() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    let mut calls = Vec::new();
    for i in 0..6 {
        let url = [&a, &b][i % 2].url("/channels/count/api?token=count-token");
        calls.push(tokio::spawn(async move {
            for _ in 0..20 {
                let resp = client().post(&url).send().await.unwrap();
                assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
            }
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
    for srv in [&a, &b] {
        let (status, body) = call(srv, "/channels/count/api?token=count-token", "read").await;
        assert_eq!(
            (status, body),
            (200, json!(120)),
            "no increment is lost on either node"
        );
    }
}

#[tokio::test]
async fn each_event_reaches_a_channel_once_whichever_node_holds_its_connections() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    let mut on_a = ws_connect(&a, "/channels/erp/ws?token=erp-token").await;
    let mut on_b = ws_connect(&b, "/channels/erp/ws?token=erp-token").await;
    // Let each node hear where the other's connections are.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ids = HashSet::new();
    for i in 0..40 {
        let srv = if i % 2 == 0 { &a } else { &b };
        let (status, body) = publish(srv, "order.created", json!({"i": i})).await;
        assert_eq!(status, 202, "{body}");
        ids.insert(body["id"].as_str().unwrap().to_owned());
    }
    let mut got = drain_events(&mut on_a, Duration::from_millis(1500)).await;
    got.extend(drain_events(&mut on_b, Duration::from_millis(300)).await);
    let seen = ids_of(&got);
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(
        seen.len(),
        unique.len(),
        "no event came twice to the channel"
    );
    assert_eq!(unique, ids, "every event reached the channel");
}

#[tokio::test]
async fn a_subscription_on_one_node_gets_events_pulled_by_the_other() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    // Both hold the channel's opts.events; only the connection on b subscribes to invoice.*.
    let mut on_a = ws_connect(&a, "/channels/erp/ws?token=erp-token").await;
    let mut on_b = ws_connect(&b, "/channels/erp/ws?token=erp-token").await;
    ws_send(
        &mut on_b,
        json!(["subscribe", {"qid": 1, "data": {"events": ["invoice.*"]}}]),
    )
    .await;
    assert_eq!(ws_recv(&mut on_b).await[1]["success"], true);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for i in 0..10 {
        assert_eq!(publish(&a, "invoice.paid", json!({"i": i})).await.0, 202);
    }
    let got_b = drain_events(&mut on_b, Duration::from_millis(1500)).await;
    let got_a = drain_events(&mut on_a, Duration::from_millis(200)).await;
    assert!(
        got_a.is_empty(),
        "a's connection never subscribed to invoice.*: {got_a:?}"
    );
    assert_eq!(
        got_b.len(),
        10,
        "every invoice event reached the connection that wants it"
    );
}

#[tokio::test]
async fn events_queue_while_no_node_holds_a_connection_and_arrive_in_order() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    let mut ids = Vec::new();
    for i in 0..20 {
        let (status, body) = publish(&a, "order.created", json!({"i": i})).await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // Not in opts.events: dropped, not queued.
    assert_eq!(publish(&a, "invoice.created", json!({})).await.0, 202);
    let mut ws = ws_connect(&b, "/channels/erp/ws?token=erp-token").await;
    let got = drain_events(&mut ws, Duration::from_millis(1500)).await;
    let seen = ids_of(&got);
    assert_eq!(
        seen, ids,
        "the queue arrives whole and in order on the other node"
    );
}

#[tokio::test]
async fn events_a_channel_does_not_queue_take_no_room_in_its_queue() {
    let nats = Nats::start();
    let config = format!("admin_token = \"{ADMIN}\"\nevent_queue_max = 5");
    let a = Project::new()
        .config(&config)
        .channel(
            json!({"code": "erp", "type": "events", "token_local": "erp-token",
            "opts": {"events": ["order.>"]}}),
        )
        .start_node(&nats);
    let b = Project::new().config(&config).start_node(&nats);
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, body) = publish(&a, "order.created", json!({"i": i})).await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // Many more events the channel does not queue (job.finished and the like).
    for i in 0..20 {
        assert_eq!(publish(&b, "invoice.created", json!({"i": i})).await.0, 202);
    }
    let mut ws = ws_connect(&b, "/channels/erp/ws?token=erp-token").await;
    let got = drain_events(&mut ws, Duration::from_millis(1500)).await;
    let seen = ids_of(&got);
    assert_eq!(
        seen, ids,
        "the three queued events are within event_queue_max: none dropped"
    );
}

#[tokio::test]
async fn pushes_cross_nodes_and_connections_list_every_node() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    let mut on_b = ws_connect(&b, "/channels/feed/ws?token=feed-token").await;
    ws_send(&mut on_b, json!(["message", {"qid": 1, "data": {}}])).await;
    let b_id = ws_recv(&mut on_b).await[1]["data"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, body) = call(&a, "/channels/trigger/api?token=t-token", r#"{"n": 1}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ws_recv(&mut on_b).await,
        json!(["push", {"data": {"n": 1}}]),
        "ws_send crossed nodes"
    );
    let to = json!({"n": 2, "to": b_id}).to_string();
    assert_eq!(
        call(&a, "/channels/trigger/api?token=t-token", &to).await.0,
        200
    );
    assert_eq!(
        ws_recv(&mut on_b).await[1]["data"]["n"],
        2,
        "ws_send_to crossed nodes"
    );

    let (status, body) = get_json(&a, "/admin/connections").await;
    assert_eq!(status, 200);
    let feed = body["connections"]["feed"].as_array().unwrap();
    assert_eq!(feed.len(), 1, "{body}");
    assert_eq!(feed[0]["id"], b_id);
    let (_, health_b) = get_json(&b, "/healthz").await;
    assert_eq!(
        feed[0]["node"], health_b["node"],
        "each connection names its node"
    );
}

#[tokio::test]
async fn without_nats_nodes_degrade_then_recover_losing_nothing() {
    let mut nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    assert_eq!(
        call(&a, "/channels/count/api?token=count-token", "").await,
        (200, json!(1))
    );
    // An event queued for the channel before the outage.
    let (_, body) = publish(&b, "order.created", json!({"before": true})).await;
    let before = body["id"].as_str().unwrap().to_owned();

    nats.kill();
    let degraded = eventually(Duration::from_secs(15), || async {
        let (status, body) = get_json(&a, "/healthz").await;
        status == 503 && body["status"] == "degraded" && body["cluster"] == "disconnected"
    })
    .await;
    assert!(
        degraded,
        "a node reports degraded while NATS is unreachable"
    );
    let (status, body) = call(&a, "/channels/count/api?token=count-token", "").await;
    assert_eq!(
        (status, body["error"].clone()),
        (503, json!("cluster_unavailable"))
    );
    let (status, body) = publish(&a, "order.created", json!({})).await;
    assert_eq!(
        (status, body["error"].clone()),
        (503, json!("cluster_unavailable"))
    );
    let (status, body) = call(&a, "/channels/plain/api?token=plain-token", "").await;
    assert_eq!(
        (status, body),
        (200, json!({"ok": true})),
        "what needs no shared state is served"
    );

    nats.restart();
    let back = eventually(Duration::from_secs(20), || async {
        get_json(&a, "/healthz").await.0 == 200 && get_json(&b, "/healthz").await.0 == 200
    })
    .await;
    assert!(back, "nodes reconnect on their own");
    assert_eq!(
        call(&b, "/channels/count/api?token=count-token", "read").await,
        (200, json!(1)),
        "kv written before the outage is still there"
    );
    let mut ws = ws_connect(&a, "/channels/erp/ws?token=erp-token").await;
    let got = drain_events(&mut ws, Duration::from_millis(2000)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0]["id"], before,
        "an event acknowledged before the outage is delivered"
    );
}

/// Jobs shared by the nodes: an inbox channel, a send channel, a schedule;
/// every script reports to `up`, outside both nodes.
fn jobs_project(up: &Upstream, busy_s: f64) -> Project {
    node_project()
        .channel(
            json!({"code": "hook", "token_local": "hook-token", "url": format!("{}/", up.base),
            "recv_svcscriptcode": "forward", "opts": {"issync": false}}),
        )
        .channel(
            json!({"code": "erp", "token_local": "erp-token", "url": format!("{}/", up.base),
            "send_svcscriptcode": "send", "opts": {"send_retries": 2}}),
        )
        .script(
            "forward",
            &format!(
                r#"
            let t = timestamp(); while t.elapsed < {busy_s} {{ }}
            webquery(#{{ method: "POST", path: "inbox", body: startparam(4) }});
            result = #{{ forwarded: startparam(8) }};
        "#
            ),
        )
        .script(
            "send",
            &format!(
                r#"
            let d = parse_json(startparam(1));
            if "wait" in d {{ job_wait(d.wait); result = #{{ waiting: true }}; return; }}
            let t = timestamp(); while t.elapsed < {busy_s} {{ }}
            webquery(#{{ method: "POST", path: "send", body: d }});
            result = #{{ sent: true }};
        "#
            ),
        )
}

async fn post_inbox(srv: &Server, body: &str) -> String {
    let (status, v) = call(srv, "/channels/hook/api/orders?token=hook-token", body).await;
    assert_eq!(status, 202, "{v}\n{}", srv.logs());
    v["request_id"].as_str().unwrap().to_owned()
}

/// The bodies `up` got on `path`, in arrival order.
fn bodies(up: &Upstream, path: &str) -> Vec<String> {
    up.seen()
        .into_iter()
        .filter(|s| s.path.ends_with(path))
        .map(|s| s.body)
        .collect()
}

#[tokio::test]
async fn inbox_requests_run_once_in_order_whichever_node_acknowledged_them() {
    let nats = Nats::start();
    let up = Upstream::start().await;
    let a = jobs_project(&up, 0.02).start_node(&nats);
    let b = node_project().start_node(&nats);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(post_inbox([&a, &b][i % 2], &i.to_string()).await);
    }
    let all_in = eventually(Duration::from_secs(20), || async {
        bodies(&up, "/inbox").len() >= 20
    })
    .await;
    assert!(
        all_in,
        "every acknowledged request ran: {:?}",
        bodies(&up, "/inbox")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(
        bodies(&up, "/inbox"),
        want,
        "once each, one at a time, in arrival order"
    );

    // The job view of either node lists every node's jobs, each with its node.
    let (status, list) = get_json(&b, "/admin/jobs?channel=hook&kind=recv&limit=100").await;
    assert_eq!(status, 200);
    let jobs = list["jobs"].as_array().unwrap();
    let listed: HashSet<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect(), "{list}");
    assert!(
        jobs.iter()
            .all(|j| j["node"].is_string() && j["state"] == "succeeded"),
        "{list}"
    );
    let (status, one) = get_json(&a, &format!("/admin/jobs/{}", ids[7])).await;
    assert_eq!(status, 200);
    assert_eq!(
        one["attempts"][0]["node"], one["node"],
        "each attempt names its node"
    );
}

#[tokio::test]
async fn an_acknowledged_inbox_request_survives_the_node_that_took_it() {
    let nats = Nats::start();
    let up = Upstream::start().await;
    let a = jobs_project(&up, 1.0).start_node(&nats);
    for i in 0..3 {
        post_inbox(&a, &i.to_string()).await;
    }
    // a is running the first one (a second of work) when it dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let project = a.kill9();
    let b = node_project().start_node(&nats);
    let done = eventually(Duration::from_secs(30), || async {
        let seen = bodies(&up, "/inbox");
        ["0", "1", "2"].iter().all(|b| seen.iter().any(|s| s == b))
    })
    .await;
    assert!(
        done,
        "every acknowledged request ran on the node left: {:?}",
        bodies(&up, "/inbox")
    );
    let mut first = Vec::new();
    for body in bodies(&up, "/inbox") {
        if !first.contains(&body) {
            first.push(body);
        }
    }
    assert_eq!(first, ["0", "1", "2"], "still in arrival order");
    drop((b, project));
}

#[tokio::test]
async fn a_send_job_survives_the_node_that_ran_it() {
    let nats = Nats::start();
    let up = Upstream::start().await;
    let a = jobs_project(&up, 1.0).start_node(&nats);
    let id = common::send_job(&a, ADMIN, "erp", &json!({"n": 1})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _project = a.kill9();
    let b = node_project().start_node(&nats);
    let job = common::wait_job(&b, ADMIN, &id, &["succeeded"], Duration::from_secs(30)).await;
    let (_, health) = get_json(&b, "/healthz").await;
    assert_eq!(job["node"], health["node"], "the node left ran it: {job}");
    assert_eq!(bodies(&up, "/send"), [r#"{"n":1}"#]);
}

/// Two nodes sharing a channel whose partner fails the first call
/// (`/fail/1`): each attempt calls it once, the first fails, the next
/// succeeds; and a channel whose jobs succeed at once.
fn partner_nodes(nats: &Nats, up: &Upstream) -> (Server, Server) {
    let a = node_project()
        .channel(
            json!({"code": "pay", "token_local": "pay-token", "url": format!("{}/", up.base),
            "send_svcscriptcode": "pay", "opts": {"send_retries": 3}}),
        )
        .channel(json!({"code": "quick", "token_local": "quick-token",
            "send_svcscriptcode": "quick"}))
        .script(
            "pay",
            r#"let r = webquery(#{ method: "POST", path: "fail/1", body: startparam(4) });
               let t = timestamp(); while t.elapsed < 0.5 { }
               if r.status != 200 { throw `the partner answered ${r.status}`; }
               result = r.status;"#,
        )
        .script("quick", "result = 1;")
        .start_node(nats);
    let b = node_project().start_node(nats);
    (a, b)
}

/// Waits until the partner got the first attempt's call.
async fn first_attempt_called(up: &Upstream) {
    assert!(
        eventually(Duration::from_secs(10), || async {
            bodies(up, "/fail/1").len() == 1
        })
        .await,
        "the first attempt never called"
    );
}

/// Waits until `srv` has loaded channel `code`.
async fn has_channel(srv: &Server, code: &str) {
    let path = format!("/admin/channels/{code}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            get_json(srv, &path).await.0 == 200
        })
        .await,
        "{code} never reached the node"
    );
}

/// Which of two nodes holds job `id` now (0 or 1), and its name.
async fn holder_of(nodes: [&Server; 2], id: &str) -> (usize, String) {
    let (_, job) = get_json(nodes[0], &format!("/admin/jobs/{id}")).await;
    let holder = job["node"].as_str().unwrap_or_default().to_owned();
    let (_, health) = get_json(nodes[0], "/healthz").await;
    (usize::from(health["node"] != holder.as_str()), holder)
}

/// A job given to another node after its node died: the job view of the
/// node left serves it at once (from the shared state, not only once a node
/// takes it), its attempts go on counting (the partner is called at most
/// 1 + send_retries times), and the jobs the dead node finished stay listed.
#[tokio::test]
async fn a_job_given_again_keeps_its_attempts_and_the_view_keeps_a_dead_nodes_jobs() {
    let nats = Nats::start();
    let up = Upstream::start().await;
    let (a, b) = partner_nodes(&nats, &up);
    has_channel(&b, "quick").await;
    let mut quick = Vec::new();
    for (i, srv) in [&a, &b, &a, &b].into_iter().enumerate() {
        quick.push(common::send_job(srv, ADMIN, "quick", &json!({"n": i})).await);
    }
    for id in &quick {
        common::wait_job(&a, ADMIN, id, &["succeeded"], Duration::from_secs(10)).await;
    }
    let id = common::send_job(&a, ADMIN, "pay", &json!({"n": 1})).await;
    first_attempt_called(&up).await;
    // Its holder dies in the middle of the first attempt.
    let (holder, holder_name) = holder_of([&a, &b], &id).await;
    let mut ran_quick = Vec::new();
    for q in &quick {
        let (_, job) = get_json(&a, &format!("/admin/jobs/{q}")).await;
        if job["node"] == holder_name.as_str() {
            ran_quick.push(q.clone());
        }
    }
    let (project, left) = if holder == 0 {
        (a.kill9(), b)
    } else {
        (b.kill9(), a)
    };
    let left = &left;
    // The node left serves the job before it takes it (JetStream gives it
    // again only after the holder's acknowledgement wait).
    let (status, job) = get_json(left, &format!("/admin/jobs/{id}")).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["node"], holder_name.as_str(), "{job}");
    let job = common::wait_job(left, ADMIN, &id, &["succeeded"], Duration::from_secs(40)).await;
    assert_eq!(job["attempt"], 2, "the attempt count carried on: {job}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job}");
    assert_eq!(attempts[0]["node"], holder_name.as_str(), "{job}");
    assert_eq!(attempts[1]["outcome"], "succeeded", "{job}");
    assert_eq!(bodies(&up, "/fail/1").len(), 2, "one call per attempt");
    // The dead node's finished jobs are still listed, and each can be opened.
    let (status, list) = get_json(left, "/admin/jobs?channel=quick&limit=100").await;
    assert_eq!(status, 200);
    let listed: HashSet<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, quick.iter().map(String::as_str).collect(), "{list}");
    for q in &ran_quick {
        let (status, job) = get_json(left, &format!("/admin/jobs/{q}")).await;
        assert_eq!(
            (status, job["state"].clone()),
            (200, json!("succeeded")),
            "{job}"
        );
    }
    drop(project);
}

/// A node frozen (SIGSTOP) while it holds a job past JetStream's
/// acknowledgement wait: another node takes the job over and finishes it;
/// the frozen node, woken (SIGCONT), makes no further attempt of it.
#[tokio::test]
async fn a_frozen_node_makes_no_new_attempt_of_a_job_another_node_took_over() {
    let nats = Nats::start();
    let up = Upstream::start().await;
    let (a, b) = partner_nodes(&nats, &up);
    has_channel(&b, "pay").await;
    let id = common::send_job(&a, ADMIN, "pay", &json!({"n": 1})).await;
    first_attempt_called(&up).await;
    let (holder, _) = holder_of([&a, &b], &id).await;
    let (holder, left) = if holder == 0 { (&a, &b) } else { (&b, &a) };
    holder.signal("STOP");
    let job = common::wait_job(left, ADMIN, &id, &["succeeded"], Duration::from_secs(40)).await;
    assert_eq!(job["attempt"], 2, "{job}");
    assert_eq!(bodies(&up, "/fail/1").len(), 2);
    holder.signal("CONT");
    // Its retry was due long ago: it would go now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        bodies(&up, "/fail/1").len(),
        2,
        "the woken node called the partner again for a finished job"
    );
    let (_, job) = get_json(left, &format!("/admin/jobs/{id}")).await;
    assert_eq!(job["state"], "succeeded", "not overwritten: {job}");
    assert_eq!(job["attempt"], 2, "{job}");
}

#[tokio::test]
async fn a_job_no_node_finishes_is_given_up_after_max_deliver_and_shows_failed() {
    let nats = Nats::start();
    let up = Upstream::start().await;
    let bounded = "[cluster]\nmax_deliver = 1";
    let a = jobs_project(&up, 5.0).config(bounded).start_node(&nats);
    let id = common::send_job(&a, ADMIN, "erp", &json!({"n": 1})).await;
    // a dies in the job's first delivery, which was its last.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _project = a.kill9();
    let b = node_project().config(bounded).start_node(&nats);
    let job = common::wait_job(&b, ADMIN, &id, &["failed"], Duration::from_secs(30)).await;
    let error = job["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("given up after 1 deliveries"), "{job}");
    assert!(bodies(&up, "/send").is_empty(), "never sent");
    // Gone from the stream: no node takes it again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, again) = get_json(&b, &format!("/admin/jobs/{id}")).await;
    assert_eq!(again["state"], "failed", "{again}");
}

#[tokio::test]
async fn a_callback_reaches_a_waiting_job_through_any_node() {
    let nats = Nats::start();
    let up = Upstream::start().await;
    let (a, b) = (
        jobs_project(&up, 0.0).start_node(&nats),
        node_project().start_node(&nats),
    );
    let id = common::send_job(&a, ADMIN, "erp", &json!({"wait": 60})).await;
    let job = common::wait_job(&a, ADMIN, &id, &["waiting"], Duration::from_secs(10)).await;
    // Answer through the node that does not hold the job.
    let (_, ha) = get_json(&a, "/healthz").await;
    let other = if job["node"] == ha["node"] { &b } else { &a };
    let (status, _, body) = json_of(
        client()
            .post(other.url(&format!("/channels/erp/jobs/{id}/result")))
            .bearer_auth("erp-token")
            .json(&json!({"success": true, "data": {"ok": 1}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let job = common::wait_job(other, ADMIN, &id, &["succeeded"], Duration::from_secs(5)).await;
    assert_eq!(job["result"], json!({"ok": 1}));
}

#[tokio::test]
async fn each_schedule_tick_runs_once_in_the_cluster() {
    let nats = Nats::start();
    let up = Upstream::start().await;
    let project = node_project()
        .channel(
            json!({"code": "poller", "token_local": "p", "url": format!("{}/", up.base),
            "opts": {"schedule": [{"every": "1s", "script": "tick"}]}}),
        )
        .script(
            "tick",
            r#"webquery(#{ method: "POST", path: "tick", body: startparam(1) });"#,
        );
    let (_a, _b) = (project.start_node(&nats), node_project().start_node(&nats));
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let ticks = bodies(&up, "/tick");
    let unique: HashSet<&String> = ticks.iter().collect();
    assert_eq!(unique.len(), ticks.len(), "no tick ran twice: {ticks:?}");
    assert!(
        (3..=5).contains(&ticks.len()),
        "one run a second in the cluster: {ticks:?}"
    );
}

/// An events channel with connections on both nodes gets each event at most
/// once, also when nats-server is killed and started again while events
/// flow (JetStream may give again an event whose acknowledgement it had not
/// written down yet), and loses none that were acknowledged.
#[tokio::test]
async fn events_reach_a_channel_once_across_a_nats_restart() {
    let mut nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    let mut conns = vec![
        ws_connect(&a, "/channels/erp/ws?token=erp-token").await,
        ws_connect(&a, "/channels/erp/ws?token=erp-token").await,
    ];
    has_channel(&b, "plain").await;
    conns.push(ws_connect(&b, "/channels/erp/ws?token=erp-token").await);
    // Readers that collect what each connection gets.
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut readers = Vec::new();
    for mut ws in conns {
        let got = got.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(Ok(msg))) =
                tokio::time::timeout(Duration::from_secs(60), ws.next()).await
            {
                if let Message::Text(t) = msg {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v[0] == "event" {
                        got.lock()
                            .unwrap()
                            .push(v[1]["id"].as_str().unwrap().to_owned());
                    }
                }
            }
        }));
    }
    let mut acknowledged = Vec::new();
    let started = Instant::now();
    let mut restarted = false;
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(8) {
        if !restarted && started.elapsed() > Duration::from_secs(3) {
            nats.kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            nats.restart();
            restarted = true;
        }
        let srv = if i % 2 == 0 { &a } else { &b };
        let (status, body) = publish(srv, "order.created", json!({"n": i})).await;
        if status == 202 {
            acknowledged.push(body["id"].as_str().unwrap().to_owned());
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Past the consumer's acknowledgement wait (30 s): whatever JetStream
    // gives again has come by then.
    let everything = eventually(Duration::from_secs(60), || async {
        let got = got.lock().unwrap();
        acknowledged.iter().all(|id| got.contains(id))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(35)).await;
    let got = got.lock().unwrap().clone();
    let mut seen = HashSet::new();
    let twice: Vec<&String> = got.iter().filter(|id| !seen.insert(*id)).collect();
    eprintln!(
        "{} acknowledged, {} delivered, {} twice",
        acknowledged.len(),
        got.len(),
        twice.len()
    );
    assert!(twice.is_empty(), "events delivered twice: {twice:?}");
    assert!(
        everything,
        "acknowledged events lost: {:?}",
        acknowledged
            .iter()
            .filter(|id| !got.contains(id))
            .collect::<Vec<_>>()
    );
    for r in readers {
        r.abort();
    }
}

/// The console's Overview in cluster mode: requests served by either node
/// and websockets held by either show on whichever node is asked.
#[tokio::test]
async fn the_overview_sums_every_node() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    has_channel(&b, "plain").await;
    for srv in [&a, &b, &b] {
        assert_eq!(
            call(srv, "/channels/plain/api?token=plain-token", "")
                .await
                .0,
            200
        );
    }
    let _ws = ws_connect(&b, "/channels/erp/ws?token=erp-token").await;
    let (status, all) = get_json(&a, "/admin/overview").await;
    assert_eq!(status, 200, "{all}");
    let requests: u64 = all["channels"]["plain"]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(requests, 3, "the requests of both nodes: {all}");
    assert!(
        all["channels"]["plain"]["last_request"].is_string(),
        "{all}"
    );
    assert_eq!(all["totals"]["open_websockets"], 1, "{all}");
}

/// A node SIGKILLed in the middle of a schedule run and started again at
/// once under its own name does not find its own left-behind claim "still
/// going on another node": the schedule goes on.
#[tokio::test]
async fn a_schedule_goes_on_after_the_node_running_it_restarts_under_its_name() {
    let nats = Nats::start();
    let up = Upstream::start().await;
    let project = node_project()
        .config("[cluster]\nnode = \"a\"")
        .channel(
            json!({"code": "poller", "token_local": "p", "url": format!("{}/", up.base),
            "opts": {"recv_timeout": 20, "schedule": [{"every": "1s", "script": "tick"}]}}),
        )
        .script(
            "tick",
            r#"webquery(#{ method: "POST", path: "start", body: startparam(1) });
               let t = timestamp(); while t.elapsed < 5.0 { }"#,
        );
    let a = project.start_node(&nats);
    // Killed while a run is going (it has just begun: 5 s of work ahead).
    assert!(
        eventually(Duration::from_secs(10), || async {
            !bodies(&up, "/start").is_empty()
        })
        .await,
        "the schedule never ran"
    );
    let project = a.kill9();
    let runs_before = bodies(&up, "/start").len();
    let _a = project.start_node(&nats);
    let went_on = eventually(Duration::from_secs(20), || async {
        bodies(&up, "/start").len() > runs_before
    })
    .await;
    assert!(
        went_on,
        "no run since the restart: {:?}",
        bodies(&up, "/start")
    );
}

#[tokio::test]
async fn files_are_shared_by_every_node() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    let put = client()
        .put(a.url("/channels/docs/files/report.csv?token=docs-token"))
        .body("a,b\n1,2\n")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let got = client()
        .get(b.url("/channels/docs/files/report.csv?token=docs-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.text().await.unwrap(),
        "a,b\n1,2\n",
        "a file put on one node is read on the other"
    );

    // file_write in a script on b, file_read in a script on a.
    let (status, _) = call(&b, "/channels/docs/api?token=docs-token", "from b").await;
    assert_eq!(status, 200);
    let (status, body) = call(&a, "/channels/docs/api?token=docs-token", "").await;
    assert_eq!((status, body), (200, json!("from b")));

    let del = client()
        .delete(b.url("/channels/docs/files/report.csv?token=docs-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let gone = client()
        .get(a.url("/channels/docs/files/report.csv?token=docs-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        gone.status(),
        404,
        "a file deleted on one node is gone on the other"
    );
}

#[tokio::test]
async fn migrate_moves_an_embedded_store_into_the_cluster() {
    let up = Upstream::start().await;
    let project = shared_project()
        .channel(
            json!({"code": "hook", "token_local": "hook-token", "url": format!("{}/", up.base),
            "recv_svcscriptcode": "forward", "opts": {"issync": false}}),
        )
        .channel(
            json!({"code": "out", "token_local": "out-token", "url": format!("{}/", up.base),
            "send_svcscriptcode": "send", "opts": {"autostart": false}}),
        )
        .script(
            "forward",
            r#"
            let t = timestamp(); while t.elapsed < 1.0 { }
            webquery(#{ method: "POST", path: "inbox", body: startparam(4) });
        "#,
        )
        .script(
            "send",
            r#"webquery(#{ method: "POST", path: "send", body: startparam(1) });"#,
        )
        .channel(json!({"code": "vault", "token_local": "$secret:vault.in",
            "recv_svcscriptcode": "plain", "opts": {"issync": true}}));
    // An embedded node with something in every table.
    let srv = project.start_with(&[], &[]);
    let (status, _, _) = json_of(
        client()
            .put(srv.url("/admin/secrets/vault.in"))
            .bearer_auth(ADMIN)
            .json(&json!({"value": "vault-inbound-token-1", "channels": ["vault"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let plain = "/channels/vault/api?token=vault-inbound-token-1";
    assert_eq!(call(&srv, plain, "").await.0, 200, "the secret resolves");
    for _ in 0..3 {
        assert_eq!(
            call(&srv, "/channels/count/api?token=count-token", "")
                .await
                .0,
            200
        );
    }
    let put = client()
        .put(srv.url("/channels/docs/files/report.csv?token=docs-token"))
        .body("x,y\n")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let mut events = Vec::new();
    for i in 0..3 {
        let (status, body) = publish(&srv, "order.created", json!({"i": i})).await;
        assert_eq!(status, 202);
        events.push(body["id"].as_str().unwrap().to_owned());
    }
    let mut recorded = Vec::new();
    for i in 0..2 {
        let (status, _) = call(
            &srv,
            &format!("/channels/plain/api/r{i}?token=plain-token"),
            "",
        )
        .await;
        assert_eq!(status, 200);
    }
    let (_, list) = get_json(&srv, "/admin/channels/plain/requests").await;
    for r in list["requests"].as_array().unwrap() {
        recorded.push(r["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(recorded.len(), 2, "{list}");
    let job = common::send_job(&srv, ADMIN, "out", &json!({"n": 7})).await;
    post_inbox(&srv, "0").await;
    post_inbox(&srv, "1").await;
    // The first request is running when the node dies: one running, one queued.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let project = srv.kill9();

    let nats = Nats::start();
    let out = std::process::Command::new(common::binary())
        .args(["migrate", "--data"])
        .arg(project.path().join("data"))
        .args(["--cluster", &nats.url()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 queued events, 2 inbox requests, 1 send jobs, 2 recordings moved"),
        "{stdout}"
    );
    assert!(stdout.contains("1 secrets copied"), "{stdout}");

    let a = project.start_node(&nats);
    let b = node_project().start_node(&nats);
    // The sealed secret came along: the node with the key resolves it from
    // the cluster (its own store's table is not read in cluster mode).
    assert_eq!(call(&a, plain, "").await.0, 200, "the secret came along");
    assert_eq!(
        call(&b, "/channels/count/api?token=count-token", "read").await,
        (200, json!(3)),
        "kv came along"
    );
    let file = client()
        .get(b.url("/channels/docs/files/report.csv?token=docs-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(file.text().await.unwrap(), "x,y\n", "files came along");
    let (_, list) = get_json(&b, "/admin/channels/plain/requests").await;
    let ids: Vec<&str> = list["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, recorded, "the recordings came along, newest first");
    let mut ws = ws_connect(&b, "/channels/erp/ws?token=erp-token").await;
    let got = drain_events(&mut ws, Duration::from_millis(1500)).await;
    let ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, events, "the queued events came along, in order");
    let ran = eventually(Duration::from_secs(20), || async {
        let seen = bodies(&up, "/inbox");
        seen.contains(&"0".to_owned()) && seen.contains(&"1".to_owned())
    })
    .await;
    assert!(
        ran,
        "the unfinished inbox requests ran: {:?}",
        bodies(&up, "/inbox")
    );
    let (status, _) = call(&b, "/admin/channels/out/start", "").await;
    assert_eq!(status, 401, "admin needs its token");
    let started = client()
        .post(b.url("/admin/channels/out/start"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    let done = common::wait_job(&a, ADMIN, &job, &["succeeded"], Duration::from_secs(20)).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(bodies(&up, "/send"), [r#"{"n":7}"#]);
}

/// A PUT of `body` to the admin `path`: status and JSON answer.
async fn admin_put(srv: &Server, path: &str, body: &str) -> (u16, Value) {
    let (status, _, v) = json_of(
        client()
            .put(srv.url(path))
            .bearer_auth(ADMIN)
            .body(body.to_owned())
            .send()
            .await
            .unwrap(),
    )
    .await;
    (status, v)
}

#[tokio::test]
async fn versions_and_the_audit_log_are_shared_and_a_restore_reaches_every_node() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    // A change on a is a version on b; the same script saved on both nodes
    // at once is one version.
    let (status, _) = admin_put(&a, "/admin/scripts/plain", r#"body = #{ ok: 2 };"#).await;
    assert_eq!(status, 200);
    let (status, list) = get_json(&b, "/admin/scripts/plain/versions").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["versions"].as_array().unwrap().len(), 2, "{list}");
    let same = r#"body = #{ ok: 3 };"#;
    let (x, y) = tokio::join!(
        admin_put(&a, "/admin/scripts/plain", same),
        admin_put(&b, "/admin/scripts/plain", same)
    );
    assert_eq!((x.0, y.0), (200, 200));
    // Wait until both nodes loaded it, then no node made a version of its own.
    assert!(
        eventually(Duration::from_secs(10), || async {
            call(&a, "/channels/plain/api?token=plain-token", "")
                .await
                .1["ok"]
                == 3
                && call(&b, "/channels/plain/api?token=plain-token", "")
                    .await
                    .1["ok"]
                    == 3
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, list) = get_json(&a, "/admin/scripts/plain/versions").await;
    let numbers: Vec<u64> = list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2, 1], "{list}");

    // A restore on b reaches a's folder and a's answers.
    let (status, _, body) = json_of(
        client()
            .post(b.url("/admin/scripts/plain/restore"))
            .bearer_auth(ADMIN)
            .json(&json!({"version": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            call(&a, "/channels/plain/api?token=plain-token", "")
                .await
                .1["ok"]
                == true
        })
        .await,
        "node a serves the restored script"
    );
    let file = a
        .project
        .as_ref()
        .unwrap()
        .path()
        .join("scripts/plain.rhai");
    assert_eq!(
        std::fs::read_to_string(file).unwrap(),
        r#"body = #{ ok: true };"#
    );
    let (_, list) = get_json(&a, "/admin/scripts/plain/versions").await;
    assert_eq!(list["versions"][0]["kind"], "restored");
    assert_eq!(list["versions"].as_array().unwrap().len(), 4, "{list}");

    // One audit log: b lists a's entries and the other way round.
    let (_, entries) = get_json(&a, "/admin/audit?action=script.restore").await;
    assert_eq!(entries["entries"].as_array().unwrap().len(), 1, "{entries}");
    let (_, entries) = get_json(&b, "/admin/audit?action=script.change").await;
    assert_eq!(entries["entries"].as_array().unwrap().len(), 3, "{entries}");

    // The offline command reads the cluster's versions.
    let out = std::process::Command::new(common::binary())
        .args(["history", "plain", "--script", "--cluster", &nats.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.lines().next().unwrap().contains("restored"), "{text}");

    // So does the offline restore: every running node loads what it brings back.
    let out = std::process::Command::new(common::binary())
        .args([
            "restore",
            "plain",
            "2",
            "--script",
            "--cluster",
            &nats.url(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("as version 5"));
    for node in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(5), || async {
                call(node, "/channels/plain/api?token=plain-token", "")
                    .await
                    .1["ok"]
                    == 2
            })
            .await,
            "every node serves version 2 again"
        );
    }
    let (_, entries) = get_json(&b, "/admin/audit?action=script.restore").await;
    assert_eq!(entries["entries"].as_array().unwrap().len(), 2, "{entries}");
}

#[tokio::test]
async fn a_secret_set_on_one_node_is_resolved_on_every_node_and_sealed_in_nats() {
    let nats = Nats::start();
    let key = [(
        "SWITCHYARD_SECRETS_KEY",
        "q1rV0bW3aPZtR1fN6mX9cK2yL8uJ4sE5dG7hA0iB3oQ=",
    )];
    let cluster = ["--cluster", &nats.url()];
    let a = shared_project()
        .channel(json!({"code": "vault", "token_local": "$secret:vault.in",
            "recv_svcscriptcode": "vault", "opts": {"issync": true}}))
        .script("vault", r#"body = #{ n: secret("vault.key").len() };"#)
        .start_with(&key, &cluster);
    let b = node_project().start_with(&key, &cluster);
    let set = |srv: &Server, name: &str, value: &str, channels: Value| {
        let request = client()
            .put(srv.url(&format!("/admin/secrets/{name}")))
            .bearer_auth(ADMIN)
            .json(&json!({"value": value, "channels": channels}));
        async move { json_of(request.send().await.unwrap()).await.0 }
    };
    assert_eq!(
        set(&a, "vault.in", "vault-inbound-0c7e", json!(["vault"])).await,
        200
    );
    assert_eq!(
        set(&a, "vault.key", "vault-key-77aa31", json!(["*"])).await,
        200
    );
    // Node b takes the change from the shared store, with no reload asked for.
    let on_b = |token: &'static str| {
        let b = &b;
        async move { call(b, &format!("/channels/vault/api?token={token}"), "").await }
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            on_b("vault-inbound-0c7e").await.1["n"] == 16
        })
        .await,
        "node b resolves the secrets: {:?}",
        on_b("vault-inbound-0c7e").await
    );
    let (_, list) = get_json(&b, "/admin/secrets").await;
    assert_eq!(list["secrets"].as_array().unwrap().len(), 2, "{list}");
    // A rotation on b reaches a.
    assert_eq!(
        set(&b, "vault.in", "vault-inbound-rotated", json!(["vault"])).await,
        200
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            call(&a, "/channels/vault/api?token=vault-inbound-rotated", "")
                .await
                .0
                == 200
                && call(&a, "/channels/vault/api?token=vault-inbound-0c7e", "")
                    .await
                    .0
                    == 401
        })
        .await
    );
    // Sealed in the shared store: no value on NATS's disk.
    for value in [
        "vault-inbound-0c7e",
        "vault-inbound-rotated",
        "vault-key-77aa31",
    ] {
        let found = common::files_holding(nats.storage(), value);
        assert!(found.is_empty(), "{value} in {found:?}");
    }
}
