//! TLS and HTTP/2 (SPEC §17) against the real binary: certificates made at
//! test time (rcgen), HTTPS with HTTP/1.1 and HTTP/2 chosen by ALPN (a real
//! HTTP/2 client: hyper's), a websocket over TLS, a certificate reload,
//! h2c with prior knowledge, and HTTP/2 floods written frame by frame.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::{Project, Server};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "switchyard test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A certificate for `localhost` and 127.0.0.1 signed by this CA: (cert PEM, key PEM, cert DER).
    fn issue(&self, name: &str) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A rustls client that trusts this CA and offers `alpn`.
    fn connector(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.cert.der().to_vec()))
            .unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

const HELLO: &str = r#"body = #{ hello: "world" };"#;
const ECHO_WS: &str = r#"data = #{ echo: parse_json(startparam(1)) };"#;

/// A project serving HTTPS with `cert` / `key` written into its folder.
fn tls_project(cert: &str, key: &str) -> Project {
    let project = Project::new();
    let dir = project.path().to_owned();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    project
        .config(&format!(
            "admin_token = \"adm\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nheader_timeout = \"2s\"",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ))
        .channel(
            json!({"code": "hello", "token_local": "t", "recv_svcscriptcode": "hello",
            "opts": {"issync": true}}),
        )
        .script("hello", HELLO)
        .channel(json!({"code": "live", "token_local": "t", "recv_svcscriptcode_ws": "echo_ws"}))
        .script("echo_ws", ECHO_WS)
}

fn addr(srv: &Server) -> String {
    srv.base.rsplit("//").next().unwrap().to_owned()
}

/// A TLS connection to `srv` offering `alpn`.
async fn tls_connect(
    srv: &Server,
    ca: &Ca,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr(srv)).await.unwrap();
    ca.connector(alpn)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// The certificate `srv` presents to a new handshake.
async fn presented(srv: &Server, ca: &Ca) -> Vec<u8> {
    let tls = tls_connect(srv, ca, &[b"http/1.1"]).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// An HTTP/2 client connection on `io` (its driver spawned), ready to send requests.
async fn h2_client<B, I>(io: I) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    sender
}

/// GET `path` over HTTP/2 on `io`: status, version and body.
async fn h2_get<I>(io: I, authority: &str, path: &str) -> (u16, hyper::Version, String)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut sender = h2_client(io).await;
    let req = hyper::Request::get(format!("{authority}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.expect("an HTTP/2 answer");
    let (status, version) = (resp.status().as_u16(), resp.version());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, version, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn https_serves_http1_and_http2_chosen_by_alpn() {
    let ca = Ca::new();
    let (cert, key, _) = ca.issue("one");
    let srv = tls_project(&cert, &key).start();
    assert!(srv.base.starts_with("https://"), "{}", srv.base);

    // HTTP/1.1 (a client that offers only it), with the CA trusted.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp = client
        .get(format!(
            "https://localhost:{}/channels/hello/api/x?token=t",
            addr(&srv).rsplit(':').next().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"hello": "world"})
    );

    // HTTP/2 when the client offers it first.
    let tls = tls_connect(&srv, &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, version, body) =
        h2_get(tls, "https://localhost", "/channels/hello/api/y?token=t").await;
    assert_eq!((status, version), (200, hyper::Version::HTTP_2));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"hello": "world"})
    );

    // The admin API and its errors over HTTP/2 too.
    let tls = tls_connect(&srv, &ca, &[b"h2"]).await;
    let (status, _, body) = h2_get(tls, "https://localhost", "/admin/channels").await;
    assert_eq!(status, 401, "{body}");

    // Plain HTTP on a TLS listener is refused; the server goes on.
    let mut tcp = TcpStream::connect(addr(&srv)).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    assert!(!presented(&srv, &ca).await.is_empty());
}

