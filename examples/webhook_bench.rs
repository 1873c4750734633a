//! The cost of one `webhook_verify` over a 1 KB body (issue #20), as a script
//! call and as the bare Rust function. Bounded: ROUNDS calls of each (default 200 000).
//!
//! `cargo run --release --example webhook_bench [ROUNDS]`
//! The last line is `RESULT key=value ...` (nanoseconds per call).

use std::time::Instant;

use hmac::{Hmac, Mac};
use rhai::{Dynamic, Engine, Map, Scope};
use sha2::Sha256;
use switchyard::script::webhooks;

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let body = format!("{{\"id\":\"evt_1\",\"pad\":\"{}\"}}", "x".repeat(1001));
    assert_eq!(body.len(), 1024);
    let body = body.as_str();
    let secret = "whsec_stripe_test_secret";
    let now = chrono::Utc::now().timestamp();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{now}.{body}").as_bytes());
    let header = format!("t={now},v1={}", hex::encode(mac.finalize().into_bytes()));

    // The bare function.
    let lookup = |name: &str| (name == "stripe-signature").then(|| header.clone());
    let started = Instant::now();
    for _ in 0..rounds {
        let verdict = webhooks::verify("stripe", secret, &lookup, body.as_bytes(), now, 300);
        assert_eq!(verdict, Ok(webhooks::Verdict::Ok));
    }
    let bare = started.elapsed().as_nanos() as f64 / rounds as f64;

    // As a script call, minus the same script without the call.
    let mut engine = Engine::new();
    webhooks::register(&mut engine);
    let mut headers = Map::new();
    headers.insert("stripe-signature".into(), header.clone().into());
    headers.insert("content-type".into(), "application/json".into());
    let per_call = |script: &str| {
        let ast = engine.compile(script).unwrap();
        let mut scope = Scope::new();
        scope.push("h", headers.clone());
        scope.push("b", body.to_owned());
        scope.push("s", secret.to_owned());
        let started = Instant::now();
        for _ in 0..rounds {
            let ok: Dynamic = engine.eval_ast_with_scope(&mut scope, &ast).unwrap();
            assert!(ok.as_bool().unwrap());
        }
        started.elapsed().as_nanos() as f64 / rounds as f64
    };
    let with = per_call(r#"webhook_verify("stripe", s, h, b).ok"#);
    let without = per_call(r#"let x = #{ok: true, reason: ""}; x.ok"#);
    println!("bare verify(stripe, 1 KB): {bare:.0} ns");
    println!("script call webhook_verify (1 KB, map of 2 headers): {with:.0} ns, the same script without it: {without:.0} ns");
    println!(
        "RESULT bare_ns={bare:.0} script_ns={with:.0} baseline_ns={without:.0} call_ns={:.0}",
        with - without
    );
}
