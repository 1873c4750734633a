//! Script authoring (SPEC §10 "Authoring", issue #22): mistakes caught when a
//! script is saved, the library made for integrations, errors that say where.

mod common;

use std::time::Duration;

use common::{admin_get, channel, client, json_of, send_job, wait_job, Project, Server, Upstream};
use serde_json::{json, Value};

const ADMIN: &str = "authoring-admin";

fn project() -> Project {
    Project::new().config(&format!(
        "admin_token = \"{ADMIN}\"\nexpose_script_errors = true"
    ))
}

async fn put_script(srv: &Server, code: &str, source: &str) -> (u16, Value) {
    let resp = client()
        .put(srv.url(&format!("/admin/scripts/{code}")))
        .bearer_auth(ADMIN)
        .body(source.to_owned())
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    (status, body)
}

/// Calls channel `code`'s HTTP API with `body`; (status, JSON answer).
use common::post_api as call;

#[tokio::test]
async fn a_misspelt_function_is_refused_when_saved_and_reported_by_check() {
    let srv = project()
        .script(
            "helpers",
            "fn order_total(o) { o.total } private fn hidden() { 1 }",
        )
        .start();
    let (status, body) = put_script(
        &srv,
        "hook",
        "let raw = startparam(4);\nlet sig = hmac_sha265_hex(\"k\", raw);\nbody = sig;",
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "compile_error");
    assert_eq!(
        (body["line"].clone(), body["col"].clone()),
        (json!(2), json!(11))
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("hmac_sha265_hex") && message.contains("did you mean hmac_sha256_hex"),
        "{message}"
    );
    // Nothing was written: the script does not exist.
    let (status, _) = admin_get(&srv, ADMIN, "/admin/scripts/hook").await;
    assert_eq!(status, 404);

    // Functions of the script, of an imported module, closures, Rhai's own and ours: no alarm.
    let good = r#"
        import "helpers" as h;
        fn twice(x) { x * 2 }
        let f = |x| x + 1;
        let o = #{ total: 3, act: |x| x };
        body = #{ t: h::order_total(o), two: twice(f(1)), act: o.act(1),
                  ids: [1, 2].map(|v| v.to_string()).join(","), enc: url_encode("a b"),
                  now: unix_time() > 0, len: "abc".len(), kind: type_of(o) };
    "#;
    let (status, body) = put_script(&srv, "good", good).await;
    assert_eq!(status, 201, "{body}");
    // A module function it does not export, or a private one, is unknown too.
    let (status, body) =
        put_script(&srv, "bad2", "import \"helpers\" as h;\nh::order_totl(1);").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("did you mean order_total"),
        "{body}"
    );
    let (status, _) = put_script(&srv, "bad3", "import \"helpers\" as h;\nh::hidden();").await;
    assert_eq!(status, 422);

    // `switchyard check` says the same of a file on disk, and fails.
    let project = Project::new()
        .channel(channel("hook", "hook"))
        .script("hook", "let x = 1;\nlet s = hmac_sha265_hex(\"k\", \"m\");");
    let (code, out, err) = project.check();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "hook.rhai:2:9: unknown function hmac_sha265_hex (did you mean hmac_sha256_hex"
        ),
        "{out}"
    );
}

