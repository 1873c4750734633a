//! The API description (SPEC §18): `GET /admin/openapi.json` is valid OpenAPI
//! 3.1 (checked by PyPI's openapi-spec-validator), names every route, and
//! schemathesis, generating requests from it against the running binary,
//! finds no 5xx answer and no answer outside it. The inputs it found while
//! the description was made are kept below as regression tests.
//!
//! The Python tools come from `./test.sh` (it installs them when missing);
//! `SWITCHYARD_PYTHON` and `SWITCHYARD_SCHEMATHESIS` say where they are.

mod common;

use std::process::Command;

use common::{client, json_of, Project, Server};
use serde_json::{json, Value};

const ADMIN: &str = "openapi-admin";

fn python() -> String {
    std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn schemathesis() -> String {
    std::env::var("SWITCHYARD_SCHEMATHESIS").unwrap_or_else(|_| "st".into())
}

/// The shipped examples, an admin token, and a trusted proxy (so a test can
/// speak for many senders and stay under the failed-authentication throttle).
fn project() -> Project {
    Project::new()
        .with_examples()
        .config(&format!(
            "admin_token = \"{ADMIN}\"\ntrusted_proxies = [\"127.0.0.1/32\"]"
        ))
        .channel(json!({"code": "nosend", "token_local": "nosend-token",
            "recv_svcscriptcode": "echo", "opts": {"issync": true}}))
        .script("echo", "body = #{ ok: true };")
}

async fn description(srv: &Server) -> Value {
    let resp = client()
        .get(srv.url("/admin/openapi.json"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    resp.json().await.unwrap()
}

/// `(method, path)` of every operation described.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                out.push((method.to_owned(), path.clone()));
            }
        }
    }
    out
}

fn run(cmd: &mut Command, what: &str) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what} cannot run ({e}); ./test.sh installs it (pip install schemathesis openapi-spec-validator)")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_description_is_valid_openapi_3_1_and_names_every_route() {
    let srv = project().start();
    let doc = description(&srv).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let file = srv.project.as_ref().unwrap().path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let (ok, out) = run(
        Command::new(python())
            .args(["-m", "openapi_spec_validator"])
            .arg(&file),
        "openapi-spec-validator",
    );
    assert!(ok, "not valid OpenAPI 3.1:\n{out}");

    // Every route of SPEC §18's list, with its error bodies.
    let ops = operations(&doc);
    for (method, path) in [
        ("get", "/admin/channels"),
        ("post", "/admin/channels"),
        ("put", "/admin/channels/{code}"),
        ("post", "/admin/channels/{code}/stop"),
        ("get", "/admin/scripts/{code}"),
        ("put", "/admin/scripts/{code}"),
        ("get", "/admin/jobs"),
        ("post", "/admin/jobs/{id}/retry"),
        ("get", "/admin/queues"),
        ("get", "/admin/connections"),
        ("post", "/admin/channels/{code}/try"),
        ("post", "/admin/channels/{code}/replay"),
        ("get", "/admin/channels/{code}/requests"),
        ("post", "/channels/{code}/api/{path}"),
        ("get", "/channels/{code}/ws"),
        ("post", "/channels/{code}/send"),
        ("post", "/channels/{code}/jobs/{id}/result"),
        ("put", "/channels/{code}/files/{name}"),
        ("post", "/events"),
        ("get", "/healthz"),
        ("get", "/console/session"),
        ("post", "/console/session"),
        ("delete", "/console/session"),
    ] {
        assert!(
            ops.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} is not described"
        );
    }
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], json!(["error", "request_id"]), "{error}");
    let unknown = &doc["paths"]["/admin/channels/{code}"]["get"]["responses"]["404"];
    assert_eq!(
        unknown["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Error"
    );
    // The channel document is the code's own type, with its fields.
    let opts = &doc["components"]["schemas"]["ChannelOpts"]["properties"];
    for field in [
        "issync",
        "send_retries",
        "schedule",
        "token_valid_until",
        "record",
    ] {
        assert!(opts.get(field).is_some(), "opts.{field} is not described");
    }
    // Every operation with a body says it may be too large, naming its bound.
    for (method, path) in &ops {
        let op = &doc["paths"][path][method];
        if op.get("requestBody").is_none() {
            continue;
        }
        let too_large = op["responses"]["413"]["description"].as_str();
        let bound = match path.as_str() {
            "/channels/{code}/files/{name}" => "max_file_bytes",
            "/admin/scripts/{code}" => "max_script_bytes",
            _ => "max_body_bytes",
        };
        assert!(
            too_large.is_some_and(|d| d.contains(bound)),
            "{method} {path}: 413 {too_large:?} does not name {bound}"
        );
    }
}

