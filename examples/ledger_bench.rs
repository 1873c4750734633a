//! What versions and secrets cost (issue #31), in process, bounded:
//!
//! - a version per admin write: `Versions::record` on the embedded store
//!   (one group-committed, fsynced SQLite write), ROUNDS times with new content;
//! - a secret per request: `Channel::token_local()` of a channel whose
//!   `token_local` names a secret, against one that holds the token itself;
//! - the log's redaction of a 200-byte line with 10 secrets in force.
//!
//! `cargo run --release --example ledger_bench [ROUNDS]` (default 200 versions;
//! the lookups and lines run 10 000 times as many). The last line is
//! `RESULT key=value ...`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use switchyard::backend::embedded::versions::StoreVersions;
use switchyard::backend::{NewVersion, Versions};
use switchyard::channel::{ChannelDoc, ValidationContext};
use switchyard::secrets::{self, Secret};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // A version per admin write (what an admin write now waits for, before its file).
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(switchyard::store::Store::open(dir.path()).unwrap());
    let versions = StoreVersions { store };
    let script = "let x = 1;\n".repeat(200);
    let mut took = Vec::with_capacity(rounds);
    runtime.block_on(async {
        for n in 0..rounds {
            let started = Instant::now();
            let v = versions
                .record(NewVersion {
                    kind: "script",
                    code: "bench".into(),
                    content: Some(format!("{script}// {n}\n")),
                    restored: false,
                    at: "2026-12-06T00:00:00Z".into(),
                    by: json!({"by": "admin", "address": "127.0.0.1", "request_id": "r"}),
                    keep: 100,
                })
                .await
                .unwrap();
            assert!(v.made());
            took.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    });
    took.sort_by(f64::total_cmp);
    let (p50, p99) = (took[rounds / 2], took[rounds * 99 / 100]);

    // A secret per request: resolved at load, read per request.
    let mut table = HashMap::new();
    for i in 0..10 {
        table.insert(
            format!("s{i}"),
            Secret {
                value: Some(format!("secret-value-{i}-{}", "x".repeat(24))),
                channels: vec!["*".into()],
                updated: String::new(),
                version: 1,
            },
        );
    }
    secrets::install(table);
    let scripts = HashSet::new();
    let ctx = ValidationContext {
        solution_types: &[],
        scripts: &scripts,
    };
    let load = |token: &str| {
        ChannelDoc::parse(&json!({"code": "c", "token_local": token}).to_string())
            .unwrap()
            .validate(None, &ctx)
            .unwrap()
    };
    let named = load("$secret:s3");
    let plain = load("secret-value-3-xxxxxxxxxxxxxxxxxxxxxxxx");
    assert_eq!(named.token_local(), plain.token_local());
    let lookups = rounds * 10_000;
    let per = |c: &switchyard::channel::Channel| {
        let started = Instant::now();
        let mut n = 0;
        for _ in 0..lookups {
            n += std::hint::black_box(c).token_local().map_or(0, str::len);
        }
        std::hint::black_box(n);
        started.elapsed().as_nanos() as f64 / lookups as f64
    };
    let (named_ns, plain_ns) = (per(&named), per(&plain));

    // The log's redaction of a line with no secret in it (the usual case) and with one.
    let line = format!(
        "2026-12-06T00:00:00Z INFO switchyard::http: request channel=orders method=POST path=/channels/orders/api status=200 {}",
        "d".repeat(60)
    );
    let with_one = line.replace(
        "status=200",
        "token=secret-value-7-xxxxxxxxxxxxxxxxxxxxxxxx",
    );
    let redact = |text: &str| {
        let started = Instant::now();
        for _ in 0..lookups {
            std::hint::black_box(secrets::redact_bytes(std::hint::black_box(text.as_bytes())));
        }
        started.elapsed().as_nanos() as f64 / lookups as f64
    };
    let (clean_ns, dirty_ns) = (redact(&line), redact(&with_one));
    assert!(secrets::redact(&with_one).contains("token=***"));

    println!("a version per admin write (embedded store, fsync): p50 {p50:.2} ms, p99 {p99:.2} ms over {rounds}");
    println!("token_local() naming a secret: {named_ns:.1} ns; holding the token itself: {plain_ns:.1} ns");
    println!("log line redaction ({} bytes, 10 secrets): {clean_ns:.0} ns without a secret in it, {dirty_ns:.0} ns with one", line.len());
    println!(
        "RESULT version_p50_ms={p50:.2} version_p99_ms={p99:.2} secret_lookup_ns={named_ns:.1} plain_lookup_ns={plain_ns:.1} redact_clean_ns={clean_ns:.0} redact_hit_ns={dirty_ns:.0}"
    );
}
