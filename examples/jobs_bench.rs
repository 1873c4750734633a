//! Bench helper: creates N send jobs through `POST /channels/{code}/send` from 32
//! concurrent clients, then waits until all succeeded (read from `/metrics`).
//! `jobs_bench BASE[,BASE2…] ADMIN_TOKEN CHANNEL N` prints `RESULT created_per_s=..
//! completed_per_s=..`; with several bases (cluster nodes) the clients take
//! them in turn and the jobs done are summed over every node.
//! Bounded: at most 120 s of waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn succeeded_all(http: &reqwest::Client, bases: &[String], channel: &str) -> u64 {
    let mut n = 0;
    for base in bases {
        n += succeeded(http, base, channel).await;
    }
    n
}

async fn succeeded(http: &reqwest::Client, base: &str, channel: &str) -> u64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let needle = format!("switchyard_job_transitions_total{{channel=\"{channel}\",kind=\"send\",state=\"succeeded\"}}");
    text.lines()
        .find(|l| l.starts_with(&needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bases: Vec<String> = args[0].split(',').map(str::to_owned).collect();
    let (token, channel) = (args[1].clone(), args[2].clone());
    let n: usize = args[3].parse().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let before = succeeded_all(&http, &bases, &channel).await;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..32)
        .map(|w| {
            let (http, base, token, channel, next) = (
                http.clone(),
                bases[w % bases.len()].clone(),
                token.clone(),
                channel.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let r = http
                        .post(format!("{base}/channels/{channel}/send"))
                        .bearer_auth(&token)
                        .body(r#"{"qid":1,"data":{"name":"bench","value":42}}"#)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 202);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let created = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while succeeded_all(&http, &bases, &channel).await < before + n as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = start.elapsed();
    let completed = succeeded_all(&http, &bases, &channel).await - before;
    println!(
        "RESULT jobs={n} completed={completed} created_per_s={:.0} completed_per_s={:.0}",
        n as f64 / created.as_secs_f64(),
        completed as f64 / done.as_secs_f64()
    );
}
