//! Crash-safety run (bench/crash.sh): drives the durable inbox, events for an
//! offline channel and send jobs while killing the server with SIGKILL several
//! times, then checks that nothing acknowledged was lost.
//!
//! `crash_run BINARY ROUNDS [NATS_SERVER]` — loopback only, bounded: each
//! round lasts < 2 s, the final check waits at most 90 s. Prints counts and
//! `RESULT ok=true|false`. With NATS_SERVER (a nats-server binary): the cluster
//! variant, 3 nodes on one `nats-server -js`, the load spread over them, one
//! node killed with SIGKILL each round (in turn) and started again.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
}

fn start(binary: &str, dir: &std::path::Path, cluster: Option<&str>) -> Server {
    let mut cmd = Command::new(binary);
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    if let Some(url) = cluster {
        cmd.args(["--cluster", url]);
    }
    let mut child = cmd
        .arg("--config")
        .arg(dir.join("switchyard.toml"))
        .arg("--channels")
        .arg(dir.join("channels"))
        .arg("--scripts")
        .arg(dir.join("scripts"))
        .arg("--data")
        .arg(dir.join("data"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start switchyard");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().trim_start_matches("listening on ").to_owned();
    Server { child, base }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let binary = args[0].clone();
    let rounds: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(5);
    let nats_bin = args.get(2).cloned();

    // The external system: records every inbox body and send job it receives.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let upstream = axum::Router::new().fallback(move |body: String| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(body);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, upstream).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    for sub in ["channels", "scripts"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    std::fs::write(
        dir.path().join("switchyard.toml"),
        "admin_token = \"adm\"\n",
    )
    .unwrap();
    let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "channels/inbox.json",
        json!({"code": "inbox", "token_local": "t", "url": up,
        "recv_svcscriptcode": "forward", "opts": {"issync": false}})
        .to_string(),
    );
    write(
        "channels/erp.json",
        json!({"code": "erp", "token_local": "t", "url": up,
        "send_svcscriptcode": "send", "opts": {"send_retries": 5}})
        .to_string(),
    );
    write(
        "channels/offline.json",
        json!({"code": "offline", "type": "events", "token_local": "t",
        "opts": {"events": ["crash.>"]}})
        .to_string(),
    );
    write(
        "scripts/forward.rhai",
        "webquery(#{ method: \"POST\", body: startparam(4) });".into(),
    );
    write(
        "scripts/send.rhai",
        "webquery(#{ method: \"POST\", body: startparam(1) });".into(),
    );

    // Cluster variant: a NATS server and two more nodes with empty folders
    // (they take the channels and scripts from the cluster).
    let nats_dir = tempfile::tempdir().unwrap();
    let mut nats = None;
    let mut url = None;
    let mut dirs = vec![dir.path().to_path_buf()];
    let others: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    if let Some(bin) = &nats_bin {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        nats = Some(
            Command::new(bin)
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                .arg(nats_dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nats-server"),
        );
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        url = Some(format!("nats://127.0.0.1:{port}"));
        for other in &others {
            for sub in ["channels", "scripts"] {
                std::fs::create_dir_all(other.path().join(sub)).unwrap();
            }
            std::fs::copy(
                dir.path().join("switchyard.toml"),
                other.path().join("switchyard.toml"),
            )
            .unwrap();
            dirs.push(other.path().to_path_buf());
        }
    }
    let url = url.as_deref();
    let mut servers: Vec<Server> = Vec::new();
    if url.is_some() {
        for d in &dirs {
            servers.push(start(&binary, d, url));
        }
    }

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let (mut acked_requests, mut acked_events, mut jobs) = (Vec::new(), Vec::new(), Vec::new());
    let mut n = 0u64;
    for round in 0..rounds {
        if url.is_none() {
            servers = vec![start(&binary, dir.path(), None)];
        }
        let kill_at = Instant::now() + Duration::from_millis(300 + 250 * (round as u64 % 4));
        while Instant::now() < kill_at {
            n += 1;
            let server = &servers[n as usize % servers.len()];
            let body = format!("request-{n}");
            if let Ok(r) = http
                .post(format!("{}/channels/inbox/api?token=t", server.base))
                .body(body.clone())
                .send()
                .await
            {
                if r.status() == 202 {
                    acked_requests.push(body);
                }
            }
            let event = json!({"name": "crash.test", "data": {"n": n}});
            if let Ok(r) = http
                .post(format!("{}/events", server.base))
                .bearer_auth("adm")
                .json(&event)
                .send()
                .await
            {
                if r.status() == 202 {
                    if let Ok(v) = r.json::<Value>().await {
                        acked_events.push(v["id"].as_str().unwrap_or("").to_owned());
                    }
                }
            }
            if n % 5 == 0 {
                let data = json!({"job": n}).to_string();
                if let Ok(r) = http
                    .post(format!("{}/channels/erp/send", server.base))
                    .bearer_auth("adm")
                    .body(data)
                    .send()
                    .await
                {
                    if r.status() == 202 {
                        if let Ok(v) = r.json::<Value>().await {
                            jobs.push(v["job_id"].as_str().unwrap_or("").to_owned());
                        }
                    }
                }
            }
        }
        let victim = round % servers.len();
        servers[victim].child.kill().unwrap(); // SIGKILL
        servers[victim].child.wait().unwrap();
        println!(
            "round {}: node {victim} killed after {n} iterations",
            round + 1
        );
        if url.is_some() {
            servers[victim] = start(&binary, &dirs[victim], url);
        }
    }

    // Recovery: everything acknowledged must now complete.
    if url.is_none() {
        servers = vec![start(&binary, dir.path(), None)];
    }
    let server = &servers[0];
    let deadline = Instant::now() + Duration::from_secs(90);
    let finished = |state: &str| matches!(state, "succeeded" | "failed" | "timed_out");
    let mut pending_jobs = jobs.len();
    let mut missing_requests = acked_requests.len();
    while Instant::now() < deadline {
        let bodies: HashSet<String> = seen.lock().unwrap().iter().cloned().collect();
        missing_requests = acked_requests
            .iter()
            .filter(|b| !bodies.contains(*b))
            .count();
        pending_jobs = 0;
        for id in &jobs {
            let r = http
                .get(format!("{}/admin/jobs/{id}", server.base))
                .bearer_auth("adm")
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap_or_default();
            if !finished(v["state"].as_str().unwrap_or("")) {
                pending_jobs += 1;
            }
        }
        if missing_requests == 0 && pending_jobs == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let url = format!(
        "{}/channels/offline/ws?token=t",
        server.base.replacen("http", "ws", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut delivered = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            delivered.push(v[1]["id"].as_str().unwrap_or("").to_owned());
        }
    }
    for mut server in servers {
        let _ = server.child.kill();
        let _ = server.child.wait();
    }
    if let Some(mut nats) = nats {
        let _ = nats.kill();
        let _ = nats.wait();
    }

    let runs = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b.starts_with("request-"))
        .count();
    let unique: HashSet<&String> = delivered.iter().collect();
    let in_order = {
        let pos: std::collections::HashMap<&String, usize> = acked_events
            .iter()
            .enumerate()
            .map(|(i, e)| (e, i))
            .collect();
        delivered
            .windows(2)
            .all(|w| pos.get(&w[0]) < pos.get(&w[1]))
    };
    let lost_events = acked_events.iter().filter(|e| !unique.contains(e)).count();
    println!("inbox: {} acknowledged, {missing_requests} never ran, {} runs in all (repeats: runs cut by a kill)", acked_requests.len(), runs);
    println!("events: {} acknowledged for the offline channel, {} delivered, {lost_events} missing, duplicates: {}, in order: {in_order}",
        acked_events.len(), delivered.len(), delivered.len() - unique.len());
    println!(
        "send jobs: {} started, {pending_jobs} not finished",
        jobs.len()
    );
    let ok =
        missing_requests == 0 && pending_jobs == 0 && delivered.len() == unique.len() && in_order;
    println!("RESULT ok={ok} lost_events={lost_events}");
}
