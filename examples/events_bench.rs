//! Bench helper for system events (run by `bench/events.sh`). Bounded in count and time.
//!
//! `events_bench fanout BASE[,BASE2…] ADMIN_TOKEN CHANNELS EVENTS`
//!   connects one websocket to each of CHANNELS events channels `fan0..fanN` (token
//!   `fan-token`), publishes EVENTS events one at a time through `POST /events`,
//!   and measures publish-to-receive latency at every connection. With several
//!   bases (cluster nodes) the connections and the publishes take them in turn.
//! `events_bench sustained BASE ADMIN_TOKEN SECONDS`
//!   connects 4 websockets to channel `fan0`, publishes from 16 concurrent
//!   clients for SECONDS and counts the events received.
//! The last line is `RESULT key=value ...`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn connect_all(
    bases: &[&str],
    codes: &[String],
) -> Vec<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>
{
    let mut out = Vec::new();
    for (c, chunk) in codes.chunks(100).enumerate() {
        let attempts = chunk.iter().enumerate().map(|(i, code)| {
            let base = bases[(c * 100 + i) % bases.len()];
            let url = format!(
                "{}/channels/{code}/ws?token=fan-token",
                base.replacen("http", "ws", 1)
            );
            tokio_tungstenite::connect_async(url)
        });
        for r in futures_util::future::join_all(attempts).await {
            out.push(r.expect("websocket").0);
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, base, token) = (args[0].as_str(), args[1].clone(), args[2].clone());
    // A fresh connection per publish: an idle one may meet the server's
    // header_timeout just as it is reused.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let start = Instant::now();
    let now_us = move || start.elapsed().as_micros() as u64;

    match mode {
        "fanout" => {
            let channels: usize = args[3].parse().unwrap();
            let events: usize = args[4].parse().unwrap();
            let codes: Vec<String> = (0..channels).map(|i| format!("fan{i}")).collect();
            let bases: Vec<&str> = base.split(',').collect();
            let conns = connect_all(&bases, &codes).await;
            let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
            let received = Arc::new(AtomicU64::new(0));
            for mut ws in conns {
                let (latencies, received) = (latencies.clone(), received.clone());
                tokio::spawn(async move {
                    while let Some(Ok(msg)) = ws.next().await {
                        if let Message::Text(t) = msg {
                            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                            if v[0] == "event" {
                                let sent = v[1]["data"]["sent_us"].as_u64().unwrap();
                                let ms = (now_us() - sent) as f64 / 1000.0;
                                latencies.lock().unwrap().push(ms);
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            for i in 0..events {
                let want = ((i + 1) * channels) as u64;
                let body = json!({"name": "bench.fanout", "data": {"i": i, "sent_us": now_us()}});
                http.post(format!("{}/events", bases[i % bases.len()]))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let deadline = Instant::now() + Duration::from_secs(10);
                while received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
            let mut l = latencies.lock().unwrap().clone();
            l.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "RESULT channels={channels} events={events} received={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
                l.len(),
                percentile(&l, 0.5),
                percentile(&l, 0.99),
                percentile(&l, 1.0)
            );
        }
        "sustained" => {
            let secs: u64 = args[3].parse().unwrap();
            let conns = connect_all(&[base.as_str()], &vec!["fan0".to_string(); 4]).await;
            let received = Arc::new(AtomicU64::new(0));
            for mut ws in conns {
                let received = received.clone();
                tokio::spawn(async move {
                    while let Some(Ok(msg)) = ws.next().await {
                        if matches!(msg, Message::Text(_)) {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            let stop = Instant::now() + Duration::from_secs(secs);
            let published = Arc::new(AtomicU64::new(0));
            let publishers: Vec<_> = (0..16)
                .map(|_| {
                    let (http, base, token, published) =
                        (http.clone(), base.clone(), token.clone(), published.clone());
                    tokio::spawn(async move {
                        while Instant::now() < stop {
                            let body = json!({"name": "bench.sustained", "data": {}});
                            if http
                                .post(format!("{base}/events"))
                                .bearer_auth(&token)
                                .json(&body)
                                .send()
                                .await
                                .is_ok()
                            {
                                published.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for p in publishers {
                let _ = p.await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (p, r) = (
                published.load(Ordering::Relaxed),
                received.load(Ordering::Relaxed),
            );
            println!(
                "RESULT secs={secs} published={p} received={r} rate={:.0}",
                r as f64 / secs as f64
            );
        }
        _ => panic!("mode is fanout or sustained"),
    }
}