#[tokio::test]
async fn every_admin_operation_refuses_a_caller_without_credentials() {
    let srv = project().start();
    let doc = description(&srv).await;
    let mut checked = 0;
    for (i, (method, path)) in operations(&doc).into_iter().enumerate() {
        if !(path.starts_with("/admin/") || path == "/events" || path.ends_with("/send")) {
            continue;
        }
        let url = srv.url(
            &path
                .replace("{code}", "orders")
                .replace("{id}", "x")
                .replace("{name}", "x"),
        );
        let resp = client()
            .request(method.to_uppercase().parse().unwrap(), url)
            // A sender of its own each time: the throttle counts per sender.
            .header(
                "x-forwarded-for",
                format!("10.9.{}.{}", i / 200, i % 200 + 1),
            )
            .send()
            .await
            .unwrap();
        let (status, _, body) = json_of(resp).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{method} {path}"
        );
        assert!(
            doc["paths"][&path][&method]["responses"]["401"].is_object(),
            "{method} {path} does not describe its 401"
        );
        checked += 1;
    }
    assert!(checked >= 29, "only {checked} admin operations");
}

/// Runs schemathesis against `srv` with `phases`; returns its report.
fn schemathesis_run(srv: &Server, phases: &str, examples: &str) -> String {
    let config = srv
        .project
        .as_ref()
        .unwrap()
        .path()
        .join("schemathesis.toml");
    // The channel API and `/send` answer `501 no_script` for a channel without
    // the script (SPEC §4): described, and not a server fault.
    std::fs::write(
        &config,
        "[[operations]]\n\
         include-path-regex = \"^/channels/\\\\{code\\\\}/(send|api/\\\\{path\\\\})$\"\n\
         checks.not_a_server_error.expected-statuses = [\"2xx\", \"3xx\", \"4xx\", \"501\"]\n",
    )
    .unwrap();
    let (ok, out) = run(
        Command::new(schemathesis())
            .arg("--no-color")
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(srv.url("/admin/openapi.json"))
            .args(["-H", &format!("Authorization: Bearer {ADMIN}")])
            .args(["--checks", "all"])
            // Requests without credentials are the test above: here they would
            // trip the throttle (20 failures a minute) for every later request.
            .args([
                "--exclude-checks",
                "ignored_auth,missing_required_header,positive_data_acceptance",
            ])
            // A stream never ends.
            .args(["--exclude-path", "/admin/stream"])
            .args(["--phases", phases, "--max-examples", examples])
            .args(["--workers", "2", "--seed", "20261201"])
            // Its cache of crashes goes to the project's folder, not the repository.
            .current_dir(srv.project.as_ref().unwrap().path())
            .env("NO_COLOR", "1"),
        "schemathesis",
    );
    let summary = out
        .lines()
        .filter(|l| l.contains("generated") || l.contains("Tested:"))
        .collect::<Vec<_>>()
        .join("; ");
    println!("schemathesis {phases}: {summary}");
    assert!(ok, "schemathesis ({phases}) found failures:\n{out}");
    assert!(summary.contains("generated"), "{out}");
    out
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_description() {
    // Fuzzing and stateful runs (links between operations) first, on a fresh
    // server; then the examples and the boundary values of the coverage phase,
    // which send malformed credentials and may leave the sender throttled.
    let srv = project().start();
    schemathesis_run(&srv, "fuzzing,stateful", "60");
    schemathesis_run(&srv, "examples,coverage", "60");
    let logs = srv.logs();
    assert!(!logs.contains("panicked"), "{logs}");
}

async fn admin(srv: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client()
        .request(method.parse().unwrap(), srv.url(path))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let (status, _, body) = json_of(req.send().await.unwrap()).await;
    (status, body)
}

// What schemathesis found while the description was made, each kept.

#[tokio::test]
async fn a_channel_as_read_is_described_and_can_be_written_back() {
    let srv = project().start();
    let doc = description(&srv).await;
    // GET adds `status`, `state` and `credential` to the document: the
    // document's schema must not close itself against them.
    let shown = &doc["components"]["schemas"]["ChannelShown"];
    assert!(shown.to_string().contains("credential"), "{shown}");
    assert!(doc["components"]["schemas"]["ChannelDoc"]
        .get("additionalProperties")
        .is_none());
    let (status, read) = admin(&srv, "GET", "/admin/channels/nosend", None).await;
    assert_eq!(status, 200);
    for key in ["status", "state", "credential"] {
        assert!(read.get(key).is_some(), "{read}");
    }
    let (status, body) = admin(&srv, "PUT", "/admin/channels/nosend", Some(read)).await;
    assert_eq!(status, 200, "{body}");
    // `ipmask` is a list, a comma string or null: all three are taken.
    for mask in [
        json!(null),
        json!("10.0.0.0/8, 127.0.0.1/32"),
        json!(["10.0.0.0/8"]),
    ] {
        let (status, body) = admin(
            &srv,
            "POST",
            "/admin/channels",
            Some(json!({"code": format!("m{}", mask.to_string().len()), "ipmask": mask})),
        )
        .await;
        assert_eq!(status, 201, "{mask}: {body}");
    }
    let ipmask = &doc["components"]["schemas"]["ChannelDoc"]["properties"]["ipmask"];
    assert_eq!(
        ipmask["oneOf"].as_array().map(Vec::len),
        Some(3),
        "{ipmask}"
    );
    // send_retries past u32 is refused, and described so.
    let (status, _) = admin(
        &srv,
        "POST",
        "/admin/channels",
        Some(json!({"code": "big", "opts": {"send_retries": 4294967296_u64}})),
    )
    .await;
    assert_eq!(status, 400);
    let retries = &doc["components"]["schemas"]["ChannelOpts"]["properties"]["send_retries"];
    assert_eq!(retries["maximum"], 4294967295_u64);
}

#[tokio::test]
async fn bodies_that_may_be_empty_or_any_json_are_described_so() {
    let srv = project().start();
    let doc = description(&srv).await;
    // An empty script is a script; an empty check is a check.
    let (status, body) = admin(&srv, "PUT", "/admin/scripts/empty", None).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = admin(&srv, "POST", "/admin/check", None).await;
    assert_eq!((status, &body["ok"]), (200, &json!(true)));
    for (method, path) in [("put", "/admin/scripts/{code}"), ("post", "/admin/check")] {
        let required = &doc["paths"][path][method]["requestBody"]["required"];
        assert_ne!(required, &json!(true), "{method} {path}");
    }
    // An event's data is any JSON, an array too; its name is not empty.
    let (status, _) = admin(
        &srv,
        "POST",
        "/events",
        Some(json!({"name": "a.b", "data": [null, 1]})),
    )
    .await;
    assert_eq!(status, 202);
    let (status, body) = admin(
        &srv,
        "POST",
        "/events",
        Some(json!({"name": "", "data": {}})),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    let event = &doc["components"]["schemas"]["EventIn"];
    assert_eq!(event["required"], json!(["name"]), "{event}");
    assert!(event["properties"]["data"].get("type").is_none(), "{event}");
    assert!(
        event["properties"]["name"]["pattern"].is_string(),
        "{event}"
    );
    // The overview's bytes are a number.
    let (_, overview) = admin(&srv, "GET", "/admin/overview", None).await;
    assert!(overview["bytes_per_channel"].is_u64(), "{overview}");
    let schema = &doc["components"]["schemas"]["Overview"]["properties"]["bytes_per_channel"];
    assert_eq!(schema["type"], "integer");
}

#[tokio::test]
async fn send_refusals_are_described() {
    let srv = project().start();
    let doc = description(&srv).await;
    let send = &doc["paths"]["/channels/{code}/send"]["post"];
    // An empty tag is refused; the description says a tag is 1 to 256 bytes.
    let (status, body) = admin(&srv, "POST", "/channels/nosend/send?tag=", Some(json!({}))).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    let tag = send["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tag")
        .unwrap();
    assert_eq!(tag["schema"]["minLength"], 1, "{tag}");
    // A channel without a send script: 501 no_script, like the channel API
    // without a recv script (SPEC §4), and described.
    let (status, body) = admin(&srv, "POST", "/channels/nosend/send", Some(json!({}))).await;
    assert_eq!((status, body["error"].as_str()), (501, Some("no_script")));
    assert!(send["responses"]["501"].is_object(), "{send}");
}

#[tokio::test]
async fn listing_and_replay_numbers_are_described_as_taken() {
    let srv = project().start();
    let doc = description(&srv).await;
    // An empty filter is no filter; `test` and the numbers are strings of a pattern.
    let (status, body) = admin(
        &srv,
        "GET",
        "/admin/jobs?limit=&offset=&test=&channel=",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = admin(&srv, "GET", "/admin/jobs?test=yes", None).await;
    assert_eq!(status, 400);
    let params = doc["paths"]["/admin/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap();
    for name in ["limit", "offset", "test"] {
        let p = params.iter().find(|p| p["name"] == name).unwrap();
        assert!(p["schema"]["pattern"].is_string(), "{p}");
    }
    // A replay's limit: null, or any whole number (taken into 1..1000).
    for limit in [json!(null), json!(9223372036854775808_u64)] {
        let (status, body) = admin(
            &srv,
            "POST",
            "/admin/channels/nosend/replay",
            Some(json!({"script": "", "limit": limit})),
        )
        .await;
        assert_eq!(status, 200, "{limit}: {body}");
    }
    let limit = &doc["components"]["schemas"]["ReplayIn"]["properties"]["limit"];
    assert_eq!(limit["type"], json!(["integer", "null"]), "{limit}");
    assert!(limit.get("format").is_none() && limit.get("maximum").is_none());
}
