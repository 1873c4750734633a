//! Traces (SPEC §11) against the real binary: a small OTLP/HTTP receiver
//! started by the test on loopback collects the spans the server exports,
//! and doubles as the channel's upstream, recording each call's
//! `traceparent`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, ws_connect, ws_recv, ws_send, Project, Server};
use serde_json::{json, Value};

/// What the receiver got: exported spans, and the upstream calls' `traceparent`s.
#[derive(Default)]
struct Got {
    spans: Vec<Value>,
    parents: Vec<Option<String>>,
}

struct Receiver {
    base: String,
    got: Arc<Mutex<Got>>,
}

impl Receiver {
    async fn start() -> Receiver {
        use axum::extract::State;
        use axum::http::{HeaderMap, Uri};
        let got: Arc<Mutex<Got>> = Arc::default();
        async fn any(
            State(got): State<Arc<Mutex<Got>>>,
            uri: Uri,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> String {
            let mut got = got.lock().unwrap();
            if uri.path() == "/v1/traces" {
                use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
                use prost::Message;
                let request =
                    ExportTraceServiceRequest::decode(body.as_ref()).expect("OTLP protobuf");
                // As OTLP/JSON shows it (hex ids, camelCase keys).
                let doc = serde_json::to_value(&request).unwrap();
                for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                        for span in ss["spans"].as_array().into_iter().flatten() {
                            let mut span = span.clone();
                            span["service"] = rs["resource"]["attributes"].clone();
                            got.spans.push(span);
                        }
                    }
                }
                return "{}".into();
            }
            got.parents.push(
                headers
                    .get("traceparent")
                    .map(|v| v.to_str().unwrap().to_owned()),
            );
            r#"{"ok":true}"#.into()
        }
        let app = axum::Router::new()
            .fallback(axum::routing::any(any))
            .with_state(got.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { base, got }
    }

    fn parents(&self) -> Vec<Option<String>> {
        self.got.lock().unwrap().parents.clone()
    }

