//! What a Rhai run costs apart from the script (issue #17, point 2). Bounded:
//! three rounds of `N` runs (default 1 000 000) of the harness's recv script.
//!
//! `cargo run --release --example rhai_run_bench [N]`
//!
//! Each round times, per run: `run_ast_with_scope` as the runtime calls it
//! (fresh function-resolution caches and global state every run); the same
//! statements through `eval_statements_raw` with caches and global state kept
//! across runs (the suggestion); and the inputs alone (the scope and
//! the request body's map), which every run builds either way.

#![allow(deprecated)] // eval_statements_raw: the only way to pass kept state in

use std::time::Instant;

use rhai::{Caches, Dynamic, Engine, Map, Scope, AST};

const SCRIPT: &str = "
let d = body.data;
status = 200;
response = #{ ok: true, code: channel, echo: d.name, value: d.value + 1, count: counter + 1 };
";

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
        let mut global = engine.new_global_runtime_state();
        global.lib.push(ast.shared_lib().clone());
        let kept = per_run(n, |i| {
            let mut scope = inputs(i);
            global.num_operations = 0;
            let value = engine
                .eval_statements_raw(&mut global, &mut caches, &mut scope, ast.statements())
                .unwrap();
            let _ = std::hint::black_box(value);
        });
        let only_inputs = per_run(n, |i| {
            std::hint::black_box(inputs(i));
        });
        println!(
            "round {round}: run_ast_with_scope {fresh:.0} ns/run; kept caches and global state \
             {kept:.0} ns/run ({:+.1} %); the inputs alone {only_inputs:.0} ns",
            (kept - fresh) / fresh * 100.0
        );
    }
}
