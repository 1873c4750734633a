//! Websocket channels against the real binary, with a real tokio-tungstenite client.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{
    client, json_of, ws_close_code as close_code, ws_connect as connect, ws_recv as recv,
    ws_send as send, ws_url, Project, Server,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

const ECHO_WS: &str = r#"
let input = parse_json(startparam(1));
if type_of(input) == "map" && input.fail == true { throw "asked to fail"; }
if type_of(input) == "map" && input.spin == true { loop { } }
if type_of(input) == "map" && "busy_ms" in input {
    let t = timestamp();
    while t.elapsed * 1000.0 < input.busy_ms { }
}
data = #{ echo: input, qid: startparam(2), conn: startparam(3), sender: startparam(4), channel: startparam(5) };
if type_of(input) == "map" && input.refuse == true { success = false; }
"#;

fn project() -> Project {
    Project::new()
        .config("admin_token = \"adm\"\nws_max_frame_bytes = 4096")
        .channel(
            json!({"code": "live", "token_local": "live-token", "recv_svcscriptcode_ws": "echo_ws",
            "opts": {"recv_timeout": 2, "ws_apis": ["subscribe", "unsubscribe"]}}),
        )
        .script("echo_ws", ECHO_WS)
}

#[tokio::test]
async fn upgrades_are_authenticated_like_http() {
    let srv = project()
        .channel(json!({"code": "masked", "token_local": "m-token", "ipmask": ["10.0.0.0/8"]}))
        .channel(json!({"code": "off", "token_local": "off-token", "opts": {"disabled": true}}))
        .start();
    for (path, status) in [
        ("/channels/nope/ws?token=x", 404),
        ("/channels/live/ws", 401),
        ("/channels/live/ws?token=wrong", 401),
        ("/channels/masked/ws?token=m-token", 403),
        ("/channels/off/ws?token=off-token", 503),
    ] {
        match tokio_tungstenite::connect_async(ws_url(&srv, path)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), status, "{path}")
            }
            other => panic!("{path}: expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
    let mut ws = connect(&srv, "/channels/live/ws?token=live-token").await;
    send(&mut ws, json!(["message", {"qid": 1, "data": {"x": 1}}])).await;
    assert_eq!(recv(&mut ws).await[0], "message_result");
}

