//! Bench helper: an OTLP/HTTP receiver that counts what it gets and keeps
//! nothing. `otlp_sink PORT` serves `POST /v1/traces` on 127.0.0.1:PORT and
//! answers `GET /count` with `spans=N bytes=M` (each body decoded as OTLP
//! protobuf). Runs until killed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
struct Count {
    spans: AtomicU64,
    bytes: AtomicU64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("otlp_sink PORT");
    let count: Arc<Count> = Arc::default();
    let (c1, c2) = (count.clone(), count.clone());
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let c = c1.clone();
                async move {
                    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
                    use prost::Message;
                    let n = ExportTraceServiceRequest::decode(body.as_ref())
                        .map(|r| {
                            r.resource_spans
                                .iter()
                                .flat_map(|rs| &rs.scope_spans)
                                .map(|ss| ss.spans.len() as u64)
                                .sum()
                        })
                        .unwrap_or(0);
                    c.spans.fetch_add(n, Ordering::Relaxed);
                    c.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    "{}"
                }
            }),
        )
        .route(
            "/count",
            axum::routing::get(move || {
                let c = c2.clone();
                async move {
                    format!(
                        "spans={} bytes={}",
                        c.spans.load(Ordering::Relaxed),
                        c.bytes.load(Ordering::Relaxed)
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
