//! Crash-safety run (bench/crash.sh): drives the durable inbox, events for an
//! offline channel and send jobs while killing the server with SIGKILL several
//! times, then checks that nothing acknowledged was lost.
//!
//! `crash_run BINARY ROUNDS` — loopback only, bounded: each round lasts < 2 s,
//! the final check waits at most 60 s. Prints counts and `RESULT ok=true|false`.

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

fn start(binary: &str, dir: &std::path::Path) -> Server {
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
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

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let (mut acked_requests, mut acked_events, mut jobs) = (Vec::new(), Vec::new(), Vec::new());
    let mut n = 0u64;
    for round in 0..rounds {
        let mut server = start(&binary, dir.path());
        let kill_at = Instant::now() + Duration::from_millis(300 + 250 * (round as u64 % 4));
        while Instant::now() < kill_at {
            n += 1;
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
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        println!("round {}: killed after {n} iterations", round + 1);
    }

    // Recovery: everything acknowledged must now complete.
    let mut server = start(&binary, dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
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
    server.child.kill().unwrap();
    let _ = server.child.wait();

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