#[tokio::test]
async fn an_answer_set_on_an_issync_false_channel_is_a_warning() {
    let mut doc = channel("inbox", "inbox");
    doc["opts"]["issync"] = json!(false);
    let srv = project()
        .channel(doc.clone())
        .script("inbox", "kv_set(\"last\", startparam(4));")
        .start();
    let (status, body) = put_script(
        &srv,
        "inbox",
        "kv_set(\"x\", 1);\nstatus = 401;\nbody = #{ error: \"no\" };",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let warnings = body["status"]["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 2, "{body}");
    assert_eq!(
        (warnings[0]["line"].clone(), warnings[0]["col"].clone()),
        (json!(2), json!(1))
    );
    let message = warnings[0]["message"].as_str().unwrap();
    assert!(
        message.contains("issync") && message.contains("status"),
        "{message}"
    );
    // The channel's own status says so too.
    let (_, shown) = admin_get(&srv, ADMIN, "/admin/channels/inbox").await;
    assert_eq!(
        shown["status"]["warnings"].as_array().unwrap().len(),
        2,
        "{shown}"
    );
    // The listing shows it as well.
    let (_, shown) = admin_get(&srv, ADMIN, "/admin/channels").await;
    assert!(shown["channels"][0]["status"].get("warnings").is_some());

    let project = Project::new().channel(doc).script("inbox", "status = 401;");
    let (code, out, err) = project.check();
    assert_eq!(code, 0, "a warning does not fail check: {out}");
    assert!(out.is_empty(), "stdout holds problems only: {out}");
    assert!(
        err.contains("inbox.rhai:1:1: warning:") && err.contains("issync = false"),
        "{err}"
    );
}

#[tokio::test]
async fn runtime_errors_say_where_and_what_was_missing() {
    let srv = project()
        .channel(channel("calc", "calc"))
        .script(
            "calc",
            "let order = parse_json(startparam(4));\nlet avg = order.total / order.qty_total;\nbody = avg;",
        )
        .channel(channel("caught", "caught"))
        .script(
            "caught",
            "let r = ();\ntry {\n  let x = 1;\n  x.foo.bar();\n} catch (e) { r = e; }\nlet t = ();\ntry { throw #{ code: 7 }; } catch (e) { t = e; }\nbody = #{ runtime: r, thrown: t };",
        )
        .with_unknown_calls()
        .start();
    let (status, body) = call(&srv, "calc", r#"{"total": 10.5}"#).await;
    assert_eq!(status, 500);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("calc.rhai:2:"),
        "names script and line: {message}"
    );
    assert!(
        message.contains("probably missing"),
        "hints at the missing field: {message}"
    );
    let (status, body) = call(&srv, "caught", "").await;
    assert_eq!(status, 200, "{body}");
    let runtime = &body["runtime"];
    assert_eq!(runtime["script"], "caught", "{body}");
    assert_eq!(runtime["line"], 4, "{body}");
    assert!(runtime["column"].as_i64().unwrap() > 0, "{body}");
    assert!(
        runtime["message"].as_str().unwrap().contains("foo"),
        "{body}"
    );
    let keys: Vec<&String> = runtime.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["column", "line", "message", "script"]);
    assert_eq!(
        body["thrown"],
        json!({"code": 7}),
        "a thrown value arrives as thrown"
    );
}

#[tokio::test]
async fn the_integration_library_works_from_scripts() {
    let srv = project()
        .channel(channel("lib", "lib"))
        .script(
            "lib",
            r#"
            let t = parse_time("2026-12-01T10:00:00+01:00");
            body = #{
                enc: url_encode("BOLT M8/ä?&=~._-"),
                dec: url_decode("BOLT%20M8%2F%C3%A4"),
                joined: join(["a", 1, true], ", "),
                method: ["x", "y"].join("/"),
                t: t,
                rfc2822: parse_time("Tue, 01 Dec 2026 09:00:00 GMT"),
                formatted: format_time(t, "%Y-%m-%d %H:%M:%S"),
                now_ok: unix_time() > 1700000000 && unix_time_ms() / 1000 >= unix_time() - 1,
            };
            "#,
        )
        .channel(channel("badtime", "badtime"))
        .script("badtime", "body = parse_time(\"yesterday\");")
        .start();
    let (status, body) = call(&srv, "lib", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enc"], "BOLT%20M8%2F%C3%A4%3F%26%3D~._-");
    assert_eq!(body["dec"], "BOLT M8/ä");
    assert_eq!(body["joined"], "a, 1, true");
    assert_eq!(body["method"], "x/y");
    assert_eq!(body["t"], 1_796_115_600);
    assert_eq!(body["rfc2822"], 1_796_115_600);
    assert_eq!(body["formatted"], "2026-12-01 09:00:00");
    assert_eq!(body["now_ok"], true);
    let (status, body) = call(&srv, "badtime", "").await;
    assert_eq!(status, 500);
    assert!(
        body["message"].as_str().unwrap().contains("RFC 3339"),
        "{body}"
    );
}

#[tokio::test]
async fn kv_keys_delete_and_expiry() {
    let srv = project()
        .channel(channel("kv", "kv"))
        .script(
            "kv",
            r#"
            let q = parse_json(startparam(4));
            switch q.op {
                "set" => kv_set(q.key, q.value),
                "ttl" => kv_set(q.key, q.value, q.ttl),
                "del" => { body = kv_delete(q.key); return; }
            }
            body = #{ keys: kv_keys(q.prefix ?? ""), value: kv_get(q.key ?? "none") };
            "#,
        )
        .start();
    for k in ["order:2", "order:1", "other", "order:3"] {
        call(
            &srv,
            "kv",
            &json!({"op": "set", "key": k, "value": k}).to_string(),
        )
        .await;
    }
    let (_, body) = call(&srv, "kv", r#"{"op": "list", "prefix": "order:"}"#).await;
    assert_eq!(body["keys"], json!(["order:1", "order:2", "order:3"]));
    let (_, body) = call(&srv, "kv", r#"{"op": "del", "key": "order:2"}"#).await;
    assert_eq!(body, json!(true));
    let (_, body) = call(&srv, "kv", r#"{"op": "del", "key": "order:2"}"#).await;
    assert_eq!(body, json!(false));
    let (_, body) = call(
        &srv,
        "kv",
        r#"{"op": "ttl", "key": "session", "value": "s1", "ttl": 1}"#,
    )
    .await;
    assert_eq!(body["value"], "s1");
    assert_eq!(
        body["keys"],
        json!(["order:1", "order:3", "other", "session"])
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, body) = call(&srv, "kv", r#"{"op": "list", "key": "session"}"#).await;
    assert_eq!(body["value"], Value::Null, "gone after its TTL");
    assert_eq!(body["keys"], json!(["order:1", "order:3", "other"]));
    let (status, body) = call(
        &srv,
        "kv",
        r#"{"op": "ttl", "key": "k", "value": 1, "ttl": 0}"#,
    )
    .await;
    assert_eq!(status, 500, "{body}");
}

#[tokio::test]
async fn fail_ends_a_job_at_once_and_tags_find_jobs() {
    let up = Upstream::start().await;
    let srv = project()
        .channel(json!({"code": "erp", "token_local": "erp-token", "url": format!("{}/", up.base),
            "send_svcscriptcode": "erp_send", "opts": {"send_retries": 3}}))
        .script(
            "erp_send",
            r#"
            let order = parse_json(startparam(1));
            job_tag(`order-${order.id}`);
            if order.bad == true { fail(`order ${order.id} has no lines`); }
            let r = webquery(#{ method: "POST", path: "orders", query: #{ sku: order.sku } });
            result = r.status;
            "#,
        )
        .channel(channel("shop", "shop"))
        .script(
            "shop",
            r#"body = #{ job: channel_send("erp", parse_json(startparam(4)), #{ tag: ["shop", "web"] }) };"#,
        )
        .channel(channel("outside", "outside"))
        .script("outside", "job_tag(\"x\");")
        .start();
    // fail(): failed after one attempt, though three retries are left.
    let bad = send_job(&srv, ADMIN, "erp", &json!({"id": 7, "bad": true})).await;
    let job = wait_job(&srv, ADMIN, &bad, &["failed"], Duration::from_secs(10)).await;
    assert_eq!(job["attempt"], 1, "{job}");
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("order 7 has no lines"),
        "{job}"
    );
    assert_eq!(job["tags"], json!(["order-7"]));

    let good = send_job(&srv, ADMIN, "erp", &json!({"id": 8, "sku": "BOLT M8"})).await;
    wait_job(&srv, ADMIN, &good, &["succeeded"], Duration::from_secs(10)).await;
    assert_eq!(up.seen()[0].query.as_deref(), Some("sku=BOLT%20M8"));
    let (status, body) = admin_get(&srv, ADMIN, "/admin/jobs?tag=order-8").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [good.as_str()]);

    // Tags given when the job is made: by channel_send and by POST …/send?tag=.
    let (status, body) = call(&srv, "shop", r#"{"id": 9, "sku": "NUT"}"#).await;
    assert_eq!(status, 200, "{body}");
    let from_script = body["job"].as_str().unwrap().to_owned();
    let resp = client()
        .post(srv.url("/channels/erp/send?tag=crm&tag=batch-4"))
        .bearer_auth(ADMIN)
        .json(&json!({"id": 10, "sku": "NUT"}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 202);
    let from_api = body["job_id"].as_str().unwrap().to_owned();
    let job = wait_job(
        &srv,
        ADMIN,
        &from_script,
        &["succeeded"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(job["tags"], json!(["shop", "web", "order-9"]));
    let (_, body) = admin_get(&srv, ADMIN, "/admin/jobs?tag=batch-4").await;
    assert_eq!(body["jobs"][0]["id"], from_api.as_str());

    // Paging: newest first, `offset` skips.
    let (_, page) = admin_get(&srv, ADMIN, "/admin/jobs?channel=erp&limit=1&offset=1").await;
    let (_, all) = admin_get(&srv, ADMIN, "/admin/jobs?channel=erp").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(page["jobs"][0]["id"], all["jobs"][1]["id"]);
    // Outside a job, job_tag is a script error.
    let (status, body) = call(&srv, "outside", "").await;
    assert_eq!(status, 500);
    assert!(
        body["message"].as_str().unwrap().contains("job_tag"),
        "{body}"
    );
    // An unknown listing filter is 400, naming it.
    let (status, body) = admin_get(&srv, ADMIN, "/admin/jobs?tags=order-8").await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("\"tags\""),
        "{body}"
    );
    let (status, _) = admin_get(&srv, ADMIN, "/admin/channels?state=running").await;
    assert_eq!(status, 400);
    let (status, body) = admin_get(&srv, ADMIN, "/admin/jobs?test=maybe").await;
    assert_eq!((status, body["error"].clone()), (400, json!("bad_request")));
}
