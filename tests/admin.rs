//! The admin API and hot reload against the real binary.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{channel, client, json_of, Project, Server};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-token";

fn project() -> Project {
    Project::new()
        .config(&format!(
            "admin_token = \"{ADMIN}\"\n[iam]\njwt_secret = \"iam-secret\""
        ))
        .channel(
            json!({"code": "orders", "token_local": "orders-token", "token_remote": "remote-1",
            "token_remote2": "", "recv_svcscriptcode": "v", "opts": {"issync": true}}),
        )
        .script("v", "body = \"v1\";")
}

async fn admin(srv: &Server, method: &str, path: &str, body: Option<String>) -> (u16, Value) {
    let mut req = client()
        .request(method.parse().unwrap(), srv.url(path))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.body(b);
    }
    let (status, _, body) = json_of(req.send().await.unwrap()).await;
    (status, body)
}

async fn get_text(srv: &Server, path: &str) -> (u16, String) {
    let resp = client().get(srv.url(path)).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Polls `path` until it answers `want` (status, body), up to `limit`; returns the time it took.
async fn wait_until(srv: &Server, path: &str, want: (u16, &str), limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let got = get_text(srv, path).await;
        if got.0 == want.0 && got.1 == want.1 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{path}: still {got:?} after {limit:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the admin `path` until `found` picks a status object out of its answer that is
/// not ok and whose error names `needle`, up to `limit`. Waiting on the log is not enough:
/// a watcher that catches a file half-written logs a passing error naming the same file.
async fn wait_for_error(
    srv: &Server,
    path: &str,
    found: impl Fn(&Value) -> Option<Value>,
    needle: &str,
    limit: Duration,
) -> Value {
    let started = Instant::now();
    loop {
        let (_, body) = admin(srv, "GET", path, None).await;
        if let Some(status) = found(&body) {
            if status["ok"] == false && status["error"].as_str().is_some_and(|e| e.contains(needle))
            {
                return status;
            }
        }
        assert!(
            started.elapsed() < limit,
            "{path}: no error naming {needle} after {limit:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn admin_needs_the_admin_token_or_an_admin_jwt() {
    let srv = project().start();
    let exp = chrono::Utc::now().timestamp() + 300;
    let jwt = |roles: Value| {
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "ops-1", "roles": roles, "exp": exp}),
            &EncodingKey::from_secret(b"iam-secret"),
        )
        .unwrap()
    };
    for path in [
        "/admin/channels",
        "/admin/scripts",
        "/admin/nothing",
        "/admin",
    ] {
        for token in [
            None,
            Some("wrong".to_string()),
            Some("orders-token".into()),
            Some(jwt(json!(["ops"]))),
        ] {
            let mut req = client().get(srv.url(path));
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let (status, _, body) = json_of(req.send().await.unwrap()).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (401, Some("unauthorized")),
                "{path} {token:?}"
            );
            assert!(body["request_id"].is_string());
        }
    }
    let (status, _, _) = json_of(
        client()
            .get(srv.url("/admin/channels"))
            .bearer_auth(jwt(json!(["admin"])))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(admin(&srv, "GET", "/admin/channels", None).await.0, 200);
}

#[tokio::test]
async fn channels_are_listed_with_masked_secrets() {
    let srv = project().start();
    let (status, body) = admin(&srv, "GET", "/admin/channels", None).await;
    assert_eq!(status, 200);
    let list = body["channels"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    let (status, one) = admin(&srv, "GET", "/admin/channels/orders", None).await;
    assert_eq!(status, 200);
    assert_eq!(&list[0], &one);
    assert_eq!(one["token_local"], "***");
    assert_eq!(one["token_remote"], "***");
    assert_eq!(
        one["token_remote2"], "",
        "an empty secret has nothing to hide"
    );
    assert_eq!(one["status"]["ok"], true);
    assert!(uuid::Uuid::parse_str(one["id"].as_str().unwrap()).is_ok());
    assert!(!body.to_string().contains("orders-token") && !body.to_string().contains("remote-1"));
    let (status, body) = admin(&srv, "GET", "/admin/channels/nope", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_channel"))
    );
}

#[tokio::test]
async fn channels_are_created_replaced_and_deleted_through_files() {
    let srv = project().start();
    let dir = srv.project.as_ref().unwrap().path().join("channels");
    let doc = json!({"code": "crm", "token_local": "crm-token", "recv_svcscriptcode": "v",
        "opts": {"issync": true, "title": "CRM"}});

    let (status, created) = admin(&srv, "POST", "/admin/channels", Some(doc.to_string())).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    let ct = created["ext"]["ct"].as_str().unwrap().to_owned();
    assert!(chrono::DateTime::parse_from_rfc3339(&ct).is_ok());
    assert_eq!(created["ext"]["lwt"], ct.as_str());
    assert_eq!(created["token_local"], "***");
    let on_disk: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("crm.json")).unwrap()).unwrap();
    assert_eq!(on_disk["token_local"], "crm-token");
    assert_eq!(on_disk["id"], id.as_str());
    assert_eq!(
        get_text(&srv, "/channels/crm/api?token=crm-token").await,
        (200, "v1".into())
    );

    let (status, body) = admin(&srv, "POST", "/admin/channels", Some(doc.to_string())).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("channel_exists"))
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Put back what GET showed, with one change: the masked token keeps the stored one.
    let (_, mut shown) = admin(&srv, "GET", "/admin/channels/crm", None).await;
    shown["opts"]["title"] = "CRM (renamed)".into();
    shown["id"] = uuid::Uuid::new_v4().to_string().into();
    let (status, replaced) =
        admin(&srv, "PUT", "/admin/channels/crm", Some(shown.to_string())).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["opts"]["title"], "CRM (renamed)");
    assert_eq!(replaced["id"], id.as_str(), "the id is kept");
    assert_eq!(replaced["ext"]["ct"], ct.as_str(), "ct is kept");
    assert!(
        replaced["ext"]["lwt"].as_str().unwrap() > ct.as_str(),
        "lwt moves on"
    );
    assert_eq!(
        get_text(&srv, "/channels/crm/api?token=crm-token").await.0,
        200
    );

    let mut rotated = shown.clone();
    rotated["token_local"] = "crm-token-2".into();
    assert_eq!(
        admin(
            &srv,
            "PUT",
            "/admin/channels/crm",
            Some(rotated.to_string())
        )
        .await
        .0,
        200
    );
    assert_eq!(
        get_text(&srv, "/channels/crm/api?token=crm-token").await.0,
        401
    );
    assert_eq!(
        get_text(&srv, "/channels/crm/api?token=crm-token-2")
            .await
            .0,
        200
    );

    let (status, body) = admin(
        &srv,
        "PUT",
        "/admin/channels/other",
        Some(rotated.to_string()),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_channel"))
    );
    let mut ghost = doc.clone();
    ghost["code"] = "ghost".into();
    let (status, _) = admin(
        &srv,
        "PUT",
        "/admin/channels/ghost",
        Some(ghost.to_string()),
    )
    .await;
    assert_eq!(status, 404);

    let (status, _) = admin(&srv, "DELETE", "/admin/channels/crm", None).await;
    assert_eq!(status, 204);
    assert!(!dir.join("crm.json").exists());
    assert_eq!(
        get_text(&srv, "/channels/crm/api?token=crm-token-2")
            .await
            .0,
        404
    );
    assert_eq!(
        admin(&srv, "DELETE", "/admin/channels/crm", None).await.0,
        404
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[tokio::test]
async fn invalid_documents_are_400_naming_the_field() {
    let srv = project().start();
    for (doc, field) in [
        (
            json!({"code": "a", "opts": {"recv_timeout": 61}}).to_string(),
            "opts.recv_timeout",
        ),
        (json!({"code": "a", "colour": "red"}).to_string(), "colour"),
        (
            json!({"code": "a", "ipmask": ["10.0.0.0/40"]}).to_string(),
            "ipmask",
        ),
        (json!({"code": "a b"}).to_string(), "code"),
        (
            json!({"code": "a", "recv_svcscriptcode": "missing"}).to_string(),
            "recv_svcscriptcode",
        ),
        (
            json!({"code": "a", "token_local": "***"}).to_string(),
            "token_local",
        ),
        (
            json!({"code": "a", "opts": {"issync": "yes"}}).to_string(),
            "opts.issync",
        ),
        ("{\"code\": \"a\",".to_string(), "JSON"),
        ("[1, 2]".to_string(), "object"),
    ] {
        let (status, body) = admin(&srv, "POST", "/admin/channels", Some(doc.clone())).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_channel")),
            "{doc}"
        );
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(field), "{doc}: {message}");
    }
    assert!(!srv
        .project
        .as_ref()
        .unwrap()
        .path()
        .join("channels/a.json")
        .exists());
}

