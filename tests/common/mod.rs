//! Test harness: runs the real `switchyard` binary on a loopback port with
//! channels, scripts and config written to a fresh temporary folder.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The built binary.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_switchyard")
}

/// The repository root (for the shipped examples and fixtures).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A project folder being prepared: channels, scripts, config.
pub struct Project {
    pub dir: tempfile::TempDir,
    config: String,
    /// The test calls a function that exists nowhere on purpose.
    unknown_calls: bool,
    /// `SWITCHYARD_TEST_CLUSTER` runs: the NATS server and the other node,
    /// kept across restarts of this project's server.
    cluster: Option<Box<TestCluster>>,
}

/// What a test project runs beside its server when `SWITCHYARD_TEST_CLUSTER`
/// is set (see [`cluster_mode`]): a NATS server and a second node.
struct TestCluster {
    nats: Nats,
    other: Option<Server>,
}

/// The suite's mode: with `SWITCHYARD_TEST_CLUSTER=2` every test project's
/// server joins a 2-node cluster on its own nats-server (the second node,
/// with empty folders, takes the project's channels and scripts from the
/// cluster and runs jobs too); unset, the embedded mode.
pub fn cluster_mode() -> bool {
    std::env::var("SWITCHYARD_TEST_CLUSTER").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `true` (and says so) in a cluster run, for a test of the embedded store
/// itself (its file, its disk, its backup): in cluster mode that state is in
/// NATS, whose own tests are in `tests/cluster.rs`.
pub fn embedded_store_only(what: &str) -> bool {
    if cluster_mode() {
        eprintln!(
            "cluster run: {what} is a property of the embedded store; tested in embedded runs"
        );
    }
    cluster_mode()
}

impl Default for Project {
    fn default() -> Self {
        Self::new()
    }
}

impl Project {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["channels", "scripts", "data"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Self {
            dir,
            config: String::new(),
            unknown_calls: false,
            cluster: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies the shipped example channels and scripts in.
    pub fn with_examples(self) -> Self {
        for dir in ["channels", "scripts"] {
            for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
                let path = entry.unwrap().path();
                std::fs::copy(&path, self.path().join(dir).join(path.file_name().unwrap()))
                    .unwrap();
            }
        }
        self
    }

    /// Writes `channels/<code>.json` from a JSON value (must contain `code`).
    pub fn channel(self, doc: Value) -> Self {
        let code = doc["code"].as_str().expect("code").to_owned();
        self.channel_text(&code, &serde_json::to_string_pretty(&doc).unwrap())
    }

    /// Writes `channels/<name>.json` verbatim.
    pub fn channel_text(self, name: &str, text: &str) -> Self {
        std::fs::write(
            self.path().join("channels").join(format!("{name}.json")),
            text,
        )
        .unwrap();
        self
    }

    /// Writes `scripts/<code>.rhai`.
    pub fn script(self, code: &str, source: &str) -> Self {
        std::fs::write(
            self.path().join("scripts").join(format!("{code}.rhai")),
            source,
        )
        .unwrap();
        self
    }

    /// Appends TOML to `switchyard.toml`.
    /// In cluster mode (`SWITCHYARD_TEST_CLUSTER`), kills the project's other
    /// node, so that its next start restarts the whole cluster (a "server
    /// restart" of the contract); nothing in embedded mode.
    pub fn whole_cluster_down(mut self) -> Self {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.other = None;
        }
        self
    }

    pub fn config(mut self, toml: &str) -> Self {
        self.config.push_str(toml);
        self.config.push('\n');
        self
    }

    fn write_config(&self) -> PathBuf {
        let path = self.path().join("switchyard.toml");
        std::fs::write(&path, &self.config).unwrap();
        path
    }

    /// Runs `switchyard check` on this project.
    pub fn check(&self) -> (i32, String, String) {
        self.check_with_env(&[])
    }

    /// Like [`check`](Self::check), with extra environment variables.
    pub fn check_with_env(&self, env: &[(&str, &str)]) -> (i32, String, String) {
        let out = Command::new(binary())
            .envs(env.iter().copied())
            .arg("check")
            .arg("--config")
            .arg(self.write_config())
            .arg("--channels")
            .arg(self.path().join("channels"))
            .arg("--scripts")
            .arg(self.path().join("scripts"))
            .output()
            .expect("run check");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts `switchyard serve` on 127.0.0.1:0 and waits for its address.
    pub fn start(self) -> Server {
        self.start_with_env(&[])
    }

    /// The project's scripts call functions that exist nowhere on purpose.
    pub fn with_unknown_calls(mut self) -> Self {
        self.unknown_calls = true;
        self
    }

    /// Like [`start`](Self::start), with extra environment variables. Every
    /// script of every test goes through the authoring check first: a call it
    /// reports as unknown in a working script is a false alarm, and fails.
    pub fn start_with_env(self, env: &[(&str, &str)]) -> Server {
        self.start_with(env, &[])
    }

    /// Starts a node of the cluster on `nats` (SPEC §13).
    pub fn start_node(self, nats: &Nats) -> Server {
        self.start_with(&[], &["--cluster", &nats.url()])
    }

    /// Starts the server with extra environment variables and arguments.
    pub fn start_with(mut self, env: &[(&str, &str)], args: &[&str]) -> Server {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if cluster_mode() && !args.iter().any(|a| a == "--cluster") {
            let cluster = self.cluster.get_or_insert_with(|| {
                Box::new(TestCluster {
                    nats: Nats::start(),
                    other: None,
                })
            });
            args.extend(["--cluster".to_owned(), cluster.nats.url()]);
        }
        if !self.unknown_calls {
            let (_, out, _) = self.check_with_env(env);
            let alarms: Vec<&str> = out
                .lines()
                .filter(|l| {
                    l.contains(": unknown function ") || l.contains(" exports no function ")
                })
                .collect();
            assert!(
                alarms.is_empty(),
                "the authoring check says:\n{}",
                alarms.join("\n")
            );
        }
        let config = self.write_config();
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--channels")
            .arg(self.path().join("channels"))
            .arg("--scripts")
            .arg(self.path().join("scripts"))
            .arg("--data")
            .arg(self.path().join("data"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let config = self.config.clone();
        let mut server = Server::spawn(cmd, Some(self));
        // The second node joins once the first has published the project.
        let project = server.project.as_mut().expect("just started");
        if let Some(cluster) = project.cluster.as_mut() {
            if cluster.other.is_none() {
                let mut other = Project::new().config(&config);
                other.unknown_calls = true;
                cluster.other = Some(other.start_with(env, &["--cluster", &cluster.nats.url()]));
            }
        }
        server
    }
}

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    logs: Arc<Mutex<String>>,
    pub project: Option<Project>,
}

impl Server {
    /// Spawns `cmd` (stdout and stderr piped) and waits for `listening on http://ADDR`.
    pub fn spawn(mut cmd: Command, project: Option<Project>) -> Server {
        let mut child = cmd.spawn().expect("spawn switchyard");
        let logs = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        // SWITCHYARD_TEST_LOG_DIR: every server's log also goes to
        // `<dir>/<pid>.log`, for a failure whose story is in another node's log.
        let mut copy = std::env::var_os("SWITCHYARD_TEST_LOG_DIR").and_then(|dir| {
            std::fs::File::create(std::path::Path::new(&dir).join(format!("{}.log", child.id())))
                .ok()
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Some(file) = copy.as_mut() {
                    let _ = std::io::Write::write_all(file, &buf[..n]);
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let base = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        break addr.trim().to_owned();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("server did not start; stderr:\n{}", logs.lock().unwrap());
                }
            }
        };
        Server {
            child,
            base,
            logs,
            project,
        }
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Everything the server wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits (up to 5 s) for a log line that contains every one of `needles`; the
    /// log is read from the server's stderr by another thread, so it can lag the answers.
    pub async fn wait_for_line(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let logs = self.logs();
            if let Some(line) = logs.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needles:?}:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the logs contain `needle`, up to `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends `signal` (e.g. "TERM") to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// `kill -9`s the server and hands back its project (same folders, same store).
    pub fn kill9(mut self) -> Project {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.project.take().expect("started from a project")
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `nats-server -js` of a test, on a free loopback port with its own
/// storage folder; killed when dropped.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The nats-server binary: `$SWITCHYARD_NATS_SERVER`, else `nats-server` on the PATH.
fn nats_server() -> String {
    std::env::var("SWITCHYARD_NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

impl Nats {
    /// Starts a server and waits until it takes connections.
    pub fn start() -> Nats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut nats = Nats {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        nats.restart();
        nats
    }

    /// The server's JetStream storage folder (what it keeps on disk).
    pub fn storage(&self) -> &Path {
        self.dir.path()
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (`kill -9`): what JetStream acknowledged is on its disk.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(nats_server())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): the cluster tests need nats-server 2.10.23 or newer; ./test.sh installs it",
                    nats_server()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client that never reuses a proxy and times out.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Reads a response as (status, headers, JSON body or Null).
pub async fn json_of(resp: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// A channel document with the usual test defaults.
pub fn channel(code: &str, recv: &str) -> Value {
    serde_json::json!({
        "code": code,
        "token_local": format!("{code}-token"),
        "recv_svcscriptcode": recv,
        "opts": { "issync": true }
    })
}

/// Sends `GET path` over a raw socket (no client-side URL normalisation); returns the status.
pub async fn raw_get(srv: &Server, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = srv.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A request an [`Upstream`] received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The query string as sent, if any.
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub body: String,
}

/// A real HTTP server on 127.0.0.1 standing in for an external system.
/// `GET|POST /ok` answers 200; `/fail/{n}` answers 500 for its first `n` calls, then 200;
/// every request is recorded.
pub struct Upstream {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        use axum::extract::State;
        use axum::http::{HeaderMap, Method, StatusCode, Uri};
        use std::collections::HashMap;
        type Shared = (Arc<Mutex<Vec<Seen>>>, Arc<Mutex<HashMap<String, u32>>>);
        async fn record(
            State((seen, counts)): State<Shared>,
            method: Method,
            uri: Uri,
            headers: HeaderMap,
            body: String,
        ) -> (StatusCode, String) {
            let path = uri.path().to_owned();
            seen.lock().unwrap().push(Seen {
                method: method.to_string(),
                path: path.clone(),
                query: uri.query().map(str::to_owned),
                authorization: headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned()),
                body,
            });
            let failures = path
                .rsplit_once("/fail/")
                .and_then(|(_, n)| n.parse::<u32>().ok());
            if let Some(n) = failures {
                let mut counts = counts.lock().unwrap();
                let c = counts.entry(path.clone()).or_default();
                *c += 1;
                if *c <= n {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "not yet".into());
                }
            }
            (StatusCode::OK, "{\"ok\":true}".into())
        }
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let state: Shared = (seen.clone(), Arc::default());
        let app = axum::Router::new().fallback(record).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Upstream {
            base,
            seen,
            _task: task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Polls `GET /admin/jobs/{id}` until its state is one of `states`.
pub async fn wait_job(
    srv: &Server,
    admin: &str,
    id: &str,
    states: &[&str],
    limit: Duration,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let resp = client()
            .get(srv.url(&format!("/admin/jobs/{id}")))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        let (status, _, job) = json_of(resp).await;
        if status == 200 && states.iter().any(|s| job["state"] == *s) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {job} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of `GET /metrics`.
pub async fn metrics_text(srv: &Server) -> String {
    client()
        .get(srv.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of a counter on `/metrics`, named with its labels (0 when it is not there yet).
pub async fn counter(srv: &Server, name: &str) -> u64 {
    metrics_text(srv)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

/// Asserts the server still answers `GET /healthz` with 200 (after hostile input).
pub async fn assert_serving(srv: &Server) {
    let resp = client().get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the server no longer serves");
}

/// A websocket client connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `ws://` + the server's address + `path`.
pub fn ws_url(srv: &Server, path: &str) -> String {
    srv.url(path).replacen("http://", "ws://", 1)
}

/// Opens a websocket on `path` (the upgrade must succeed).
pub async fn ws_connect(srv: &Server, path: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(ws_url(srv, path))
        .await
        .expect("upgrade");
    ws
}

/// Sends one text frame holding `frame` as JSON.
pub async fn ws_send(ws: &mut Ws, frame: Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        frame.to_string().into(),
    ))
    .await
    .unwrap();
}

/// The next text frame as JSON (pings are skipped), within 10 s.
pub async fn ws_recv(ws: &mut Ws) -> Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the connection is open")
            .expect("a valid frame");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// Reads until the server closes; returns the close code.
pub async fn ws_close_code(ws: &mut Ws) -> Option<u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
    None
}

/// `POST /channels/{code}/send` with `data` (admin credentials); the new job's id.
pub async fn send_job(srv: &Server, admin: &str, code: &str, data: &Value) -> String {
    let resp = client()
        .post(srv.url(&format!("/channels/{code}/send")))
        .bearer_auth(admin)
        .json(data)
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 202, "{body}");
    body["job_id"].as_str().unwrap().to_owned()
}

impl Server {
    /// The server's store file.
    pub fn db(&self) -> PathBuf {
        self.project
            .as_ref()
            .expect("started from a project")
            .path()
            .join("data/switchyard.db")
    }
}

/// `GET path` with admin credentials: (status, JSON body).
pub async fn admin_get(srv: &Server, admin: &str, path: &str) -> (u16, Value) {
    let resp = client()
        .get(srv.url(path))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    (status, body)
}

/// `POST /channels/{code}/api` with `body`, authenticated as `{code}-token`
/// (the [`channel`] default): (status, JSON answer).
pub async fn post_api(srv: &Server, code: &str, body: &str) -> (u16, Value) {
    let resp = client()
        .post(srv.url(&format!("/channels/{code}/api")))
        .bearer_auth(format!("{code}-token"))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    (status, body)
}

/// Every file under `dir` (recursively) whose bytes hold `needle`.
pub fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_holding(&path, needle));
        } else if std::fs::read(&path)
            .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        {
            out.push(path.display().to_string());
        }
    }
    out
}

/// `POST /channels/{code}/api` with `{}`, authenticated with `token`:
/// (status, JSON answer).
pub async fn post_as(srv: &Server, code: &str, token: &str) -> (u16, Value) {
    let resp = client()
        .post(srv.url(&format!("/channels/{code}/api")))
        .bearer_auth(token)
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    (status, body)
}
