//! Authentication against the real binary: tokens, masks, proxies, JWTs, throttle.

mod common;

use std::time::Duration;

use common::{channel, client, json_of, repo, Project, Server};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const WHO: &str = r#"body = #{ user: user_id(), sender: startparam(6),
    admin: has_role("admin"), ops: has_role("ops"), extra: has_role("extra") };"#;

async fn call(srv: &Server, path: &str, bearer: Option<&str>, xff: Option<&str>) -> (u16, Value) {
    let mut req = client().get(srv.url(path));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(x) = xff {
        req = req.header("X-Forwarded-For", x);
    }
    let (status, headers, body) = json_of(req.send().await.unwrap()).await;
    if status >= 400 {
        assert_eq!(
            body["request_id"],
            headers["x-request-id"].to_str().unwrap()
        );
    }
    (status, body)
}

#[tokio::test]
async fn local_tokens_from_header_or_query_and_the_error_table() {
    let srv = Project::new()
        .channel(channel("a", "who"))
        .channel(channel("b", "who"))
        .channel(
            json!({"code": "off", "token_local": "off-token", "recv_svcscriptcode": "who",
            "opts": {"issync": true, "disabled": true}}),
        )
        .channel(json!({"code": "notoken", "recv_svcscriptcode": "who", "opts": {"issync": true}}))
        .script("who", WHO)
        .start();
    assert_eq!(
        call(&srv, "/channels/a/api", Some("a-token"), None).await.0,
        200
    );
    assert_eq!(
        call(&srv, "/channels/a/api?token=a-token", None, None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&srv, "/channels/a/api?token=a-token", Some("a-token"), None)
            .await
            .0,
        200
    );

    for (path, bearer) in [
        ("/channels/a/api", None),
        ("/channels/a/api", Some("wrong")),
        ("/channels/a/api", Some("b-token")),
        ("/channels/a/api?token=", None),
        ("/channels/a/api?token=a-token", Some("other")),
        ("/channels/a/api?token=a-token&token=x", None),
        ("/channels/notoken/api?token=", None),
        ("/channels/notoken/api", Some("anything")),
    ] {
        let (status, body) = call(&srv, path, bearer, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{path} {bearer:?}"
        );
    }

    // Two Authorization headers with different values.
    let resp = client()
        .get(srv.url("/channels/a/api"))
        .header("Authorization", "Bearer a-token")
        .header("Authorization", "Bearer nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let (status, body) = call(&srv, "/channels/zzz/api", Some("a-token"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_channel"))
    );
    let (status, body) = call(&srv, "/channels/off/api", Some("off-token"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("channel_disabled"))
    );
    let (status, _) = call(&srv, "/channels/off/api", Some("wrong"), None).await;
    assert_eq!(
        status, 401,
        "a disabled channel still refuses strangers first"
    );
}

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    let srv = Project::new()
        .channel(
            json!({"code": "s", "token_local": "SUPERSECRET-local-123", "recv_svcscriptcode": "who",
            "opts": {"issync": true}}),
        )
        .script("who", "log_info(`query is ${startparam(3)}`); body = 1;")
        .start();
    for path in [
        "/channels/s/api?token=SUPERSECRET-local-123&x=1",
        "/channels/s/api?token=SUPERSECRET-wrong-456",
    ] {
        call(&srv, path, None, None).await;
    }
    call(&srv, "/channels/s/api", Some("SUPERSECRET-local-123"), None).await;
    assert!(srv.wait_for_log("query is x=1", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!srv.logs().contains("SUPERSECRET"), "{}", srv.logs());
}