#[tokio::test]
async fn scripts_are_put_compiled_listed_and_deleted() {
    let srv = project().start();
    let dir = srv.project.as_ref().unwrap().path().join("scripts");
    let put = |code: &str, src: &str| {
        client()
            .put(srv.url(&format!("/admin/scripts/{code}")))
            .bearer_auth(ADMIN)
            .body(src.to_owned())
            .send()
    };
    let (status, _, _) = json_of(put("greet", "body = \"hi\";").await.unwrap()).await;
    assert_eq!(status, 201);
    assert_eq!(
        std::fs::read_to_string(dir.join("greet.rhai")).unwrap(),
        "body = \"hi\";"
    );
    let (status, _, _) = json_of(put("greet", "body = \"hello\";").await.unwrap()).await;
    assert_eq!(status, 200);
    let resp = client()
        .get(srv.url("/admin/scripts/greet"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "body = \"hello\";");

    let (status, _, body) = json_of(put("greet", "let a = 1;\nlet b = ;").await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("compile_error"))
    );
    assert_eq!(
        (body["line"].as_u64(), body["col"].as_u64()),
        (Some(2), Some(9))
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("greet.rhai")).unwrap(),
        "body = \"hello\";"
    );
    assert_eq!(json_of(put("bad name!", "1").await.unwrap()).await.0, 400);

    let (status, list) = admin(&srv, "GET", "/admin/scripts", None).await;
    assert_eq!(status, 200);
    let v = list["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["code"] == "v")
        .unwrap();
    assert_eq!(v["used_by"], json!(["orders"]));

    let (status, body) = admin(&srv, "DELETE", "/admin/scripts/v", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("script_in_use"))
    );
    assert!(body["message"].as_str().unwrap().contains("orders"));
    assert_eq!(
        admin(&srv, "DELETE", "/admin/scripts/greet", None).await.0,
        204
    );
    assert!(!dir.join("greet.rhai").exists());
    let (status, body) = admin(&srv, "GET", "/admin/scripts/greet", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_script"))
    );
}

