//! Versions, restore and the audit log (SPEC §19) against the real binary.

mod common;

use std::time::{Duration, Instant};

use common::{channel, client, json_of, post_as, Project, Server};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-token";

fn project() -> Project {
    Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(channel("orders", "v"))
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

async fn versions(srv: &Server, what: &str) -> Vec<Value> {
    let (status, body) = admin(srv, "GET", &format!("/admin/{what}/versions"), None).await;
    assert_eq!(status, 200, "{body}");
    body["versions"].as_array().unwrap().clone()
}

fn kinds(list: &[Value]) -> Vec<(u64, String)> {
    list.iter()
        .map(|v| {
            (
                v["number"].as_u64().unwrap(),
                v["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Polls until `versions` of `what` has `n` entries.
async fn wait_versions(srv: &Server, what: &str, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let (_, body) = admin(srv, "GET", &format!("/admin/{what}/versions"), None).await;
        let list = body["versions"].as_array().cloned().unwrap_or_default();
        if list.len() == n {
            return list;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: {} versions, wanted {n}: {body}",
            list.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn audit(srv: &Server, query: &str) -> Vec<Value> {
    let (status, body) = admin(srv, "GET", &format!("/admin/audit{query}"), None).await;
    assert_eq!(status, 200, "{body}");
    body["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn every_change_is_a_version_whoever_made_it() {
    let srv = project().start();
    // The files found at the first start are version 1, by `file`.
    let list = versions(&srv, "channels/orders").await;
    assert_eq!(kinds(&list), [(1, "created".into())]);
    assert_eq!(list[0]["by"]["by"], "file");

    // An admin change, then the same content again: one version.
    let (_, mut doc) = admin(&srv, "GET", "/admin/channels/orders", None).await;
    doc["opts"]["comment"] = "second".into();
    let (status, _) = admin(&srv, "PUT", "/admin/channels/orders", Some(doc.to_string())).await;
    assert_eq!(status, 200);
    let (status, _) = admin(&srv, "PUT", "/admin/channels/orders", Some(doc.to_string())).await;
    assert_eq!(status, 200);
    let list = versions(&srv, "channels/orders").await;
    assert_eq!(kinds(&list), [(2, "changed".into()), (1, "created".into())]);
    assert_eq!(list[0]["by"]["by"], "admin");
    assert_eq!(list[0]["by"]["address"], "127.0.0.1");
    assert!(list[0]["by"]["request_id"]
        .as_str()
        .is_some_and(|r| r.len() == 36));
    assert_eq!(list[0]["sha256"].as_str().unwrap().len(), 64);

    // A hand edit of the file is a version too (by `file`).
    let file = srv
        .project
        .as_ref()
        .unwrap()
        .path()
        .join("channels/orders.json");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("second", "by hand");
    std::fs::write(&file, text).unwrap();
    let list = wait_versions(&srv, "channels/orders", 3).await;
    assert_eq!(list[0]["kind"], "changed");
    assert_eq!(list[0]["by"]["by"], "file");

    // One version: the content, its secrets masked.
    let (status, v2) = admin(&srv, "GET", "/admin/channels/orders/versions/2", None).await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["content"]["opts"]["comment"], "second");
    assert_eq!(v2["content"]["token_local"], "***");
    let (status, body) = admin(&srv, "GET", "/admin/channels/orders/versions/9", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_version"))
    );

    // The diff of 2 against the current one.
    let (status, body) = admin(&srv, "GET", "/admin/channels/orders/diff?from=2", None).await;
    assert_eq!(status, 200, "{body}");
    let diff = body["diff"].as_str().unwrap();
    assert!(diff.contains("--- orders version 2"), "{diff}");
    assert!(diff.contains("+++ orders version 3"), "{diff}");
    assert!(diff.contains("-    \"comment\": \"second\""), "{diff}");
    assert!(diff.contains("+    \"comment\": \"by hand\""), "{diff}");
    assert!(
        !diff.contains("orders-token"),
        "secrets are masked in a diff: {diff}"
    );
    let (status, _) = admin(&srv, "GET", "/admin/channels/orders/diff", None).await;
    assert_eq!(status, 400, "from is needed");

    // Delete, then create again: the numbers go on.
    let (status, _) = admin(&srv, "DELETE", "/admin/channels/orders", None).await;
    assert_eq!(status, 204);
    let (status, _) = admin(
        &srv,
        "POST",
        "/admin/channels",
        Some(channel("orders", "v").to_string()),
    )
    .await;
    assert_eq!(status, 201);
    let list = versions(&srv, "channels/orders").await;
    assert_eq!(
        kinds(&list)[..2],
        [(5, "created".into()), (4, "deleted".into())]
    );
    let (_, v4) = admin(&srv, "GET", "/admin/channels/orders/versions/4", None).await;
    assert_eq!(v4["content"], Value::Null);

    // Scripts: the API, and a file that vanished by hand.
    let (status, _) = admin(
        &srv,
        "PUT",
        "/admin/scripts/v",
        Some("body = \"v2\";".into()),
    )
    .await;
    assert_eq!(status, 200);
    let (_, v) = admin(&srv, "GET", "/admin/scripts/v/versions/2", None).await;
    assert_eq!(v["content"], "body = \"v2\";");
    let (status, _) = admin(
        &srv,
        "PUT",
        "/admin/scripts/spare",
        Some("body = 1;".into()),
    )
    .await;
    assert_eq!(status, 201);
    std::fs::remove_file(
        srv.project
            .as_ref()
            .unwrap()
            .path()
            .join("scripts/spare.rhai"),
    )
    .unwrap();
    let list = wait_versions(&srv, "scripts/spare", 2).await;
    assert_eq!(kinds(&list), [(2, "deleted".into()), (1, "created".into())]);
    assert_eq!(list[0]["by"]["by"], "file");
    let (status, body) = admin(&srv, "GET", "/admin/scripts/v/diff?from=1&to=2", None).await;
    assert_eq!(status, 200);
    assert!(
        body["diff"].as_str().unwrap().contains("+body = \"v2\";"),
        "{body}"
    );
}

#[tokio::test]
async fn a_restore_brings_back_a_deleted_channel_with_its_secrets() {
    let srv = project()
        .channel(json!({"code": "partner", "token_local": "first-token",
            "recv_svcscriptcode": "v", "opts": {"issync": true}}))
        .start();
    let (_, mut doc) = admin(&srv, "GET", "/admin/channels/partner", None).await;
    doc["token_local"] = "second-token".into();
    let (status, _) = admin(
        &srv,
        "PUT",
        "/admin/channels/partner",
        Some(doc.to_string()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(post_as(&srv, "partner", "second-token").await.0, 200);
    let (status, _) = admin(&srv, "DELETE", "/admin/channels/partner", None).await;
    assert_eq!(status, 204);
    assert_eq!(post_as(&srv, "partner", "second-token").await.0, 404);

    // The deletion itself cannot be restored; version 1 can.
    let (status, body) = admin(
        &srv,
        "POST",
        "/admin/channels/partner/restore",
        Some(r#"{"version": 3}"#.into()),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("would_not_load")),
        "{body}"
    );
    let (status, body) = admin(
        &srv,
        "POST",
        "/admin/channels/partner/restore",
        Some(r#"{"version": 1}"#.into()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], "partner");
    assert_eq!(body["token_local"], "***", "the answer masks secrets");
    // Back, with the token of version 1, at once.
    assert_eq!(post_as(&srv, "partner", "first-token").await.0, 200);
    assert_eq!(post_as(&srv, "partner", "second-token").await.0, 401);
    let file = srv
        .project
        .as_ref()
        .unwrap()
        .path()
        .join("channels/partner.json");
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("first-token"));
    let list = versions(&srv, "channels/partner").await;
    assert_eq!(list[0]["kind"], "restored");
    assert_eq!(list[0]["number"], 4);
    assert_eq!(
        list[0]["sha256"], list[3]["sha256"],
        "the content of version 1"
    );
    let (status, _) = admin(
        &srv,
        "POST",
        "/admin/channels/partner/restore",
        Some("{}".into()),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = admin(
        &srv,
        "POST",
        "/admin/channels/partner/restore",
        Some(r#"{"version": 40}"#.into()),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_restore_that_would_not_load_today_changes_nothing() {
    let srv = project().script("old_script", "body = \"old\";").start();
    let (_, mut doc) = admin(&srv, "GET", "/admin/channels/orders", None).await;
    doc["recv_svcscriptcode"] = "old_script".into();
    let (status, _) = admin(&srv, "PUT", "/admin/channels/orders", Some(doc.to_string())).await;
    assert_eq!(status, 200);
    doc["recv_svcscriptcode"] = "v".into();
    let (status, _) = admin(&srv, "PUT", "/admin/channels/orders", Some(doc.to_string())).await;
    assert_eq!(status, 200);
    let (status, _) = admin(&srv, "DELETE", "/admin/scripts/old_script", None).await;
    assert_eq!(status, 204);
    // Version 2 names a script that is gone.
    let (status, body) = admin(
        &srv,
        "POST",
        "/admin/channels/orders/restore",
        Some(r#"{"version": 2}"#.into()),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("would_not_load")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("old_script"),
        "{body}"
    );
    assert_eq!(
        versions(&srv, "channels/orders").await.len(),
        3,
        "no version made"
    );
    let (_, now) = admin(&srv, "GET", "/admin/channels/orders", None).await;
    assert_eq!(now["recv_svcscriptcode"], "v");

    // A script version that no longer compiles against today's library: a
    // hand edit that calls a function that exists nowhere (the API refuses
    // to save such a script; the folder took it, and it was versioned).
    let file = srv.project.as_ref().unwrap().path().join("scripts/v.rhai");
    std::fs::write(&file, "body = gone_from_the_library(2);").unwrap();
    wait_versions(&srv, "scripts/v", 2).await;
    let (status, _) = admin(
        &srv,
        "PUT",
        "/admin/scripts/v",
        Some("body = \"v3\";".into()),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = admin(
        &srv,
        "POST",
        "/admin/scripts/v/restore",
        Some(r#"{"version": 2}"#.into()),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("would_not_load")),
        "{body}"
    );
    assert_eq!(post_as(&srv, "orders", "orders-token").await.1, "v3");
    // And one that does load comes back at once.
    let (status, body) = admin(
        &srv,
        "POST",
        "/admin/scripts/v/restore",
        Some(r#"{"version": 1}"#.into()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"]["ok"], true);
    assert_eq!(post_as(&srv, "orders", "orders-token").await.1, "v1");
}

#[tokio::test]
async fn versions_keep_prunes_the_oldest_and_numbers_are_never_reused() {
    let srv = project().config("versions_keep = 3").start();
    for n in 2..=6 {
        let (status, _) = admin(
            &srv,
            "PUT",
            "/admin/scripts/v",
            Some(format!("body = \"v{n}\";")),
        )
        .await;
        assert_eq!(status, 200);
    }
    let list = versions(&srv, "scripts/v").await;
    let numbers: Vec<u64> = list.iter().map(|v| v["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [6, 5, 4]);
    let (status, _) = admin(&srv, "GET", "/admin/scripts/v/versions/2", None).await;
    assert_eq!(status, 404);
    let (status, _) = admin(&srv, "DELETE", "/admin/channels/orders", None).await;
    assert_eq!(status, 204);
    let (status, _) = admin(&srv, "DELETE", "/admin/scripts/v", None).await;
    assert_eq!(status, 204);
    let (status, _) = admin(
        &srv,
        "PUT",
        "/admin/scripts/v",
        Some("body = \"again\";".into()),
    )
    .await;
    assert_eq!(status, 201);
    let list = versions(&srv, "scripts/v").await;
    assert_eq!(
        kinds(&list),
        [
            (8, "created".into()),
            (7, "deleted".into()),
            (6, "changed".into())
        ]
    );
}

#[tokio::test]
async fn the_audit_log_names_every_action_and_holds_no_secret() {
    let srv = project().start();
    let doc = json!({"code": "partner", "token_local": "partner-secret-1",
        "token_remote": "remote-secret-2", "recv_svcscriptcode": "v", "opts": {"issync": true}});
    let (status, _) = admin(&srv, "POST", "/admin/channels", Some(doc.to_string())).await;
    assert_eq!(status, 201);
    let (status, _) = admin(&srv, "PUT", "/admin/channels/partner", Some("{".into())).await;
    assert_eq!(status, 400);
    admin(&srv, "POST", "/admin/channels/partner/stop", None).await;
    admin(&srv, "POST", "/admin/channels/partner/start", None).await;
    let (_, shown) = admin(&srv, "GET", "/admin/channels/partner/token", None).await;
    assert_eq!(shown["token_local"], "partner-secret-1");
    let (_, fresh) = admin(&srv, "POST", "/admin/channels/partner/token", None).await;
    let fresh = fresh["token_local"].as_str().unwrap().to_owned();
    let (status, _) = admin(
        &srv,
        "POST",
        "/admin/channels/partner/try",
        Some(r#"{"request": {"body": "x"}}"#.into()),
    )
    .await;
    assert_eq!(status, 200);
    // Refused: no credentials, and a wrong console sign-in.
    let resp = client()
        .delete(srv.url("/admin/channels/partner"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client()
        .post(srv.url("/console/session"))
        .json(&json!({"token": "wrong-guess-token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client()
        .post(srv.url("/console/session"))
        .json(&json!({"token": ADMIN}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Reads are not actions.
    admin(&srv, "GET", "/admin/channels", None).await;

    let entries = audit(&srv, "").await;
    let seen: Vec<(String, u64)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("console.sign_in", 200),
        ("console.sign_in_failed", 401),
        ("channel.delete", 401),
        ("try", 200),
        ("token.regenerate", 200),
        ("token.show", 200),
        ("channel.start", 200),
        ("channel.stop", 200),
        ("channel.change", 400),
        ("channel.create", 201),
    ];
    let want: Vec<(String, u64)> = want.iter().map(|(a, s)| (a.to_string(), *s)).collect();
    assert_eq!(seen, want, "newest first: {entries:#?}");
    let create = &entries[9];
    assert_eq!(create["code"], "partner");
    assert_eq!(create["by"], "admin");
    assert_eq!(create["address"], "127.0.0.1");
    assert_eq!(create["before"], Value::Null);
    assert_eq!(create["after"], 1);
    assert_eq!(entries[4]["before"], 1);
    assert_eq!(entries[4]["after"], 2, "a new token is a new version");
    assert_eq!(entries[2]["by"], "anonymous");
    assert!(entries
        .iter()
        .all(|e| e["request_id"].as_str().is_some_and(|r| r.len() == 36)));

    // No secret, no token, no admin token in any entry.
    let text = serde_json::to_string(&entries).unwrap();
    for secret in [
        "partner-secret-1",
        "remote-secret-2",
        fresh.as_str(),
        ADMIN,
        "wrong-guess-token",
    ] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }

    // Filters.
    let only = audit(&srv, "?action=token.show").await;
    assert_eq!(only.len(), 1);
    assert_eq!(audit(&srv, "?code=partner&limit=3").await.len(), 3);
    assert_eq!(audit(&srv, "?by=anonymous").await.len(), 2);
    assert_eq!(audit(&srv, "?since=1h").await.len(), 10);
    assert_eq!(audit(&srv, "?until=2000-01-01T00:00:00Z").await.len(), 0);
    let page = audit(&srv, "?limit=2&offset=1").await;
    assert_eq!(page[0]["action"], "console.sign_in_failed");
    let (status, _) = admin(&srv, "GET", "/admin/audit?who=me", None).await;
    assert_eq!(status, 400, "an unknown filter is refused");
    let (status, _) = admin(&srv, "GET", "/admin/audit?since=yesterday", None).await;
    assert_eq!(status, 400);
    // Append-only: no route changes or deletes entries.
    for method in ["DELETE", "PUT", "POST"] {
        let (status, _) = admin(&srv, method, "/admin/audit", Some("{}".into())).await;
        assert_eq!(status, 405, "{method} /admin/audit");
    }
}

#[tokio::test]
async fn a_change_answered_is_versioned_and_audited_across_kill_9() {
    let srv = project().start();
    let (status, _) = admin(
        &srv,
        "PUT",
        "/admin/scripts/v",
        Some("body = \"v2\";".into()),
    )
    .await;
    assert_eq!(status, 200);
    let project = srv.kill9().whole_cluster_down();
    let srv = project.start();
    let list = versions(&srv, "scripts/v").await;
    assert_eq!(kinds(&list), [(2, "changed".into()), (1, "created".into())]);
    let entries = audit(&srv, "?action=script.change").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["after"], 2);
}

fn run(args: &[&str], project: &Project) -> (i32, String, String) {
    let out = std::process::Command::new(common::binary())
        .args(args)
        .arg("--channels")
        .arg(project.path().join("channels"))
        .arg("--scripts")
        .arg(project.path().join("scripts"))
        .arg("--data")
        .arg(project.path().join("data"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn history_and_restore_work_offline() {
    if common::embedded_store_only("the offline commands on the data folder") {
        return;
    }
    let srv = project().start();
    let (status, _) = admin(
        &srv,
        "PUT",
        "/admin/scripts/v",
        Some("body = \"v2\";".into()),
    )
    .await;
    assert_eq!(status, 200);
    // history reads the store while the server runs.
    let (code, out, err) = run(&["history", "v", "--script"], srv.project.as_ref().unwrap());
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("changed") && lines[0].contains("admin from 127.0.0.1"),
        "{out}"
    );
    assert!(
        lines[1].trim_start().starts_with("1 ") && lines[1].contains("created"),
        "{out}"
    );
    let (code, _, err) = run(&["history", "nothing"], srv.project.as_ref().unwrap());
    assert_eq!(code, 1);
    assert!(err.contains("no versions"), "{err}");
    // restore refuses while the server holds the folder.
    let (code, _, err) = run(
        &["restore", "v", "1", "--script"],
        srv.project.as_ref().unwrap(),
    );
    assert_eq!(code, 1, "{err}");
    let project = srv.kill9();
    let (code, out, err) = run(&["restore", "v", "1", "--script"], &project);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("as version 3"), "{out}");
    let (code, _, err) = run(&["restore", "v", "9", "--script"], &project);
    assert_eq!(code, 1);
    assert!(err.contains("no version 9"), "{err}");
    let srv = project.start();
    assert_eq!(post_as(&srv, "orders", "orders-token").await.1, "v1");
    let list = versions(&srv, "scripts/v").await;
    assert_eq!(
        list.len(),
        3,
        "the start makes no version of the restored file: {list:?}"
    );
    assert_eq!(list[0]["kind"], "restored");
    let entries = audit(&srv, "?action=script.restore").await;
    assert_eq!(entries[0]["address"], "local");
}

#[tokio::test]
async fn audit_entries_go_after_audit_retention_and_not_before() {
    let srv = project().config("audit_retention = \"3s\"").start();
    let (status, _) = admin(&srv, "POST", "/admin/channels/orders/stop", None).await;
    assert_eq!(status, 200);
    assert_eq!(audit(&srv, "").await.len(), 1);
    let started = Instant::now();
    loop {
        let left = audit(&srv, "").await;
        if left.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still there past audit_retention: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "pruned too early"
    );
    // The versions are not the audit log: they stay.
    assert_eq!(versions(&srv, "channels/orders").await.len(), 1);
}