    /// Waits until a span satisfies `f`; every span so far.
    async fn span_where(&self, what: &str, f: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.got.lock().unwrap().spans.clone();
            if let Some(s) = spans.iter().find(|s| f(s)) {
                return (s.clone(), spans);
            }
            assert!(Instant::now() < deadline, "no span {what} in {spans:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The string (or int) value of attribute `key` of a span.
fn attr(span: &Value, key: &str) -> Value {
    span["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["key"] == key)
        .map(|a| {
            let v = &a["value"];
            if let Some(s) = v.get("stringValue") {
                s.clone()
            } else if let Some(i) = v.get("intValue") {
                // OTLP JSON writes 64-bit integers as strings or numbers.
                json!(i
                    .as_str()
                    .map_or_else(|| i.as_i64().unwrap(), |s| s.parse().unwrap()))
            } else {
                v.clone()
            }
        })
        .unwrap_or(Value::Null)
}

fn project(rx: &Receiver, export: bool) -> Project {
    let mut config = "admin_token = \"adm\"".to_owned();
    if export {
        config.push_str(&format!("\notlp_endpoint = \"{}\"", rx.base));
    }
    Project::new()
        .config(&config)
        .channel(json!({"code": "hook", "token_local": "t", "url": format!("{}/", rx.base),
            "recv_svcscriptcode": "forward", "opts": {"issync": true}}))
        .script(
            "forward",
            r#"let r = webquery(#{ method: "POST", path: "orders", body: #{ n: 1 } }); body = r.status;"#,
        )
        .channel(json!({"code": "out", "token_local": "t", "url": format!("{}/", rx.base),
            "send_svcscriptcode": "send"}))
        .script("send", r#"webquery(#{ method: "POST", path: "sent" }); result = 1;"#)
        .channel(json!({"code": "live", "token_local": "t", "recv_svcscriptcode_ws": "echo"}))
        .script("echo", "data = startparam(1);")
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

async fn call_hook(srv: &Server, traceparent: Option<&str>) -> String {
    let mut req = client().post(srv.url("/channels/hook/api?token=t"));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["x-request-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_webhook_script_and_webquery_make_one_trace_exported_over_otlp() {
    let rx = Receiver::start().await;
    let srv = project(&rx, true).start();
    let request_id = call_hook(&srv, Some(&format!("00-{TRACE}-{PARENT}-01"))).await;

    // Upstream: the trace goes on, under a span of this server's.
    let parents = rx.parents();
    let sent = parents[0].as_deref().expect("webquery sent a traceparent");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", TRACE, "01"),
        "{sent}"
    );
    assert_ne!(parts[2], PARENT, "the webquery's own span: {sent}");

    // The span tree: request (server) → script → webquery (client).
    let (request, _) = rx
        .span_where("of the request", |s| {
            attr(s, "switchyard.request_id") == request_id && s["kind"] == json!(2)
        })
        .await;
    assert_eq!(request["traceId"], TRACE, "{request}");
    assert_eq!(
        request["parentSpanId"], PARENT,
        "continues the caller's trace"
    );
    assert_eq!(request["name"], "POST /channels/{code}/api");
    assert_eq!(attr(&request, "switchyard.channel"), "hook");
    assert_eq!(attr(&request, "http.response.status_code"), 200);
    let (script, _) = rx
        .span_where("of the script", |s| s["parentSpanId"] == request["spanId"])
        .await;
    assert_eq!(script["name"], "script hook");
    assert_eq!(attr(&script, "switchyard.request_id"), request_id);
    let (webquery, spans) = rx
        .span_where("of the webquery", |s| s["parentSpanId"] == script["spanId"])
        .await;
    assert_eq!(webquery["kind"], json!(3), "a client span: {webquery}");
    assert_eq!(webquery["spanId"], parts[2], "its context is what went out");
    assert_eq!(attr(&webquery, "http.response.status_code"), 200);
    assert_eq!(attr(&webquery, "url.path"), "/orders");
    let service = spans[0]["service"].to_string();
    assert!(service.contains("switchyard"), "service.name: {service}");
}

#[tokio::test]
async fn without_a_traceparent_a_trace_starts_and_frames_and_jobs_are_spans() {
    let rx = Receiver::start().await;
    let srv = project(&rx, true).start();
    let request_id = call_hook(&srv, None).await;
    let (request, _) = rx
        .span_where("of the request", |s| {
            attr(s, "switchyard.request_id") == request_id && s["kind"] == json!(2)
        })
        .await;
    assert!(
        request
            .get("parentSpanId")
            .is_none_or(|p| p == "" || p.is_null()),
        "a root span: {request}"
    );
    let sent = rx.parents()[0].clone().unwrap();
    assert_eq!(
        sent.split('-').nth(1),
        request["traceId"].as_str(),
        "{sent}"
    );

    // A websocket frame.
    let mut ws = ws_connect(&srv, "/channels/live/ws?token=t").await;
    ws_send(&mut ws, json!(["message", {"qid": 9, "data": {"x": 1}}])).await;
    assert_eq!(ws_recv(&mut ws).await[0], "message_result");
    let (frame, _) = rx
        .span_where("of the frame", |s| s["name"] == "frame message live")
        .await;
    assert_eq!(attr(&frame, "switchyard.channel"), "live");
    assert_eq!(attr(&frame, "switchyard.qid"), "9");

    // A send job's attempt, with its webquery under it.
    let id = common::send_job(&srv, "adm", "out", &json!({"n": 2})).await;
    let (attempt, _) = rx
        .span_where("of the job attempt", |s| {
            attr(s, "switchyard.request_id") == id
        })
        .await;
    assert_eq!(attempt["name"], "job send out");
    assert_eq!(attr(&attempt, "switchyard.job.attempt"), 1);
    rx.span_where("of the job's webquery", |s| {
        s["parentSpanId"] == attempt["spanId"]
    })
    .await;
}

#[tokio::test]
async fn with_tracing_off_nothing_is_exported_and_the_trace_still_goes_upstream() {
    let rx = Receiver::start().await;
    let srv = project(&rx, false).start();
    call_hook(&srv, Some(&format!("00-{TRACE}-{PARENT}-01"))).await;
    let sent = rx.parents()[0].clone().expect("a traceparent upstream");
    assert_eq!(sent.split('-').nth(1), Some(TRACE), "{sent}");
    assert_ne!(sent.split('-').nth(2), Some(PARENT), "{sent}");
    // A malformed traceparent starts a new trace.
    call_hook(&srv, Some("00-zz-yy-01")).await;
    let sent = rx.parents()[1].clone().unwrap();
    assert_ne!(sent.split('-').nth(1), Some(TRACE));
    assert_eq!(sent.len(), 55, "{sent}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(rx.got.lock().unwrap().spans.is_empty(), "nothing exported");
}

// Multi-threaded: the receiver answers while the test waits for the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_waiting_are_exported_on_a_clean_stop() {
    let rx = Receiver::start().await;
    let mut srv = project(&rx, true).start();
    let request_id = call_hook(&srv, None).await;
    // At once, before the exporter's next batch.
    srv.signal("TERM");
    srv.wait_exit(Duration::from_secs(15))
        .expect("a clean stop");
    let spans = rx.got.lock().unwrap().spans.clone();
    assert!(
        spans
            .iter()
            .any(|s| attr(s, "switchyard.request_id") == request_id),
        "{spans:#?}\n{}",
        srv.logs()
    );
}

/// A secret's value (SPEC §20) is never in an exported span: not in a
/// webquery's path (the channel's `url` is a secret), not in a failed run's status.
#[tokio::test]
async fn no_secret_value_is_in_an_exported_span() {
    let rx = Receiver::start().await;
    let srv = project(&rx, true)
        .channel(
            json!({"code": "vault", "token_local": "t", "url": "$secret:vault.url",
            "recv_svcscriptcode": "vault", "opts": {"issync": true}}),
        )
        .script(
            "vault",
            r#"let r = webquery(#{ method: "GET", path: "orders" });
               throw "the partner said no to " + secret("vault.key");"#,
        )
        .start();
    for (name, value) in [
        ("vault.url", format!("{}/tenant-path-8c1f4e/", rx.base)),
        ("vault.key", "key-value-3b7d90".to_owned()),
    ] {
        let resp = client()
            .put(srv.url(&format!("/admin/secrets/{name}")))
            .bearer_auth("adm")
            .json(&json!({"value": value, "channels": ["vault"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = client()
            .post(srv.url("/channels/vault/api?token=t"))
            .send()
            .await
            .unwrap();
        if resp.status() == 500 {
            break;
        }
        assert!(Instant::now() < deadline, "vault: {}", resp.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (webquery, _) = rx
        .span_where("of the webquery", |s| s["name"] == "webquery GET")
        .await;
    assert_eq!(attr(&webquery, "url.path"), "/***/orders", "{webquery}");
    let (script, spans) = rx
        .span_where("of the failed run", |s| {
            s["name"] == "script vault" && s["status"]["code"] == json!(2)
        })
        .await;
    let text = serde_json::to_string(&spans).unwrap();
    assert!(!text.contains("tenant-path-8c1f4e"), "{text}");
    assert!(!text.contains("key-value-3b7d90"), "{script}");
    assert!(
        script["status"]["message"]
            .as_str()
            .unwrap()
            .contains("said no to ***"),
        "{script}"
    );
}