#[tokio::test]
async fn files_changed_by_hand_take_effect_and_broken_ones_keep_the_last_good_version() {
    let srv = project().start();
    let root = srv.project.as_ref().unwrap().path().to_owned();
    let url = "/channels/orders/api?token=orders-token";
    assert_eq!(get_text(&srv, url).await, (200, "v1".into()));

    std::fs::write(root.join("scripts/v.rhai"), "body = \"v2\";").unwrap();
    let took = wait_until(&srv, url, (200, "v2"), Duration::from_secs(2)).await;
    eprintln!("script reload took {took:?}");

    // A broken script: the last good version keeps serving, and the error is shown.
    std::fs::write(root.join("scripts/v.rhai"), "body = ;").unwrap();
    let script_v = |list: &Value| {
        list["scripts"]
            .as_array()?
            .iter()
            .find(|s| s["code"] == "v")
            .map(|s| s["status"].clone())
    };
    wait_for_error(
        &srv,
        "/admin/scripts",
        script_v,
        "v.rhai:1:",
        Duration::from_secs(3),
    )
    .await;
    assert!(srv.wait_for_log("v.rhai:1:", Duration::from_secs(3)));
    assert_eq!(get_text(&srv, url).await, (200, "v2".into()));

    // A new channel document written by hand serves within 2 s.
    let doc = channel("hand", "v").to_string();
    std::fs::write(root.join("channels/hand.json"), doc).unwrap();
    wait_until(
        &srv,
        "/channels/hand/api?token=hand-token",
        (200, "v2"),
        Duration::from_secs(2),
    )
    .await;

    // A broken document keeps its last good version, with the error in its status.
    std::fs::write(
        root.join("channels/hand.json"),
        "{\"code\": \"hand\", \"opts\": {\"recv_timeout\": 99}}",
    )
    .unwrap();
    let shown = wait_for_error(
        &srv,
        "/admin/channels/hand",
        |shown| Some(shown["status"].clone()),
        "opts.recv_timeout",
        Duration::from_secs(3),
    )
    .await;
    assert!(srv.wait_for_log("opts.recv_timeout", Duration::from_secs(3)));
    assert!(chrono::DateTime::parse_from_rfc3339(shown["error_at"].as_str().unwrap()).is_ok());
    assert_eq!(
        get_text(&srv, "/channels/hand/api?token=hand-token")
            .await
            .0,
        200
    );

    // Fixed again: the error clears; removed: the channel is gone.
    std::fs::write(root.join("scripts/v.rhai"), "body = \"v3\";").unwrap();
    wait_until(&srv, url, (200, "v3"), Duration::from_secs(2)).await;
    std::fs::remove_file(root.join("channels/hand.json")).unwrap();
    let started = Instant::now();
    while get_text(&srv, "/channels/hand/api?token=hand-token")
        .await
        .0
        != 404
    {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a removed channel still serves"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, shown) = admin(&srv, "GET", "/admin/scripts", None).await;
    assert!(shown["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"]["ok"] == true));
}

