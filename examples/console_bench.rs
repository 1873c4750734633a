//! Time to first paint of each console page with 1 000 channels and 10 000
//! jobs (issue #14), in headless Chromium. Prints figures; asserts nothing.
//!
//! `cargo run --release --example console_bench [CHANNELS] [JOBS]`
//! (needs chromium and chromium-driver, as ./test.sh installs; builds the
//! release binary first: `cargo build --release`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use serde_json::{json, Value};

const ADMIN: &str = "bench-admin";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let channels: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let jobs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    for sub in ["channels", "scripts", "data"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    std::fs::write(
        dir.path().join("scripts/echo.rhai"),
        "body = #{ ok: true };",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("scripts/fail.rhai"),
        "throw `refused ${startparam(3)}`;",
    )
    .unwrap();
    for i in 0..channels {
        let doc = json!({"code": format!("ch{i:04}"), "token_local": format!("t{i}"),
            "recv_svcscriptcode": "echo", "opts": {"issync": true, "title": format!("Channel {i}")}});
        std::fs::write(
            dir.path().join(format!("channels/ch{i:04}.json")),
            doc.to_string(),
        )
        .unwrap();
    }
    let erp = json!({"code": "erp", "token_local": "erp", "send_svcscriptcode": "fail",
        "opts": {"send_retries": 0}});
    std::fs::write(dir.path().join("channels/erp.json"), erp.to_string()).unwrap();
    std::fs::write(
        dir.path().join("switchyard.toml"),
        format!("admin_token = \"{ADMIN}\"\n"),
    )
    .unwrap();
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/switchyard");
    let mut server = Command::new(bin)
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run target/release/switchyard (cargo build --release first)");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let base = line.trim().trim_start_matches("listening on ").to_owned();
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..jobs {
        let req = http
            .post(format!("{base}/channels/erp/send"))
            .bearer_auth(ADMIN)
            .json(&json!({"n": i}))
            .send();
        pending.push(req);
        if pending.len() == 64 {
            for r in futures_util::future::join_all(pending.drain(..)).await {
                assert_eq!(r.unwrap().status(), 202);
            }
        }
    }
    for r in futures_util::future::join_all(pending).await {
        assert_eq!(r.unwrap().status(), 202);
    }
    println!(
        "{channels} channels, {jobs} jobs created in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver");
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.path().display()),
        "--window-size=1280,900"]}),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser");
    c.goto(&format!("{base}/console/")).await.unwrap();
    c.wait()
        .for_element(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(ADMIN)
        .await
        .unwrap();
    c.find(Locator::Css("#signin"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("#channels"))
        .await
        .unwrap();
    println!("| page | first contentful paint | data on screen |");
    println!("|---|---|---|");
    for page in ["channels", "scripts", "jobs", "live", "overview"] {
        // A fresh document each time: its own first paint.
        c.goto(&format!("{base}/console/?fresh={page}#/{page}"))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let figures = loop {
            let v: Value = c
                .execute(
                    "const p = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint');
                     const r = performance.getEntriesByName(arguments[0])[0];
                     return [p ? p.startTime : null, r ? r.startTime : null];",
                    vec![json!(format!("ready:{page}"))],
                )
                .await
                .unwrap();
            if v[1].is_number() || Instant::now() > deadline {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        println!(
            "| {page} | {:.0} ms | {:.0} ms |",
            figures[0].as_f64().unwrap_or(f64::NAN),
            figures[1].as_f64().unwrap_or(f64::NAN)
        );
    }
    let _ = c.close().await;
    for child in [&mut driver, &mut server] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
