//! The command line: `check`, config errors, bad documents at start-up, signals.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{binary, channel, client, json_of, Project};
use serde_json::json;

#[test]
fn check_passes_on_the_shipped_examples() {
    let out = Command::new(binary())
        .current_dir(common::repo())
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn check_reports_every_problem_as_file_line_col() {
    let project = Project::new()
        .channel(channel("good", "ok"))
        .script("ok", "body = 1;")
        .script("broken", "let a = 1;\nlet b = ;\n")
        .channel_text(
            "typo",
            "{\n  \"code\": \"typo\",\n  \"opts\": {\n    \"recv_timeout\": 99\n  }\n}",
        )
        .channel_text("unknown", "{\"code\": \"unknown\", \"colour\": \"red\"}")
        .channel_text(
            "mask",
            "{\"code\": \"mask\",\n \"ipmask\": [\"300.1.1.1/8\"]}",
        )
        .channel_text(
            "noscript",
            "{\"code\": \"noscript\",\n \"recv_svcscriptcode\": \"ghost\"}",
        )
        .channel_text("notjson", "{ this is not json");
    let (code, stdout, _) = project.check();
    assert_eq!(code, 1, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    let find = |name: &str| {
        *lines
            .iter()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name}: {stdout}"))
    };
    let broken = find("broken.rhai");
    assert!(broken.contains("broken.rhai:2:9: "), "{broken}");
    let typo = find("typo.json");
    assert!(
        typo.contains("typo.json:4:5: opts.recv_timeout: 99 is above the maximum of 60"),
        "{typo}"
    );
    assert!(find("unknown.json").contains("colour"));
    let mask = find("mask.json");
    assert!(mask.contains("mask.json:2:2: ipmask:"), "{mask}");
    assert!(find("noscript.json").contains("recv_svcscriptcode: script \"ghost\" does not exist"));
    assert!(find("notjson.json").contains("notjson.json:1:"));
    for line in &lines {
        let parts: Vec<&str> = line.splitn(4, ':').collect();
        assert_eq!(parts.len(), 4, "{line}");
        assert!(
            parts[1].parse::<usize>().is_ok() && parts[2].parse::<usize>().is_ok(),
            "{line}"
        );
    }
}

#[test]
fn bad_config_stops_start_up_naming_the_key() {
    for (toml, key) in [
        ("bogus_setting = 1", "bogus_setting"),
        ("max_body_bytes = \"big\"", "max_body_bytes"),
        (
            "[iam]\njwt_public_key_file = \"/nonexistent.pem\"",
            "jwt_public_key_file",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("switchyard.toml");
        std::fs::write(&config, toml).unwrap();
        let out = Command::new(binary())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--channels")
            .arg(dir.path())
            .arg("--scripts")
            .arg(dir.path())
            .arg("--data")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{toml}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{toml}: {stderr}");
    }
}

#[tokio::test]
async fn a_bad_document_is_skipped_and_the_rest_serve() {
    let srv = Project::new()
        .channel(channel("good", "ok"))
        .channel_text(
            "bad",
            "{\"code\": \"bad\", \"token_local\": \"bad-token\", \"opts\": {\"recv_timeout\": 61}}",
        )
        .script("ok", "body = #{ ok: true };")
        .start();
    let (status, _, body) = json_of(
        client()
            .get(srv.url("/channels/good/api?token=good-token"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["ok"].as_bool()), (200, Some(true)));
    let (status, _, body) = json_of(
        client()
            .get(srv.url("/channels/bad/api?token=bad-token"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_channel"))
    );
    let logs = srv.logs();
    assert!(
        logs.contains("bad.json") && logs.contains("opts.recv_timeout"),
        "{logs}"
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let mut srv = Project::new()
        .channel(channel("slow", "slow"))
        .script(
            "slow",
            "let t = timestamp(); while t.elapsed < 1.0 { } body = #{ finished: true };",
        )
        .start();
    let url = srv.url("/channels/slow/api?token=slow-token");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.signal("TERM");
    let resp = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    let (status, _, body) = json_of(resp).await;
    assert_eq!((status, body["finished"].as_bool()), (200, Some(true)));
    let status = srv
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigint_exits_zero_and_new_connections_are_refused() {
    let mut srv = Project::new()
        .channel(channel("c", "ok"))
        .script("ok", "body = 1;")
        .start();
    let url = srv.url("/healthz");
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    srv.signal("INT");
    let status = srv
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGINT");
    assert_eq!(status.code(), Some(0));
    assert!(client().get(&url).send().await.is_err());
}

#[test]
fn listen_port_zero_prints_the_bound_address_first() {
    let started = Instant::now();
    let srv = Project::new().start();
    let addr: std::net::SocketAddr = srv.base.trim_start_matches("http://").parse().unwrap();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);
    assert!(started.elapsed() < Duration::from_secs(30));
    let _ = json!(null);
}

#[test]
fn version_completions_and_the_man_page() {
    let run = |args: &[&str]| {
        let out = Command::new(binary()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // The version names the commit it was built from.
    let version = run(&["--version"]);
    assert!(version.starts_with("switchyard 0."), "{version}");
    assert!(version.contains("(commit "), "{version}");
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("_switchyard()") && bash.contains("serve") && bash.contains("check"));
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.contains("#compdef switchyard"), "{zsh:.80}");
    let man = run(&["manpage"]);
    assert!(
        man.contains(".TH switchyard 1") && man.contains("serve"),
        "{man:.200}"
    );
    let bad = Command::new(binary())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
