//! Inbound HTTP against the real binary: script inputs, outputs and failures.

mod common;

use std::time::{Duration, Instant};

use common::{channel, client, json_of, Project};
use serde_json::{json, Value};

const ECHO: &str = r#"
body = #{
    method: startparam(1), path: startparam(2), query: startparam(3), body: startparam(4),
    headers: parse_json(startparam(5)), sender: startparam(6), channel: startparam(7),
    request_id: startparam(8), outside: startparam(9), zero: startparam(0)
};
"#;

#[tokio::test]
async fn startparams_carry_the_request_to_the_script() {
    let srv = Project::new()
        .channel(channel("echo", "echo"))
        .script("echo", ECHO)
        .start();
    let resp = client()
        .put(srv.url("/channels/echo/api/orders/42?a=1&token=echo-token&b=x%20y"))
        .header("X-Custom", "yes")
        .header("Authorization", "Bearer echo-token")
        .body("héllo")
        .send()
        .await
        .unwrap();
    let (status, headers, body) = json_of(resp).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["method"], "PUT");
    assert_eq!(body["path"], "/orders/42");
    assert_eq!(body["query"], "a=1&b=x%20y");
    assert_eq!(body["body"], "héllo");
    assert_eq!(body["headers"]["x-custom"], "yes");
    assert!(body["headers"].get("authorization").is_none());
    assert_eq!(body["sender"], "127.0.0.1");
    assert_eq!(body["channel"], "echo");
    assert_eq!(
        body["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );
    assert_eq!(body["outside"], "");
    assert_eq!(body["zero"], "");

    let (status, _, body) = json_of(
        client()
            .get(srv.url("/channels/echo/api?token=echo-token"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["path"], "");
    assert_eq!(body["query"], "");
    assert_eq!(body["method"], "GET");
}

#[tokio::test]
async fn response_variables_shape_the_answer() {
    let srv = Project::new()
        .channel(channel("out", "out"))
        .script(
            "out",
            r#"
            let p = startparam(2);
            if p == "/text" { body = "plain words"; }
            else if p == "/custom" {
                status = "201"; content_type = "application/xml"; body = "<a/>";
                headers = #{ "x-one": "1", "x-two": 2 };
            }
            else if p == "/list" { status = 202; body = [1, "two", ()]; }
            else if p == "/empty" { status = 204; }
            else if p == "/badstatus" { status = "teapot"; }
            else if p == "/badheader" { headers = #{ "bad header": "x" }; }
            "#,
        )
        .start();
    let get = |path: &str| {
        client()
            .get(srv.url(&format!("/channels/out/api{path}")))
            .bearer_auth("out-token")
            .send()
    };
    let r = get("/text").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.text().await.unwrap(), "plain words");

    let r = get("/custom").await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["content-type"], "application/xml");
    assert_eq!(r.headers()["x-one"], "1");
    assert_eq!(r.headers()["x-two"], "2");
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.text().await.unwrap(), "<a/>");

    let (status, headers, body) = json_of(get("/list").await.unwrap()).await;
    assert_eq!(status, 202);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body, json!([1, "two", null]));

    let r = get("/empty").await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.text().await.unwrap(), "");

    for bad in ["/badstatus", "/badheader"] {
        let (status, _, body) = json_of(get(bad).await.unwrap()).await;
        assert_eq!(status, 500, "{bad}");
        assert_eq!(body["error"], "script_error");
    }
}