#[tokio::test]
async fn message_frames_run_the_script_with_its_inputs() {
    let srv = project().start();
    let mut ws = connect(&srv, "/channels/live/ws?token=live-token").await;
    send(
        &mut ws,
        json!(["message", {"qid": 7, "data": {"name": "bench", "value": 42}}]),
    )
    .await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer[0], "message_result");
    let r = &answer[1];
    assert_eq!(r["qid"], 7);
    assert_eq!(r["success"], true);
    assert_eq!(r["data"]["echo"], json!({"name": "bench", "value": 42}));
    assert_eq!(r["data"]["qid"], "7");
    assert!(uuid::Uuid::parse_str(r["data"]["conn"].as_str().unwrap()).is_ok());
    assert_eq!(r["data"]["sender"], "127.0.0.1");
    assert_eq!(r["data"]["channel"], "live");

    send(
        &mut ws,
        json!(["message", {"qid": "abc", "data": {"refuse": true}}]),
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(
        (r[1]["qid"].clone(), r[1]["success"].clone()),
        (json!("abc"), json!(false))
    );

    send(
        &mut ws,
        json!(["message", {"qid": 8, "data": {"fail": true}}]),
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(
        r[1],
        json!({"qid": 8, "success": false, "data": {"error": "script_error"}})
    );

    let started = Instant::now();
    send(
        &mut ws,
        json!(["message", {"qid": 9, "data": {"spin": true}}]),
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(
        r[1],
        json!({"qid": 9, "success": false, "data": {"error": "timeout"}})
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn many_pipelined_messages_are_answered_exactly_once() {
    let srv = project().start();
    let ws = connect(&srv, "/channels/live/ws?token=live-token").await;
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        for i in 0..500 {
            let frame = json!(["message", {"qid": i, "data": {"n": i}}]);
            tx.send(Message::Text(frame.to_string().into()))
                .await
                .unwrap();
        }
        tx
    });
    let mut seen: HashMap<i64, usize> = HashMap::new();
    while seen.len() < 500 {
        let msg = tokio::time::timeout(Duration::from_secs(20), rx.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(v[1]["success"], true, "{v}");
            let qid = v[1]["qid"].as_i64().unwrap();
            assert_eq!(v[1]["data"]["echo"]["n"], qid);
            *seen.entry(qid).or_default() += 1;
        }
    }
    let _tx = sender.await.unwrap();
    // Nothing more arrives: every qid was answered once.
    assert!(tokio::time::timeout(Duration::from_millis(300), rx.next())
        .await
        .is_err());
    assert!(seen.values().all(|&n| n == 1));
}

#[tokio::test]
async fn a_runaway_message_is_overtaken_by_a_fast_one() {
    let srv = project().start();
    let mut ws = connect(&srv, "/channels/live/ws?token=live-token").await;
    send(
        &mut ws,
        json!(["message", {"qid": "slow", "data": {"spin": true}}]),
    )
    .await;
    send(&mut ws, json!(["message", {"qid": "fast", "data": {}}])).await;
    let first = recv(&mut ws).await;
    assert_eq!(first[1]["qid"], "fast");
    assert_eq!(first[1]["success"], true);
    let second = recv(&mut ws).await;
    assert_eq!(second[1]["qid"], "slow");
    assert_eq!(second[1]["data"]["error"], "timeout");
}

#[tokio::test]
async fn the_inflight_cap_holds_frames_back_without_dropping_them() {
    let srv = project().config("ws_max_inflight = 2").start();
    let mut ws = connect(&srv, "/channels/live/ws?token=live-token").await;
    let started = Instant::now();
    for i in 0..6 {
        send(
            &mut ws,
            json!(["message", {"qid": i, "data": {"busy_ms": 300}}]),
        )
        .await;
    }
    let mut got = Vec::new();
    for _ in 0..6 {
        let r = recv(&mut ws).await;
        assert_eq!(r[1]["success"], true, "{r}");
        got.push(r[1]["qid"].as_i64().unwrap());
    }
    got.sort();
    assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);
    // Six 300 ms runs, two at a time, take at least three rounds.
    assert!(
        started.elapsed() >= Duration::from_millis(850),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn duplicate_qids_in_flight_are_refused() {
    let srv = project().start();
    let mut ws = connect(&srv, "/channels/live/ws?token=live-token").await;
    send(
        &mut ws,
        json!(["message", {"qid": 5, "data": {"busy_ms": 500}}]),
    )
    .await;
    send(&mut ws, json!(["message", {"qid": 5, "data": {}}])).await;
    let first = recv(&mut ws).await;
    assert_eq!(
        first[1],
        json!({"qid": 5, "success": false, "data": {"error": "duplicate_qid"}})
    );
    let second = recv(&mut ws).await;
    assert_eq!(
        (second[1]["qid"].clone(), second[1]["success"].clone()),
        (json!(5), json!(true))
    );
    // Once answered, the qid can be used again.
    send(&mut ws, json!(["message", {"qid": 5, "data": {}}])).await;
    assert_eq!(recv(&mut ws).await[1]["success"], true);
}

#[tokio::test]
async fn bad_frames_are_answered_and_the_connection_stays() {
    let srv = project().start();
    let mut ws = connect(&srv, "/channels/live/ws?token=live-token").await;
    for (frame, qid) in [
        ("not json".to_string(), Value::Null),
        ("{\"a\":1}".to_string(), Value::Null),
        ("[\"message\"]".to_string(), Value::Null),
        ("[\"message\", {\"data\": 1}]".to_string(), Value::Null),
        ("[\"message\", {\"qid\": [1]}]".to_string(), json!([1])),
    ] {
        ws.send(Message::Text(frame.clone().into())).await.unwrap();
        let r = recv(&mut ws).await;
        assert_eq!(r[0], "error", "{frame}");
        assert_eq!(r[1]["error"], "bad_frame", "{frame}");
        assert_eq!(r[1]["qid"], qid, "{frame}");
        assert!(r[1]["message"].is_string());
    }
    send(&mut ws, json!(["dance", {"qid": 3}])).await;
    assert_eq!(
        recv(&mut ws).await,
        json!(["dance_result", {"qid": 3, "success": false, "data": {"error": "unknown_kind"}}])
    );
    send(
        &mut ws,
        json!(["publish", {"qid": 4, "data": {"name": "a.b"}}]),
    )
    .await;
    assert_eq!(recv(&mut ws).await[1]["data"]["error"], "forbidden");
    send(&mut ws, json!(["message", {"qid": 10, "data": {}}])).await;
    assert_eq!(recv(&mut ws).await[1]["success"], true);
}

#[tokio::test]
async fn protocol_violations_close_with_their_codes() {
    let srv = project().start();
    let url = "/channels/live/ws?token=live-token";

    let mut ws = connect(&srv, url).await;
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1003));

    let mut ws = connect(&srv, url).await;
    let big = json!(["message", {"qid": 1, "data": "x".repeat(5000)}]).to_string();
    let _ = ws.send(Message::Text(big.into())).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));

    let mut ws = connect(&srv, url).await;
    let bad_utf8 = Frame::message(vec![b'[', 0xff, 0xfe, b']'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(bad_utf8)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1007));

    // The server is unharmed.
    let mut ws = connect(&srv, url).await;
    send(&mut ws, json!(["message", {"qid": 1, "data": {}}])).await;
    assert_eq!(recv(&mut ws).await[1]["success"], true);
}

