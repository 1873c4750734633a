//! The integration module as the seeds describe it (SPEC §2, §3, §7, §9):
//! retry changes, credentials that expire, stop and start, automatic start.

mod common;

use std::time::{Duration, Instant};

use common::{client, json_of, send_job, wait_job, ws_close_code, ws_connect, Project, Server};
use serde_json::{json, Value};

const ADMIN: &str = "adm";

fn sender(retries: u32) -> Value {
    json!({"code": "s", "token_local": "s-token", "send_svcscriptcode": "fails",
        "opts": {"send_retries": retries}})
}

async fn put_channel(srv: &Server, doc: &Value) {
    let resp = client()
        .put(srv.url(&format!(
            "/admin/channels/{}",
            doc["code"].as_str().unwrap()
        )))
        .bearer_auth(ADMIN)
        .json(doc)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn failing_sender(retries: u32) -> Server {
    Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(sender(retries))
        .script("fails", r#"throw "the partner is down";"#)
        .start()
}

/// Waits until the job's first attempt has failed and it is queued for its next.
async fn wait_first_failure(srv: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let j = job(srv, id).await;
        if j["state"] == "queued" && j["attempt"] == 1 {
            return j;
        }
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn job(srv: &Server, id: &str) -> Value {
    common::admin_get(srv, ADMIN, &format!("/admin/jobs/{id}"))
        .await
        .1
}

#[tokio::test]
async fn a_raised_retry_limit_lets_a_waiting_job_go_on() {
    let srv = failing_sender(1);
    let id = send_job(&srv, ADMIN, "s", &json!({})).await;
    // First attempt failed; the job waits about 1 s for its second.
    wait_first_failure(&srv, &id).await;
    put_channel(&srv, &sender(3)).await;
    let done = wait_job(&srv, ADMIN, &id, &["failed"], Duration::from_secs(20)).await;
    assert_eq!(done["attempt"], 4, "{done}");
    assert_eq!(done["max_attempts"], 4, "{done}");
}

#[tokio::test]
async fn a_lowered_retry_limit_closes_a_waiting_job_at_once() {
    let srv = failing_sender(3);
    let id = send_job(&srv, ADMIN, "s", &json!({})).await;
    wait_first_failure(&srv, &id).await;
    put_channel(&srv, &sender(0)).await;
    // At once: well before the next attempt would have been due.
    let done = wait_job(&srv, ADMIN, &id, &["failed"], Duration::from_millis(700)).await;
    assert_eq!(done["attempt"], 1, "{done}");
    assert!(
        done["last_error"]
            .as_str()
            .unwrap()
            .contains("send_retries was lowered"),
        "{done}"
    );
    assert_eq!(
        done["attempts"].as_array().unwrap().len(),
        1,
        "no further attempt"
    );
}

#[tokio::test]
async fn a_finished_job_is_never_reopened_by_a_raised_limit() {
    let srv = failing_sender(0);
    let id = send_job(&srv, ADMIN, "s", &json!({})).await;
    let failed = wait_job(&srv, ADMIN, &id, &["failed"], Duration::from_secs(5)).await;
    assert_eq!(failed["attempt"], 1);
    put_channel(&srv, &sender(5)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let still = job(&srv, &id).await;
    assert_eq!(still["state"], "failed", "{still}");
    assert_eq!(still["attempt"], 1, "{still}");
}

#[tokio::test]
async fn an_expired_local_token_is_refused_and_shown_expired() {
    let doc = |until: &str| {
        json!({"code": "c", "token_local": "c-token", "recv_svcscriptcode": "ok",
            "opts": {"issync": true, "token_valid_until": until}})
    };
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(doc("2000-01-01T00:00:00Z"))
        .script("ok", "body = 1;")
        .start();
    let call = || {
        client()
            .get(srv.url("/channels/c/api?token=c-token"))
            .send()
    };
    assert_eq!(call().await.unwrap().status(), 401);
    let shown = |srv: &Server| {
        client()
            .get(srv.url("/admin/channels/c"))
            .bearer_auth(ADMIN)
            .send()
    };
    let (_, _, body) = json_of(shown(&srv).await.unwrap()).await;
    assert_eq!(body["credential"], "expired", "{body}");
    // Extended: valid again. A document read can be written back as it is.
    let mut extended = body.clone();
    extended["token_local"] = json!("c-token");
    extended["opts"]["token_valid_until"] = json!("2999-01-01T00:00:00Z");
    put_channel(&srv, &extended).await;
    assert_eq!(call().await.unwrap().status(), 200);
    let (_, _, body) = json_of(shown(&srv).await.unwrap()).await;
    assert_eq!(body["credential"], "valid", "{body}");
    assert_eq!(body["state"], "running", "{body}");
}

#[tokio::test]
async fn a_stopped_channel_answers_503_keeps_its_work_and_resumes_on_start() {
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(
            json!({"code": "c", "token_local": "c-token", "recv_svcscriptcode": "ok",
            "recv_svcscriptcode_ws": "ok", "send_svcscriptcode": "sent", "opts": {"issync": true}}),
        )
        .script("ok", "body = 1; ")
        .script("sent", "result = \"sent\";")
        .start();
    let admin = |path: &str| client().post(srv.url(path)).bearer_auth(ADMIN).send();
    let mut socket = ws_connect(&srv, "/channels/c/ws?token=c-token").await;
    let resp = admin("/admin/channels/c/stop").await.unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("stopped")));
    assert_eq!(ws_close_code(&mut socket).await, Some(1001));
    let resp = client()
        .get(srv.url("/channels/c/api?token=c-token"))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("channel_stopped"))
    );
    let upgrade =
        tokio_tungstenite::connect_async(common::ws_url(&srv, "/channels/c/ws?token=c-token"))
            .await;
    assert!(upgrade.is_err(), "the upgrade is refused");
    // Send jobs still queue, and wait.
    let id = send_job(&srv, ADMIN, "c", &json!({"n": 1})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waiting = job(&srv, &id).await;
    assert_eq!(waiting["state"], "queued", "{waiting}");
    let (_, shown) = common::admin_get(&srv, ADMIN, "/admin/channels/c").await;
    assert_eq!(shown["state"], "stopped");
    // Start: everything goes on.
    let (status, _, body) = json_of(admin("/admin/channels/c/start").await.unwrap()).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("running")));
    wait_job(&srv, ADMIN, &id, &["succeeded"], Duration::from_secs(5)).await;
    let resp = client()
        .get(srv.url("/channels/c/api?token=c-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_channel_without_autostart_is_stopped_whenever_it_is_loaded() {
    let project = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(
            json!({"code": "m", "token_local": "m-token", "recv_svcscriptcode": "ok",
            "opts": {"issync": true, "autostart": false}}),
        )
        .script("ok", "body = 1;");
    let srv = project.start();
    let call = |srv: &Server| {
        client()
            .get(srv.url("/channels/m/api?token=m-token"))
            .send()
    };
    assert_eq!(call(&srv).await.unwrap().status(), 503);
    let resp = client()
        .post(srv.url("/admin/channels/m/start"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(call(&srv).await.unwrap().status(), 200);
    // A restart returns it to its autostart: stopped. (In cluster mode a node
    // that joins running nodes takes their state: the whole cluster restarts.)
    let srv = srv.kill9().whole_cluster_down().start();
    assert_eq!(call(&srv).await.unwrap().status(), 503);
}

#[tokio::test]
async fn channels_share_job_queues() {
    let doc = |code: &str, queue: Option<&str>| {
        let mut d = json!({"code": code, "token_local": format!("{code}-token"),
            "send_svcscriptcode": "done", "opts": {}});
        if let Some(q) = queue {
            d["opts"]["queue"] = json!(q);
        }
        d
    };
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(doc("a", Some("NagiosQueue")))
        .channel(doc("b", Some("NagiosQueue")))
        .channel(doc("c", None))
        .script("done", "result = 1;")
        .start();
    let mut ids = Vec::new();
    for code in ["a", "b", "c"] {
        ids.push(send_job(&srv, ADMIN, code, &json!({})).await);
    }
    for id in &ids {
        wait_job(&srv, ADMIN, id, &["succeeded"], Duration::from_secs(5)).await;
    }
    let get = |path: &str| client().get(srv.url(path)).bearer_auth(ADMIN).send();
    let (_, _, body) = json_of(get("/admin/queues").await.unwrap()).await;
    let queues = body["queues"].as_array().unwrap();
    let nagios = queues.iter().find(|q| q["name"] == "NagiosQueue").unwrap();
    assert_eq!(nagios["channels"], json!(["a", "b"]), "{body}");
    assert_eq!(nagios["jobs"]["succeeded"], 2, "{body}");
    let own = queues.iter().find(|q| q["name"] == "c").unwrap();
    assert_eq!(own["channels"], json!(["c"]), "{body}");
    let (_, _, body) = json_of(get("/admin/jobs?queue=NagiosQueue").await.unwrap()).await;
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{body}");
    assert!(jobs.iter().all(|j| j["queue"] == "NagiosQueue"), "{body}");
    assert_eq!(job(&srv, &ids[2]).await["queue"], "c");
}

/// Channel `erp` in `mode`, calling `production` or `test` with its secret.
fn erp_in_mode(
    production: &common::Upstream,
    test: &common::Upstream,
    mode: &str,
    retries: u32,
) -> Value {
    json!({"code": "erp", "token_local": "erp-token", "url": format!("{}/", production.base),
        "url_test": format!("{}/", test.base), "token_remote": "live-secret",
        "token_remote_test": "test-secret", "send_svcscriptcode": "call",
        "opts": {"mode": mode, "send_retries": retries}})
}

#[tokio::test]
async fn test_mode_calls_the_test_system_with_the_test_secret() {
    let production = common::Upstream::start().await;
    let test = common::Upstream::start().await;
    let doc = |mode: &str| erp_in_mode(&production, &test, mode, 0);
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\"\noutbound_any_host = false"))
        .channel(doc("test"))
        .script(
            "call",
            r#"let r = webquery(#{ path: "ok", headers: #{ authorization: `Bearer ${token_remote()}` } });
               result = channel_mode();"#,
        )
        .start();
    let id = send_job(&srv, ADMIN, "erp", &json!({})).await;
    let done = wait_job(&srv, ADMIN, &id, &["succeeded"], Duration::from_secs(5)).await;
    assert_eq!(done["result"], "test");
    assert!(
        production.seen().is_empty(),
        "production was called in test mode"
    );
    assert_eq!(
        test.seen()[0].authorization.as_deref(),
        Some("Bearer test-secret")
    );
    // Shown masked like the other remote tokens.
    let (_, shown) = common::admin_get(&srv, ADMIN, "/admin/channels/erp").await;
    assert_eq!(shown["token_remote_test"], "***");
    // In production: the live system, the live secret.
    put_channel(&srv, &doc("production")).await;
    let id = send_job(&srv, ADMIN, "erp", &json!({})).await;
    let done = wait_job(&srv, ADMIN, &id, &["succeeded"], Duration::from_secs(5)).await;
    assert_eq!(done["result"], "production");
    assert_eq!(
        production.seen()[0].authorization.as_deref(),
        Some("Bearer live-secret")
    );
}

#[tokio::test]
async fn a_test_job_retried_after_the_switch_to_production_still_calls_the_test_system() {
    let production = common::Upstream::start().await;
    let test = common::Upstream::start().await;
    let doc = |mode: &str| erp_in_mode(&production, &test, mode, 2);
    let srv = Project::new()
        .config(&format!(
            "admin_token = \"{ADMIN}\"\noutbound_any_host = false"
        ))
        .channel(doc("test"))
        .script(
            "call",
            r#"webquery(#{ path: "ok", headers: #{ authorization: `Bearer ${token_remote()}` } });
               if startparam(4) == "1" { throw "the partner wants a second try"; }
               result = channel_mode();"#,
        )
        .start();
    let id = send_job(&srv, ADMIN, "erp", &json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while test.seen().is_empty() {
        assert!(Instant::now() < deadline, "the first attempt never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The retry waits about a second: the channel goes to production meanwhile.
    put_channel(&srv, &doc("production")).await;
    let done = wait_job(&srv, ADMIN, &id, &["succeeded"], Duration::from_secs(10)).await;
    assert_eq!(done["attempts"].as_array().map(Vec::len), Some(2), "{done}");
    assert_eq!(done["result"], "test", "{done}");
    assert!(
        production.seen().is_empty(),
        "a test job's retry called production"
    );
    let seen = test.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].authorization.as_deref(), Some("Bearer test-secret"));
}

#[tokio::test]
async fn test_mode_marks_jobs_and_events_and_a_queue_goes_to_production_at_once() {
    let doc = |code: &str, mode: &str| {
        json!({"code": code, "token_local": format!("{code}-token"), "send_svcscriptcode": "done",
            "opts": {"mode": mode, "queue": "Shop"}})
    };
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(doc("t1", "test"))
        .channel(doc("t2", "test"))
        .channel(doc("live", "production"))
        .channel(
            json!({"code": "watch", "type": "events", "token_local": "watch-token",
            "opts": {"events": ["order.>"]}}),
        )
        .script("done", r#"emit_event("order.tried", #{}); result = 1;"#)
        .start();
    let mut events = ws_connect(&srv, "/channels/watch/ws?token=watch-token").await;
    let test_job = send_job(&srv, ADMIN, "t1", &json!({})).await;
    let done = wait_job(
        &srv,
        ADMIN,
        &test_job,
        &["succeeded"],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(done["test"], true, "{done}");
    let event = common::ws_recv(&mut events).await;
    assert_eq!(event[1]["test"], true, "{event}");
    let live_job = send_job(&srv, ADMIN, "live", &json!({})).await;
    wait_job(
        &srv,
        ADMIN,
        &live_job,
        &["succeeded"],
        Duration::from_secs(5),
    )
    .await;
    let event = common::ws_recv(&mut events).await;
    assert!(event[1].get("test").is_none(), "{event}");
    let get = |path: &str| client().get(srv.url(path)).bearer_auth(ADMIN).send();
    let (_, _, body) = json_of(get("/admin/jobs?test=true").await.unwrap()).await;
    let ids: Vec<&str> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(ids, vec![test_job.as_str()], "{body}");
    // The whole queue to production, documents written.
    let resp = client()
        .post(srv.url("/admin/queues/Shop/production"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["switched"], json!(["t1", "t2"]));
    let (_, _, shown) = json_of(get("/admin/channels/t2").await.unwrap()).await;
    assert_eq!(shown["opts"]["mode"], "production");
    let file = std::fs::read_to_string(
        srv.project
            .as_ref()
            .unwrap()
            .path()
            .join("channels/t1.json"),
    )
    .unwrap();
    assert!(file.contains("\"production\""), "{file}");
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(json!({"code": "off", "token_local": "off-token", "opts": {"disabled": true}}))
        .channel(json!({"code": "c", "token_local": "c-token",
            "opts": {"token_valid_until": "2999-01-01T00:00:00Z"}}))
        .start();
    let post = |path: &str| client().post(srv.url(path)).bearer_auth(ADMIN).send();
    for (doc, field) in [
        (
            json!({"code": "x", "opts": {"token_valid_until": "next tuesday"}}),
            "token_valid_until",
        ),
        (
            json!({"code": "x", "opts": {"queue": "no spaces"}}),
            "queue",
        ),
        (json!({"code": "x", "opts": {"mode": "staging"}}), "mode"),
    ] {
        let resp = client()
            .post(srv.url("/admin/channels"))
            .bearer_auth(ADMIN)
            .json(&doc)
            .send()
            .await
            .unwrap();
        let (status, _, body) = json_of(resp).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["message"].as_str().unwrap().contains(field), "{body}");
    }
    assert_eq!(
        post("/admin/channels/nope/start").await.unwrap().status(),
        404
    );
    let (status, _, body) = json_of(post("/admin/channels/off/stop").await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("channel_disabled"))
    );
    let (_, shown) = common::admin_get(&srv, ADMIN, "/admin/channels/off").await;
    assert_eq!(shown["state"], "disabled");
    // Seconds until expiry, for alerts.
    let metrics = common::metrics_text(&srv).await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_credential_expiry_seconds{channel=\"c\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let secs: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(secs > 1e9, "{line}");
}

#[tokio::test]
async fn queued_inbox_requests_wait_through_a_stop_a_start_and_a_restart_in_order() {
    // It reads the channel's kv from the SQLite file while the channel is stopped.
    if common::embedded_store_only("reading kv from the SQLite file") {
        return;
    }
    let project = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(
            json!({"code": "box", "token_local": "box-token", "recv_svcscriptcode": "note",
            "opts": {"issync": false}}),
        )
        .script(
            "note",
            r#"let seen = kv_get("seen"); if seen == () { seen = []; }
               seen.push(startparam(3)); kv_set("seen", seen);"#,
        );
    let srv = project.start();
    let admin = |srv: &Server, path: &str| client().post(srv.url(path)).bearer_auth(ADMIN).send();
    let send = |srv: &Server, n: u32| {
        client()
            .post(srv.url(&format!("/channels/box/api?token=box-token&n={n}")))
            .send()
    };
    // What the box channel's runs saw, in its own kv map.
    let seen = |srv: &Server| -> Value {
        let conn = rusqlite::Connection::open(srv.db()).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let text: Option<String> = conn
            .query_row(
                "SELECT value FROM kv WHERE channel = 'box' AND key = 'seen'",
                [],
                |r| r.get(0),
            )
            .ok();
        text.map_or(json!([]), |t| serde_json::from_str(&t).unwrap())
    };
    // Stopped: inbound calls are refused, nothing is stored.
    assert_eq!(
        admin(&srv, "/admin/channels/box/stop")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(send(&srv, 0).await.unwrap().status(), 503);
    assert_eq!(
        admin(&srv, "/admin/channels/box/start")
            .await
            .unwrap()
            .status(),
        200
    );
    // Acknowledged, then stopped at once: what had not run yet waits.
    for n in 1..=5 {
        assert_eq!(send(&srv, n).await.unwrap().status(), 202);
    }
    admin(&srv, "/admin/channels/box/stop").await.unwrap();
    // A run already under way finishes (a stop lets running scripts end); then nothing more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = seen(&srv).as_array().unwrap().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        seen(&srv).as_array().unwrap().len(),
        before,
        "a stopped channel ran"
    );
    // A restart: the channel autostarts, and the rest runs, in order.
    let srv = srv.kill9().start();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = seen(&srv);
        if now.as_array().is_some_and(|s| s.len() == 5) {
            assert_eq!(now, json!(["n=1", "n=2", "n=3", "n=4", "n=5"]));
            break;
        }
        assert!(Instant::now() < deadline, "{now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sigterm_right_after_the_announcement_always_exits_cleanly() {
    let mut project = Project::new()
        .channel(
            json!({"code": "box", "token_local": "box-token", "recv_svcscriptcode": "ok",
            "opts": {"issync": false}}),
        )
        .script("ok", "let x = 1;");
    for _ in 0..10 {
        let mut srv = project.start();
        srv.signal("TERM");
        let status = srv.wait_exit(Duration::from_secs(15)).expect("exits");
        assert!(status.success(), "{status:?}");
        project = srv.kill9();
    }
    // With a request acknowledged just before the signal: it is not lost.
    let mut srv = project.start();
    let resp = client()
        .post(srv.url("/channels/box/api?token=box-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    srv.signal("TERM");
    assert!(srv
        .wait_exit(Duration::from_secs(15))
        .expect("exits")
        .success());
    if common::embedded_store_only("the request's row in the SQLite file") {
        return;
    }
    let db = srv.db();
    let conn = rusqlite::Connection::open(db).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM jobs WHERE kind = 'recv'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_limit_lowered_just_before_the_next_attempt_is_due_still_closes_the_job() {
    let srv = failing_sender(3);
    let id = send_job(&srv, ADMIN, "s", &json!({})).await;
    let waiting = wait_first_failure(&srv, &id).await;
    let due = chrono::DateTime::parse_from_rfc3339(waiting["next_attempt_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let lead = (due - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(lead.saturating_sub(Duration::from_millis(150))).await;
    put_channel(&srv, &sender(0)).await;
    let done = wait_job(&srv, ADMIN, &id, &["failed"], Duration::from_secs(5)).await;
    assert_eq!(done["attempt"], 1, "{done}");
    assert_eq!(done["attempts"].as_array().unwrap().len(), 1, "{done}");
}