#[tokio::test]
async fn reloading_under_load_fails_no_request() {
    let srv = Arc::new(
        project()
            .channel(channel("other", "o"))
            .script("o", "body = \"other\";")
            .start(),
    );
    let root = srv.project.as_ref().unwrap().path().to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (srv, stop, ok, bad) = (srv.clone(), stop.clone(), ok.clone(), bad.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                for path in [
                    "/channels/orders/api?token=orders-token",
                    "/channels/other/api?token=other-token",
                ] {
                    match c.get(srv.url(path)).send().await {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => bad.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
        }));
    }
    for i in 0..15 {
        std::fs::write(root.join("scripts/v.rhai"), format!("body = \"v{i}\";")).unwrap();
        let extra = channel(&format!("extra{i}"), "o").to_string();
        std::fs::write(root.join(format!("channels/extra{i}.json")), extra).unwrap();
        let (status, _) = admin(
            &srv,
            "PUT",
            "/admin/scripts/o",
            Some(format!("body = \"other\"; let n = {i};")),
        )
        .await;
        assert!(status == 200 || status == 201);
        tokio::time::sleep(Duration::from_millis(60)).await;
        if i % 3 == 0 {
            let _ = std::fs::remove_file(root.join(format!("channels/extra{i}.json")));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    assert!(ok > 100, "only {ok} requests went through");
    assert_eq!(
        bad,
        0,
        "{bad} of {} requests failed during reloads",
        ok + bad
    );
    let text = get_text(&srv, "/metrics").await.1;
    assert!(text.contains("switchyard_admin_changes_total"), "{text}");
    assert!(text.contains("switchyard_reloads_total"), "{text}");
}

#[tokio::test]
async fn concurrent_readers_never_see_a_half_written_document() {
    let srv = Arc::new(project().start());
    let file = srv
        .project
        .as_ref()
        .unwrap()
        .path()
        .join("channels/orders.json");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (file, stop) = (file.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&file).expect("the file is always there");
                serde_json::from_str::<Value>(&text).expect("always a whole document");
                reads += 1;
            }
            reads
        })
    };
    let (_, mut doc) = admin(&srv, "GET", "/admin/channels/orders", None).await;
    for i in 0..30 {
        doc["opts"]["comment"] = "x".repeat(2000 * (i % 5)).into();
        assert_eq!(
            admin(&srv, "PUT", "/admin/channels/orders", Some(doc.to_string()))
                .await
                .0,
            200
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}