/// Over TLS the console's session cookie is `Secure` (on both its paths).
#[tokio::test]
async fn the_console_cookie_is_secure_over_tls() {
    let ca = Ca::new();
    let (cert, key, _) = ca.issue("one");
    let srv = tls_project(&cert, &key).start();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp = client
        .post(format!(
            "https://localhost:{}/console/session",
            addr(&srv).rsplit(':').next().unwrap()
        ))
        .json(&json!({"token": "adm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookies: Vec<&str> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    for (cookie, path) in cookies.iter().zip(["/console", "/admin"]) {
        assert!(cookie.contains(&format!("; Path={path};")), "{cookie}");
        assert!(cookie.contains("; Secure"), "{cookie}");
        assert!(cookie.contains("HttpOnly"), "{cookie}");
    }
}

#[tokio::test]
async fn a_websocket_works_over_tls() {
    let ca = Ca::new();
    let (cert, key, _) = ca.issue("one");
    let srv = tls_project(&cert, &key).start();
    let tls = tls_connect(&srv, &ca, &[b"http/1.1"]).await;
    let url = format!(
        "wss://localhost:{}/channels/live/ws?token=t",
        addr(&srv).rsplit(':').next().unwrap()
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("websocket upgrade over TLS");
    ws.send(Message::Text(
        json!(["message", {"qid": 1, "data": {"x": 1}}])
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let reply = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => break serde_json::from_str::<Value>(t.as_str()).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("no answer: {other:?}"),
        }
    };
    assert_eq!(reply[0], "message_result", "{reply}");
    assert_eq!(reply[1]["data"]["echo"], json!({"x": 1}), "{reply}");
}

#[tokio::test]
async fn a_new_certificate_is_taken_without_a_restart_and_a_broken_one_is_not() {
    let ca = Ca::new();
    let (cert, key, first) = ca.issue("first");
    let srv = tls_project(&cert, &key).start();
    let dir = srv.project.as_ref().unwrap().path().to_owned();
    assert_eq!(presented(&srv, &ca).await, first);
    // An open connection keeps working across the change.
    let kept = tls_connect(&srv, &ca, &[b"h2"]).await;

    let (cert2, key2, second) = ca.issue("second");
    replace(&dir, &cert2, &key2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while presented(&srv, &ca).await != second {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not taken:\n{}",
            srv.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(srv.logs().contains("TLS certificate reloaded"));
    let (status, _, _) = h2_get(kept, "https://localhost", "/healthz").await;
    assert_eq!(status, 200, "the connection made before the change goes on");

    // A broken file: logged, and the last good certificate stays.
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !srv.logs().contains("not reloaded") {
        assert!(
            Instant::now() < deadline,
            "a broken certificate was not logged:\n{}",
            srv.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(presented(&srv, &ca).await, second);
}

/// Writes a new pair over the old one, each file replaced at once.
fn replace(dir: &Path, cert: &str, key: &str) {
    for (name, text) in [("key.pem", key), ("cert.pem", cert)] {
        let tmp = dir.join(format!("{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

#[tokio::test]
async fn a_certificate_that_does_not_load_stops_start_up() {
    let ca = Ca::new();
    let (cert, _, _) = ca.issue("one");
    let (_, other_key, _) = ca.issue("two");
    let project = Project::new();
    let dir = project.path();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), other_key).unwrap();
    let config = dir.join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::binary())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(project.path().join("data"))
        .arg("--channels")
        .arg(project.path().join("channels"))
        .arg("--scripts")
        .arg(project.path().join("scripts"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls_cert") && err.contains("tls_key"), "{err}");
}

/// A plain project (h2c).
fn plain_project() -> Project {
    Project::new()
        .config("header_timeout = \"2s\"\nmax_body_bytes = 65536\nbody_timeout = \"2s\"")
        .channel(
            json!({"code": "hello", "token_local": "t", "recv_svcscriptcode": "hello",
            "opts": {"issync": true}}),
        )
        .script("hello", HELLO)
        .channel(
            json!({"code": "slow", "token_local": "t", "recv_svcscriptcode": "hello",
            "opts": {"issync": true}}),
        )
}

#[tokio::test]
async fn plain_listeners_take_http2_with_prior_knowledge() {
    let srv = plain_project().start();
    let tcp = TcpStream::connect(addr(&srv)).await.unwrap();
    let (status, version, body) =
        h2_get(tcp, "http://localhost", "/channels/hello/api/z?token=t").await;
    assert_eq!((status, version), (200, hyper::Version::HTTP_2));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"hello": "world"})
    );
    // HTTP/1.1 on the same listener as before.
    let resp = common::client()
        .get(srv.url("/channels/hello/api/w?token=t"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// An answer still being sent is not idleness: a server-sent event stream
/// over HTTP/2 outlives header_timeout (2 s) many times over and still gets
/// what happens.
#[tokio::test]
async fn an_http2_stream_being_answered_is_not_idle() {
    let srv = plain_project().config("admin_token = \"adm\"").start();
    let tcp = TcpStream::connect(addr(&srv)).await.unwrap();
    let mut sender = h2_client(tcp).await;
    let req = hyper::Request::get("http://localhost/admin/stream")
        .header("authorization", "Bearer adm")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.expect("an HTTP/2 answer");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // Nothing happens for three times header_timeout: the stream stays open.
    let quiet = tokio::time::timeout(Duration::from_secs(6), body.frame()).await;
    assert!(quiet.is_err(), "the stream ended while idle: {quiet:?}");
    // Then a request: the stream shows it.
    let resp = common::client()
        .get(srv.url("/channels/hello/api/seen?token=t"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = String::new();
    while !seen.contains("/seen") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    seen.push_str(&String::from_utf8_lossy(&data));
                }
            }
            other => panic!("the stream ended or stalled: {other:?}; so far {seen}"),
        }
    }
}

// --- HTTP/2 frames written by hand: the floods hyper's settings bound. ---

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block (HPACK, no Huffman, no indexing): `:method`, `:scheme
/// http`, `:path`, `:authority`, then `extra` literal headers.
fn header_block(post: bool, path: &str, extra: &[(&str, String)]) -> Vec<u8> {
    let mut b = vec![if post { 0x83 } else { 0x82 }, 0x86];
    let lit = |b: &mut Vec<u8>, index: u8, value: &[u8]| {
        b.push(index);
        push_len(b, value.len());
        b.extend_from_slice(value);
    };
    lit(&mut b, 0x04, path.as_bytes());
    lit(&mut b, 0x01, b"localhost");
    for (name, value) in extra {
        b.push(0x00);
        push_len(&mut b, name.len());
        b.extend_from_slice(name.as_bytes());
        push_len(&mut b, value.len());
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// An HPACK string length (7-bit prefix integer, Huffman bit clear).
fn push_len(b: &mut Vec<u8>, mut n: usize) {
    if n < 127 {
        b.push(n as u8);
        return;
    }
    b.push(127);
    n -= 127;
    while n >= 128 {
        b.push((n % 128 + 128) as u8);
        n /= 128;
    }
    b.push(n as u8);
}

/// An h2c connection that has sent its preface and an empty SETTINGS.
async fn h2c(srv: &Server) -> TcpStream {
    let mut tcp = TcpStream::connect(addr(srv)).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    tcp.write_all(&hello).await.unwrap();
    tcp
}

/// Frames the server sends within `wait` of each other (or until it closes):
/// (type, flags, stream, payload).
async fn frames(tcp: &mut TcpStream, wait: Duration) -> (Vec<(u8, u8, u32, Vec<u8>)>, bool) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let closed = loop {
        match tokio::time::timeout(wait, tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() >= at + 9 {
        let len = (usize::from(buf[at]) << 16)
            | (usize::from(buf[at + 1]) << 8)
            | usize::from(buf[at + 2]);
        if buf.len() < at + 9 + len {
            break;
        }
        let stream = u32::from_be_bytes(buf[at + 5..at + 9].try_into().unwrap()) & 0x7fff_ffff;
        out.push((
            buf[at + 3],
            buf[at + 4],
            stream,
            buf[at + 9..at + 9 + len].to_vec(),
        ));
        at += 9 + len;
    }
    (out, closed)
}

fn code_of(payload: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(payload[at..at + 4].try_into().unwrap())
}

async fn still_serves(srv: &Server) {
    let resp = common::client()
        .get(srv.url("/channels/hello/api/ok?token=t"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the server still serves others");
}

#[tokio::test]
async fn http2_streams_past_the_limit_are_refused() {
    let srv = plain_project().start();
    let mut tcp = h2c(&srv).await;
    // 150 requests whose bodies never come: they stay open.
    let mut out = Vec::new();
    for i in 0..150u32 {
        let block = header_block(true, "/channels/slow/api?token=t", &[]);
        out.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
    }
    tcp.write_all(&out).await.unwrap();
    let (got, _) = frames(&mut tcp, Duration::from_millis(700)).await;
    let settings = got
        .iter()
        .find(|f| f.0 == SETTINGS && f.1 == 0)
        .expect("server SETTINGS");
    let advertised: Vec<(u16, u32)> = settings
        .3
        .chunks(6)
        .map(|c| (u16::from_be_bytes([c[0], c[1]]), code_of(c, 2)))
        .collect();
    assert!(
        advertised.contains(&(0x3, 100)),
        "MAX_CONCURRENT_STREAMS 100: {advertised:?}"
    );
    let refused = got
        .iter()
        .filter(|f| f.0 == RST_STREAM && code_of(&f.3, 0) == REFUSED_STREAM)
        .count();
    assert_eq!(refused, 50, "the 50 streams past 100 are refused");
    still_serves(&srv).await;
}

#[tokio::test]
async fn http2_rapid_reset_closes_the_connection() {
    let srv = plain_project().start();
    let mut tcp = h2c(&srv).await;
    let mut out = Vec::new();
    for i in 0..5_000u32 {
        let block = header_block(false, "/channels/hello/api?token=t", &[]);
        out.extend(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &block));
        out.extend(frame(RST_STREAM, 0, 2 * i + 1, &CANCEL.to_be_bytes()));
    }
    // The server may close before it has read everything.
    let _ = tcp.write_all(&out).await;
    let (got, closed) = frames(&mut tcp, Duration::from_secs(3)).await;
    let goaway = got.iter().find(|f| f.0 == GOAWAY);
    let answered = got.iter().filter(|f| f.0 == DATA).count();
    assert!(
        goaway.is_some_and(|f| code_of(&f.3, 4) == ENHANCE_YOUR_CALM) && closed,
        "the connection is told to calm down (GOAWAY ENHANCE_YOUR_CALM) and closed: \
         {answered} answers, goaway {goaway:?}"
    );
    assert!(
        answered < 5_000,
        "not every reset stream was served ({answered})"
    );
    still_serves(&srv).await;
}

#[tokio::test]
async fn http2_header_lists_past_max_header_bytes_are_refused() {
    let srv = plain_project().start();
    // One header list of 100 KiB (max_header_bytes is 64 KiB), sent as a
    // HEADERS frame and CONTINUATION frames of 16 KiB.
    let mut tcp = h2c(&srv).await;
    let big = "x".repeat(100 * 1024);
    let block = header_block(false, "/channels/hello/api/big?token=t", &[("x-big", big)]);
    let mut out = Vec::new();
    let parts: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let (kind, flags) = match (i, last) {
            (0, false) => (HEADERS, END_STREAM),
            (0, true) => (HEADERS, END_STREAM | END_HEADERS),
            (_, false) => (CONTINUATION, 0),
            (_, true) => (CONTINUATION, END_HEADERS),
        };
        out.extend(frame(kind, flags, 1, part));
    }
    let _ = tcp.write_all(&out).await;
    let (got, _) = frames(&mut tcp, Duration::from_secs(2)).await;
    // `:status 200` is the one-byte HPACK index 0x88: whatever the server
    // answers (431, a reset, GOAWAY), it is not that.
    let ok = got
        .iter()
        .any(|f| f.0 == HEADERS && f.2 == 1 && f.3.first() == Some(&0x88));
    // hyper answers `431` (a header block that ends the stream, not 0x88).
    let refused = got
        .iter()
        .any(|f| f.0 == HEADERS && f.2 == 1 && f.1 & END_STREAM != 0);
    assert!(
        !ok && refused,
        "the oversized header list is refused: {got:?}"
    );

    // A CONTINUATION flood (header blocks that never end) is cut off too.
    let mut tcp = h2c(&srv).await;
    let block = header_block(false, "/channels/hello/api?token=t", &[]);
    let mut out = frame(HEADERS, END_STREAM, 1, &block);
    // Empty CONTINUATION frames: no bytes against the header list size, only frames.
    for _ in 0..100_000 {
        out.extend(frame(CONTINUATION, 0, 1, &[]));
    }
    let _ = tcp.write_all(&out).await;
    let (got, closed) = frames(&mut tcp, Duration::from_secs(2)).await;
    assert!(
        closed
            && got
                .iter()
                .any(|f| f.0 == GOAWAY && code_of(&f.3, 4) == ENHANCE_YOUR_CALM),
        "a header block that never ends closes the connection: {got:?}"
    );
    still_serves(&srv).await;
}

#[tokio::test]
async fn idle_http2_connections_are_closed_after_header_timeout() {
    let srv = plain_project().start();
    let started = Instant::now();
    // A client that answers the server's PINGs (as every client does)...
    let mut tcp = h2c(&srv).await;
    let mut goaway = None;
    let closed = loop {
        let (got, closed) = frames(&mut tcp, Duration::from_millis(200)).await;
        for f in &got {
            if f.0 == PING && f.1 == 0 {
                let _ = tcp.write_all(&frame(PING, 1, 0, &f.3)).await;
            }
            if f.0 == GOAWAY && goaway.is_none() {
                goaway = Some(started.elapsed());
            }
        }
        if closed || started.elapsed() > Duration::from_secs(8) {
            break closed;
        }
    };
    let goaway = goaway.expect("GOAWAY");
    assert!(closed, "closed after its GOAWAY");
    assert!(
        goaway >= Duration::from_millis(1500),
        "not before header_timeout (2 s): {goaway:?}"
    );
    // ...and one that does not: told to go, then dropped.
    let mut tcp = h2c(&srv).await;
    let (got, closed) = frames(&mut tcp, Duration::from_secs(8)).await;
    assert!(got.iter().any(|f| f.0 == GOAWAY) && closed, "{got:?}");
}

/// POST `body` to `path` over HTTP/2 on `io`: the status.
async fn h2_post<I>(io: I, path: &str, body: Vec<u8>) -> u16
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut sender = h2_client(io).await;
    let req = hyper::Request::post(format!("http://localhost{path}"))
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.expect("an HTTP/2 answer");
    resp.status().as_u16()
}

#[tokio::test]
async fn body_limits_hold_over_http2() {
    let srv = plain_project().start();
    let tcp = TcpStream::connect(addr(&srv)).await.unwrap();
    let status = h2_post(tcp, "/channels/hello/api?token=t", vec![b'x'; 100 * 1024]).await;
    assert_eq!(status, 413, "a body over max_body_bytes");
    // A body that stops coming: body_timeout (2 s) answers 408.
    let mut tcp = h2c(&srv).await;
    let block = header_block(true, "/channels/hello/api?token=t", &[]);
    tcp.write_all(&frame(HEADERS, END_HEADERS, 1, &block))
        .await
        .unwrap();
    tcp.write_all(&frame(DATA, 0, 1, b"{\"a\":")).await.unwrap();
    let (got, _) = frames(&mut tcp, Duration::from_secs(3)).await;
    let answer = got
        .iter()
        .find(|f| f.0 == HEADERS && f.2 == 1)
        .expect("an answer on stream 1");
    // `:status 408` is not in HPACK's static table: a literal, not 0x88 (200).
    assert_ne!(answer.3.first(), Some(&0x88), "{answer:?}");
    let body: Vec<u8> = got
        .iter()
        .filter(|f| f.0 == DATA && f.2 == 1)
        .flat_map(|f| f.3.clone())
        .collect();
    assert!(
        String::from_utf8_lossy(&body).contains("request_timeout"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    still_serves(&srv).await;
}

#[tokio::test]
async fn a_tls_handshake_that_never_comes_is_closed_after_header_timeout() {
    let ca = Ca::new();
    let (cert, key, _) = ca.issue("one");
    let srv = tls_project(&cert, &key).start();
    let mut tcp = TcpStream::connect(addr(&srv)).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(8), tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed, not left open: {read:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "not before header_timeout (2 s)"
    );
    // The slot it held is free again; the server serves.
    let tls = tls_connect(&srv, &ca, &[b"h2"]).await;
    let (status, _, _) = h2_get(tls, "https://localhost", "/healthz").await;
    assert_eq!(status, 200);
}