#[tokio::test]
async fn subscriptions_are_kept_per_connection_and_gated_by_ws_apis() {
    let srv = project()
        .channel(json!({"code": "closed", "token_local": "c-token"}))
        .channel(
            json!({"code": "feed", "token_local": "f-token", "type": "events",
            "opts": {"ws_apis": ["subscribe", "unsubscribe"]}}),
        )
        .start();
    // Only events channels receive events: subscribing elsewhere says so.
    let mut general = connect(&srv, "/channels/live/ws?token=live-token").await;
    send(
        &mut general,
        json!(["subscribe", {"qid": 1, "data": {"events": ["order.*"]}}]),
    )
    .await;
    assert_eq!(
        recv(&mut general).await,
        json!(["subscribe_result", {"qid": 1, "success": false, "data": {"error": "not_an_events_channel"}}])
    );
    let mut ws = connect(&srv, "/channels/feed/ws?token=f-token").await;
    send(
        &mut ws,
        json!(["subscribe", {"qid": 1, "data": {"events": ["order.*", "invoice.>"]}}]),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!(["subscribe_result", {"qid": 1, "success": true, "data": {"events": ["order.*", "invoice.>"]}}])
    );
    send(
        &mut ws,
        json!(["unsubscribe", {"qid": 2, "data": {"events": ["order.*"]}}]),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await[1]["data"]["events"],
        json!(["invoice.>"])
    );
    send(
        &mut ws,
        json!(["subscribe", {"qid": 3, "data": {"events": ["bad..pattern"]}}]),
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(
        (r[1]["success"].clone(), r[1]["data"]["error"].clone()),
        (json!(false), json!("bad_pattern"))
    );

    let mut other = connect(&srv, "/channels/closed/ws?token=c-token").await;
    send(
        &mut other,
        json!(["subscribe", {"qid": 1, "data": {"events": ["a"]}}]),
    )
    .await;
    assert_eq!(recv(&mut other).await[1]["data"]["error"], "forbidden");
    send(&mut other, json!(["message", {"qid": 2, "data": {}}])).await;
    assert_eq!(recv(&mut other).await[1]["data"]["error"], "no_script");

    let (status, _, body) = json_of(
        client()
            .get(srv.url("/admin/connections"))
            .bearer_auth("adm")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let live = body["connections"]["feed"].as_array().unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["address"], "127.0.0.1");
    assert_eq!(live[0]["patterns"], json!(["invoice.>"]));
    assert_eq!(body["connections"]["live"][0]["patterns"], json!([]));
    assert_eq!(live[0]["inflight"], 0);
    assert!(chrono::DateTime::parse_from_rfc3339(live[0]["opened"].as_str().unwrap()).is_ok());
    assert_eq!(body["connections"]["closed"].as_array().unwrap().len(), 1);
}

fn push_project() -> Project {
    project()
        .channel(json!({"code": "feed", "token_local": "feed-token", "send_svcscriptcode_ws": "feed_push",
            "recv_svcscriptcode_ws": "feed_recv"}))
        .channel(json!({"code": "trigger", "token_local": "t-token", "recv_svcscriptcode": "trigger",
            "opts": {"issync": true}}))
        .script("feed_push", r#"
            let d = parse_json(startparam(1));
            if "to" in d { ws_send_to(d.to, d); } else { ws_send(d); }
        "#)
        .script("feed_recv", "data = startparam(3);")
        .script("trigger", "channel_send_ws(\"feed\", parse_json(startparam(4))); body = #{ queued: true };")
}

async fn trigger(srv: &Server, data: Value) {
    let (status, _, body) = json_of(
        client()
            .post(srv.url("/channels/trigger/api?token=t-token"))
            .body(data.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn pushes_reach_every_connection_or_one() {
    let srv = push_project().start();
    let mut a = connect(&srv, "/channels/feed/ws?token=feed-token").await;
    let mut b = connect(&srv, "/channels/feed/ws?token=feed-token").await;
    trigger(&srv, json!({"n": 1})).await;
    assert_eq!(recv(&mut a).await, json!(["push", {"data": {"n": 1}}]));
    assert_eq!(recv(&mut b).await, json!(["push", {"data": {"n": 1}}]));

    send(&mut b, json!(["message", {"qid": 1, "data": {}}])).await;
    let b_id = recv(&mut b).await[1]["data"].as_str().unwrap().to_owned();
    trigger(&srv, json!({"n": 2, "to": b_id})).await;
    assert_eq!(recv(&mut b).await[1]["data"]["n"], 2);
    trigger(&srv, json!({"n": 3})).await;
    assert_eq!(
        recv(&mut a).await[1]["data"]["n"],
        3,
        "a never got the push meant for b"
    );
    let last = tokio::time::timeout(Duration::from_secs(9), recv(&mut b)).await;
    match last {
        Ok(frame) => assert_eq!(frame[1]["data"]["n"], 3),
        // Say what the server knows: a dropped push is counted, a stuck
        // socket is not, and the connection list shows what it holds queued.
        Err(_) => panic!(
            "b never got the push for everyone\n{}\n{}\n{}",
            common::metrics_text(&srv)
                .await
                .lines()
                .filter(|l| l.contains("ws_"))
                .collect::<Vec<_>>()
                .join("\n"),
            client()
                .get(srv.url("/admin/connections"))
                .bearer_auth("adm")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            srv.logs()
        ),
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_delay_the_others() {
    let srv = push_project().start();
    let stalled = connect(&srv, "/channels/feed/ws?token=feed-token").await;
    let mut reader = connect(&srv, "/channels/feed/ws?token=feed-token").await;
    let blob = "y".repeat(60_000);
    for n in 0..400 {
        trigger(&srv, json!({"n": n, "blob": blob})).await;
        let got = recv(&mut reader).await;
        assert_eq!(got[1]["data"]["n"], n);
    }
    let text = common::metrics_text(&srv).await;
    assert!(
        text.contains("switchyard_ws_push_dropped_total{channel=\"feed\"}"),
        "{text}"
    );
    drop(stalled);
}

#[tokio::test]
async fn deleting_the_channel_and_stopping_the_server_close_with_1001() {
    let mut srv = project()
        .channel(json!({"code": "doomed", "token_local": "d-token"}))
        .start();
    let mut doomed = connect(&srv, "/channels/doomed/ws?token=d-token").await;
    let mut live = connect(&srv, "/channels/live/ws?token=live-token").await;
    let resp = client()
        .delete(srv.url("/admin/channels/doomed"))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(close_code(&mut doomed).await, Some(1001));
    send(&mut live, json!(["message", {"qid": 1, "data": {}}])).await;
    assert_eq!(recv(&mut live).await[1]["success"], true);

    srv.signal("TERM");
    assert_eq!(close_code(&mut live).await, Some(1001));
    let status = srv.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn frames_past_ws_max_rate_are_refused() {
    let srv = project().config("ws_max_rate = 5").start();
    let mut ws = connect(&srv, "/channels/live/ws?token=live-token").await;
    for i in 0..20 {
        send(&mut ws, json!(["message", {"qid": i, "data": {}}])).await;
    }
    let mut limited = 0;
    for _ in 0..20 {
        let r = recv(&mut ws).await;
        if r[1]["data"]["error"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(limited >= 10, "{limited} of 20 were rate limited");
}

#[tokio::test]
async fn events_reach_each_subscriber_channel_once() {
    let srv = project()
        .channel(json!({"code": "sub1", "type": "events", "token_local": "s1", "opts": {"ws_apis": ["*"]}}))
        .channel(json!({"code": "sub2", "type": "events", "token_local": "s2", "opts": {"events": ["order.>"]}}))
        .channel(json!({"code": "pub", "token_local": "p-token", "recv_svcscriptcode": "emit",
            "opts": {"issync": true}}))
        .script("emit", "body = #{ id: emit_event(\"order.created\", parse_json(startparam(4))) };")
        .start();
    let mut conns = Vec::new();
    for patterns in [
        json!(["order.*"]),
        json!(["order.>", "order.created"]),
        json!([">"]),
    ] {
        let mut ws = connect(&srv, "/channels/sub1/ws?token=s1").await;
        send(
            &mut ws,
            json!(["subscribe", {"qid": 1, "data": {"events": patterns}}]),
        )
        .await;
        assert_eq!(recv(&mut ws).await[1]["success"], true);
        conns.push(ws);
    }
    let mut sub2 = connect(&srv, "/channels/sub2/ws?token=s2").await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let (status, _, body) = json_of(
            client()
                .post(srv.url("/channels/pub/api?token=p-token"))
                .body(json!({"i": i}).to_string())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let mut got: Vec<String> = Vec::new();
    for ws in conns.iter_mut() {
        while let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(500), ws.next()).await
        {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(v[0], "event");
            assert_eq!(v[1]["name"], "order.created");
            assert_eq!(v[1]["source"], "pub");
            got.push(v[1]["id"].as_str().unwrap().to_owned());
        }
    }
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(
        got, want,
        "sub1 got each event exactly once across its three connections"
    );
    for id in &ids {
        let v = recv(&mut sub2).await;
        assert_eq!(&v[1]["id"], id, "sub2 got its own copy, in order");
    }
}

#[tokio::test]
async fn the_server_pings_and_closes_a_silent_connection() {
    let srv = project().start_with_env(&[("SWITCHYARD_WS_PING_SECS", "1")]);
    // A client that reads answers pings (tungstenite replies pong) and stays open.
    let mut alive = connect(&srv, "/channels/live/ws?token=live-token").await;
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(4500) {
        if let Ok(Some(Ok(Message::Ping(_)))) =
            tokio::time::timeout(Duration::from_millis(500), alive.next()).await
        {
            pings += 1;
        }
    }
    assert!(pings >= 3, "{pings} pings in 4.5 s");
    send(&mut alive, json!(["message", {"qid": 1, "data": {}}])).await;
    assert_eq!(recv(&mut alive).await[1]["success"], true);

    // A client that never reads never answers: the server closes it after three ping
    // intervals, while the connection that reads stays open.
    let silent = connect(&srv, "/channels/live/ws?token=live-token").await;
    let open = || async {
        let (_, _, body) = json_of(
            client()
                .get(srv.url("/admin/connections"))
                .bearer_auth("adm")
                .send()
                .await
                .unwrap(),
        )
        .await;
        body["connections"]["live"]
            .as_array()
            .map_or(0, |a| a.len())
    };
    // The new connection is in the table a moment after its handshake.
    let registered = Instant::now();
    while open().await < 2 {
        assert!(
            registered.elapsed() < Duration::from_secs(3),
            "the silent connection never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    while open().await > 1 {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the silent connection was never closed"
        );
        // Keep the reading connection reading (and answering pings) meanwhile.
        let _ = tokio::time::timeout(Duration::from_millis(200), alive.next()).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "closed too early: {:?}",
        started.elapsed()
    );
    drop(silent);
}

/// Opens a websocket over a raw socket, so the test can write frames no client library would.
async fn raw_upgrade(srv: &Server, path: &str) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = srv.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Reads the next raw server frame (servers never mask): its opcode and payload.
async fn raw_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await.ok()?;
        let len = match head[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).await.ok()?;
                u16::from_be_bytes(l) as usize
            }
            127 => return None,
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.ok()?;
        Some((head[0] & 0x0f, payload))
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()
        .flatten()
}

/// Reads raw frames until a close frame; returns its code.
async fn raw_close_code(s: &mut TcpStream) -> Option<u16> {
    loop {
        let (opcode, payload) = raw_frame(s).await?;
        if opcode == 0x8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

#[tokio::test]
async fn protocol_errors_close_with_1002() {
    use tokio::io::AsyncWriteExt;
    let srv = project().start();
    let url = "/channels/live/ws?token=live-token";
    let text = br#"["message",{"qid":1,"data":{}}]"#;
    // A client frame with the first byte `head` (FIN, RSV bits, opcode), masked.
    let masked = |head: u8| {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![head, 0x80 | text.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    };

    // An unmasked frame from a client (RFC 6455 §5.1).
    let mut s = raw_upgrade(&srv, url).await;
    let mut frame = vec![0x81, text.len() as u8];
    frame.extend_from_slice(text);
    s.write_all(&frame).await.unwrap();
    assert_eq!(raw_close_code(&mut s).await, Some(1002));

    // A reserved bit set without an extension that defines it (§5.2), an
    // unknown opcode (§5.2: 0x3–0x7 are reserved), and a bad control frame: a
    // ping without FIN (§5.5: control frames must not be fragmented).
    for head in [0x81 | 0x40, 0x83, 0x09] {
        let mut s = raw_upgrade(&srv, url).await;
        s.write_all(&masked(head)).await.unwrap();
        assert_eq!(raw_close_code(&mut s).await, Some(1002), "{head:#x}");
    }

    // The same frame, well formed, is answered: the raw client itself is right.
    let mut s = raw_upgrade(&srv, url).await;
    s.write_all(&masked(0x81)).await.unwrap();
    let (opcode, payload) = raw_frame(&mut s).await.expect("an answer");
    assert_eq!(opcode, 0x1);
    let answer: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(answer[1]["qid"], 1);
    assert_eq!(answer[1]["success"], true, "{answer}");
}
