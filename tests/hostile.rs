//! Hostile clients against the real binary: slow headers, stalled bodies, too many connections.

mod common;

use std::time::{Duration, Instant};

use common::{channel, client, Project, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(srv: &Server) -> String {
    srv.base.trim_start_matches("http://").to_owned()
}

async fn read_all(stream: &mut TcpStream, limit: Duration) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn slow_headers_get_408_and_others_are_served_meanwhile() {
    let srv = Project::new()
        .config("header_timeout = \"1s\"")
        .channel(channel("c", "ok"))
        .script("ok", "body = \"fine\";")
        .start();
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(addr(&srv)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // While 100 connections dribble their headers, a normal client is served at once.
    for _ in 0..5 {
        let started = Instant::now();
        let resp = client()
            .get(srv.url("/channels/c/api?token=c-token"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            started.elapsed() < Duration::from_millis(800),
            "{:?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    for s in slow.iter_mut() {
        let answer = read_all(s, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(answer.contains("request_timeout"));
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        common::counter(
            &srv,
            r#"switchyard_http_requests_total{channel="",status="408"}"#
        )
        .await,
        100,
        "each header timeout is counted"
    );
    common::assert_serving(&srv).await;
}

#[tokio::test]
async fn a_stalled_body_gets_408() {
    let srv = Project::new()
        .config("body_timeout = \"1s\"")
        .channel(channel("c", "ok"))
        .script("ok", "body = startparam(4);")
        .start();
    let mut s = TcpStream::connect(addr(&srv)).await.unwrap();
    s.write_all(b"POST /channels/c/api?token=c-token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten..")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("request_timeout"));
    assert!(started.elapsed() >= Duration::from_millis(900));
    let resp = client()
        .post(srv.url("/channels/c/api?token=c-token"))
        .body("whole")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "whole");
}

#[tokio::test]
async fn connections_past_max_connections_wait_until_one_closes() {
    let srv = Project::new().config("max_connections = 3").start();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr(&srv)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s); // kept alive: each holds a slot
    }
    let waiting = tokio::spawn({
        let url = srv.url("/healthz");
        async move {
            let started = Instant::now();
            let status = client().get(url).send().await.unwrap().status();
            (status, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished(),
        "a fourth connection was served while three were open"
    );
    drop(held.pop());
    let (status, waited) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert!(waited >= Duration::from_millis(600), "{waited:?}");
}

/// Panics are provoked with the test-only fault injection switch: `fault_panic()`
/// in a script, and a handler that panics at `/admin/fault/panic`.
#[tokio::test]
async fn panics_are_caught_answered_logged_with_the_request_id_and_counted() {
    use futures_util::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio_tungstenite::tungstenite::Message;

    const ADMIN: &str = "adm";
    // "panic" panics in the inline attempt; "late" first calls a side-effecting
    // function, so the run moves to a blocking thread and panics there.
    let boom = r#"
        let input = startparam(4);
        if input == "panic" { fault_panic("in a request"); }
        if input == "late" { log_info("about to panic"); fault_panic("on a blocking thread"); }
        body = "fine";
    "#;
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(json!({"code": "p", "token_local": "p-token", "recv_svcscriptcode": "boom",
            "recv_svcscriptcode_ws": "boom_ws", "send_svcscriptcode": "boom_send",
            "opts": {"issync": true, "send_retries": 0}}))
        .channel(json!({"code": "q", "token_local": "q-token", "recv_svcscriptcode": "boom_inbox",
            "opts": {"issync": false}}))
        .script("boom", boom)
        .script(
            "boom_ws",
            r#"if parse_json(startparam(1)) == "panic" { fault_panic("in a frame"); } data = "fine";"#,
        )
        .script("boom_send", r#"fault_panic("in a send job");"#)
        .script(
            "boom_inbox",
            r#"if startparam(4) == "panic" { fault_panic("in an inbox job"); } result = "fine";"#,
        )
        .start_with_env(&[("SWITCHYARD_FAULT_INJECTION", "1")]);
    assert_eq!(common::counter(&srv, "switchyard_panics_total").await, 0);

    // A request: 500 with the request id, which the log line names.
    let call = |body: &'static str| {
        client()
            .post(srv.url("/channels/p/api?token=p-token"))
            .body(body)
            .send()
    };
    for (body, place) in [("panic", "in a request"), ("late", "on a blocking thread")] {
        let resp = call(body).await.unwrap();
        assert_eq!(resp.status(), 500);
        let answer: Value = resp.json().await.unwrap();
        let id = answer["request_id"].as_str().unwrap().to_owned();
        assert_eq!(answer["error"], "script_error", "{answer}");
        let line = srv.wait_for_line(&[&id, "panicked"]).await;
        assert!(line.contains(place), "{line}");
        // The next request to the same channel is served.
        let resp = call("calm").await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "fine");
    }

    // A handler panic: 500 internal, logged with the request id.
    let resp = client()
        .get(srv.url("/admin/fault/panic"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["error"], "internal");
    let id = answer["request_id"].as_str().unwrap().to_owned();
    srv.wait_for_line(&[&id, "handler panicked"]).await;

    // A websocket frame: success false, and the connection carries on.
    let url = srv
        .url("/channels/p/ws?token=p-token")
        .replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for (qid, data) in [(1, "panic"), (2, "calm")] {
        let frame = json!(["message", {"qid": qid, "data": data}]).to_string();
        ws.send(Message::Text(frame.into())).await.unwrap();
        let answer = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => break serde_json::from_str::<Value>(&t).unwrap(),
                Ok(Some(Ok(_))) => continue,
                other => panic!("no answer: {other:?}"),
            }
        };
        assert_eq!(answer[1]["qid"], qid);
        assert_eq!(answer[1]["success"], qid == 2, "{answer}");
    }

    // A send job and an inbox job: failed, with the reason, and the worker carries on.
    let (status, _, sent) = common::json_of(
        client()
            .post(srv.url("/channels/p/send"))
            .bearer_auth(ADMIN)
            .json(&json!({"n": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    let job = common::wait_job(
        &srv,
        ADMIN,
        sent["job_id"].as_str().unwrap(),
        &["failed"],
        Duration::from_secs(10),
    )
    .await;
    assert!(
        job["last_error"].as_str().unwrap().contains("panicked"),
        "{job}"
    );
    let mut inbox = Vec::new();
    for body in ["panic", "calm"] {
        let resp = client()
            .post(srv.url("/channels/q/api?token=q-token"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let answer: Value = resp.json().await.unwrap();
        inbox.push(answer["request_id"].as_str().unwrap().to_owned());
    }
    let failed =
        common::wait_job(&srv, ADMIN, &inbox[0], &["failed"], Duration::from_secs(10)).await;
    assert!(
        failed["last_error"].as_str().unwrap().contains("panicked"),
        "{failed}"
    );
    let ok = common::wait_job(
        &srv,
        ADMIN,
        &inbox[1],
        &["succeeded"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(ok["result"], "fine");

    // Two requests, the handler, the frame and the two jobs.
    assert_eq!(common::counter(&srv, "switchyard_panics_total").await, 6);
    common::assert_serving(&srv).await;
}

/// Runs on blocking threads share a bounded number of computing slots; runaway
/// scripts give theirs up once they turn out long, so they cannot keep other
/// channels' blocking runs (here: a script that reads kv) waiting.
/// A caller's data logged by a script cannot forge a log line: line breaks
/// and other control characters are written escaped.
#[tokio::test]
async fn a_caller_cannot_forge_a_log_line() {
    let srv = Project::new()
        .channel(channel("orders", "orders"))
        .script(
            "orders",
            "log_info(`order from ${startparam(4)}`); body = \"ok\";",
        )
        .start();
    let forged = "ACME\n2026-12-06T00:00:00.000000Z  INFO switchyard::admin: admin token rotated\r\n\u{1b}[2Jx";
    let resp = client()
        .post(srv.url("/channels/orders/api?token=orders-token"))
        .body(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(srv.wait_for_log("order from ACME", Duration::from_secs(5)));
    let logs = srv.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("order from ACME"))
        .unwrap();
    assert!(
        line.contains(r"ACME\n2026-12-06T00:00:00.000000Z") && line.contains(r"\r\n\x1b[2Jx"),
        "{line}"
    );
    assert!(
        !logs.lines().any(|l| l.starts_with("2026-12-06T00:00:00")),
        "a forged line: {logs}"
    );
    assert!(
        !logs.contains('\u{1b}'),
        "a raw escape sequence reached the log"
    );
}

#[tokio::test]
async fn runaway_scripts_do_not_hold_up_other_channels() {
    use serde_json::json;
    let spin = |code: &str| {
        json!({"code": code, "token_local": "spin-token", "recv_svcscriptcode": "spin",
            "opts": {"issync": true, "recv_timeout": 3}})
    };
    let srv = Project::new()
        .channel(spin("spin"))
        .channel(spin("spin2"))
        .channel(channel("kv", "kv"))
        .channel(channel("logs", "logs"))
        .script("spin", "let n = 0; loop { n += 1; }")
        .script("kv", r#"kv_set("k", 1); body = `${kv_get("k")}`;"#)
        .script("logs", r#"log_info("still here"); body = "logged";"#)
        .start();
    // More runaways than there are slots (4 per core) and long-run places (32)
    // together, on one channel, and a second runaway channel besides.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut spinning = Vec::new();
    for (code, n) in [("spin", cores * 4 + 32 + 8), ("spin2", cores * 4 + 4)] {
        for _ in 0..n {
            spinning.push(tokio::spawn(
                client()
                    .get(srv.url(&format!("/channels/{code}/api?token=spin-token")))
                    .send(),
            ));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (path, answer) in [
        ("/channels/kv/api?token=kv-token", "1"),
        ("/channels/logs/api?token=logs-token", "logged"),
    ] {
        let started = Instant::now();
        let resp = client().get(srv.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.text().await.unwrap(), answer);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{path} waited {:?} behind the runaways",
            started.elapsed()
        );
    }
    for call in spinning {
        assert_eq!(call.await.unwrap().unwrap().status(), 504);
    }
}
