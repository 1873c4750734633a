//! Secrets (SPEC §20) against the real binary: sealed at rest, resolved into
//! channel documents and scripts, rotated without a reload, never shown.

mod common;

use std::time::{Duration, Instant};

use common::{client, json_of, post_as, wait_job, Project, Server, Upstream};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-token";
/// A fixed key for both nodes of a cluster run (SPEC §20: every node needs the same key).
const KEY: &str = "q1rV0bW3aPZtR1fN6mX9cK2yL8uJ4sE5dG7hA0iB3oQ=";

async fn admin(srv: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client()
        .request(method.parse().unwrap(), srv.url(path))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let (status, _, body) = json_of(req.send().await.unwrap()).await;
    (status, body)
}

/// Polls until channel `code` answers `token` with `want`; that answer.
async fn wait_status(srv: &Server, code: &str, token: &str, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = post_as(srv, code, token).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{code}: {status} {body}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn secrets_are_resolved_rotated_and_never_shown() {
    let upstream = Upstream::start().await;
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(json!({"code": "erp", "token_local": "$secret:erp.in",
            "url": "$secret:erp.url", "token_remote": "$secret:erp.remote",
            "recv_svcscriptcode": "erp_in", "send_svcscriptcode": "erp_out",
            "opts": {"issync": true, "record": 5}}))
        .channel(json!({"code": "other", "token_local": "other-token",
            "recv_svcscriptcode": "other", "opts": {"issync": true}}))
        .script("erp_in", r#"
            let job = channel_send("erp", #{ n: 1 });
            let key = secret("erp.api-key");
            log_info("called with a key of " + key.len() + " characters");
            body = #{ job: job, key_len: key.len() };
        "#)
        .script("erp_out", r#"
            let r = webquery(#{ path: "ok", headers: #{ authorization: `Bearer ${token_remote()}`, "x-api-key": secret("erp.api-key") } });
            if r.status != 200 { throw "partner said " + r.status; }
            result = #{ status: r.status };
        "#)
        .script("other", r#"body = secret("erp.api-key");"#)
        .start_with_env(&[("SWITCHYARD_SECRETS_KEY", KEY)]);

    // Without its secrets the channel does not load; its status names the secret.
    let (status, body) = admin(&srv, "GET", "/admin/channels/erp", None).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("\"erp.in\""),
        "{body}"
    );

    let values = [
        ("erp.in", "inbound-token-7f3a9c", json!(["erp"])),
        ("erp.url", upstream.base.as_str(), json!(["erp"])),
        ("erp.remote", "remote-token-c81d42", json!(["erp"])),
        ("erp.api-key", "api-key-5be0d1e2", json!(["erp"])),
    ];
    for (name, value, channels) in &values {
        let (status, body) = admin(
            &srv,
            "PUT",
            &format!("/admin/secrets/{name}"),
            Some(json!({"value": value, "channels": channels})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["name"], *name);
        assert_eq!(body["version"], 1);
        assert!(body.get("value").is_none());
    }
    // Loaded at once, no reload asked for; the document keeps the reference.
    let answer = wait_status(&srv, "erp", "inbound-token-7f3a9c", 200).await;
    assert_eq!(answer["key_len"], 16);
    let job = answer["job"].as_str().unwrap().to_owned();
    let done = wait_job(
        &srv,
        ADMIN,
        &job,
        &["succeeded", "failed"],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer remote-token-c81d42")
    );
    let (_, doc) = admin(&srv, "GET", "/admin/channels/erp", None).await;
    assert_eq!(doc["token_local"], "$secret:erp.in");
    assert_eq!(doc["url"], "$secret:erp.url");
    let (_, token) = admin(&srv, "GET", "/admin/channels/erp/token", None).await;
    assert_eq!(
        token["token_local"], "$secret:erp.in",
        "the token route shows the reference"
    );

    // The list shows names, channels, versions: never a value.
    let (status, list) = admin(&srv, "GET", "/admin/secrets", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["erp.api-key", "erp.in", "erp.remote", "erp.url"]);

    // Not on its list: secret() is a script error naming the secret only.
    let (status, body) = post_as(&srv, "other", "other-token").await;
    assert_eq!(status, 500, "{body}");
    assert!(
        srv.wait_for_log(
            "secret \"erp.api-key\" is not allowed for channel \"other\"",
            Duration::from_secs(5)
        ),
        "{}",
        srv.logs()
    );

    // A dry run shows no value, even of what it sent.
    let (status, dry) = admin(
        &srv,
        "POST",
        "/admin/channels/erp/try",
        Some(json!({"request": {"body": "{}"}})),
    )
    .await;
    assert_eq!(status, 200, "{dry}");
    // Even a draft that answers the values on purpose.
    let draft =
        r#"log_info(secret("erp.api-key")); body = token_remote() + "|" + secret("erp.api-key");"#;
    let (status, dry_draft) = admin(
        &srv,
        "POST",
        "/admin/channels/erp/try",
        Some(json!({"request": {"body": "{}"}, "script": draft})),
    )
    .await;
    assert_eq!(status, 200, "{dry_draft}");
    assert!(
        dry_draft["answer"].to_string().contains("***|***"),
        "{dry_draft}"
    );
    let dry_text = format!("{dry} {dry_draft}");
    for (_, value, _) in &values[..] {
        if value.starts_with("http") {
            continue;
        }
        assert!(
            !dry_text.contains(value),
            "{value} in a dry run: {dry_text} ({status})"
        );
    }

    // Rotation: the new token works at once, the old one stops; version 2;
    // a websocket opened with the old token is closed (1008), as on any
    // change of the channel's credentials.
    let mut socket = common::ws_connect(&srv, "/channels/erp/ws?token=inbound-token-7f3a9c").await;
    let (status, body) = admin(
        &srv,
        "PUT",
        "/admin/secrets/erp.in",
        Some(json!({"value": "inbound-token-rotated-2", "channels": ["erp"]})),
    )
    .await;
    assert_eq!((status, body["version"].as_u64()), (200, Some(2)));
    assert_eq!(post_as(&srv, "erp", "inbound-token-rotated-2").await.0, 200);
    assert_eq!(post_as(&srv, "erp", "inbound-token-7f3a9c").await.0, 401);
    assert_eq!(common::ws_close_code(&mut socket).await, Some(1008));

    // Taken off the channel's list: the channel stops loading (no last good
    // version with the old value), and says which secret.
    let (status, _) = admin(
        &srv,
        "PUT",
        "/admin/secrets/erp.in",
        Some(json!({"value": "inbound-token-rotated-2", "channels": ["other"]})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(post_as(&srv, "erp", "inbound-token-rotated-2").await.0, 404);
    let (_, list) = admin(&srv, "GET", "/admin/scripts", None).await;
    drop(list);
    let (status, body) = admin(&srv, "GET", "/admin/channels/erp", None).await;
    assert_eq!(status, 404);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not allowed for channel \"erp\""),
        "{body}"
    );
    let (status, _) = admin(
        &srv,
        "PUT",
        "/admin/secrets/erp.in",
        Some(json!({"value": "inbound-token-rotated-2", "channels": ["*"]})),
    )
    .await;
    assert_eq!(status, 200);
    wait_status(&srv, "erp", "inbound-token-rotated-2", 200).await;

    // Delete: 204, then 404; the channel no longer loads.
    let (status, _) = admin(&srv, "DELETE", "/admin/secrets/erp.api-key", None).await;
    assert_eq!(status, 204);
    let (status, _) = admin(&srv, "DELETE", "/admin/secrets/erp.api-key", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        post_as(&srv, "erp", "inbound-token-rotated-2").await.0,
        500,
        "secret() of a missing secret fails the run"
    );

    // Bad input: a clear error that never echoes the value.
    let (status, body) = admin(
        &srv,
        "PUT",
        "/admin/secrets/Bad%20Name",
        Some(json!({"value": "v-123456"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_secret_name"))
    );
    let (status, body) = admin(
        &srv,
        "PUT",
        "/admin/secrets/ok",
        Some(json!({"value": 12345678, "x": "leak-me-please"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        !body.to_string().contains("leak-me-please") && !body.to_string().contains("12345678"),
        "{body}"
    );

    // The audit log names the secrets set and deleted, never a value.
    let (_, audit) = admin(&srv, "GET", "/admin/audit?action=secret.set", None).await;
    let entries = audit["entries"].as_array().unwrap();
    assert!(entries.len() >= 7, "{audit}");
    assert!(entries.iter().any(|e| e["code"] == "erp.api-key"));

    // No value anywhere: the data folder (store, recordings, jobs, versions,
    // audit), the channels folder, the log.
    let project = srv.project.as_ref().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // recordings are flushed each second
    let log = srv.logs();
    for value in [
        "inbound-token-7f3a9c",
        "inbound-token-rotated-2",
        "remote-token-c81d42",
        "api-key-5be0d1e2",
    ] {
        for dir in ["data", "channels", "scripts"] {
            let found = common::files_holding(&project.path().join(dir), value);
            assert!(found.is_empty(), "{value} in {found:?}");
        }
        assert!(!log.contains(value), "{value} in the log");
    }
}

#[tokio::test]
async fn the_key_file_is_made_private_and_a_lost_key_is_said_not_crashed() {
    if common::embedded_store_only("the key file in the data folder") {
        return;
    }
    let srv = Project::new()
        .config(&format!("admin_token = \"{ADMIN}\""))
        .channel(json!({"code": "erp", "token_local": "$secret:erp.in",
            "recv_svcscriptcode": "ok", "opts": {"issync": true}}))
        .script("ok", "body = 1;")
        .start();
    let key = srv
        .project
        .as_ref()
        .unwrap()
        .path()
        .join("data/secrets.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (status, _) = admin(
        &srv,
        "PUT",
        "/admin/secrets/erp.in",
        Some(json!({"value": "kept-token-91c2", "channels": ["erp"]})),
    )
    .await;
    assert_eq!(status, 200);
    wait_status(&srv, "erp", "kept-token-91c2", 200).await;
    let project = srv.kill9();

    // rekey: every secret sealed again; the key file holds the new key.
    let old_key = std::fs::read_to_string(&key).unwrap();
    let new_key = project.path().join("new.key");
    let out = std::process::Command::new(common::binary())
        .args(["secrets", "rekey", "--new-key"])
        .arg(&new_key)
        .arg("--data")
        .arg(project.path().join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-sealed 1 secret(s)"));
    let now = std::fs::read_to_string(&key).unwrap();
    assert_ne!(now, old_key);
    assert_eq!(now, std::fs::read_to_string(&new_key).unwrap());
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let srv = project.start();
    wait_status(&srv, "erp", "kept-token-91c2", 200).await;

    // A lost key: the server starts, the channel says its secret cannot be read.
    let project = srv.kill9();
    std::fs::remove_file(&key).unwrap();
    let srv = project.start();
    let (status, body) = admin(&srv, "GET", "/admin/channels/erp", None).await;
    assert_eq!(status, 404);
    assert!(
        body["message"].as_str().unwrap().contains("cannot be read"),
        "{body}"
    );
    assert_eq!(post_as(&srv, "erp", "kept-token-91c2").await.0, 404);
}
