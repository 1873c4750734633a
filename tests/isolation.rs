//! Isolation (SPEC §14): one channel, script, partner system or client must
//! never take the process down, hold it up, read or steer another. Every test
//! runs the real binary and shows what a user would notice.

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_serving, channel, client, json_of, ws_close_code as close_code, ws_connect as ws,
    ws_recv as recv, ws_send as send, Project,
};
use serde_json::{json, Value};

const ADMIN: &str = "adm";

use common::post_api as call;

/// Builds a value nested `n` deep, by the path the body names.
const DEEP: &str = r#"
let p = parse_json(startparam(4));
let n = p.n;
let v = ();
switch p.kind {
    "array" => { v = []; for i in 0..n { v = [v]; } }
    "push" => { v = []; for i in 0..n { let w = []; w.push(v); v = w; } }
    "map" => { v = #{}; for i in 0..n { v = #{a: v}; } }
    "index" => { v = #{}; for i in 0..n { let w = #{}; w["x"] = v; v = w; } }
    "closure" => { let f = || 1; for i in 0..n { let g = f; f = || g.call(); } v = f; }
    "curry" => { let f = Fn("to_json"); for i in 0..n { f = f.curry(f); } }
    "keys" => {
        let s = "k"; while s.len() < 500000 { s += s; }
        v = #{}; for i in 0..n { v[s + i] = 1; }
    }
}
body = "built";
"#;

#[tokio::test]
async fn deeply_nested_values_are_a_script_error_not_a_crash() {
    let srv = Project::new()
        .channel(channel("deep", "deep"))
        .script("deep", DEEP)
        .start();
    for kind in ["array", "push", "map", "index", "closure", "curry", "keys"] {
        let (status, body) = call(
            &srv,
            "deep",
            &json!({"kind": kind, "n": 200_000}).to_string(),
        )
        .await;
        assert_eq!(status, 500, "{kind}: {body}");
        assert_eq!(body["error"], "script_error", "{kind}");
        assert_serving(&srv).await;
    }
    // Shallow values of every kind are fine.
    for kind in ["array", "push", "map", "index", "closure", "curry"] {
        let (status, body) = call(&srv, "deep", &json!({"kind": kind, "n": 10}).to_string()).await;
        assert_eq!(status, 200, "{kind}: {body}");
    }
    srv.wait_for_line(&["Nesting depth of data"]).await;
    // Map keys of 500 KB each, one after another: the run's memory is bounded.
    srv.wait_for_line(&["the run held more than 32 MiB of memory"])
        .await;
}

#[tokio::test]
async fn slow_builtins_never_hold_the_server_and_timeouts_hold() {
    let heavy = r#"
        let a = []; a.pad(50000, "xxxxxxxxxx");
        switch startparam(4) {
            "json" => { loop { let t = to_json(a); } }
            "parse" => { let t = to_json(a); loop { let b = parse_json(t); } }
            "hash" => { let s = "x"; while s.len() < 500000 { s += s; } loop { let h = sha256_hex(s); } }
            "sort" => { loop { a.sort(); a.reverse(); } }
        }
    "#;
    let srv = Project::new()
        .channel(json!({"code": "heavy", "token_local": "heavy-token",
            "recv_svcscriptcode": "heavy", "opts": {"issync": true, "recv_timeout": 2}}))
        .script("heavy", heavy)
        .start();
    for kind in ["json", "parse", "hash", "sort"] {
        let started = Instant::now();
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let url = srv.url("/channels/heavy/api");
                tokio::spawn(
                    client()
                        .post(url)
                        .bearer_auth("heavy-token")
                        .body(kind)
                        .send(),
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Beside two such scripts the server answers at once (it took seconds when
        // a slow built-in ran on an async thread).
        for _ in 0..5 {
            let asked = Instant::now();
            assert_serving(&srv).await;
            let took = asked.elapsed();
            assert!(
                took < Duration::from_millis(500),
                "{kind}: /healthz took {took:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for run in runs {
            assert_eq!(run.await.unwrap().unwrap().status(), 504, "{kind}");
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(2700),
            "{kind}: the 504s came {took:?} after the calls (timeout 2 s)"
        );
    }
}

#[tokio::test]
async fn modules_are_evaluated_per_run_and_never_leak_between_channels() {
    let util = r#"
        export const SECRET = token_remote();
        fn secret() { token_remote() }
    "#;
    let user = r#"
        import "util" as u;
        body = #{ at_import: u::SECRET, in_fn: u::secret() };
    "#;
    let doc = |code: &str, remote: &str| {
        json!({"code": code, "token_local": format!("{code}-token"), "token_remote": remote,
            "recv_svcscriptcode": "user", "opts": {"issync": true}})
    };
    let srv = Project::new()
        .channel(doc("alpha", "alpha-secret"))
        .channel(doc("beta", "beta-secret"))
        .script("util", util)
        .script("user", user)
        .start();
    for _ in 0..3 {
        let (status, body) = call(&srv, "alpha", "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({"at_import": "alpha-secret", "in_fn": "alpha-secret"})
        );
        let (status, body) = call(&srv, "beta", "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({"at_import": "beta-secret", "in_fn": "beta-secret"})
        );
    }
}

#[tokio::test]
async fn imports_nested_too_deep_are_a_script_error() {
    let mut project = Project::new().channel(channel("deep", "m0"));
    for i in 0..40 {
        project = project.script(
            &format!("m{i}"),
            &format!("import \"m{}\" as next; export const N = {i};", i + 1),
        );
    }
    let srv = project.script("m40", "export const N = 40;").start();
    let (status, body) = call(&srv, "deep", "").await;
    assert_eq!(status, 500, "{body}");
    srv.wait_for_line(&["modules import modules more than 16 deep"])
        .await;
    assert_serving(&srv).await;
}

#[tokio::test]
async fn channel_send_ws_runs_in_flight_are_bounded() {
    let srv = Project::new()
        .channel(channel("caller", "fan"))
        .channel(json!({"code": "slow", "token_local": "slow-token",
            "send_svcscriptcode_ws": "spin", "opts": {"recv_timeout": 3}}))
        .script(
            "fan",
            r#"let ok = 0; let refused = "";
               for i in 0..200 { try { channel_send_ws("slow", i); ok += 1; } catch (e) { refused = `${e}`; } }
               body = #{ ok: ok, refused: refused };"#,
        )
        .script("spin", "loop {}")
        .start();
    let (status, body) = call(&srv, "caller", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], 64, "{body}");
    assert!(
        body["refused"]
            .as_str()
            .unwrap()
            .contains("under way already"),
        "{body}"
    );
    assert_serving(&srv).await;
}

#[tokio::test]
async fn job_wait_refuses_an_absurd_number_of_seconds() {
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(
            json!({"code": "w", "token_local": "w-token", "send_svcscriptcode": "wait",
            "opts": {"send_retries": 0}}),
        )
        .script("wait", "job_wait(9223372036854775807);")
        .start();
    let id = common::send_job(&srv, ADMIN, "w", &json!({})).await;
    let job = common::wait_job(&srv, ADMIN, &id, &["failed"], Duration::from_secs(10)).await;
    assert!(
        job["last_error"].as_str().unwrap().contains("30 days"),
        "{job}"
    );
    assert_serving(&srv).await;
}

/// An upstream on its own port: `/redirect-out` sends to another origin,
/// `/redirect-in` to `/ok` on itself, `/big` answers 30 MB.
async fn redirecting_upstream(other: &str) -> String {
    use axum::response::{IntoResponse, Redirect};
    let other = other.to_owned();
    let app = axum::Router::new()
        .route(
            "/redirect-out",
            axum::routing::get(move || {
                let to = format!("{other}/stolen");
                async move { Redirect::to(&to) }
            }),
        )
        .route(
            "/redirect-in",
            axum::routing::get(|| async { Redirect::to("/ok") }),
        )
        .route("/ok", axum::routing::get(|| async { "fine" }))
        .route(
            "/big",
            axum::routing::get(|| async { "x".repeat(30 * 1024 * 1024).into_response() }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test]
async fn webquery_keeps_to_its_origin_bounds_answers_and_hides_secrets() {
    let other = common::Upstream::start().await;
    let upstream = redirecting_upstream(&other.base).await;
    let script = r#"
        let r = webquery(#{ path: startparam(4), headers: #{ "x-api-key": "k-123" } });
        body = #{ status: r.status, body: r.body, location: r.headers.location };
    "#;
    let srv = Project::new()
        .config("expose_script_errors = true")
        .channel(
            json!({"code": "out", "token_local": "out-token", "url": format!("{upstream}/"),
            "recv_svcscriptcode": "out", "opts": {"issync": true}}),
        )
        .channel(
            json!({"code": "closed", "token_local": "closed-token", "url": "http://127.0.0.1:9/",
            "recv_svcscriptcode": "out", "opts": {"issync": true}}),
        )
        .script("out", script)
        .start();
    // A redirect to another origin is handed to the script, not followed.
    let (status, body) = call(&srv, "out", "/redirect-out").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], 303, "{body}");
    assert!(other.seen().is_empty(), "the other origin was called");
    // One within the origin is followed.
    let (status, body) = call(&srv, "out", "/redirect-in").await;
    assert_eq!(
        (status, &body["status"], &body["body"]),
        (200, &json!(200), &json!("fine"))
    );
    // An answer over the string limit is an error, found while it arrives.
    let (status, body) = call(&srv, "out", "/big").await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("string limit"),
        "{body}"
    );
    // Errors name the origin, never the query (where secrets travel).
    let (status, body) = call(&srv, "closed", "/x?api_key=SECRET-42").await;
    assert_eq!(status, 500, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("127.0.0.1:9"), "{message}");
    assert!(!message.contains("SECRET-42"), "{message}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !srv.logs().contains("SECRET-42"),
        "the log holds the secret"
    );
}

#[tokio::test]
async fn webquery_refuses_unknown_keys_and_encodes_its_query() {
    let up = common::Upstream::start().await;
    let srv = Project::new()
        .config("expose_script_errors = true")
        .channel(
            json!({"code": "q", "token_local": "q-token", "url": format!("{}/", up.base),
            "recv_svcscriptcode": "q", "opts": {"issync": true}}),
        )
        .script(
            "q",
            r#"let r = webquery(parse_json(startparam(4))); body = r.status;"#,
        )
        .start();
    let (status, body) = call(&srv, "q", r#"{"path": "ok", "header": {"a": "b"}}"#).await;
    assert_eq!(status, 500);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("header") && message.contains("headers"),
        "{message}"
    );
    let (status, _) = call(&srv, "q", r#"{"path": "ok", "timeout_ms": "5000"}"#).await;
    assert_eq!(status, 500);
    let (status, body) = call(
        &srv,
        "q",
        r#"{"path": "ok", "query": {"sku": "BOLT M8", "n": 2}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/ok");
}

#[tokio::test]
async fn websockets_close_when_what_admitted_them_changes() {
    let doc = |token: &str, mask: &str| {
        json!({"code": "live", "token_local": token, "ipmask": [mask],
            "recv_svcscriptcode_ws": "echo", "opts": {"title": "x"}})
    };
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(doc("old-token", "127.0.0.0/8"))
        .script("echo", "data = 1;")
        .start();
    let put = |doc: Value| {
        client()
            .put(srv.url("/admin/channels/live"))
            .bearer_auth(ADMIN)
            .json(&doc)
            .send()
    };
    // A change elsewhere in the document keeps the socket open.
    let mut socket = ws(&srv, "/channels/live/ws?token=old-token").await;
    let mut retitled = doc("old-token", "127.0.0.0/8");
    retitled["opts"]["title"] = json!("y");
    assert_eq!(put(retitled).await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&mut socket, json!(["message", {"qid": 1, "data": {}}])).await;
    assert_eq!(recv(&mut socket).await[1]["success"], true);
    // A new token closes it with 1008.
    assert_eq!(
        put(doc("new-token", "127.0.0.0/8")).await.unwrap().status(),
        200
    );
    assert_eq!(close_code(&mut socket).await, Some(1008));
    // So does a new mask.
    let mut socket = ws(&srv, "/channels/live/ws?token=new-token").await;
    assert_eq!(
        put(doc("new-token", "127.0.0.1/32"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(close_code(&mut socket).await, Some(1008));
}

#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let srv = Project::new()
        .channel(
            json!({"code": "ev", "type": "events", "token_local": "ev-token",
            "opts": {"ws_apis": ["*"]}}),
        )
        .start();
    let mut socket = ws(&srv, "/channels/ev/ws?token=ev-token").await;
    let many: Vec<String> = (0..65).map(|i| format!("a.b{i}")).collect();
    send(
        &mut socket,
        json!(["subscribe", {"qid": 1, "data": {"events": many}}]),
    )
    .await;
    let answer = recv(&mut socket).await;
    assert_eq!(answer[1]["success"], false, "{answer}");
    assert_eq!(answer[1]["data"]["error"], "too_many_patterns", "{answer}");
    for batch in 0..4 {
        let some: Vec<String> = (0..64).map(|i| format!("p{batch}.x{i}")).collect();
        send(
            &mut socket,
            json!(["subscribe", {"qid": 10 + batch, "data": {"events": some}}]),
        )
        .await;
        assert_eq!(recv(&mut socket).await[1]["success"], true);
    }
    send(
        &mut socket,
        json!(["subscribe", {"qid": 20, "data": {"events": ["one.more"]}}]),
    )
    .await;
    let answer = recv(&mut socket).await;
    assert_eq!(answer[1]["data"]["error"], "too_many_patterns", "{answer}");
    // Replacing is possible: unsubscribe, then subscribe.
    send(
        &mut socket,
        json!(["unsubscribe", {"qid": 21, "data": {"events": ["p0.x0"]}}]),
    )
    .await;
    assert_eq!(recv(&mut socket).await[1]["success"], true);
    send(
        &mut socket,
        json!(["subscribe", {"qid": 22, "data": {"events": ["one.more"]}}]),
    )
    .await;
    assert_eq!(recv(&mut socket).await[1]["success"], true);
}

#[tokio::test]
async fn answers_queued_for_a_client_that_does_not_read_are_bounded_in_bytes() {
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(json!({"code": "fat", "token_local": "fat-token",
            "recv_svcscriptcode_ws": "fat", "opts": {}}))
        .script(
            "fat",
            r#"let s = "x"; while s.len() < 200000 { s += s; } data = s;"#,
        )
        .start();
    let mut socket = ws(&srv, "/channels/fat/ws?token=fat-token").await;
    let total = 150;
    for qid in 0..total {
        send(&mut socket, json!(["message", {"qid": qid, "data": {}}])).await;
    }
    // The client reads nothing for a while: the server holds at most its budget.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resp = client()
        .get(srv.url("/admin/connections"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let (_, _, conns) = json_of(resp).await;
    let queued = conns["connections"]["fat"][0]["queued_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("{conns}"));
    assert!(queued <= 4 * 1024 * 1024, "{queued} bytes queued");
    // Nothing is lost: once the client reads, every answer arrives.
    let mut answered = 0;
    while answered < total {
        let frame = recv(&mut socket).await;
        assert_eq!(frame[1]["success"], true);
        answered += 1;
    }
}

fn jwt(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"jwt-secret"),
    )
    .unwrap()
}

#[tokio::test]
async fn credentials_are_checked_strictly() {
    let now = chrono::Utc::now().timestamp();
    let srv = Project::new()
        .config(&format!(
            "admin_token = \"{ADMIN}\"\ntrusted_proxies = [\"127.0.0.1\"]\n[iam]\njwt_secret = \"jwt-secret\""
        ))
        .channel(json!({"code": "c", "token_local": "c-token", "recv_svcscriptcode": "ok",
            "ipmask": ["127.0.0.0/8"], "opts": {"issync": true, "roles": ["r"]}}))
        .script("ok", "body = startparam(6);")
        .start();
    let get = |auth: Option<String>, path: &str| {
        let mut req = client().get(srv.url(path));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    // nbf in the future: not valid yet.
    let early = jwt(json!({"sub": "u", "roles": ["r"], "nbf": now + 3600, "exp": now + 7200}));
    let resp = get(Some(format!("Bearer {early}")), "/channels/c/api")
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let valid = jwt(json!({"sub": "u", "roles": ["r"], "nbf": now - 10, "exp": now + 60}));
    let resp = get(Some(format!("Bearer {valid}")), "/channels/c/api")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The scheme word in any case.
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let resp = get(Some(format!("{scheme} c-token")), "/channels/c/api")
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{scheme}");
    }
    // The admin API takes its token only in the header.
    let resp = get(None, &format!("/admin/channels?token={ADMIN}"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = get(
        Some(format!("Bearer {ADMIN}")),
        &format!("/admin/channels?token={ADMIN}"),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = get(Some(format!("Bearer {ADMIN}")), "/admin/channels")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Garbage in X-Forwarded-For from a trusted proxy fails closed (outside the mask).
    let resp = client()
        .get(srv.url("/channels/c/api"))
        .bearer_auth("c-token")
        .header("x-forwarded-for", "not-an-address")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = client()
        .get(srv.url("/channels/c/api"))
        .bearer_auth("c-token")
        .header("x-forwarded-for", "127.0.0.9:5555")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "127.0.0.9");
}

#[tokio::test]
async fn ids_are_unique_codes_are_not_hidden_and_throttles_are_per_code() {
    let shared = "11111111-2222-3333-4444-555555555555";
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(json!({"code": "a", "id": shared, "token_local": "a-token",
            "recv_svcscriptcode": "ok", "opts": {"issync": true}}))
        .channel(json!({"code": "b", "id": shared, "token_local": "b-token",
            "recv_svcscriptcode": "ok", "opts": {"issync": true}}))
        .channel(json!({"code": "c", "token_local": "c-token",
            "recv_svcscriptcode": "ok", "opts": {"issync": true}}))
        .script("ok", "body = 1;")
        .start();
    // The second channel with the same id is reported and not served.
    srv.wait_for_line(&["b.json", "is already the id of channel \"a\""])
        .await;
    assert_eq!(call(&srv, "a", "").await.0, 200);
    assert_eq!(call(&srv, "b", "").await.0, 404);
    let admin = |method: reqwest::Method, path: &str| {
        client().request(method, srv.url(path)).bearer_auth(ADMIN)
    };
    let resp = admin(reqwest::Method::POST, "/admin/channels")
        .json(&json!({"code": "d", "id": shared}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_channel")),
        "{body}"
    );
    // Codes may not start with a dot, for channels or scripts.
    let resp = admin(reqwest::Method::POST, "/admin/channels")
        .json(&json!({"code": ".hidden"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Sent as is (a client library would fold the dots away).
    let addr = srv.base.trim_start_matches("http://").to_owned();
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let put = format!(
        "PUT /admin/scripts/.. HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Length: 9\r\nConnection: close\r\n\r\nbody = 1;"
    );
    tokio::io::AsyncWriteExt::write_all(&mut raw, put.as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut raw, &mut answer)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(!srv
        .project
        .as_ref()
        .unwrap()
        .path()
        .join("scripts/...rhai")
        .exists());
    // Twenty bad tokens on one channel lock that channel only.
    for _ in 0..20 {
        let resp = client()
            .get(srv.url("/channels/a/api"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    let resp = client()
        .get(srv.url("/channels/a/api"))
        .bearer_auth("a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(call(&srv, "c", "").await.0, 200);
    let resp = admin(reqwest::Method::GET, "/admin/channels")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn disk_use_per_channel_is_bounded() {
    let srv = Project::new()
        .config(&format!(
            "admin_token = \"{ADMIN}\"\ninbox_max = 2\nkv_max_keys = 3\nfiles_max_count = 2\nfiles_max_bytes = 100"
        ))
        .channel(json!({"code": "slowbox", "token_local": "slowbox-token",
            "recv_svcscriptcode": "spin", "opts": {"issync": false, "recv_timeout": 2}}))
        .channel(json!({"code": "kv", "token_local": "kv-token", "recv_svcscriptcode": "keys",
            "opts": {"issync": true}, "ext": {}}))
        .channel(json!({"code": "f", "token_local": "f-token", "opts": {"allow_files_api": true}}))
        .channel(json!({"code": "s", "token_local": "s-token", "send_svcscriptcode": "done"}))
        .script("spin", "loop {}")
        .script(
            "keys",
            r#"let out = [];
               for k in ["a", "b", "c", "d"] { try { kv_set(k, 1); out.push("ok"); } catch (e) { out.push(`${e}`); } }
               kv_set("a", 2);
               body = out;"#,
        )
        .script("done", "result = 1;")
        .start();
    // The inbox takes two requests (one running, one waiting), then says it is full.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(call(&srv, "slowbox", "").await);
    }
    assert_eq!(statuses[0].0, 202);
    assert_eq!(statuses[1].0, 202);
    assert_eq!(statuses[2].0, 429, "{:?}", statuses[2]);
    assert_eq!(statuses[2].1["error"], "inbox_full");
    // kv: three keys, then a script error; existing keys still change.
    let (status, body) = call(&srv, "kv", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.as_array().unwrap()[0..3],
        [json!("ok"), json!("ok"), json!("ok")]
    );
    assert!(body[3].as_str().unwrap().contains("kv_max_keys"), "{body}");
    // Files: two files, then 507; and never more bytes than allowed.
    let put = |name: &str, size: usize| {
        client()
            .put(srv.url(&format!("/channels/f/files/{name}")))
            .bearer_auth("f-token")
            .body("x".repeat(size))
            .send()
    };
    assert_eq!(put("one", 10).await.unwrap().status(), 201);
    assert_eq!(put("two", 10).await.unwrap().status(), 201);
    let (status, _, body) = json_of(put("three", 10).await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (507, Some("insufficient_storage"))
    );
    assert_eq!(put("one", 60).await.unwrap().status(), 200);
    assert_eq!(put("two", 60).await.unwrap().status(), 507);
    // A send job that succeeded keeps its result, not its input.
    let id = common::send_job(&srv, ADMIN, "s", &json!({"big": "y".repeat(1000)})).await;
    common::wait_job(&srv, ADMIN, &id, &["succeeded"], Duration::from_secs(10)).await;
    let db = srv.db();
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let input: String = conn
        .query_row("SELECT input FROM jobs WHERE id = ?1", [&id], |r| r.get(0))
        .unwrap();
    assert_eq!(input, "");
}

#[tokio::test]
async fn long_runs_that_gave_up_their_slot_are_bounded() {
    let srv = Project::new()
        .channel(
            json!({"code": "spin", "token_local": "spin-token", "recv_svcscriptcode": "spin",
            "opts": {"issync": true, "recv_timeout": 3}}),
        )
        .script("spin", "let n = 0; loop { n += 1; }")
        .start();
    let runs: Vec<_> = (0..40)
        .map(|_| {
            tokio::spawn(
                client()
                    .get(srv.url("/channels/spin/api?token=spin-token"))
                    .send(),
            )
        })
        .collect();
    let mut most = 0.0f64;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = common::metrics_text(&srv).await;
        let now = text
            .lines()
            .find_map(|l| l.strip_prefix("switchyard_script_long_runs "))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap());
        most = most.max(now);
    }
    assert!(most >= 1.0, "no run was counted as long");
    assert!(most <= 32.0, "{most} long runs at once");
    for run in runs {
        assert_eq!(run.await.unwrap().unwrap().status(), 504);
    }
    assert_serving(&srv).await;
}

#[tokio::test]
async fn a_script_cannot_set_the_framing_headers_of_its_answer() {
    let srv = Project::new()
        .channel(channel("echo", "echo"))
        .script(
            "echo",
            r#"headers = parse_json(startparam(5)); headers["x-extra"] = "kept"; body = "a longer answer than the request";"#,
        )
        .start();
    let resp = client()
        .post(srv.url("/channels/echo/api?token=echo-token"))
        .header("connection", "keep-alive")
        .body("tiny")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-extra"], "kept");
    assert_eq!(
        resp.text().await.unwrap(),
        "a longer answer than the request"
    );
    assert_serving(&srv).await;
}
