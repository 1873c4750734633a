//! Bench helper: opens N authenticated websocket connections and holds them idle.
//!
//! `cargo run --release --example ws_idle -- URL N SECONDS`
//! prints `opened=N failed=F` once all attempts are done, then holds the
//! connections open for SECONDS (answering pings) and exits. Bounded in count and time.

use std::time::Duration;

use futures_util::StreamExt;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("URL");
    let n: usize = args.next().and_then(|s| s.parse().ok()).expect("N");
    let hold: u64 = args.next().and_then(|s| s.parse().ok()).expect("SECONDS");
    let _ = rlimit::increase_nofile_limit(u64::MAX);

    let mut conns = Vec::with_capacity(n);
    let mut failed = 0;
    // Open in batches so the accept backlog is never the limit being measured.
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let attempts = chunk
            .iter()
            .map(|_| tokio_tungstenite::connect_async(url.clone()));
        for result in futures_util::future::join_all(attempts).await {
            match result {
                Ok((ws, _)) => conns.push(ws),
                Err(_) => failed += 1,
            }
        }
    }
    println!("opened={} failed={failed}", conns.len());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(hold);
    // Read each connection so pings are answered while idle.
    let readers: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                while let Ok(Some(_)) = tokio::time::timeout_at(deadline, ws.next()).await {}
            })
        })
        .collect();
    for r in readers {
        let _ = r.await;
    }
}