#[tokio::test]
async fn failures_answer_with_their_codes_and_request_ids() {
    let srv = Project::new()
        .channel(json!({"code": "none", "token_local": "none-token", "opts": {"issync": true}}))
        .channel(channel("boom", "boom"))
        .channel(json!({"code": "slow", "token_local": "slow-token",
            "recv_svcscriptcode": "spin", "opts": {"issync": true, "recv_timeout": 1}}))
        .script("boom", "let x = 1;\nthrow \"order 42 is broken\";")
        .script("spin", "loop { }")
        .start();
    let c = client();

    let (status, headers, body) = json_of(
        c.post(srv.url("/channels/none/api"))
            .bearer_auth("none-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 501);
    assert_eq!(body["error"], "no_script");
    assert_eq!(
        body["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );

    let (status, _, body) = json_of(
        c.post(srv.url("/channels/boom/api"))
            .bearer_auth("boom-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(body["error"], "script_error");
    assert!(
        body.get("message").is_none(),
        "script errors are not exposed by default"
    );
    let request_id = body["request_id"].as_str().unwrap().to_owned();
    assert!(srv.wait_for_log("order 42 is broken", Duration::from_secs(5)));
    assert!(srv.logs().contains(&request_id));

    let started = Instant::now();
    let (status, _, body) = json_of(
        c.get(srv.url("/channels/slow/api"))
            .bearer_auth("slow-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, 504);
    assert_eq!(body["error"], "timeout");
    assert!(took >= Duration::from_secs(1), "stopped early: {took:?}");
    assert!(took < Duration::from_secs(3), "stopped late: {took:?}");

    let (status, headers, body) = json_of(c.get(srv.url("/nowhere")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert_eq!(
        body["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );
}

#[tokio::test]
async fn expose_script_errors_puts_message_and_position_in_the_answer() {
    let srv = Project::new()
        .config("expose_script_errors = true")
        .channel(channel("boom", "boom"))
        .script("boom", "let x = 1;\nlet y = no_such_function(x);")
        .with_unknown_calls()
        .start();
    let (status, _, body) = json_of(
        client()
            .post(srv.url("/channels/boom/api"))
            .bearer_auth("boom-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(body["error"], "script_error");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("no_such_function"), "{msg}");
    assert!(msg.contains("boom.rhai:2:"), "{msg}");
}

#[tokio::test]
async fn bodies_over_the_limit_and_not_utf8_are_refused() {
    let srv = Project::new()
        .config("max_body_bytes = 1000")
        .channel(channel("echo", "echo"))
        .script("echo", ECHO)
        .start();
    let c = client();
    let url = srv.url("/channels/echo/api?token=echo-token");

    let (status, _, body) =
        json_of(c.post(&url).body("x".repeat(1001)).send().await.unwrap()).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"], "payload_too_large");

    // Far over the limit: still a clean 413, not a reset connection.
    let (status, _, _) = json_of(
        c.post(&url)
            .body(vec![b'z'; 5_000_000])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);
    // Refused before the body is read (wrong token): the answer arrives too.
    let (status, _, _) = json_of(
        c.post(srv.url("/channels/echo/api?token=wrong"))
            .body(vec![b'z'; 3_000_000])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);

    // Chunked, no Content-Length: counted as it arrives.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b'y'; 100])).collect();
    let stream = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let (status, _, body) = json_of(c.post(&url).body(stream).send().await.unwrap()).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"], "payload_too_large");

    let (status, _, body) = json_of(
        c.post(&url)
            .body(vec![0xff, 0xfe, 0x00])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(body["error"], "unsupported_body");

    let (status, _, body) =
        json_of(c.post(&url).body("x".repeat(1000)).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["body"].as_str().unwrap().len(), 1000);
}

#[tokio::test]
async fn runaway_scripts_never_delay_other_channels() {
    let srv = Project::new()
        .channel(json!({"code": "runaway", "token_local": "r-token",
            "recv_svcscriptcode": "spin", "opts": {"issync": true, "recv_timeout": 3}}))
        .channel(channel("fast", "fast"))
        .script("spin", "let n = 0; loop { n += 1; }")
        .script("fast", "body = #{ ok: true };")
        .start();
    let c = client();
    let runaways: Vec<_> = (0..3)
        .map(|_| {
            let req = c
                .get(srv.url("/channels/runaway/api"))
                .bearer_auth("r-token")
                .send();
            tokio::spawn(req)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let started = Instant::now();
        let (status, _, body) = json_of(
            c.get(srv.url("/channels/fast/api"))
                .bearer_auth("fast-token")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["ok"], true);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "a fast request waited {:?} behind runaway scripts",
            started.elapsed()
        );
    }
    for r in runaways {
        assert_eq!(r.await.unwrap().unwrap().status(), 504);
    }
}

#[tokio::test]
async fn hostile_scripts_end_in_errors_and_the_channel_keeps_serving() {
    let cases = [
        ("recurse", "fn f(n) { f(n + 1) } f(0);"),
        ("double", "let s = \"ab\"; loop { s += s; }"),
        ("bigarray", "let a = []; a.pad(200000, 0);"),
        ("overflow", "let x = 9223372036854775807; x += 1;"),
        ("throwmap", "throw #{ code: 7 };"),
        ("sleepy", "sleep(5);"),
        ("unknownfn", "frobnicate(1, 2);"),
        ("evil", "eval(\"1 + 1\");"),
        (
            "deep",
            &format!("let x = {}1{};", "(".repeat(10_000), ")".repeat(10_000)),
        ),
    ];
    let mut project = Project::new().script("ok", "body = #{ ok: true };");
    for (code, src) in &cases {
        project = project.channel(channel(code, code)).script(code, src);
    }
    let srv = project.with_unknown_calls().start();
    let c = client();
    for (code, _) in &cases {
        let url = srv.url(&format!("/channels/{code}/api?token={code}-token"));
        let started = Instant::now();
        let (status, _, body) = json_of(c.get(&url).send().await.unwrap()).await;
        assert_eq!(status, 500, "{code}: {body}");
        assert_eq!(body["error"], "script_error", "{code}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{code} took {:?}",
            started.elapsed()
        );
    }
    common::assert_serving(&srv).await;
}

#[tokio::test]
async fn scripts_import_sibling_modules_and_use_the_api() {
    let srv = Project::new()
        .config("[[users]]\nid = \"bot\"\nname = \"bot\"\nroles = [\"writer\"]")
        .channel(
            json!({"code": "api", "token_local": "api-token", "recv_svcscriptcode": "main",
            "opts": {"issync": true, "userid": "bot", "roles": ["reader"]}}),
        )
        .script(
            "util",
            "fn greet(name) { `hello ${name}` }\nexport const ANSWER = 42;",
        )
        .script(
            "main",
            r#"
            import "util" as util;
            let q = parse_query("a=1&b=two%20words");
            body = #{
                greet: util::greet("ops"), answer: util::ANSWER, q: q,
                json: to_json(#{ k: [1, 2] }), parsed: parse_json("{\"x\": [true]}"),
                md5: md5_hex("abc"), sha: sha256_hex("abc"), hmac: hmac_sha256_hex("key", "msg"),
                b64: base64_encode("hi there"), unb64: base64_decode("aGkgdGhlcmU="),
                user: user_id(), reader: has_role("reader"), writer: has_role("writer"),
                admin: has_role("admin"), uuid: uuid(), now: now()
            };
            log_info("api ran");
            "#,
        )
        .start();
    let (status, _, body) = json_of(
        client()
            .get(srv.url("/channels/api/api"))
            .bearer_auth("api-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["greet"], "hello ops");
    assert_eq!(body["answer"], 42);
    assert_eq!(body["q"], json!({"a": "1", "b": "two words"}));
    assert_eq!(body["json"], r#"{"k":[1,2]}"#);
    assert_eq!(body["parsed"], json!({"x": [true]}));
    assert_eq!(body["md5"], "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(
        body["sha"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        body["hmac"],
        "2d93cbc1be167bcb1637a4a23cbff01a7878f0c50ee833954ea5221bb1b8c628"
    );
    assert_eq!(body["b64"], "aGkgdGhlcmU=");
    assert_eq!(body["unb64"], "hi there");
    assert_eq!(body["user"], "bot");
    assert_eq!(body["reader"], true);
    assert_eq!(body["writer"], true, "the roles of opts.userid are added");
    assert_eq!(body["admin"], false);
    assert!(uuid::Uuid::parse_str(body["uuid"].as_str().unwrap()).is_ok());
    assert!(chrono::DateTime::parse_from_rfc3339(body["now"].as_str().unwrap()).is_ok());
    assert!(srv.wait_for_log("api ran", Duration::from_secs(5)));
}

#[tokio::test]
async fn healthz_and_metrics_answer() {
    let srv = Project::new()
        .channel(channel("m", "m"))
        .script("m", "body = 1;")
        .start();
    let c = client();
    let (status, _, body) = json_of(c.get(srv.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    if common::cluster_mode() {
        assert_eq!(
            (&body["status"], &body["cluster"]),
            (&json!("ok"), &json!("connected")),
            "{body}"
        );
        assert!(body["node"].is_string(), "{body}");
    } else {
        assert_eq!(body, json!({"status": "ok"}));
    }
    c.get(srv.url("/channels/m/api?token=m-token"))
        .send()
        .await
        .unwrap();
    let text = common::metrics_text(&srv).await;
    assert!(
        text.contains(r#"switchyard_http_requests_total{channel="m",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("switchyard_script_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn json_logs_have_one_line_per_request_with_its_fields() {
    let srv = Project::new()
        .config("log_format = \"json\"")
        .channel(channel("j", "j"))
        .script("j", "status = 418;")
        .start();
    let (_, headers, _) = json_of(
        client()
            .get(srv.url("/channels/j/api?token=j-token"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(srv.wait_for_log(&id, Duration::from_secs(5)));
    let line = srv
        .logs()
        .lines()
        .find(|l| l.contains(&id))
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON log line"))
        .unwrap();
    assert_eq!(line["channel"], "j");
    assert_eq!(line["status"], 418);
    assert_eq!(line["request_id"], id);
    assert!(line.get("duration_ms").is_some(), "{line}");
}

/// Plain channel codes take the server's hot path; a percent-encoded code goes
/// through the router. Both must answer the same, errors included.
#[tokio::test]
async fn encoded_and_plain_channel_paths_answer_alike() {
    let srv = Project::new()
        .channel(channel("echo", "echo"))
        .script("echo", ECHO)
        .start();
    for path in ["/channels/echo/api/a/b", "/channels/%65cho/api/a/b"] {
        let (status, headers, body) = json_of(
            client()
                .post(srv.url(&format!("{path}?token=echo-token")))
                .body("x")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["channel"], "echo");
        assert_eq!(body["path"], "/a/b");
        assert_eq!(
            body["request_id"],
            headers["x-request-id"].to_str().unwrap()
        );

        let (status, headers, body) =
            json_of(client().post(srv.url(path)).send().await.unwrap()).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(
            body["request_id"],
            headers["x-request-id"].to_str().unwrap()
        );
    }
    for path in ["/channels/nope/api", "/channels/n%6fpe/api"] {
        let (status, _, body) = json_of(client().get(srv.url(path)).send().await.unwrap()).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"], "unknown_channel");
    }
    // Both kinds are counted under their channel.
    let metrics = common::metrics_text(&srv).await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with(r#"switchyard_http_requests_total{channel="echo",status="200"}"#))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.ends_with(" 2"), "{line}");
}
