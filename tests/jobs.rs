//! Send jobs, the durable inbox, schedules, kv and files against the real binary
//! and a real loopback upstream.

mod common;

use std::time::{Duration, Instant};

use common::{client, json_of, wait_job, Project, Server, Upstream};
use serde_json::{json, Value};

const ADMIN: &str = "adm";

/// The send script: POSTs the job's data to `path` with the remote token; a non-200 throws.
const SEND: &str = r#"
let d = parse_json(startparam(1));
if "wait" in d { job_wait(d.wait); result = #{ waiting: true }; return; }
let r = webquery(#{ method: "POST", path: d.path, body: d,
                    headers: #{ authorization: "Bearer " + token_remote() }, timeout_ms: 2000 });
if r.status != 200 { throw `upstream answered ${r.status}`; }
result = #{ status: r.status, attempt: startparam(4), job: startparam(3), channel: startparam(2) };
"#;

fn project(upstream: &Upstream, retries: u32) -> Project {
    Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(
            json!({"code": "erp", "token_local": "erp-token", "token_remote": "remote-secret",
            "url": format!("{}/api/", upstream.base), "send_svcscriptcode": "send",
            "opts": {"send_retries": retries}}),
        )
        .script("send", SEND)
}

async fn send(srv: &Server, code: &str, data: Value) -> String {
    let (status, _, body) = json_of(
        client()
            .post(srv.url(&format!("/channels/{code}/send")))
            .bearer_auth(ADMIN)
            .json(&data)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body["job_id"].as_str().unwrap().to_owned()
}

fn started_at(job: &Value, n: usize) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(job["attempts"][n]["started"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_send_job_calls_the_external_system_with_the_remote_token() {
    let up = Upstream::start().await;
    let srv = project(&up, 3).start();
    let id = send(&srv, "erp", json!({"path": "ok", "order": 42})).await;
    let job = wait_job(
        &srv,
        ADMIN,
        &id,
        &["succeeded", "failed"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["kind"], "send");
    assert_eq!(job["channel"], "erp");
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["max_attempts"], 4);
    assert_eq!(
        job["result"],
        json!({"status": 200, "attempt": "1", "job": id, "channel": "erp"})
    );
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(job["attempts"][0]["outcome"], "succeeded");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/api/ok");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer remote-secret")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&seen[0].body).unwrap()["order"],
        42
    );
    // Without admin credentials: 401.
    let resp = client()
        .post(srv.url("/channels/erp/send"))
        .bearer_auth("erp-token")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn each_attempt_keeps_its_calls_and_log_lines_without_credentials() {
    let up = Upstream::start().await;
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(
            json!({"code": "erp", "token_local": "erp-token", "token_remote": "remote-secret",
            "url": format!("{}/api/", up.base), "send_svcscriptcode": "traced",
            "opts": {"send_retries": 2}}),
        )
        .script(
            "traced",
            r#"
let d = parse_json(startparam(1));
log_info(`attempt ${startparam(4)} for order ${d.order}`);
let r = webquery(#{ method: "POST", path: "fail/1", query: #{ api_key: token_remote(), page: 2 },
                    body: #{ order: d.order, auth: token_remote() },
                    headers: #{ authorization: "Bearer " + token_remote(), "x-trace": "t-1" } });
if r.status != 200 { log_warn("upstream said " + r.status); throw `upstream answered ${r.status}`; }
result = #{ ok: true };
"#,
        )
        .start();
    let id = send(&srv, "erp", json!({"order": 77})).await;
    // While it waits for its second attempt, the card shows what it was made with.
    let deadline = Instant::now() + Duration::from_secs(10);
    let queued = loop {
        let job = wait_job(
            &srv,
            ADMIN,
            &id,
            &["queued", "succeeded"],
            Duration::from_secs(10),
        )
        .await;
        if job["attempts"].as_array().is_some_and(|a| !a.is_empty()) || Instant::now() > deadline {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if queued["state"] == "queued" {
        assert_eq!(queued["input"], json!({"order": 77}), "{queued}");
    }
    let job = wait_job(
        &srv,
        ADMIN,
        &id,
        &["succeeded", "failed"],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job}");
    let first = &attempts[0]["calls"][0];
    assert_eq!(first["method"], "POST");
    assert_eq!(first["response"]["status"], 500, "{first}");
    assert_eq!(first["response"]["body"], "not yet");
    assert_eq!(first["request"]["headers"]["authorization"], "***");
    assert_eq!(first["request"]["headers"]["x-trace"], "t-1");
    let url = first["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/api/fail/1?", up.base)),
        "{url}"
    );
    assert!(
        url.contains("api_key=***") && url.contains("page=2"),
        "{url}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(first["request"]["body"].as_str().unwrap()).unwrap(),
        json!({"order": 77, "auth": "***"})
    );
    assert!(first["duration_ms"].is_u64());
    let logs: Vec<&str> = attempts[0]["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(logs, ["attempt 1 for order 77", "upstream said 500"]);
    assert_eq!(attempts[0]["logs"][1]["level"], "warn");
    assert_eq!(attempts[1]["calls"][0]["response"]["status"], 200);
    assert_eq!(attempts[1]["calls"][0]["response"]["body"], "{\"ok\":true}");
    assert_eq!(attempts[1]["logs"][0]["text"], "attempt 2 for order 77");
    // The upstream got the real token; the job view never shows it.
    assert_eq!(
        up.seen()[0].authorization.as_deref(),
        Some("Bearer remote-secret")
    );
    assert!(!job.to_string().contains("remote-secret"), "{job}");
    // A succeeded job's input is not kept.
    assert_eq!(job["input"], Value::Null);
}

#[tokio::test]
async fn failures_are_retried_with_exponential_backoff() {
    let up = Upstream::start().await;
    let srv = project(&up, 3).start();
    let id = send(&srv, "erp", json!({"path": "fail/2"})).await;
    let job = wait_job(
        &srv,
        ADMIN,
        &id,
        &["succeeded", "failed"],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 3);
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(
        (
            attempts[0]["outcome"].as_str(),
            attempts[1]["outcome"].as_str()
        ),
        (Some("failed"), Some("failed"))
    );
    assert!(attempts[0]["error"]
        .as_str()
        .unwrap()
        .contains("upstream answered 500"));
    let gap1 = (started_at(&job, 1) - started_at(&job, 0)).num_milliseconds();
    let gap2 = (started_at(&job, 2) - started_at(&job, 1)).num_milliseconds();
    assert!((750..1600).contains(&gap1), "first backoff ~1 s: {gap1} ms");
    assert!(
        (1550..2900).contains(&gap2),
        "second backoff ~2 s: {gap2} ms"
    );
    assert_eq!(up.seen().len(), 3);
}

#[tokio::test]
async fn exhausted_jobs_fail_and_a_manual_retry_runs_them_again() {
    let up = Upstream::start().await;
    let srv = project(&up, 1).start();
    let id = send(&srv, "erp", json!({"path": "fail/2"})).await;
    let job = wait_job(
        &srv,
        ADMIN,
        &id,
        &["failed", "succeeded"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(
        (job["attempt"].as_i64(), job["max_attempts"].as_i64()),
        (Some(2), Some(2))
    );
    assert!(job["last_error"].as_str().unwrap().contains("500"));

    let (status, _, body) = json_of(
        client()
            .post(srv.url(&format!("/admin/jobs/{id}/retry")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let job = wait_job(&srv, ADMIN, &id, &["succeeded"], Duration::from_secs(10)).await;
    assert_eq!(job["attempt"], 3, "the retry counts as an attempt");
    let (status, _, body) = json_of(
        client()
            .post(srv.url(&format!("/admin/jobs/{id}/retry")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("job_not_retryable"))
    );
    let (status, _, _) = json_of(
        client()
            .post(srv.url("/admin/jobs/nope/retry"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
}

async fn callback(srv: &Server, id: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = client()
        .post(srv.url(&format!("/channels/erp/jobs/{id}/result")))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let (status, _, body) = json_of(req.send().await.unwrap()).await;
    (status, body)
}

#[tokio::test]
async fn waiting_jobs_end_with_the_callback_or_time_out() {
    let up = Upstream::start().await;
    let srv = project(&up, 3).start();

    let ok = send(&srv, "erp", json!({"wait": 30})).await;
    let job = wait_job(&srv, ADMIN, &ok, &["waiting"], Duration::from_secs(10)).await;
    assert!(job["next_attempt_at"].is_string());
    assert_eq!(
        callback(&srv, &ok, None, json!({"success": true})).await.0,
        401
    );
    assert_eq!(
        callback(&srv, &ok, Some("wrong"), json!({"success": true}))
            .await
            .0,
        401
    );
    let (status, body) = callback(
        &srv,
        &ok,
        Some("erp-token"),
        json!({"success": true, "data": {"erp_id": "X-1"}}),
    )
    .await;
    assert_eq!((status, body["state"].as_str()), (200, Some("succeeded")));
    let job = wait_job(&srv, ADMIN, &ok, &["succeeded"], Duration::from_secs(5)).await;
    assert_eq!(job["result"], json!({"erp_id": "X-1"}));
    let (status, body) = callback(&srv, &ok, Some("erp-token"), json!({"success": true})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("job_not_waiting"))
    );
    assert_eq!(
        callback(
            &srv,
            "no-such-job",
            Some("erp-token"),
            json!({"success": true})
        )
        .await
        .0,
        404
    );

    let refused = send(&srv, "erp", json!({"wait": 30})).await;
    wait_job(&srv, ADMIN, &refused, &["waiting"], Duration::from_secs(10)).await;
    let (status, _) = callback(
        &srv,
        &refused,
        Some("erp-token"),
        json!({"success": false, "reason": "out of stock"}),
    )
    .await;
    assert_eq!(status, 200);
    let job = wait_job(&srv, ADMIN, &refused, &["failed"], Duration::from_secs(5)).await;
    assert_eq!(job["last_error"], "out of stock");

    let late = send(&srv, "erp", json!({"wait": 1})).await;
    let job = wait_job(&srv, ADMIN, &late, &["timed_out"], Duration::from_secs(10)).await;
    assert_eq!(job["last_error"], "no result in time");
    // A timed-out job can be retried by hand.
    let (status, _, _) = json_of(
        client()
            .post(srv.url(&format!("/admin/jobs/{late}/retry")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    wait_job(&srv, ADMIN, &late, &["waiting"], Duration::from_secs(10)).await;
}

#[tokio::test]
async fn webquery_to_another_origin_fails_without_connecting() {
    let up = Upstream::start().await;
    let other = Upstream::start().await;
    let srv = project(&up, 0).start();
    let id = send(
        &srv,
        "erp",
        json!({"path": format!("{}/steal", other.base)}),
    )
    .await;
    let job = wait_job(
        &srv,
        ADMIN,
        &id,
        &["failed", "succeeded"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(job["state"], "failed");
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("outside the origin"),
        "{job}"
    );
    assert!(
        other.seen().is_empty(),
        "no connection reached the other host"
    );
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn outbound_any_host_lets_webquery_leave_the_origin() {
    let up = Upstream::start().await;
    let other = Upstream::start().await;
    let srv = project(&up, 0).config("outbound_any_host = true").start();
    let id = send(&srv, "erp", json!({"path": format!("{}/ok", other.base)})).await;
    let job = wait_job(
        &srv,
        ADMIN,
        &id,
        &["failed", "succeeded"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(other.seen().len(), 1);
}

fn inbox_project(up: &Upstream) -> Project {
    Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(
            json!({"code": "hook", "token_local": "hook-token", "url": format!("{}/", up.base),
            "recv_svcscriptcode": "forward", "opts": {"issync": false}}),
        )
        .script(
            "forward",
            r#"
            let t = timestamp(); while t.elapsed < 0.02 { }
            webquery(#{ method: "POST", path: "inbox", body: startparam(4) });
            result = #{ forwarded: startparam(8) };
            "#,
        )
}

#[tokio::test]
async fn the_inbox_acknowledges_then_runs_in_arrival_order() {
    let up = Upstream::start().await;
    let srv = inbox_project(&up).start();
    let mut ids = Vec::new();
    for i in 0..20 {
        let (status, headers, body) = json_of(
            client()
                .post(srv.url("/channels/hook/api/orders?token=hook-token"))
                .body(format!("{i}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(
            body["request_id"],
            headers["x-request-id"].to_str().unwrap()
        );
        ids.push(body["request_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let job = wait_job(
            &srv,
            ADMIN,
            id,
            &["succeeded", "failed"],
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["kind"], "recv");
        assert_eq!(job["result"]["forwarded"], id.as_str());
    }
    let bodies: Vec<String> = up.seen().into_iter().map(|s| s.body).collect();
    let want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(bodies, want, "one at a time, in arrival order");

    let (status, _, list) = json_of(
        client()
            .get(srv.url("/admin/jobs?channel=hook&kind=recv&state=succeeded&limit=5"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let listed = list["jobs"].as_array().unwrap();
    assert_eq!(listed.len(), 5);
    assert_eq!(listed[0]["id"], ids[19].as_str(), "newest first");
    let (status, _, _) = json_of(
        client()
            .get(srv.url("/admin/jobs?state=bogus"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn acknowledged_requests_and_started_jobs_survive_kill_9() {
    let up = Upstream::start().await;
    let srv = inbox_project(&up)
        .channel(
            json!({"code": "erp", "token_local": "erp-token", "token_remote": "r",
            "url": format!("{}/api/", up.base), "send_svcscriptcode": "send"}),
        )
        .script("send", SEND)
        .start();
    let mut acked = Vec::new();
    for i in 0..40 {
        let (status, _, body) = json_of(
            client()
                .post(srv.url("/channels/hook/api?token=hook-token"))
                .body(format!("req-{i}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 202);
        acked.push((
            format!("req-{i}"),
            body["request_id"].as_str().unwrap().to_owned(),
        ));
    }
    let mut sends = Vec::new();
    for i in 0..5 {
        sends.push(send(&srv, "erp", json!({"path": "ok", "n": i})).await);
    }
    let project = srv.kill9();
    let srv = project.start();
    for (_, id) in &acked {
        let job = wait_job(
            &srv,
            ADMIN,
            id,
            &["succeeded", "failed"],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    for id in &sends {
        let job = wait_job(
            &srv,
            ADMIN,
            id,
            &["succeeded", "failed"],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    let bodies: Vec<String> = up
        .seen()
        .into_iter()
        .filter(|s| s.path == "/inbox")
        .map(|s| s.body)
        .collect();
    for (body, _) in &acked {
        assert!(bodies.contains(body), "{body} never ran");
    }
    // At least once: a run cut by the kill may run again, nothing else repeats.
    assert!(
        bodies.len() <= acked.len() + 1,
        "{} runs for {} requests",
        bodies.len(),
        acked.len()
    );
}

#[tokio::test]
async fn schedules_run_on_time_and_never_overlap() {
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(
            json!({"code": "poller", "token_local": "p", "opts": {"schedule": [
                {"every": "1s", "script": "tick"},
                {"every": "1s", "script": "slow"}
            ]}}),
        )
        .channel(
            json!({"code": "off", "token_local": "o", "opts": {"disabled": true, "schedule": [
                {"every": "1s", "script": "tick"}
            ]}}),
        )
        .script(
            "tick",
            "result = #{ at: startparam(1), channel: startparam(2) };",
        )
        .script(
            "slow",
            "let t = timestamp(); while t.elapsed < 2.5 { } result = #{ at: startparam(1) };",
        )
        .start();
    tokio::time::sleep(Duration::from_millis(4800)).await;
    // The channel says when its schedule runs next (within the second).
    let (_, poller) = common::admin_get(&srv, ADMIN, "/admin/channels/poller").await;
    let next = chrono::DateTime::parse_from_rfc3339(poller["next_run"].as_str().unwrap()).unwrap();
    let ahead = next
        .signed_duration_since(chrono::Utc::now())
        .num_milliseconds();
    assert!(
        (-1500..=1500).contains(&ahead),
        "next run {next}, {ahead} ms ahead"
    );
    let (_, _, list) = json_of(
        client()
            .get(srv.url("/admin/jobs?kind=schedule&limit=100"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let jobs = list["jobs"].as_array().unwrap();
    assert!(
        jobs.iter().all(|j| j["channel"] == "poller"),
        "a disabled channel runs no schedule"
    );
    let ticks: Vec<&Value> = jobs
        .iter()
        .filter(|j| j["result"].get("channel").is_some())
        .collect();
    assert!(
        (3..=6).contains(&ticks.len()),
        "{} ticks in 4.8 s",
        ticks.len()
    );
    let mut times: Vec<chrono::DateTime<chrono::FixedOffset>> = ticks
        .iter()
        .map(|j| chrono::DateTime::parse_from_rfc3339(j["result"]["at"].as_str().unwrap()).unwrap())
        .collect();
    times.sort();
    // On a one-second grid; on a loaded machine a tick may be skipped (never doubled).
    let gaps: Vec<i64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).num_seconds())
        .collect();
    assert!(
        gaps.iter().all(|g| (1..=2).contains(g)),
        "scheduled a second apart: {times:?}"
    );
    assert!(
        gaps.iter().filter(|g| **g == 1).count() * 2 >= gaps.len(),
        "{times:?}"
    );
    let slow: Vec<&Value> = jobs
        .iter()
        .filter(|j| j["result"].get("channel").is_none())
        .collect();
    assert!((1..=2).contains(&slow.len()), "{} slow runs", slow.len());
    let metrics = common::metrics_text(&srv).await;
    assert!(
        metrics.contains("switchyard_schedule_skipped_total{channel=\"poller\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn kv_values_persist_across_a_restart() {
    let srv = Project::new()
        .channel(json!({"code": "kv", "token_local": "kv-token", "recv_svcscriptcode": "kv", "opts": {"issync": true}}))
        .script(
            "kv",
            r#"
            let key = startparam(2).sub_string(1);
            if startparam(1) == "PUT" { kv_set(key, parse_json(startparam(4))); }
            if startparam(1) == "DELETE" { kv_set(key, ()); }
            let v = kv_get(key);
            body = #{ value: v, missing: v == () };
            "#,
        )
        .start();
    let call = |srv: &Server, method: &str, key: &str, body: &str| {
        client()
            .request(
                method.parse().unwrap(),
                srv.url(&format!("/channels/kv/api/{key}?token=kv-token")),
            )
            .body(body.to_owned())
            .send()
    };
    let (_, _, body) = json_of(
        call(&srv, "PUT", "order", r#"{"n": 1, "tags": ["a"]}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["value"], json!({"n": 1, "tags": ["a"]}));
    let (_, _, body) = json_of(call(&srv, "GET", "absent", "").await.unwrap()).await;
    assert_eq!(body, json!({"value": null, "missing": true}));
    let srv = srv.kill9().start();
    let (_, _, body) = json_of(call(&srv, "GET", "order", "").await.unwrap()).await;
    assert_eq!(body["value"], json!({"n": 1, "tags": ["a"]}));
    let (_, _, body) = json_of(call(&srv, "DELETE", "order", "").await.unwrap()).await;
    assert_eq!(body["missing"], true);
}

#[tokio::test]
async fn the_files_api_stores_files_and_refuses_traversal() {
    let srv = Project::new()
        .config("max_file_bytes = 1000")
        .channel(
            json!({"code": "docs", "token_local": "docs-token", "recv_svcscriptcode": "files",
            "opts": {"issync": true, "allow_files_api": true}}),
        )
        .channel(json!({"code": "plain", "token_local": "plain-token"}))
        .script(
            "files",
            r#"
            file_write("from-script.txt", "written by " + startparam(7));
            body = #{ read: file_read("report.csv") };
        "#,
        )
        .start();
    let url = |name: &str| srv.url(&format!("/channels/docs/files/{name}?token=docs-token"));
    let resp = client()
        .put(url("report.csv"))
        .body("a,b\n1,2\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = client()
        .put(url("report.csv"))
        .body("a,b\n3,4\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client().get(url("report.csv")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "a,b\n3,4\n");

    let (status, _, body) = json_of(
        client()
            .get(srv.url("/channels/docs/api?token=docs-token"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["read"].as_str()), (200, Some("a,b\n3,4\n")));
    let resp = client().get(url("from-script.txt")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "written by docs");

    for bad in [
        ".env",
        "..",
        "%2e%2e",
        "a%2Fb",
        "..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        &"x".repeat(300),
        "a%20b",
        "%00",
    ] {
        let status = common::raw_get(
            &srv,
            &format!("/channels/docs/files/{bad}?token=docs-token"),
        )
        .await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, _, body) = json_of(client().get(url(".env")).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_file_name"))
    );
    // A raw "../" never reaches a file route at all.
    assert_eq!(
        common::raw_get(&srv, "/channels/docs/files/../../x?token=docs-token").await,
        404
    );
    let (status, _, body) = json_of(
        client()
            .put(url("big.bin"))
            .body(vec![0u8; 1001])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    let (status, _, _) = json_of(client().get(url("missing.txt")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert_eq!(
        client()
            .delete(url("report.csv"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        client()
            .get(url("report.csv"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        client()
            .get(srv.url("/channels/docs/files/x?token=wrong"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let (status, _, body) = json_of(
        client()
            .get(srv.url("/channels/plain/files/x?token=plain-token"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("files_api_disabled"))
    );
}

#[tokio::test]
async fn channel_send_from_a_script_and_job_finished_events() {
    let up = Upstream::start().await;
    let srv = project(&up, 0)
        .channel(json!({"code": "front", "token_local": "f", "recv_svcscriptcode": "front", "opts": {"issync": true}}))
        .channel(json!({"code": "watch", "type": "events", "token_local": "w", "opts": {"events": ["job.>"]}}))
        .script("front", r#"body = #{ job: channel_send("erp", #{ path: "ok", from: "front" }) };"#)
        .start();
    let (status, _, body) = json_of(
        client()
            .post(srv.url("/channels/front/api?token=f"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["job"].as_str().unwrap().to_owned();
    wait_job(&srv, ADMIN, &id, &["succeeded"], Duration::from_secs(10)).await;
    // The event was queued for the offline watcher; it arrives on connect.
    let ws_url = srv
        .url("/channels/watch/ws?token=w")
        .replacen("http", "ws", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    use futures_util::StreamExt;
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no job.finished event"
        );
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v[1]["data"]["id"] == id.as_str() {
                assert_eq!(v[1]["name"], "job.finished");
                assert_eq!(v[1]["data"]["state"], "succeeded");
                break;
            }
        }
    }
}

#[tokio::test]
async fn finished_jobs_are_pruned_after_job_retention() {
    let up = Upstream::start().await;
    let srv = project(&up, 0).config("job_retention = \"1s\"").start();
    let id = send(&srv, "erp", json!({"path": "ok"})).await;
    wait_job(&srv, ADMIN, &id, &["succeeded"], Duration::from_secs(10)).await;
    let started = Instant::now();
    loop {
        let resp = client()
            .get(srv.url(&format!("/admin/jobs/{id}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        if resp.status() == 404 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "a finished job outlived job_retention"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Issue #32 point 1 (the API): a bulk retry by filter, with the count first
/// (`dry_run`), audited.
#[tokio::test]
async fn a_bulk_retry_takes_up_the_failed_jobs_its_filters_name() {
    let up = Upstream::start().await;
    let srv = project(&up, 0).start();
    // Three jobs fail once (`fail/1`: 500 then 200), one fails for another reason.
    let mut failing = Vec::new();
    for n in ["a", "b", "c"] {
        failing.push(send(&srv, "erp", json!({"path": format!("{n}/fail/1")})).await);
    }
    let other = send(&srv, "erp", json!({"path": "fail/1", "wait": "x"})).await;
    for id in failing.iter().chain([&other]) {
        wait_job(&srv, ADMIN, id, &["failed"], Duration::from_secs(10)).await;
    }
    let bulk = |body: Value| {
        let request = client()
            .post(srv.url("/admin/jobs/retry"))
            .bearer_auth(ADMIN)
            .json(&body);
        async move { json_of(request.send().await.unwrap()).await }
    };
    // First the count: nothing changes.
    let (status, _, preview) =
        bulk(json!({"channel": "erp", "error": "UPSTREAM ANSWERED 500", "dry_run": true})).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["matched"], 3, "{preview}");
    assert_eq!(preview["retried"], 0);
    let job = wait_job(
        &srv,
        ADMIN,
        &failing[0],
        &["failed"],
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(job["state"], "failed");
    // Then for real: the three run again and succeed; the fourth stays failed.
    let (status, _, done) = bulk(json!({"channel": "erp", "error": "upstream answered 500"})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (done["matched"].as_u64(), done["retried"].as_u64()),
        (Some(3), Some(3)),
        "{done}"
    );
    for id in &failing {
        let job = wait_job(&srv, ADMIN, id, &["succeeded"], Duration::from_secs(10)).await;
        assert_eq!(job["state"], "succeeded");
    }
    let job = wait_job(&srv, ADMIN, &other, &["failed"], Duration::from_secs(1)).await;
    assert_eq!(job["state"], "failed");
    // A time range that holds none; bad input.
    let (_, _, none) = bulk(json!({"until": "2000-01-01T00:00:00Z", "dry_run": true})).await;
    assert_eq!(none["matched"], 0);
    let (status, _, _) = bulk(json!({"state": "succeeded"})).await;
    assert_eq!(status, 400);
    let (status, _, _) = bulk(json!({"since": "yesterday"})).await;
    assert_eq!(status, 400);
    let (status, _, _) = bulk(json!({"who": "me"})).await;
    assert_eq!(status, 400);
    // Audited.
    let (_, _, audit) = json_of(
        client()
            .get(srv.url("/admin/audit?action=job.retry"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(audit["entries"].as_array().unwrap().len() >= 2, "{audit}");
}
