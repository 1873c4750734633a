//! The shipped examples in `channels/` and `scripts/`, exactly as the README walks through them.

mod common;

use std::process::{Command, Stdio};

use common::{binary, client, json_of, repo, Server};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

fn start_examples() -> (Server, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(binary());
    cmd.current_dir(data.path())
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--channels")
        .arg(repo().join("channels"))
        .arg("--scripts")
        .arg(repo().join("scripts"))
        .arg("--data")
        .arg(data.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    (Server::spawn(cmd, None), data)
}

const TOKEN: &str = "orders-demo-token";

#[tokio::test]
async fn the_orders_api_lists_finds_and_creates() {
    let (srv, _data) = start_examples();
    let c = client();

    let (status, _, body) = json_of(
        c.get(srv.url("/channels/orders/api/orders?status=open"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 2);
    assert!(body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["status"] == "open"));

    let (status, _, body) = json_of(
        c.get(srv.url(&format!("/channels/orders/api/orders/1002?token={TOKEN}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["customer"], "Globex Ltd");

    let (status, _, body) = json_of(
        c.get(srv.url("/channels/orders/api/orders/9999"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "order_not_found");

    let resp = c
        .post(srv.url("/channels/orders/api/orders"))
        .bearer_auth(TOKEN)
        .json(&json!({"customer": "Umbrella", "items": [{"sku": "X-1", "qty": 3, "price": 2.5}]}))
        .send()
        .await
        .unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 201);
    assert_eq!(body["total"], 7.5);
    assert_eq!(body["status"], "open");
    assert_eq!(
        location,
        format!(
            "/channels/orders/api/orders/{}",
            body["id"].as_str().unwrap()
        )
    );

    for (payload, expect) in [
        ("{\"customer\": ", 400),
        ("{\"customer\": \"x\", \"items\": []}", 422),
        ("[1, 2]", 422),
    ] {
        let (status, _, _) = json_of(
            c.post(srv.url("/channels/orders/api/orders"))
                .bearer_auth(TOKEN)
                .body(payload)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, expect, "{payload}");
    }

    let (status, _, _) = json_of(
        c.delete(srv.url("/channels/orders/api/orders"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 405);
    let (status, _, body) = json_of(
        c.get(srv.url("/channels/orders/api/orders"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
}

#[tokio::test]
async fn the_webhook_receiver_checks_the_hmac_signature() {
    let (srv, _data) = start_examples();
    let payload = r#"{"type":"order.paid","id":"evt_1001"}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_demo_signing_secret").unwrap();
    mac.update(payload.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let url = srv.url("/channels/shop_webhook/api?token=shop-webhook-token");

    let (status, _, body) = json_of(
        client()
            .post(&url)
            .header("X-Signature", &signature)
            .body(payload)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["received"], true);
    assert_eq!(body["type"], "order.paid");

    for bad in [Some("sha256=00ff"), None, Some(signature.as_str())] {
        let mut req = client().post(&url);
        if let Some(sig) = bad {
            req = req.header("X-Signature", sig);
        }
        // The valid signature with a tampered body is refused too.
        let body = if bad == Some(signature.as_str()) {
            payload.replace("1001", "1002")
        } else {
            payload.to_owned()
        };
        let (status, _, answer) = json_of(req.body(body).send().await.unwrap()).await;
        assert_eq!(status, 401, "{bad:?}");
        assert_eq!(answer["error"], "bad_signature");
    }
}

#[tokio::test]
async fn the_orders_websocket_looks_orders_up() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (srv, _data) = start_examples();
    let url = srv
        .url(&format!("/channels/orders/ws?token={TOKEN}"))
        .replacen("http", "ws", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for (qid, id, success) in [(1, "1002", true), (2, "9", false)] {
        let frame = json!(["message", {"qid": qid, "data": {"id": id}}]).to_string();
        ws.send(Message::Text(frame.into())).await.unwrap();
        let answer = loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                break serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap();
            }
        };
        assert_eq!(answer[0], "message_result");
        assert_eq!(answer[1]["qid"], qid);
        assert_eq!(answer[1]["success"], success);
        if success {
            assert_eq!(answer[1]["data"]["customer"], "Globex Ltd");
        } else {
            assert_eq!(answer[1]["data"]["error"], "order_not_found");
        }
    }
}

#[tokio::test]
async fn created_orders_are_kept_and_the_poller_publishes_new_ones() {
    // The shipped folders, copied, so the poller can be made to poll every second.
    let project = common::Project::new().with_examples();
    let srv = project.config("admin_token = \"adm\"").start();
    let c = client();
    let (status, _, created) = json_of(
        c.post(srv.url("/channels/orders/api/orders"))
            .bearer_auth(TOKEN)
            .json(&json!({"customer": "Kept Corp", "items": [{"sku": "K", "qty": 1, "price": 1}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, _, found) = json_of(
        c.get(srv.url(&format!("/channels/orders/api/orders/{id}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, found["customer"].as_str()),
        (200, Some("Kept Corp"))
    );

    // Poll every second. The shipped url (a path: this server) is left as it
    // is: the poller finds this server on its random port.
    let poller = srv
        .project
        .as_ref()
        .unwrap()
        .path()
        .join("channels/order_poller.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&poller).unwrap()).unwrap();
    assert_eq!(doc["url"], "/channels/orders/api/");
    doc["opts"]["schedule"][0]["every"] = "1s".into();
    std::fs::write(&poller, doc.to_string()).unwrap();

    let started = std::time::Instant::now();
    let new_orders = loop {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the poller never succeeded"
        );
        let (_, _, list) = json_of(
            c.get(srv.url("/admin/jobs?channel=order_poller&kind=schedule&state=succeeded"))
                .bearer_auth("adm")
                .send()
                .await
                .unwrap(),
        )
        .await;
        if let Some(first) = list["jobs"].as_array().unwrap().last() {
            break first["result"]["new_orders"].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let ids: Vec<&str> = new_orders
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"1001") && ids.contains(&"1003") && ids.contains(&id.as_str()),
        "{ids:?}"
    );
    assert!(!ids.contains(&"1002"), "1002 is shipped, not open");
}

/// Every ```rhai snippet of the README compiles and passes the authoring check.
#[test]
fn the_readme_snippets_compile_and_call_only_known_functions() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut project = common::Project::new();
    let mut n = 0;
    for (i, block) in readme.split("```rhai\n").skip(1).enumerate() {
        let code = block.split("```").next().unwrap();
        project = project.script(&format!("snippet{i}"), code);
        n += 1;
    }
    assert!(n >= 10, "only {n} snippets");
    let (status, out, err) = project.check();
    assert_eq!(status, 0, "{out}{err}");
}
