//! Script development (SPEC §15, issue #13): recordings, dry runs that change
//! nothing, replays, and `switchyard test` / `switchyard try` offline.

mod common;

use std::time::Duration;

use common::{admin_get, client, json_of, repo, ws_connect, ws_recv, ws_send, Project, Server};
use serde_json::{json, Value};

const ADMIN: &str = "develop-admin";

async fn admin_post(srv: &Server, path: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(srv.url(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    (status, body)
}

/// Waits until channel `code` has `n` recordings; returns them.
async fn recordings(srv: &Server, code: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let (status, body) =
            admin_get(srv, ADMIN, &format!("/admin/channels/{code}/requests")).await;
        assert_eq!(status, 200, "{body}");
        let list = body["requests"].as_array().unwrap().clone();
        if list.len() == n {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("channel {code} never had {n} recordings");
}

fn project() -> Project {
    Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(json!({"code": "shop", "token_local": "shop-token", "recv_svcscriptcode": "shop",
            "recv_svcscriptcode_ws": "shop_ws", "opts": {"issync": true, "record": 3, "recv_timeout": 1}}))
        .script(
            "shop",
            r#"
            let q = parse_query(startparam(3));
            log_info(`looked up ${q.sku}`);
            body = #{ sku: q.sku, stock: kv_get(`stock:${q.sku}`) ?? 0 };
            "#,
        )
        .script("shop_ws", "data = #{ echo: parse_json(startparam(1)) };")
}

#[tokio::test]
async fn recordings_keep_the_last_requests_without_credentials() {
    let srv = project().start();
    for i in 0..4 {
        // The token in the query, or in the Authorization header.
        let (query, auth) = if i % 2 == 0 {
            (
                format!("sku=A{i}&token=shop-token"),
                "Basic bm90LXJlY29yZGVk",
            )
        } else {
            (format!("sku=A{i}"), "Bearer shop-token")
        };
        let resp = client()
            .post(srv.url(&format!("/channels/shop/api/items?{query}")))
            .header("authorization", auth)
            .header("cookie", "session=not-recorded")
            .header("proxy-authorization", "Basic not-recorded")
            .header("x-trace", format!("t{i}"))
            .body(format!("{{\"n\": {i}}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let list = recordings(&srv, "shop", 3).await;
    // Newest first, the oldest of four gone (record = 3).
    let queries: Vec<&str> = list.iter().map(|r| r["query"].as_str().unwrap()).collect();
    assert_eq!(queries, ["sku=A3", "sku=A2", "sku=A1"]);
    let newest = &list[0];
    assert_eq!(newest["kind"], "http");
    assert_eq!(newest["method"], "POST");
    assert_eq!(newest["path"], "/items");
    assert_eq!(newest["body"], "{\"n\": 3}");
    assert_eq!(newest["headers"]["x-trace"], "t3");
    assert_eq!(newest["answer"]["status"], 200);
    assert_eq!(newest["answer"]["body"], json!({"sku": "A3", "stock": 0}));
    assert_eq!(newest["script"].as_str().unwrap().len(), 12);
    let text = serde_json::to_string(&list).unwrap();
    assert!(
        !text.contains("not-recorded") && !text.contains("shop-token") && !text.contains("bm90"),
        "{text}"
    );

    // A body over 64 KiB is cut and marked; a websocket frame is recorded too.
    let big = "x".repeat(70 * 1024);
    client()
        .post(srv.url("/channels/shop/api?sku=big&token=shop-token"))
        .body(big)
        .send()
        .await
        .unwrap();
    let mut ws = ws_connect(&srv, "/channels/shop/ws?token=shop-token").await;
    ws_send(
        &mut ws,
        json!(["message", {"qid": 1, "data": {"hello": 1}}]),
    )
    .await;
    assert_eq!(ws_recv(&mut ws).await[1]["success"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, body) = admin_get(&srv, ADMIN, "/admin/channels/shop/requests?limit=2").await;
    let list = body["requests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["kind"], "ws");
    assert_eq!(
        list[0]["answer"],
        json!({"success": true, "data": {"echo": {"hello": 1}}})
    );
    assert_eq!(list[1]["truncated"], true);
    assert_eq!(list[1]["body"].as_str().unwrap().len(), 64 * 1024);

    // DELETE clears them; lowering opts.record trims; deleting the channel drops them.
    let resp = client()
        .delete(srv.url("/admin/channels/shop/requests"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(recordings(&srv, "shop", 0).await.is_empty());
    let (status, _) = admin_get(&srv, ADMIN, "/admin/channels/shop/requests?limit=x").await;
    assert_eq!(status, 400);
    let (status, _) = admin_get(&srv, ADMIN, "/admin/channels/nope/requests").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn lowering_record_trims_and_deleting_the_channel_drops() {
    let srv = project().start();
    for i in 0..3 {
        client()
            .get(srv.url(&format!("/channels/shop/api?sku=B{i}&token=shop-token")))
            .send()
            .await
            .unwrap();
    }
    recordings(&srv, "shop", 3).await;
    let (_, mut doc) = admin_get(&srv, ADMIN, "/admin/channels/shop").await;
    doc["opts"]["record"] = json!(1);
    let resp = client()
        .put(srv.url("/admin/channels/shop"))
        .bearer_auth(ADMIN)
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let list = recordings(&srv, "shop", 1).await;
    assert_eq!(list[0]["query"], "sku=B2");
    // Deleted and made again: nothing of the old recordings is left.
    let resp = client()
        .delete(srv.url("/admin/channels/shop"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    doc["token_local"] = json!("shop-token");
    let (status, _) = admin_post(&srv, "/admin/channels", doc.clone()).await;
    assert_eq!(status, 201);
    assert!(recordings(&srv, "shop", 0).await.is_empty());
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_shows_what_it_would_do() {
    let srv = project()
        .channel(
            json!({"code": "feed", "token_local": "feed-token", "type": "events",
            "opts": {"events": ["stock.>"]}}),
        )
        .channel(
            json!({"code": "erp", "token_local": "erp-token", "url": "http://127.0.0.1:9/",
            "send_svcscriptcode": "erp_send"}),
        )
        .script("erp_send", "result = 1;")
        .start();
    // Someone is listening for events: a dry run must not reach them.
    let mut listener = ws_connect(&srv, "/channels/feed/ws?token=feed-token").await;
    let draft = r#"
        let q = parse_query(startparam(3));
        kv_set(`stock:${q.sku}`, 5);
        emit_event("stock.changed", #{ sku: q.sku });
        channel_send("erp", #{ sku: q.sku });
        let r = webquery(#{ path: "a" });
        let r2 = webquery(#{ path: "b" });
        log_warn(`upstream said ${r.status} then ${r2.status}`);
        body = #{ first: parse_json(r.body), second: r2.body, stock: kv_get(`stock:${q.sku}`) };
    "#;
    let (status, out) = admin_post(
        &srv,
        "/admin/channels/shop/try",
        json!({
            "request": {"method": "GET", "path": "/items", "query": "sku=C1"},
            "script": draft,
            "stubs": {"webquery": [{"status": 200, "body": {"n": 1}}, {"status": 503, "body": "later"}]},
        }),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["answer"]["status"], 200);
    // Stubs answered in order; reads saw the real (unchanged) store.
    assert_eq!(
        out["answer"]["body"],
        json!({"first": {"n": 1}, "second": "later", "stock": null})
    );
    let fns: Vec<&str> = out["effects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["fn"].as_str().unwrap())
        .collect();
    assert_eq!(
        fns,
        [
            "kv_set",
            "emit_event",
            "channel_send",
            "webquery",
            "webquery"
        ]
    );
    assert_eq!(out["effects"][0]["args"], json!(["stock:C1", 5]));
    assert_eq!(
        out["logs"],
        json!([{"level": "warn", "message": "upstream said 200 then 503"}])
    );
    assert!(out["operations"].as_u64().unwrap() > 10, "{out}");
    assert!(out["duration_ms"].as_f64().is_some());

    // Nothing changed: no kv value, no event, no job.
    let resp = client()
        .get(srv.url("/channels/shop/api?sku=C1&token=shop-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(resp).await.2["stock"], 0);
    let (_, jobs) = admin_get(&srv, ADMIN, "/admin/jobs").await;
    assert_eq!(jobs["jobs"], json!([]));
    let heard = tokio::time::timeout(Duration::from_millis(500), ws_recv(&mut listener)).await;
    assert!(heard.is_err(), "an event reached a subscriber: {heard:?}");

    // A missing stub is a script error naming it; a draft that does not compile is 422.
    let (status, out) = admin_post(
        &srv,
        "/admin/channels/shop/try",
        json!({"request": {"path": "/"}, "script": "let r = webquery(#{ path: \"a\" }); body = r.status;"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(out["answer"]["status"], 500);
    assert!(
        out["answer"]["body"]["message"]
            .as_str()
            .unwrap()
            .contains("no stub for call 1"),
        "{out}"
    );
    let (status, out) = admin_post(
        &srv,
        "/admin/channels/shop/try",
        json!({"request": {"path": "/"}, "script": "let x = ;\nbody = 1;"}),
    )
    .await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(out["error"], "compile_error");
    assert_eq!(out["line"], 1);
    // A body that is not JSON is a 400 with a JSON error (the content type does not matter).
    let resp = client()
        .post(srv.url("/admin/channels/shop/try"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("{\"kind\": \"ws\", \"data\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "curl -d sends a form type");
    let resp = client()
        .post(srv.url("/admin/channels/shop/try"))
        .bearer_auth(ADMIN)
        .body("nope")
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!((status, body["error"].clone()), (400, json!("bad_request")));
    // Timeouts apply as in a real run.
    let (status, out) = admin_post(
        &srv,
        "/admin/channels/shop/try",
        json!({"kind": "ws", "data": 1, "script": "loop { }"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(out["answer"]["data"]["error"], "timeout", "{out}");
}

#[tokio::test]
async fn a_recorded_webhook_is_verified_the_same_way_in_a_dry_run() {
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(
            json!({"code": "hook", "token_local": "hook-token", "token_remote": "s3cret",
            "recv_svcscriptcode": "hook", "opts": {"issync": true, "record": 5}}),
        )
        .script(
            "hook",
            r#"let c = webhook_verify("github", token_remote(), startparam(5), startparam(4));
               if !c.ok { status = 401; body = #{ error: c.reason }; return; }
               body = #{ ok: true };"#,
        )
        .start();
    let body = "{\"id\": 1}\n";
    let sig = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let resp = client()
        .post(srv.url("/channels/hook/api?token=hook-token"))
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let list = recordings(&srv, "hook", 1).await;
    let id = list[0]["id"].as_str().unwrap();
    let (status, out) = admin_post(&srv, "/admin/channels/hook/try", json!({"record": id})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["answer"]["body"],
        json!({"ok": true}),
        "the recorded bytes and signature verify"
    );
    let (status, _) = admin_post(&srv, "/admin/channels/hook/try", json!({"record": "nope"})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_replay_shows_exactly_the_answers_a_draft_changes() {
    let srv = project().start();
    for sku in ["A", "B", "C"] {
        client()
            .get(srv.url(&format!("/channels/shop/api?sku={sku}&token=shop-token")))
            .send()
            .await
            .unwrap();
    }
    recordings(&srv, "shop", 3).await;
    // The draft answers B differently (and the same JSON with another key order for the rest).
    let draft = r#"
        let q = parse_query(startparam(3));
        body = if q.sku == "B" { #{ stock: 7, sku: q.sku } } else { #{ stock: kv_get("x") ?? 0, sku: q.sku } };
    "#;
    let (status, out) = admin_post(
        &srv,
        "/admin/channels/shop/replay",
        json!({"script": draft, "limit": 3}),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["changed"], 1, "{out}");
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let changed: Vec<&Value> = results.iter().filter(|r| r["same"] == false).collect();
    assert_eq!(
        changed[0]["before"]["body"],
        json!({"sku": "B", "stock": 0})
    );
    assert_eq!(changed[0]["after"]["body"], json!({"sku": "B", "stock": 7}));
}

/// A project folder with one channel and its cases, for `switchyard test`.
fn case_project(expected_stock: i64) -> Project {
    let p = project();
    std::fs::create_dir_all(p.path().join("cases")).unwrap();
    let cases = json!({"channel": "shop", "cases": [
        {"name": "stock from the kv fixture",
         "request": {"path": "/items", "query": "sku=A"},
         "kv": {"stock:A": 4},
         "expect": {"status": 200, "body": {"stock": expected_stock}, "logs": [{"message": "looked up A"}]}},
        {"name": "a frame is echoed",
         "frame": {"data": [1, 2]},
         "expect": {"success": true, "data": {"echo": [1, 2]}}}
    ]});
    std::fs::write(p.path().join("cases/shop.json"), cases.to_string()).unwrap();
    p
}

fn run_cli(args: &[&str], dir: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(common::binary())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn switchyard_test_passes_and_fails_with_the_right_exit_code_and_output() {
    let good = case_project(4);
    let (code, out) = run_cli(&["test"], good.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok    shop.json › stock from the kv fixture"),
        "{out}"
    );
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("2 passed, 0 failed"),
        "{out}"
    );

    let bad = case_project(5);
    let (code, out) = run_cli(
        &["test", bad.path().to_str().unwrap()],
        std::path::Path::new("/"),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  shop.json › stock from the kv fixture"),
        "{out}"
    );
    assert!(out.contains("body.stock: expected 5, got 4"), "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("1 passed, 1 failed"),
        "{out}"
    );
    // Nothing was written: no store was made.
    assert!(std::fs::read_dir(bad.path().join("data"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn the_shipped_cases_pass() {
    let (code, out) = run_cli(&["test"], &repo());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("order_poller.json") && out.contains("shop_webhook.json"),
        "{out}"
    );
}

#[test]
fn switchyard_try_prints_a_dry_run() {
    let p = project();
    let (code, out) = run_cli(
        &["try", "shop", "--path", "/items", "--query", "sku=Z"],
        p.path(),
    );
    assert_eq!(code, 0, "{out}");
    let outcome: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outcome["answer"]["body"], json!({"sku": "Z", "stock": 0}));
    assert_eq!(outcome["logs"][0]["message"], "looked up Z");
}

/// Issue #32 point 10: a dry run of an inbox channel (`issync = false`) runs
/// the script as the real run does: a script that sets `result` succeeds,
/// and the answer is what the caller gets (202) with how the run ended.
#[tokio::test]
async fn a_dry_run_of_an_inbox_channel_matches_the_real_run() {
    let srv = project()
        .channel(
            json!({"code": "box", "token_local": "box-token", "recv_svcscriptcode": "boxed",
            "opts": {"issync": false}}),
        )
        .script("boxed", r#"result = #{ got: startparam(4) };"#)
        .start();
    let (status, dry) = admin_post(
        &srv,
        "/admin/channels/box/try",
        json!({"request": {"method": "POST", "body": "hello"}}),
    )
    .await;
    assert_eq!(status, 200, "{dry}");
    let answer = &dry["answer"];
    assert_eq!(answer["status"], 202, "{dry}");
    assert!(answer["body"]["request_id"].is_string(), "{dry}");
    assert_eq!(answer["state"], "succeeded", "{dry}");
    assert_eq!(answer["result"], json!({"got": "hello"}), "{dry}");
    // The real run: the same script succeeds with the same result.
    let resp = client()
        .post(srv.url("/channels/box/api?token=box-token"))
        .body("hello")
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 202);
    let id = body["request_id"].as_str().unwrap().to_owned();
    let job = common::wait_job(
        &srv,
        ADMIN,
        &id,
        &["succeeded", "failed"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    // A failing inbox script fails the same way in a dry run.
    let (_, dry) = admin_post(
        &srv,
        "/admin/channels/box/try",
        json!({"request": {"body": "x"}, "script": "throw \"nope\";"}),
    )
    .await;
    assert_eq!(dry["answer"]["state"], "failed", "{dry}");
    assert!(
        dry["answer"]["error"].as_str().unwrap().contains("nope"),
        "{dry}"
    );
}
