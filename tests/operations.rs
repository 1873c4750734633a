//! Hardening III (SPEC §1, §10, §12, §14): bounded per connection, clean stops,
//! a store that is checked and copied, atomic kv, strict HTTP/1.1. Each test
//! runs the real binary.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_serving, channel, client, json_of, Project, Server};
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "adm";

fn addr(srv: &Server) -> String {
    srv.base.trim_start_matches("http://").to_owned()
}

/// Resident memory of the server, in bytes.
fn rss(srv: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", srv.child.id())).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Sends `request` on a fresh connection and reads the answer (up to `limit`).
async fn raw(srv: &Server, request: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr(srv)).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn http11_framing_is_strict() {
    let srv = Project::new()
        .config("max_header_bytes = 16384")
        .channel(channel("c", "ok"))
        .channel(json!({"code": "w", "token_local": "w-token", "recv_svcscriptcode_ws": "one"}))
        .script("ok", "body = \"fine\";")
        .script("one", "data = 1;")
        .start();
    let limit = Duration::from_secs(5);
    let get = |extra: &str| {
        format!("GET /channels/c/api?token=c-token HTTP/1.1\r\n{extra}Connection: close\r\n\r\n")
    };
    assert_eq!(
        status_of(&raw(&srv, get("Host: a\r\n").as_bytes(), limit).await),
        200
    );
    assert_eq!(status_of(&raw(&srv, get("").as_bytes(), limit).await), 400);
    let two = get("Host: a.example\r\nHost: b.example\r\n");
    assert_eq!(status_of(&raw(&srv, two.as_bytes(), limit).await), 400);
    // Same for routed paths.
    let healthz = "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n";
    assert_eq!(status_of(&raw(&srv, healthz.as_bytes(), limit).await), 400);
    // A transfer coding other than chunked is not silently passed on.
    let gz = "POST /channels/c/api?token=c-token HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n1\r\nx\r\n0\r\n\r\n";
    let answer = raw(&srv, gz.as_bytes(), limit).await;
    assert_eq!(status_of(&answer), 501, "{answer}");
    // Headers over max_header_bytes: 431.
    let big = get(&format!("Host: a\r\nX-Big: {}\r\n", "y".repeat(20_000)));
    assert_eq!(status_of(&raw(&srv, big.as_bytes(), limit).await), 431);
    // The limit is the head's size, to the byte's neighbourhood: not 8 KiB looser.
    let over = get(&format!("Host: a\r\nX-Big: {}\r\n", "y".repeat(16_384)));
    let answer = raw(&srv, over.as_bytes(), limit).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    let under = get(&format!("Host: a\r\nX-Big: {}\r\n", "y".repeat(15_000)));
    assert_eq!(status_of(&raw(&srv, under.as_bytes(), limit).await), 200);
    // Websocket upgrades need a real key and no body.
    let upgrade = |key: &str, extra: &str| {
        format!(
            "GET /channels/w/ws?token=w-token HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{extra}\r\n"
        )
    };
    let good = upgrade("dGhlIHNhbXBsZSBub25jZQ==", "");
    let answer = raw(&srv, good.as_bytes(), Duration::from_millis(500)).await;
    assert_eq!(status_of(&answer), 101, "{answer}");
    for key in ["", "abc", &"A".repeat(4000)] {
        let answer = raw(&srv, upgrade(key, "").as_bytes(), limit).await;
        assert_eq!(status_of(&answer), 400, "key {key:?}: {answer}");
    }
    let chunked = upgrade("dGhlIHNhbXBsZSBub25jZQ==", "Transfer-Encoding: chunked\r\n");
    assert_eq!(status_of(&raw(&srv, chunked.as_bytes(), limit).await), 400);
    assert_serving(&srv).await;
}

#[tokio::test]
async fn bodies_hold_what_arrived_and_body_timeout_bounds_the_whole_body() {
    let srv = Project::new()
        .config("body_timeout = \"2s\"")
        .channel(channel("c", "ok"))
        .script("ok", "body = startparam(4).len();")
        .start();
    // 200 requests that declare a megabyte and send one byte.
    let before = rss(&srv);
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr(&srv)).await.unwrap();
        s.write_all(b"POST /channels/c/api?token=c-token HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\nx")
            .await
            .unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss(&srv).saturating_sub(before);
    assert!(grown < 60 * 1024 * 1024, "RSS grew by {} MB", grown >> 20);
    drop(held);
    // One byte every 500 ms never finishes a 100-byte body: 408 at body_timeout.
    let mut s = TcpStream::connect(addr(&srv)).await.unwrap();
    s.write_all(
        b"POST /channels/c/api?token=c-token HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    for _ in 0..20 {
        if s.write_all(b"x").await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_ping_flood_from_a_client_that_never_reads_stays_bounded() {
    let srv = Project::new()
        .channel(json!({"code": "w", "token_local": "w-token", "recv_svcscriptcode_ws": "ok"}))
        .script("ok", "data = 1;")
        .start();
    let url = srv
        .url("/channels/w/ws?token=w-token")
        .replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let before = rss(&srv);
    let started = Instant::now();
    let payload = vec![b'p'; 125];
    let mut sent = 0u32;
    while started.elapsed() < Duration::from_secs(4) {
        if ws
            .feed(Message::Ping(payload.clone().into()))
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
        if sent % 1000 == 0 && ws.flush().await.is_err() {
            break;
        }
    }
    let grown = rss(&srv).saturating_sub(before);
    assert!(sent > 1000, "only {sent} pings went out");
    assert!(
        grown < 100 * 1024 * 1024,
        "RSS grew by {} MB after {sent} pings",
        grown >> 20
    );
    drop(ws);
    assert_serving(&srv).await;
}

/// Open websockets on every node, counted from `GET /admin/connections`.
async fn open_websockets(srv: &Server, admin: &str) -> usize {
    let (status, body) = common::admin_get(srv, admin, "/admin/connections").await;
    assert_eq!(status, 200, "{body}");
    body["connections"].as_object().map_or(0, |m| {
        m.values().map(|v| v.as_array().map_or(0, Vec::len)).sum()
    })
}

/// A websocket client with a small receive buffer (so the kernel does not
/// take tens of MB for it) that sends `n` messages and then never reads.
async fn never_reading_client(
    srv: &Server,
    path: &str,
    n: u32,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    let tcp = socket.connect(addr(srv).parse().unwrap()).await.unwrap();
    let url = srv.url(path).replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    for qid in 0..n {
        let frame = json!(["message", {"qid": qid, "data": {}}]).to_string();
        ws.feed(Message::Text(frame.into())).await.unwrap();
    }
    ws.flush().await.unwrap();
    ws
}

/// A websocket channel whose every answer is 1 MB, run off the reader's
/// thread (kv_get) so that many finish at once and wait together.
fn big_answers(config: &str) -> Project {
    Project::new()
        .config(config)
        .channel(json!({"code": "w", "token_local": "w-token", "recv_svcscriptcode_ws": "big"}))
        .script(
            "big",
            r#"kv_get("k"); let s = "x"; s.pad(1000000, "y"); data = s;"#,
        )
}

/// A websocket client that sends messages and never reads their answers: the
/// answers held for it (queued, or waiting for room in finished runs) stay
/// within a few MiB (`GET /admin/connections` shows both), and once more
/// than that waits it is disconnected, whatever write_timeout is.
#[tokio::test]
async fn a_websocket_client_that_never_reads_holds_bounded_memory() {
    let srv = big_answers("admin_token = \"adm\"\nws_max_inflight = 400").start();
    // 400 answers of 1 MB finish for a client that does not read;
    // write_timeout (30 s) does not run out meanwhile.
    let flood = never_reading_client(&srv, "/channels/w/ws?token=w-token", 400).await;
    let started = Instant::now();
    let mut most = 0;
    loop {
        let (_, body) = common::admin_get(&srv, "adm", "/admin/connections").await;
        let Some(conn) = body["connections"]["w"].get(0) else {
            break; // disconnected
        };
        let held = conn["queued_bytes"].as_u64().unwrap() + conn["waiting_bytes"].as_u64().unwrap();
        most = most.max(held);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a client that reads nothing is still connected (holding {held} bytes)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("most held for a client that does not read: {most} bytes");
    // 4 MiB queued + 4 MiB waiting + the answer that crossed the bound.
    assert!(most <= 8 * 1024 * 1024 + 1_100_000, "{most} bytes held");
    drop(flood);
    assert_serving(&srv).await;
}

/// A client with a few big answers (within the memory budget) that never
/// reads: cut off once nothing leaves for write_timeout.
#[tokio::test]
async fn a_websocket_client_that_never_reads_is_cut_off_after_write_timeout() {
    let srv = big_answers("admin_token = \"adm\"\nwrite_timeout = \"2s\"").start();
    let stalled = never_reading_client(&srv, "/channels/w/ws?token=w-token", 6).await;
    let started = Instant::now();
    while open_websockets(&srv, "adm").await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a client that never reads is still connected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("cut off after {:?}", started.elapsed());
    drop(stalled);
    assert_serving(&srv).await;
}

#[tokio::test]
async fn kv_incr_and_kv_cas_are_atomic() {
    let srv = Project::new()
        .channel(channel("n", "count"))
        .channel(channel("cas", "cas"))
        .script("count", r#"body = kv_incr("hits", 1);"#)
        .script(
            "cas",
            r#"let out = [];
               out.push(kv_cas("k", (), "a"));
               out.push(kv_cas("k", (), "b"));
               out.push(kv_cas("k", "a", #{ v: 2 }));
               out.push(kv_get("k"));
               out.push(kv_cas("k", #{ v: 2 }, ()));
               out.push(kv_get("k"));
               kv_set("t", "text");
               try { kv_incr("t", 1); out.push("no error"); } catch (e) { out.push("error"); }
               body = out;"#,
        )
        .start();
    let mut calls = Vec::new();
    for _ in 0..8 {
        let url = srv.url("/channels/n/api?token=n-token");
        calls.push(tokio::spawn(async move {
            for _ in 0..25 {
                let resp = client().get(&url).send().await.unwrap();
                assert_eq!(resp.status(), 200);
            }
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
    let resp = client()
        .get(srv.url("/channels/n/api?token=n-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "201", "no increment is lost");
    let resp = client()
        .get(srv.url("/channels/cas/api?token=cas-token"))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([true, false, true, {"v": 2}, true, null, "error"])
    );
}

async fn inbox_call(srv: &Server, code: &str) -> u16 {
    client()
        .post(srv.url(&format!("/channels/{code}/api?token={code}-token")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn db_count(db: &Path, sql: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn sigterm_lets_running_jobs_finish_claims_no_more_and_checkpoints() {
    if common::embedded_store_only("the checkpointed SQLite file") {
        return;
    }
    let slow = r#"
        let t = timestamp();
        while t.elapsed < 1.5 { }
        kv_incr("runs", 1);
        result = "done";
    "#;
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(
            json!({"code": "slow", "token_local": "slow-token", "recv_svcscriptcode": "slow",
            "opts": {"issync": false, "recv_timeout": 10}}),
        )
        .script("slow", slow)
        .start();
    assert_eq!(inbox_call(&srv, "slow").await, 202);
    assert_eq!(inbox_call(&srv, "slow").await, 202);
    // The first run is under way: stop now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut srv = srv;
    srv.signal("TERM");
    let status = srv.wait_exit(Duration::from_secs(15)).expect("exits");
    assert!(status.success(), "{status:?}");
    let project = srv.kill9();
    // The running job finished and was recorded; the queued one was not started.
    // The store file alone holds it all (no -wal needed): copy just that file.
    let copy = tempfile::tempdir().unwrap();
    let db = copy.path().join("switchyard.db");
    std::fs::copy(project.path().join("data/switchyard.db"), &db).unwrap();
    assert_eq!(
        db_count(&db, "SELECT count(*) FROM jobs WHERE state = 'succeeded'"),
        1
    );
    assert_eq!(
        db_count(&db, "SELECT count(*) FROM jobs WHERE state = 'queued'"),
        1
    );
    assert_eq!(
        db_count(&db, "SELECT count(*) FROM jobs WHERE state = 'running'"),
        0
    );
    assert_eq!(
        db_count(
            &db,
            "SELECT CAST(value AS INTEGER) FROM kv WHERE key = 'runs'"
        ),
        1
    );
    // After a restart the queued one runs, once; the first is not run again.
    let srv = project.start();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = client()
            .get(srv.url("/admin/jobs?state=succeeded"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let (_, _, body) = json_of(resp).await;
        if body["jobs"].as_array().unwrap().len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let project = srv.kill9();
    let db = project.path().join("data/switchyard.db");
    assert_eq!(
        db_count(
            &db,
            "SELECT CAST(value AS INTEGER) FROM kv WHERE key = 'runs'"
        ),
        2
    );
}

#[tokio::test]
async fn backup_copies_the_store_while_serving() {
    if common::embedded_store_only("switchyard backup") {
        return;
    }
    let srv = Project::new()
        .channel(channel("k", "put"))
        .script("put", r#"kv_set(`k${uuid()}`, 1); body = 1;"#)
        .start();
    for _ in 0..50 {
        let resp = client()
            .get(srv.url("/channels/k/api?token=k-token"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("copy.db");
    let data = srv.project.as_ref().unwrap().path().join("data");
    let run = std::process::Command::new(common::binary())
        .arg("backup")
        .arg("--data")
        .arg(&data)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(db_count(&file, "SELECT count(*) FROM kv"), 50);
    // A store copied back is served.
    let project = Project::new()
        .channel(channel("k", "count"))
        .script("count", r#"body = kv_get("missing") == ();"#);
    std::fs::copy(&file, project.path().join("data/switchyard.db")).unwrap();
    let srv = project.start();
    assert_serving(&srv).await;
    // A store cut to 0 bytes is not backed up as if it were an empty one.
    let cut = tempfile::tempdir().unwrap();
    std::fs::write(cut.path().join("switchyard.db"), b"").unwrap();
    let empty = out.path().join("empty.db");
    let run = std::process::Command::new(common::binary())
        .arg("backup")
        .arg("--data")
        .arg(cut.path())
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("empty (0 bytes)"), "{err}");
    assert!(!empty.exists(), "no copy is left behind");
}

/// Runs `serve` on `project` and expects it to refuse to start; returns stderr.
fn refused(project: &Project) -> String {
    let out = std::process::Command::new(common::binary())
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--channels")
        .arg(project.path().join("channels"))
        .arg("--scripts")
        .arg(project.path().join("scripts"))
        .arg("--data")
        .arg(project.path().join("data"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_damaged_empty_or_busy_store_is_refused_with_its_path() {
    // Make a real store with data, then damage it.
    let srv = Project::new()
        .channel(channel("k", "put"))
        .script(
            "put",
            r#"kv_set(`k${uuid()}`, "x".pad(2000, "y")); body = 1;"#,
        )
        .start();
    for _ in 0..100 {
        client()
            .get(srv.url("/channels/k/api?token=k-token"))
            .send()
            .await
            .unwrap();
    }
    let mut srv = srv;
    srv.signal("TERM");
    srv.wait_exit(Duration::from_secs(15)).expect("exits");
    let project = srv.kill9();
    let db = project.path().join("data/switchyard.db");
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 40_000, "{}", bytes.len());
    for page in 2..8 {
        for b in &mut bytes[page * 4096..page * 4096 + 4096] {
            *b = 0xA5;
        }
    }
    std::fs::write(&db, &bytes).unwrap();
    let err = refused(&project);
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        bytes,
        "the damaged file is left as it was"
    );
    // An empty file is a truncated store, not a new one.
    std::fs::write(&db, b"").unwrap();
    let err = refused(&project);
    assert!(
        err.contains("empty") && err.contains(&db.display().to_string()),
        "{err}"
    );
    // A store in use by another server.
    std::fs::remove_file(&db).unwrap();
    let first = project.start();
    let again = Project::new();
    std::fs::remove_dir_all(again.path().join("data")).unwrap();
    std::os::unix::fs::symlink(
        first.project.as_ref().unwrap().path().join("data"),
        again.path().join("data"),
    )
    .unwrap();
    let err = refused(&again);
    assert!(
        err.contains("in use by another switchyard process"),
        "{err}"
    );
    assert_serving(&first).await;
}

#[tokio::test]
async fn scripts_outside_the_folder_or_too_big_are_not_loaded() {
    let project = Project::new()
        .config(&format!(
            "admin_token = \"{ADMIN}\"\nmax_script_bytes = 10000"
        ))
        .channel(channel("c", "ok"))
        .script("ok", "body = 1;")
        .script("huge", &format!("let x = 1;{}", " ".repeat(20_000)));
    std::os::unix::fs::symlink("/etc/passwd", project.path().join("scripts/passwd.rhai")).unwrap();
    let srv = project.start();
    srv.wait_for_line(&["passwd.rhai", "leads outside"]).await;
    srv.wait_for_line(&["huge.rhai", "max_script_bytes"]).await;
    let get = |path: &str| client().get(srv.url(path)).bearer_auth(ADMIN).send();
    assert_eq!(get("/admin/scripts/passwd").await.unwrap().status(), 404);
    let resp = get("/admin/scripts").await.unwrap();
    let text = resp.text().await.unwrap();
    assert!(!text.contains("root:"), "{text}");
    let resp = client()
        .put(srv.url("/admin/scripts/big"))
        .bearer_auth(ADMIN)
        .body(format!("let x = 1;{}", " ".repeat(20_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
}

#[tokio::test]
async fn config_keys_of_the_contract_are_known_and_bad_values_say_so() {
    let project = Project::new()
        .config(
            "max_connections_per_ip = 64\nwrite_timeout = \"20s\"\nmax_header_bytes = 32768\n\
             max_script_bytes = 500000\nschedule_run_retention = \"12h\"\ntls_cert = \"\"\ntls_key = \"\"\n\
             otlp_endpoint = \"\"\n[cluster]\nnats_url = \"\"\nprefix = \"sy\"\nreplicas = 1",
        )
        .channel(channel("c", "ok"))
        .script("ok", "body = 1;");
    let srv = project.start();
    assert_serving(&srv).await;
    let project = Project::new();
    let (code, _, err) = {
        let out = std::process::Command::new(common::binary())
            .arg("serve")
            .arg("--config")
            .arg({
                let p = project.path().join("switchyard.toml");
                std::fs::write(&p, "otlp_endpoint = \"collector:4318\"\n").unwrap();
                p
            })
            .arg("--data")
            .arg(project.path().join("data"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(1));
    assert!(err.contains("otlp_endpoint"), "{err}");
}

fn open_fds(srv: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", srv.child.id()))
        .unwrap()
        .count()
}

/// A connection to the server from `local` (any 127.x.y.z address is this machine).
async fn connect_from(srv: &Server, local: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(addr(srv).parse().unwrap()).await.unwrap()
}

#[tokio::test]
async fn one_descriptor_per_connection_and_idle_keep_alives_close_silently() {
    let srv = Project::new()
        .config("header_timeout = \"1s\"")
        .channel(channel("c", "ok"))
        .script("ok", "body = 1;")
        .start();
    let before = open_fds(&srv);
    let mut conns = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(addr(&srv)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        conns.push(s);
    }
    let held = open_fds(&srv) - before;
    assert!(
        (100..=110).contains(&held),
        "100 connections hold {held} descriptors"
    );
    // Idle keep-alive connections are closed at header_timeout without a 408.
    for s in conns.iter_mut() {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
}

#[tokio::test]
async fn slow_readers_are_cut_off_and_other_addresses_are_always_served() {
    let srv = Project::new()
        .config(&format!(
            "admin_token = \"{ADMIN}\"\nwrite_timeout = \"1s\"\nmax_connections_per_ip = 20"
        ))
        .channel(channel("big", "big"))
        .script(
            "big",
            r#"let s = "x"; while s.len() < 100000 { s += s; } body = s;"#,
        )
        .start();
    // Twenty clients from one address pipeline requests for big answers and never read.
    let before = open_fds(&srv);
    let mut readers = Vec::new();
    for _ in 0..20 {
        let mut s = connect_from(&srv, "127.0.0.1").await;
        let one = "GET /channels/big/api?token=big-token HTTP/1.1\r\nHost: a\r\n\r\n";
        s.write_all(one.repeat(100).as_bytes()).await.unwrap();
        readers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // That address has no slot left: a 21st connection from it is refused …
    let mut extra = connect_from(&srv, "127.0.0.1").await;
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), extra.read_to_end(&mut got)).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // … while another address is served at once, the admin API included.
    let mut other = connect_from(&srv, "127.0.0.2").await;
    other
        .write_all(format!("GET /admin/channels HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), other.read_to_end(&mut answer))
        .await
        .expect("answered at once")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    // Readers that take nothing for write_timeout are disconnected.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(&srv) > before + 2 {
        assert!(
            Instant::now() < deadline,
            "{} descriptors still open",
            open_fds(&srv) - before
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_running_job_whose_worker_is_gone_is_taken_up_without_a_restart() {
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(
            json!({"code": "s", "token_local": "s-token", "send_svcscriptcode": "done",
            "opts": {"recv_timeout": 1}}),
        )
        .script("done", "result = startparam(4);")
        .start();
    // A job the store says is running, claimed 60 s ago by a worker that no longer exists.
    let db = srv.db();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let long_ago = chrono::Utc::now().timestamp_millis() - 60_000;
    conn.execute(
        "INSERT INTO jobs (id, channel, kind, state, attempt, max_attempts, created, updated, next_attempt_at, input) \
         VALUES ('orphan-1', 's', 'send', 'running', 1, 4, ?1, ?1, ?1, '{\"data\":{}}')",
        [long_ago],
    )
    .unwrap();
    drop(conn);
    let job = common::wait_job(
        &srv,
        ADMIN,
        "orphan-1",
        &["succeeded"],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(job["attempt"], 2, "{job}");
    assert_eq!(job["result"], "2", "{job}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["outcome"], "interrupted", "{job}");
    assert_eq!(attempts[1]["outcome"], "succeeded", "{job}");
}

#[tokio::test]
async fn a_job_outcome_that_cannot_be_written_yet_is_written_later() {
    let slow = r#"let t = timestamp(); while t.elapsed < 1.0 { } result = "ran";"#;
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(
            json!({"code": "s", "token_local": "s-token", "send_svcscriptcode": "slow",
            "opts": {"recv_timeout": 5, "send_retries": 0}}),
        )
        .script("slow", slow)
        .start();
    let id = common::send_job(&srv, ADMIN, "s", &json!({})).await;
    common::wait_job(&srv, ADMIN, &id, &["running"], Duration::from_secs(5)).await;
    // Another process holds the store's write lock past the run's end, and past
    // two of SQLite's 10 s busy waits: the outcome's first write surely fails.
    let db = srv.db();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    tokio::time::sleep(Duration::from_secs(22)).await;
    srv.wait_for_line(&["cannot write the job's outcome yet"])
        .await;
    conn.execute_batch("COMMIT").unwrap();
    drop(conn);
    let job = common::wait_job(&srv, ADMIN, &id, &["succeeded"], Duration::from_secs(15)).await;
    assert_eq!(job["result"], "ran", "{job}");
}

/// A small tmpfs (root only, as on CI) for the store: a disk that fills up.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "this test needs root to mount a small tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir)
    }
}

impl SmallDisk {
    /// `project` with its data folder on this disk.
    fn holds_data_of(&self, project: Project) -> Project {
        let data = self.0.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::remove_dir_all(project.path().join("data")).unwrap();
        std::os::unix::fs::symlink(&data, project.path().join("data")).unwrap();
        project
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_507_keeps_serving_reads_and_recovers_by_itself() {
    if common::embedded_store_only("a full disk under the SQLite store") {
        return;
    }
    // 3 MiB come back: room for the checkpoint of what the full disk held
    // and a write after it (2 MiB was too tight a margin: one page more of
    // schema made the write after the recovery fail).
    let disk = SmallDisk::mount("9m");
    let filler = disk.0.path().join("filler");
    std::fs::write(&filler, vec![0u8; 3 * 1024 * 1024]).unwrap();
    let fill =
        r#"let s = "x"; while s.len() < 200000 { s += s; } kv_set(uuid(), s); body = "stored";"#;
    let project = Project::new()
        .channel(channel("fill", "fill"))
        .channel(channel("read", "read"))
        .channel(
            json!({"code": "box", "token_local": "box-token", "recv_svcscriptcode": "read",
            "opts": {"issync": false}}),
        )
        .script("fill", fill)
        .script("read", r#"body = `${kv_get("nothing")}`;"#);
    let srv = disk.holds_data_of(project).start();
    let call = |code: &str| {
        client()
            .post(srv.url(&format!("/channels/{code}/api?token={code}-token")))
            .send()
    };
    let mut full = None;
    for i in 0..200 {
        let (status, _, body) = json_of(call("fill").await.unwrap()).await;
        if status != 200 {
            full = Some((i, status, body));
            break;
        }
    }
    let (stored, status, body) = full.expect("the disk never filled");
    assert!(stored > 3, "only {stored} writes fit");
    assert_eq!(
        (status, body["error"].as_str()),
        (507, Some("insufficient_storage")),
        "{body}"
    );
    let resp = client().get(srv.url("/healthz")).send().await.unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 503);
    assert_eq!(body, json!({"status": "degraded", "store": "full"}));
    // Reads still work; a request for the inbox is not acknowledged.
    assert_eq!(call("read").await.unwrap().status(), 200);
    let (status, _, body) = json_of(call("box").await.unwrap()).await;
    assert_eq!(status, 507, "{body}");
    // Space comes back: so does the store, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = client().get(srv.url("/healthz")).send().await.unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the store did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(call("fill").await.unwrap().status(), 200);
    assert_eq!(call("box").await.unwrap().status(), 202);
    // Fill it again and restart on the full disk: it starts and serves reads.
    for _ in 0..200 {
        if call("fill").await.unwrap().status() != 200 {
            break;
        }
    }
    let mut srv = srv;
    srv.signal("TERM");
    assert!(srv
        .wait_exit(Duration::from_secs(15))
        .expect("exits")
        .success());
    let srv = srv.kill9().start();
    let resp = client()
        .post(srv.url("/channels/read/api?token=read-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(srv);
    drop(disk);
}

#[tokio::test]
async fn a_file_write_that_fills_the_disk_turns_healthz_degraded_until_space_is_freed() {
    if common::embedded_store_only("a full disk under the embedded files") {
        return;
    }
    let disk = SmallDisk::mount("6m");
    let project = Project::new()
        .channel(json!({
            "code": "f", "token_local": "f-token", "recv_svcscriptcode": "ok",
            "opts": {"issync": true, "allow_files_api": true}
        }))
        .script("ok", "body = 1;");
    let srv = disk.holds_data_of(project).start();
    let put = |i: usize| {
        client()
            .put(srv.url(&format!("/channels/f/files/part{i}?token=f-token")))
            .body(vec![b'x'; 512 * 1024])
            .send()
    };
    let mut stored = 0;
    let full = loop {
        let (status, _, body) = json_of(put(stored).await.unwrap()).await;
        if status != 201 {
            break (status, body);
        }
        stored += 1;
        assert!(stored < 40, "the disk never filled");
    };
    assert_eq!(full.0, 507, "{}", full.1);
    assert_eq!(full.1["error"], "insufficient_storage");
    let resp = client().get(srv.url("/healthz")).send().await.unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(
        (status, body.clone()),
        (503, json!({"status": "degraded", "store": "full"})),
        "a full data disk is not ok"
    );
    // Space comes back: so does /healthz, without a restart.
    for i in 0..stored {
        let url = srv.url(&format!("/channels/f/files/part{i}?token=f-token"));
        assert_eq!(client().delete(url).send().await.unwrap().status(), 204);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while client()
        .get(srv.url("/healthz"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "healthz did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(put(0).await.unwrap().status(), 201);
    drop(srv);
    drop(disk);
}

/// Writes `file` until the disk under it has no byte left.
fn fill_up(file: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.write_all(&[0u8; 512]);
    let _ = f.sync_all();
}

/// SIGTERM while a job's outcome cannot be written (the disk filled up under
/// it) exits within the stop's bounds; the next start, on the still-full disk
/// and with that job left `running`, serves reads; once space is back the job
/// is taken up again and finishes.
#[tokio::test]
async fn a_stop_on_a_full_disk_is_bounded_and_the_next_start_takes_the_job_up() {
    if common::embedded_store_only("a full disk under the SQLite store") {
        return;
    }
    let disk = SmallDisk::mount("8m");
    let slow = r#"let t = timestamp(); while t.elapsed < 2.0 { } result = "ran";"#;
    let project = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(
            json!({"code": "s", "token_local": "s-token", "send_svcscriptcode": "slow",
            "opts": {"recv_timeout": 5, "send_retries": 1}}),
        )
        .channel(channel("read", "read"))
        .script("slow", slow)
        .script("read", r#"body = `${kv_get("nothing")}`;"#);
    let mut srv = disk.holds_data_of(project).start();
    let id = common::send_job(&srv, ADMIN, "s", &json!({})).await;
    common::wait_job(&srv, ADMIN, &id, &["running"], Duration::from_secs(5)).await;
    let filler = disk.0.path().join("filler");
    fill_up(&filler);
    srv.wait_for_line(&["cannot write the job's outcome yet"])
        .await;
    srv.signal("TERM");
    let asked = Instant::now();
    let status = srv
        .wait_exit(Duration::from_secs(40))
        .expect("SIGTERM on a full disk exits");
    eprintln!("stopped {:?} after SIGTERM: {status:?}", asked.elapsed());
    // The next start, on the full disk, with the job still `running` in the store.
    let srv = srv.kill9().start();
    let resp = client()
        .post(srv.url("/channels/read/api?token=read-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "reads are served on a full disk");
    // Space comes back: the job is taken up and runs to its end.
    std::fs::remove_file(&filler).unwrap();
    let job = common::wait_job(&srv, ADMIN, &id, &["succeeded"], Duration::from_secs(90)).await;
    assert_eq!(job["result"], "ran", "{job}");
    drop(srv);
    drop(disk);
}

fn many_functions(n: usize) -> String {
    let mut s: String = (0..n)
        .map(|i| format!("fn f{i}(x) {{ x + {i} }}\n"))
        .collect();
    s.push_str("body = f1(1);\n");
    s
}

#[tokio::test]
async fn a_large_compile_holds_up_no_reload_no_admin_write_and_no_shutdown() {
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(channel("mid", "mid"))
        .script("mid", "body = 0;")
        .start();
    let scripts = srv.project.as_ref().unwrap().path().join("scripts");
    // A script just over the in-place size compiles on its own thread, then serves.
    std::fs::write(scripts.join("mid.rhai"), many_functions(3_000)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = client()
            .get(srv.url("/channels/mid/api?token=mid-token"))
            .send()
            .await
            .unwrap();
        if resp.text().await.unwrap() == "2" {
            break;
        }
        assert!(Instant::now() < deadline, "the large script never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A very large one (seconds to compile) is dropped in by hand …
    std::fs::write(scripts.join("huge.rhai"), many_functions(30_000)).unwrap();
    srv.wait_for_line(&["compiling a large script on its own thread", "huge"])
        .await;
    // … meanwhile an admin write and its reload go through at once …
    let started = Instant::now();
    let resp = client()
        .put(srv.url("/admin/scripts/small"))
        .bearer_auth(ADMIN)
        .body("body = 1;")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // … and a stop does not wait for the compile.
    let mut srv = srv;
    let started = Instant::now();
    srv.signal("TERM");
    assert!(srv
        .wait_exit(Duration::from_secs(10))
        .expect("exits")
        .success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// CPU seconds the server has used (user + system).
fn cpu_seconds(srv: &Server) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", srv.child.id())).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test]
async fn idle_schedule_entries_cost_nothing() {
    let entries: Vec<_> = (0..100_000)
        .map(|_| json!({"every": "1h", "script": "tick"}))
        .collect();
    let srv = Project::new()
        .channel(
            json!({"code": "many", "token_local": "many-token", "opts": {"schedule": entries}}),
        )
        .script("tick", "result = 1;")
        .start();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = cpu_seconds(&srv);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds(&srv) - before;
    assert!(
        used < 0.3,
        "100 000 idle entries used {used:.2} s of CPU in 3 s"
    );
    assert_serving(&srv).await;
}

#[tokio::test]
async fn a_script_that_never_compiled_is_not_said_to_serve() {
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(channel("c", "good"))
        .script("good", "body = 1;")
        .script("broken", "let x = ;")
        .start();
    let scripts = srv.project.as_ref().unwrap().path().join("scripts");
    std::fs::write(scripts.join("good.rhai"), "let y = ;").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let resp = client()
            .get(srv.url("/admin/scripts"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let (_, _, body) = json_of(resp).await;
        let good = body["scripts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["code"] == "good")
            .cloned();
        if good.is_some_and(|g| g["status"]["ok"] == false) {
            break body;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let status = |code: &str| {
        body["scripts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["code"] == code)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("good")["serving"], "the last good version");
    assert!(
        status("broken")["serving"]
            .as_str()
            .unwrap()
            .starts_with("nothing"),
        "{body}"
    );
    // And the last good version does serve.
    let resp = client()
        .get(srv.url("/channels/c/api?token=c-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "1");
}

#[tokio::test]
async fn finished_schedule_runs_have_their_own_retention() {
    let srv = Project::new()
        .config(&format!(
            "admin_token = \"{ADMIN}\"\nschedule_run_retention = \"2s\""
        ))
        .channel(channel("c", "ok"))
        .script("ok", "body = 1;")
        .start();
    let conn = rusqlite::Connection::open(srv.db()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let old = chrono::Utc::now().timestamp_millis() - 10_000;
    for (id, kind) in [("old-schedule", "schedule"), ("old-send", "send")] {
        conn.execute(
            "INSERT INTO jobs (id, channel, kind, state, attempt, max_attempts, created, updated, input) \
             VALUES (?1, 'c', ?2, 'succeeded', 1, 1, ?3, ?3, '')",
            rusqlite::params![id, kind, old],
        )
        .unwrap();
    }
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, _, body) = json_of(
            client()
                .get(srv.url("/admin/jobs?channel=c"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let ids: Vec<&str> = body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|j| j["id"].as_str())
            .collect();
        if !ids.contains(&"old-schedule") {
            assert!(
                ids.contains(&"old-send"),
                "a send job keeps job_retention: {body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the schedule run was never pruned: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `n` GETs to `url`, `width` at a time; each must be answered 200.
async fn burst(url: &str, n: usize, width: usize) {
    let mut left = n;
    while left > 0 {
        let batch = left.min(width);
        let calls: Vec<_> = (0..batch)
            .map(|_| {
                let url = url.to_owned();
                tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), 200);
        }
        left -= batch;
    }
}

/// A server whose stderr is a pipe the test reads when it wants; stdout's
/// `listening on` line read. Returns the child and the base URL.
fn spawn_unread(project: &Project, env: &[(&str, &str)]) -> (std::process::Child, String) {
    let config = project.path().join("switchyard.toml");
    std::fs::write(&config, "").unwrap();
    let mut cmd = std::process::Command::new(common::binary());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--channels")
        .arg(project.path().join("channels"))
        .arg("--scripts")
        .arg(project.path().join("scripts"))
        .arg("--data")
        .arg(project.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    (child, base)
}

#[tokio::test]
async fn no_request_line_is_lost_on_a_clean_stop() {
    let project = Project::new()
        .channel(channel("c", "ok"))
        .script("ok", "body = 1;");
    // A slow reader of stderr (4 KiB every 20 ms): lines wait in the
    // writer's queue when the stop comes.
    let (mut child, base) = spawn_unread(&project, &[]);
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut logs = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut stderr, &mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => logs.extend_from_slice(&chunk[..n]),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        String::from_utf8_lossy(&logs).into_owned()
    });
    burst(&format!("{base}/channels/c/api?token=c-token"), 2000, 32).await;
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let logs = reader.join().unwrap();
    assert!(child.wait().unwrap().success());
    let lines = logs
        .lines()
        .filter(|l| l.contains("switchyard::http") && l.contains("channel=c "))
        .count();
    assert_eq!(lines, 2000, "one line per request, none lost");
    // The request line's layout (SPEC §11): timestamp, level, target, fields.
    let line = logs
        .lines()
        .find(|l| l.contains("switchyard::http") && l.contains("channel=c "))
        .unwrap();
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert!(stamp.ends_with('Z') && stamp.len() == 27, "{line}");
    assert!(
        rest.starts_with(" INFO switchyard::http: request channel=c request_id="),
        "{line}"
    );
    let tail = rest.split_once(" method=").map(|(_, t)| t).unwrap_or("");
    assert!(
        tail.starts_with("GET path=/channels/c/api status=200 duration_ms="),
        "{line}"
    );
    let ms = tail.rsplit_once("duration_ms=").unwrap().1;
    let (whole, frac) = ms.split_once('.').unwrap();
    assert!(whole.parse::<u64>().is_ok() && frac.len() == 3, "{line}");
    assert!(logs.contains("stopped"));
}

#[tokio::test]
async fn a_log_reader_that_stalls_drops_counted_lines_and_slows_no_request() {
    let project = Project::new()
        .channel(channel("c", "ok"))
        .script("ok", "body = 1;");
    // stderr is a pipe nobody reads: once its buffer is full the writer
    // blocks, and the log buffer (20 000 bytes here) fills.
    let (mut child, base) = spawn_unread(&project, &[("SWITCHYARD_LOG_BUFFER", "20000")]);
    let started = Instant::now();
    burst(&format!("{base}/channels/c/api?token=c-token"), 3000, 32).await;
    let took = started.elapsed();
    let metrics = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: u64 = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_log_lines_dropped_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        dropped > 1000,
        "lines past the queue are dropped and counted: {dropped}"
    );
    assert!(
        took < Duration::from_secs(60),
        "every request answered: {took:?}"
    );
}