#[tokio::test]
async fn ipmask_limits_local_tokens_and_proxies_are_believed_only_when_trusted() {
    let doc = |code: &str, mask: Value| {
        json!({"code": code, "token_local": format!("{code}-token"), "ipmask": mask,
            "recv_svcscriptcode": "who", "opts": {"issync": true}})
    };
    let plain = Project::new()
        .channel(doc("local", json!(["127.0.0.0/8"])))
        .channel(doc("remote", json!("10.0.0.0/8, 2001:db8::/32")))
        .script("who", WHO)
        .start();
    assert_eq!(
        call(&plain, "/channels/local/api", Some("local-token"), None)
            .await
            .0,
        200
    );
    let (status, body) = call(&plain, "/channels/remote/api", Some("remote-token"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden_ip"))
    );
    // X-Forwarded-For from a peer that is not a trusted proxy is ignored.
    let (status, _) = call(
        &plain,
        "/channels/remote/api",
        Some("remote-token"),
        Some("10.1.2.3"),
    )
    .await;
    assert_eq!(status, 403);

    let proxied = Project::new()
        .config("trusted_proxies = [\"127.0.0.1/32\", \"192.168.0.0/16\"]")
        .channel(doc("remote", json!("10.0.0.0/8, 2001:db8::/32")))
        .script("who", WHO)
        .start();
    for (xff, sender) in [
        ("10.1.2.3", "10.1.2.3"),
        ("8.8.8.8, 10.1.2.3", "10.1.2.3"),
        ("10.1.2.3, 192.168.1.1", "10.1.2.3"),
        ("::ffff:10.9.9.9", "10.9.9.9"),
        ("2001:db8::5", "2001:db8::5"),
    ] {
        let (status, body) = call(
            &proxied,
            "/channels/remote/api",
            Some("remote-token"),
            Some(xff),
        )
        .await;
        assert_eq!(status, 200, "{xff}");
        assert_eq!(body["sender"], sender, "{xff}");
    }
    for xff in ["10.1.2.3, 8.8.8.8", "2001:db9::1", "", "garbage"] {
        let (status, _) = call(
            &proxied,
            "/channels/remote/api",
            Some("remote-token"),
            Some(xff),
        )
        .await;
        assert_eq!(status, 403, "{xff:?}");
    }
}

fn hs256(claims: Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn exp_in(secs: i64) -> i64 {
    chrono::Utc::now().timestamp() + secs
}

#[tokio::test]
async fn iam_jwts_with_hs256() {
    let srv = Project::new()
        .config(
            "[iam]\njwt_secret = \"iam-secret\"\n[[users]]\nid = \"alice\"\nroles = [\"extra\"]",
        )
        .channel(json!({"code": "crm", "recv_svcscriptcode": "who",
            "opts": {"issync": true, "roles": ["ops", "admin"], "disabled": false}}))
        .channel(
            json!({"code": "open", "recv_svcscriptcode": "who", "ipmask": ["10.0.0.0/8"],
            "opts": {"issync": true, "roles": ["*"]}}),
        )
        .channel(json!({"code": "closed", "recv_svcscriptcode": "who", "opts": {"issync": true}}))
        .script("who", WHO)
        .start();
    let good = hs256(
        json!({"sub": "alice", "roles": ["ops"], "exp": exp_in(300)}),
        "iam-secret",
    );
    let (status, body) = call(&srv, "/channels/crm/api", Some(&good), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "alice");
    assert_eq!(body["ops"], true);
    assert_eq!(body["admin"], false, "the token's roles, not the channel's");
    assert_eq!(
        body["extra"], true,
        "the roles of the configured user are added"
    );

    // "*" accepts any valid IAM caller, and ipmask does not apply to IAM tokens.
    let other = hs256(
        json!({"sub": "bob", "roles": ["nothing"], "exp": exp_in(300)}),
        "iam-secret",
    );
    assert_eq!(
        call(&srv, "/channels/open/api", Some(&other), None).await.0,
        200
    );
    let with_aud = hs256(
        json!({"sub": "bob", "aud": "open", "exp": exp_in(300)}),
        "iam-secret",
    );
    assert_eq!(
        call(&srv, "/channels/open/api", Some(&with_aud), None)
            .await
            .0,
        200
    );

    let refused = [
        ("no shared role", "/channels/crm/api", other.clone()),
        (
            "channel without roles",
            "/channels/closed/api",
            good.clone(),
        ),
        (
            "expired",
            "/channels/crm/api",
            hs256(
                json!({"sub": "alice", "roles": ["ops"], "exp": exp_in(-3600)}),
                "iam-secret",
            ),
        ),
        (
            "no exp",
            "/channels/crm/api",
            hs256(json!({"sub": "alice", "roles": ["ops"]}), "iam-secret"),
        ),
        (
            "wrong secret",
            "/channels/crm/api",
            hs256(
                json!({"sub": "alice", "roles": ["ops"], "exp": exp_in(300)}),
                "guess",
            ),
        ),
        (
            "wrong aud",
            "/channels/crm/api",
            hs256(
                json!({"sub": "alice", "roles": ["ops"], "aud": "billing", "exp": exp_in(300)}),
                "iam-secret",
            ),
        ),
        (
            "other alg",
            "/channels/crm/api",
            encode(
                &Header::new(Algorithm::HS512),
                &json!({"sub": "alice", "roles": ["ops"], "exp": exp_in(300)}),
                &EncodingKey::from_secret(b"iam-secret"),
            )
            .unwrap(),
        ),
        ("garbage", "/channels/crm/api", "a.b.c".to_string()),
    ];
    for (why, path, token) in refused {
        let (status, body) = call(&srv, path, Some(&token), None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{why}"
        );
    }
}

#[tokio::test]
async fn iam_jwts_with_rs256_and_es256_public_keys() {
    let fixtures = repo().join("tests/fixtures");
    let rsa_public = std::fs::read(fixtures.join("rsa_public.pem")).unwrap();
    let rsa_private = std::fs::read(fixtures.join("rsa_private.pem")).unwrap();
    let claims = json!({"sub": "carol", "roles": ["ops"], "exp": exp_in(300)});
    let srv = Project::new()
        .config(&format!("[iam]\njwt_public_key_file = {:?}", fixtures.join("rsa_public.pem")))
        .channel(json!({"code": "crm", "recv_svcscriptcode": "who", "opts": {"issync": true, "roles": ["ops"]}}))
        .script("who", WHO)
        .start();
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
    )
    .unwrap();
    let (status, body) = call(&srv, "/channels/crm/api", Some(&rs), None).await;
    assert_eq!((status, body["user"].as_str()), (200, Some("carol")));
    // The classic confusion: HS256 "signed" with the RSA public key as the secret.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&rsa_public),
    )
    .unwrap();
    assert_eq!(
        call(&srv, "/channels/crm/api", Some(&confused), None)
            .await
            .0,
        401
    );
    let rs512 = encode(
        &Header::new(Algorithm::RS512),
        &claims,
        &EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
    )
    .unwrap();
    assert_eq!(
        call(&srv, "/channels/crm/api", Some(&rs512), None).await.0,
        401
    );

    let ec_private = std::fs::read(fixtures.join("ec_private.pem")).unwrap();
    let srv = Project::new()
        .config(&format!("[iam]\njwt_public_key_file = {:?}", fixtures.join("ec_public.pem")))
        .channel(json!({"code": "crm", "recv_svcscriptcode": "who", "opts": {"issync": true, "roles": ["ops"]}}))
        .script("who", WHO)
        .start();
    let es = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(&ec_private).unwrap(),
    )
    .unwrap();
    assert_eq!(
        call(&srv, "/channels/crm/api", Some(&es), None).await.0,
        200
    );
    assert_eq!(
        call(&srv, "/channels/crm/api", Some(&rs), None).await.0,
        401
    );
}

#[tokio::test]
async fn brute_force_is_throttled_per_address_and_channel() {
    let srv = Project::new()
        .channel(channel("t", "who"))
        .channel(channel("u", "who"))
        .script("who", WHO)
        .start();
    for i in 0..20 {
        let (status, _) = call(&srv, "/channels/t/api", Some(&format!("guess-{i}")), None).await;
        assert_eq!(status, 401, "attempt {i}");
    }
    let resp = client()
        .get(srv.url("/channels/t/api"))
        .bearer_auth("t-token")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        429,
        "even the right token waits out the minute"
    );
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let (_, _, body) = json_of(resp).await;
    assert_eq!(body["error"], "throttled");
    // Another channel from the same address is not affected.
    assert_eq!(
        call(&srv, "/channels/u/api", Some("u-token"), None).await.0,
        200
    );
}
