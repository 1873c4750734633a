//! What a Rhai run costs apart from the script (issue #17, point 2). Bounded:
//! three rounds of `N` runs (default 1 000 000) of the harness's recv script.
//!
//! `cargo run --release --example rhai_run_bench [N]`
//!
//! Each round times, per run: `run_ast_with_scope` (fresh function-resolution
//! caches every run); `run_ast_with_caches` (the vendored Rhai's addition) with
//! the caches kept across runs, as the runtime runs scripts; and the inputs
//! alone (the scope and the request body's map), which every run builds either
//! way. The kept caches save ≈ 1 400 instructions of a call in the server
//! (callgrind), a few per cent of a run: near the noise of a timed loop.
//!
//! Then the bound of compiling a script (to closures, or any other way): the
//! bench channel's recv script, JSON parse included, run by Rhai, against the
//! same work on the same Rhai values written in Rust: what is left when
//! nothing of the interpreter is (no AST walk, no function resolution, no
//! scope lookups). A compiler could come near that figure, never under it.

use std::time::Instant;

use rhai::{Caches, Dynamic, Engine, ImmutableString, Map, Scope, AST};
use switchyard::script::convert;

const SCRIPT: &str = "
let d = body.data;
status = 200;
response = #{ ok: true, code: channel, echo: d.name, value: d.value + 1, count: counter + 1 };
";

/// The bench channel's recv script (bench/scripts/bench_recv.rhai) with its
/// inputs as scope variables instead of `startparam` calls.
const RECV: &str = "
let d = parse_json(request_body).data;
body = #{ ok: true, code: channel, echo: d.name, value: d.value + 1 };
";
const BODY: &str = r#"{"qid":1,"data":{"name":"bench","value":42,"tags":["a","b"]}}"#;

/// `RECV` written in Rust on the same values, as well as a compiler could:
/// parse, move `data` out of the parsed map (Rhai clones it), build the map.
fn recv_in_rust(request_body: &str, channel: &ImmutableString) -> Dynamic {
    let parsed = convert::parse(request_body).expect("the body is JSON");
    let d = parsed
        .try_cast::<Map>()
        .and_then(|mut m| m.remove("data"))
        .and_then(|d| d.try_cast::<Map>())
        .expect("data is a map");
    let value = d.get("value").and_then(|v| v.as_int().ok()).unwrap_or(0);
    let mut body = Map::new();
    body.insert("ok".into(), true.into());
    body.insert("code".into(), channel.clone().into());
    body.insert(
        "echo".into(),
        d.get("name").cloned().unwrap_or(Dynamic::UNIT),
    );
    body.insert("value".into(), (value + 1).into());
    body.into()
}

fn inputs(i: usize) -> Scope<'static> {
    let mut data = Map::new();
    data.insert("name".into(), "abc".into());
    data.insert("value".into(), Dynamic::from(41_i64));
    let mut body = Map::new();
    body.insert("data".into(), data.into());
    let mut scope = Scope::new();
    scope.push("body", body);
    scope.push("channel", "bench");
    scope.push("client_ip", "127.0.0.1");
    scope.push("counter", i as i64);
    scope.push_dynamic("status", Dynamic::UNIT);
    scope.push_dynamic("response", Dynamic::UNIT);
    scope
}

fn per_run(n: usize, mut run: impl FnMut(usize)) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        run(i);
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let engine = Engine::new();
    let ast: AST = engine.compile(SCRIPT).expect("the script compiles");
    for round in 1..=3 {
        let fresh = per_run(n, |i| {
            let mut scope = inputs(i);
            engine.run_ast_with_scope(&mut scope, &ast).unwrap();
        });
        let mut caches = Caches::new();
        let kept = per_run(n, |i| {
            let mut scope = inputs(i);
            engine
                .run_ast_with_caches(&mut caches, &mut scope, &ast)
                .unwrap();
        });
        let only_inputs = per_run(n, |i| {
            std::hint::black_box(inputs(i));
        });
        println!(
            "round {round}: run_ast_with_scope {fresh:.0} ns/run; kept caches \
             {kept:.0} ns/run ({:+.1} %); the inputs alone {only_inputs:.0} ns",
            (kept - fresh) / fresh * 100.0
        );
    }

    let mut engine = Engine::new();
    engine.register_fn(
        "parse_json",
        |text: &str| -> Result<Dynamic, Box<rhai::EvalAltResult>> {
            convert::parse(text).map_err(|e| e.to_string().into())
        },
    );
    let ast: AST = engine.compile(RECV).expect("the script compiles");
    let channel: ImmutableString = "bench".into();
    let request_body: ImmutableString = BODY.into();
    let mut caches = Caches::new();
    let mut by_rhai = |_| {
        let mut scope = Scope::new();
        scope.push("request_body", request_body.clone());
        scope.push("channel", channel.clone());
        scope.push_dynamic("body", Dynamic::UNIT);
        engine
            .run_ast_with_caches(&mut caches, &mut scope, &ast)
            .unwrap();
        std::hint::black_box(scope.get_value::<Map>("body"));
    };
    let check = {
        let mut scope = Scope::new();
        scope.push("request_body", request_body.clone());
        scope.push("channel", channel.clone());
        scope.push_dynamic("body", Dynamic::UNIT);
        engine.run_ast_with_scope(&mut scope, &ast).unwrap();
        scope.get_value::<Dynamic>("body").unwrap().to_string()
    };
    assert_eq!(check, recv_in_rust(&request_body, &channel).to_string());
    for round in 1..=3 {
        let rhai = per_run(n, &mut by_rhai);
        let rust = per_run(n, |_| {
            let _ = std::hint::black_box(recv_in_rust(&request_body, &channel));
        });
        let parse = per_run(n, |_| {
            let _ = std::hint::black_box(convert::parse(&request_body).unwrap());
        });
        println!(
            "round {round}: the recv script by Rhai {rhai:.0} ns/run; the same work in Rust \
             {rust:.0} ns/run ({:.2}× Rhai, of which the JSON parse {parse:.0} ns): a compiled \
             script saves at most {:.0} ns a call",
            rust / rhai,
            rhai - rust
        );
    }
}
