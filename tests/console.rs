//! The web console (SPEC §16, issue #14), driven in a real headless Chromium
//! through chromedriver (Debian's `chromium` and `chromium-driver`), and in
//! Firefox ESR through geckodriver, which the README's test command installs.
//! Screenshots of each page at 1280, 390 and 1920 px go to
//! `target/console-screenshots/`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, json_of, Project, Server, Upstream};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const ADMIN: &str = "console-admin-token";
const JWT_SECRET: &str = "console-iam-secret";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(program: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
        let path = format!("{dir}/{program}");
        if std::path::Path::new(&path).exists() {
            return path;
        }
    }
    panic!(
        "{program} is not installed: the console tests need Debian's chromium, chromium-driver \
         and firefox-esr, and geckodriver; run ./test.sh (the README's test command), which \
         installs them"
    );
}

/// Starts a WebDriver server (`program` with `args`, given its port) and a
/// browser session with `caps` on it.
async fn session(
    program: String,
    args: &dyn Fn(u16) -> Vec<String>,
    caps: Value,
) -> (Client, Driver) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&program)
        .args(args(port))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let driver = Driver {
        child,
        port,
        _profile: tempfile::tempdir().unwrap(),
    };
    let mut caps = caps.as_object().cloned().unwrap_or_default();
    if let Some(chrome) = caps.get_mut("goog:chromeOptions") {
        let dir = format!("--user-data-dir={}", driver._profile.path().display());
        chrome["args"].as_array_mut().unwrap().push(dir.into());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The WebDriver server is plain HTTP on loopback: no TLS stack needed.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
        {
            Ok(c) => return (c, driver),
            Err(e) => {
                assert!(Instant::now() < deadline, "{program} did not start: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Firefox (Debian's `firefox-esr`) through geckodriver (built by ./test.sh
/// into `target/tools/bin`).
async fn firefox() -> (Client, Driver) {
    let gecko = common::repo().join("target/tools/bin/geckodriver");
    let gecko = if gecko.exists() {
        gecko.display().to_string()
    } else {
        find("geckodriver")
    };
    let caps = json!({"moz:firefoxOptions": {
        "binary": find("firefox-esr"),
        "args": ["-headless", "-width=1280", "-height=900"],
        "prefs": {"app.update.enabled": false, "browser.shell.checkDefaultBrowser": false,
                  "network.captive-portal-service.enabled": false},
    }});
    let args = |port: u16| {
        vec![
            "--port".to_owned(),
            port.to_string(),
            "--host".into(),
            "127.0.0.1".into(),
        ]
    };
    session(gecko, &args, caps).await
}

/// Chromium through chromedriver.
async fn browser() -> (Client, Driver) {
    let caps = json!({"goog:chromeOptions": {
        "binary": find("chromium"),
        "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ],
    }});
    let args = |port: u16| vec![format!("--port={port}")];
    session(find("chromedriver"), &args, caps).await
}

/// A flow run as two tests: in Chromium (`$name`) and in Firefox ESR.
macro_rules! in_both_browsers {
    ($name:ident, $firefox:ident, $flow:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $flow(browser().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $firefox() {
            $flow(firefox().await).await;
        }
    };
}

/// Waits (up to 5 s) until `script` returns `expected`; `what` says what did not happen.
async fn until(c: &Client, script: &str, expected: Value, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = c.execute(script, vec![]).await.unwrap();
        if got == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 10 s) for an element.
async fn wait(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
}

/// Waits (up to 10 s) until the text of `css` contains `needle`; returns the text.
async fn wait_text(c: &Client, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(el) = c.find(Locator::Css(css)).await {
            if let Ok(text) = el.text().await {
                if text.contains(needle) {
                    return text;
                }
                if Instant::now() > deadline {
                    panic!("{css} says {text:?}, not {needle:?}");
                }
            }
        }
        assert!(Instant::now() < deadline, "no {css} with {needle:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks `css` (it must be there), brought to the middle of the window
/// first: at the top edge the page's sticky header would take the click
/// (geckodriver scrolls an element only just into view).
async fn click(c: &Client, css: &str) {
    let el = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"));
    c.execute(
        "arguments[0].scrollIntoView({block: 'center'});",
        vec![serde_json::to_value(&el).unwrap()],
    )
    .await
    .unwrap();
    el.click().await.unwrap();
}

/// Presses Deactivate (or Activate) on the shop channel's row and checks
/// what its callers now get.
async fn toggle_shop(c: &Client, srv: &Server, now: &str, callers_get: u16) {
    click(c, "tr[data-code='shop'] button.toggle").await;
    wait_text(c, "tr[data-code='shop'] button.toggle", now).await;
    assert_eq!(
        status_of(srv, "/channels/shop/api?token=shop-token").await,
        callers_get
    );
}

async fn screenshot(c: &Client, name: &str) {
    let dir = common::repo().join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    // A flow run in both browsers keeps both sets (Firefox's with a suffix).
    let agent = c
        .execute("return navigator.userAgent;", vec![])
        .await
        .unwrap();
    let name = if agent.as_str().is_some_and(|a| a.contains("Firefox")) {
        format!("{name}-firefox")
    } else {
        name.to_owned()
    };
    for (width, height) in [(1280, 900), (390, 844), (1920, 1080)] {
        c.set_window_size(width, height).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let png = c.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
    }
    c.set_window_size(1280, 900).await.unwrap();
}

/// No script error and no CSP violation on the page (the console counts them
/// in `window.switchyardErrors`).
async fn no_console_errors(c: &Client) {
    let errors = c
        .execute(
            "return window.switchyardErrors || ['the console did not load'];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(errors, json!([]), "errors in the browser");
}

async fn sign_in(c: &Client, srv: &Server, token: &str) {
    c.goto(&srv.url("/console/")).await.unwrap();
    let input = wait(c, "#token").await;
    input.send_keys(token).await.unwrap();
    click(c, "#signin").await;
}

/// A JWT for `sub` with one `role`, signed with the project's secret, valid `secs`.
fn jwt(sub: &str, role: &str, secs: i64) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "roles": [role], "exp": chrono::Utc::now().timestamp() + secs}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

fn project() -> Project {
    Project::new()
        .config(&format!(
            "admin_token = \"{ADMIN}\"\n[iam]\njwt_secret = \"{JWT_SECRET}\""
        ))
        .channel(
            json!({"code": "shop", "token_local": "shop-token", "recv_svcscriptcode": "shop",
            "opts": {"issync": true, "record": 10,
                     "title": "<script>document.title='pwned'</script><b>Shop</b>"}}),
        )
        .script(
            "shop",
            "let q = parse_query(startparam(3));\nbody = #{ sku: q.sku, n: 1 };",
        )
}

/// The project with a send channel `erp` (queue `erp-queue`, no retry)
/// calling `up` at the job's `path` (default `fail/1`); its error holds markup.
fn erp_project(up: &Upstream) -> Project {
    project()
        .channel(
            json!({"code": "erp", "token_local": "erp-token", "url": format!("{}/", up.base),
            "send_svcscriptcode": "erp_send", "opts": {"send_retries": 0, "queue": "erp-queue"}}),
        )
        .script(
            "erp_send",
            r#"let d = parse_json(startparam(1));
               log_info("sending to the ERP");
               let r = webquery(#{ method: "POST", path: if "path" in d { d.path } else { "fail/1" } });
               if r.status != 200 { throw `<img src=x id=injected> ERP answered ${r.status}`; }
               result = r.status;"#,
        )
}

async fn status_of(srv: &Server, path: &str) -> u16 {
    client()
        .get(srv.url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_sign_in_deactivate_credentials_and_delete() {
    let srv = project()
        .channel(json!({"code": "spare", "token_local": "spare-token"}))
        .start();
    let (c, _driver) = browser().await;

    // A wrong token is refused, on the page.
    sign_in(&c, &srv, "not-the-token").await;
    wait_text(&c, "#signin-error", "refused").await;
    screenshot(&c, "signin").await;
    let input = c.find(Locator::Css("#token")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(ADMIN).await.unwrap();
    click(&c, "#signin").await;

    // The channels: a title with markup shows as text and runs nothing.
    let title = wait(&c, "tr[data-code='shop'] .title").await;
    assert_eq!(
        title.text().await.unwrap(),
        "<script>document.title='pwned'</script><b>Shop</b>"
    );
    assert_ne!(c.title().await.unwrap(), "pwned");
    screenshot(&c, "channels").await;

    // Deactivate: callers get 503 at once; activate: served again.
    assert_eq!(
        status_of(&srv, "/channels/shop/api?token=shop-token").await,
        200
    );
    toggle_shop(&c, &srv, "Activate", 503).await;
    toggle_shop(&c, &srv, "Deactivate", 200).await;

    // Credentials: masked, shown on demand, regenerated (the old token stops at once).
    c.goto(&srv.url("/console/#/channels/shop")).await.unwrap();
    let token = wait(&c, "#token-value").await;
    assert!(token.text().await.unwrap().contains("•"));
    click(&c, "#show-token").await;
    wait_text(&c, "#token-value", "shop-token").await;
    click(&c, "#regenerate-token").await;
    wait(&c, "dialog[open] button.danger")
        .await
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        let text = c
            .find(Locator::Css("#token-value"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.len() == 64 {
            break text;
        }
        assert!(Instant::now() < deadline, "no new token: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    screenshot(&c, "channel-credentials").await;
    assert_eq!(
        status_of(&srv, "/channels/shop/api?token=shop-token").await,
        401
    );
    assert_eq!(
        status_of(&srv, &format!("/channels/shop/api?token={fresh}")).await,
        200
    );

    // Delete asks for the channel's code.
    c.goto(&srv.url("/console/#/channels/spare")).await.unwrap();
    wait(&c, "#delete-channel").await.click().await.unwrap();
    wait(&c, "#confirm-code")
        .await
        .send_keys("wrong")
        .await
        .unwrap();
    click(&c, "dialog[open] button.danger").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, _) = json_of(
        client()
            .get(srv.url("/admin/channels/spare"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "a wrong confirmation deletes nothing");
    wait(&c, "#delete-channel").await.click().await.unwrap();
    wait(&c, "#confirm-code")
        .await
        .send_keys("spare")
        .await
        .unwrap();
    click(&c, "dialog[open] button.danger").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = client()
            .get(srv.url("/admin/channels/spare"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .status();
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    no_console_errors(&c).await;
    c.close().await.unwrap();
}

in_both_browsers!(
    scripts_marks_errors_tries_and_replays,
    scripts_marks_errors_tries_and_replays_in_firefox,
    scripts_marks_errors_tries_and_replays_in
);

async fn scripts_marks_errors_tries_and_replays_in(open: (Client, Driver)) {
    let srv = project().start();
    for sku in ["A", "B"] {
        client()
            .get(srv.url(&format!("/channels/shop/api?sku={sku}&token=shop-token")))
            .send()
            .await
            .unwrap();
    }
    let (c, _driver) = open;
    sign_in(&c, &srv, ADMIN).await;
    wait(&c, "#channels").await;
    c.goto(&srv.url("/console/#/scripts/shop")).await.unwrap();
    let editor = wait(&c, "#editor").await;
    wait_text(&c, "#problems", "Compiles").await;
    // The editor (issue #32 point 7): Rhai in colour, the channels using it,
    // no unsaved marker before a change.
    wait_text(&c, "#used-by", "Used by shop").await;
    wait_text(&c, "#painted .token.keyword", "let").await;
    wait_text(&c, "#painted .token.function", "parse_query").await;
    let hidden = |c: &Client| {
        let c = c.clone();
        async move {
            c.execute("return document.querySelector('#unsaved').hidden;", vec![])
                .await
                .unwrap()
        }
    };
    assert_eq!(hidden(&c).await, json!(true));
    screenshot(&c, "scripts").await;

    // A syntax error is marked at its line and column before anything is saved.
    editor.send_keys("\nlet x = ;").await.unwrap();
    let text = wait_text(&c, "#problems", "line 3").await;
    assert!(text.contains("col"), "{text}");
    wait(&c, ".gutter .bad").await;
    let saved = client()
        .get(srv.url("/admin/scripts/shop"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!saved.contains("let x = ;"), "nothing saved");
    // A misspelt function too.
    editor.clear().await.unwrap();
    editor
        .send_keys("let q = parse_qery(startparam(3));\nbody = q;")
        .await
        .unwrap();
    wait_text(&c, "#problems", "did you mean parse_query").await;

    // Try a draft on a recorded request; replay it over the recordings.
    editor.clear().await.unwrap();
    editor
        .send_keys("let q = parse_query(startparam(3));\nlog_info(`sku ${q.sku}`);\nkv_set(\"seen\", q.sku);\nbody = #{ sku: q.sku, n: if q.sku == \"B\" { 2 } else { 1 } };")
        .await
        .unwrap();
    wait_text(&c, "#problems", "Compiles").await;
    c.find(Locator::Css("#try-path"))
        .await
        .unwrap()
        .send_keys("/x")
        .await
        .unwrap();
    c.find(Locator::Css("#try-query"))
        .await
        .unwrap()
        .send_keys("sku=Q")
        .await
        .unwrap();
    click(&c, "#try").await;
    wait_text(&c, "#try-answer", "\"Q\"").await;
    wait_text(&c, "#try-logs", "sku Q").await;
    wait_text(&c, "#try-effects", "kv_set").await;
    click(&c, "#replay").await;
    wait_text(&c, "#replay-summary", "1 of 2 answers change").await;
    // The changed key is highlighted on both sides, beside the request.
    wait_text(&c, ".replayed .request", "sku=B").await;
    wait_text(&c, ".replayed ins", "\"n\": 2").await;
    wait_text(&c, ".replayed del", "\"n\": 1").await;
    let marked = c
        .execute(
            "return [...document.querySelectorAll('.replayed ins')].map((e) => e.textContent);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        marked.as_array().unwrap().len(),
        1,
        "only the changed key: {marked}"
    );
    screenshot(&c, "scripts-replay").await;

    // Tab indents; the marker says the change is not saved until Save.
    assert_eq!(hidden(&c).await, json!(false), "typed, not saved");
    editor.clear().await.unwrap();
    editor.send_keys("body = \"<b id=inj2>\";\n").await.unwrap();
    editor
        .send_keys(&format!("{}// indented", fantoccini::key::Key::Tab))
        .await
        .unwrap();
    let value = editor.prop("value").await.unwrap().unwrap_or_default();
    assert_eq!(value, "body = \"<b id=inj2>\";\n    // indented");
    wait_text(&c, "#painted .token.comment", "// indented").await;
    assert!(
        c.find(Locator::Css("#inj2")).await.is_err(),
        "markup in the source ran"
    );
    wait_text(&c, "#problems", "Compiles").await;
    click(&c, "#save-script").await;
    until(
        &c,
        "return document.querySelector('#unsaved').hidden;",
        json!(true),
        "the marker stays after Save",
    )
    .await;
    let stored = client()
        .get(srv.url("/admin/scripts/shop"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(stored, value);
    no_console_errors(&c).await;
    c.close().await.unwrap();
}

in_both_browsers!(
    channel_settings_are_a_form_and_a_refused_save_keeps_the_edits,
    channel_settings_are_a_form_and_a_refused_save_keeps_the_edits_in_firefox,
    channel_settings_are_a_form_and_a_refused_save_keeps_the_edits_in
);

async fn channel_settings_are_a_form_and_a_refused_save_keeps_the_edits_in(open: (Client, Driver)) {
    let srv = project().start();
    let (c, _driver) = open;
    sign_in(&c, &srv, ADMIN).await;
    wait(&c, "#channels").await;
    c.goto(&srv.url("/console/#/channels/shop")).await.unwrap();
    wait(&c, "#edit-channel").await;
    click(&c, "#edit-channel").await;
    let title = wait(&c, "#f-opts-title").await;
    let value = |c: &Client, css: &'static str| {
        let c = c.clone();
        async move {
            c.find(Locator::Css(css))
                .await
                .unwrap()
                .prop("value")
                .await
                .unwrap()
                .unwrap_or_default()
        }
    };
    assert_eq!(
        value(&c, "#f-opts-title").await,
        "<script>document.title='pwned'</script><b>Shop</b>"
    );
    // Each common field says what it does.
    wait_text(
        &c,
        "#f-opts-send_retries-help",
        "Attempts of a send job after the first",
    )
    .await;
    wait_text(&c, "#f-opts-issync-help", "answered 202").await;
    screenshot(&c, "settings").await;
    title.clear().await.unwrap();
    title.send_keys("Shop 2").await.unwrap();
    let retries = wait(&c, "#f-opts-send_retries").await;
    retries.clear().await.unwrap();
    retries.send_keys("2").await.unwrap();
    c.find(Locator::Css("#f-send_svcscriptcode"))
        .await
        .unwrap()
        .select_by_value("shop")
        .await
        .unwrap();
    // The JSON view holds the same document, edits included; its edits come back to the form.
    click(&c, "#tab-settings-json-tab").await;
    let area = wait(&c, "#settings-json").await;
    let text = area.prop("value").await.unwrap().unwrap_or_default();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["opts"]["title"], "Shop 2");
    assert_eq!(doc["opts"]["send_retries"], 2);
    assert_eq!(doc["send_svcscriptcode"], "shop");
    let mut edited = doc.clone();
    edited["opts"]["record"] = json!(5000);
    c.execute(
        "const a = document.querySelector('#settings-json'); a.value = arguments[0]; a.dispatchEvent(new Event('input'));",
        vec![json!(serde_json::to_string_pretty(&edited).unwrap())],
    )
    .await
    .unwrap();
    click(&c, "#tab-settings-form-tab").await;
    wait(&c, "#f-opts-record").await;
    assert_eq!(value(&c, "#f-opts-record").await, "5000");
    // Refused by the server: the dialog stays, with the edits and the reason.
    click(&c, "#settings-save").await;
    wait_text(&c, "#settings-error", "Not saved").await;
    let why = wait_text(&c, "#settings-error", "record").await;
    assert!(why.contains("1000"), "{why}");
    assert_eq!(value(&c, "#f-opts-title").await, "Shop 2");
    assert_eq!(value(&c, "#f-opts-record").await, "5000");
    let (_, stored) = common::admin_get(&srv, ADMIN, "/admin/channels/shop").await;
    assert_ne!(stored["opts"]["title"], "Shop 2", "nothing saved");
    // Corrected: saved, and the dialog closes.
    let record = wait(&c, "#f-opts-record").await;
    record.clear().await.unwrap();
    record.send_keys("10").await.unwrap();
    click(&c, "#settings-save").await;
    until(
        &c,
        "return document.querySelector('dialog[open]') === null;",
        json!(true),
        "the dialog stays after a save",
    )
    .await;
    let (_, stored) = common::admin_get(&srv, ADMIN, "/admin/channels/shop").await;
    assert_eq!(stored["opts"]["title"], "Shop 2");
    assert_eq!(stored["opts"]["send_retries"], 2);
    assert_eq!(stored["opts"]["record"], 10);
    assert_eq!(stored["send_svcscriptcode"], "shop");
    // Focus is back on the Settings button (of the panel drawn again).
    until(
        &c,
        "return document.activeElement && document.activeElement.id;",
        json!("edit-channel"),
        "the focus is elsewhere",
    )
    .await;
    no_console_errors(&c).await;
    c.close().await.unwrap();
}

// The keyboard-only path to retry a failed job while other jobs come and
// go (issue #32 point 2): Tab to the job, Enter, Tab to Retry, Enter.
in_both_browsers!(
    a_keyboard_user_retries_a_job_while_the_list_changes,
    a_keyboard_user_retries_a_job_while_the_list_changes_in_firefox,
    a_keyboard_user_retries_a_job_while_the_list_changes_in
);

async fn a_keyboard_user_retries_a_job_while_the_list_changes_in(open: (Client, Driver)) {
    use fantoccini::key::Key;
    let up = Upstream::start().await;
    let srv = erp_project(&up).start();
    let failed = common::send_job(&srv, ADMIN, "erp", &json!({"path": "k/fail/1"})).await;
    common::wait_job(&srv, ADMIN, &failed, &["failed"], Duration::from_secs(10)).await;
    let (c, _driver) = open;
    sign_in(&c, &srv, ADMIN).await;
    wait(&c, "#channels").await;
    c.goto(&srv.url("/console/#/jobs")).await.unwrap();
    wait(&c, &format!("tr[data-id='{failed}']")).await;
    let focus_of = |c: &Client| {
        let c = c.clone();
        async move {
            c.execute(
                "const a = document.activeElement; return a ? (a.dataset.focus || a.id || a.tagName) : null;",
                vec![],
            )
            .await
            .unwrap()
        }
    };
    let press = |c: &Client, key: Key| {
        let c = c.clone();
        async move {
            c.active_element()
                .await
                .unwrap()
                .send_keys(&key.to_string())
                .await
                .unwrap();
        }
    };
    let started = Instant::now();
    let mut keys = 0;
    let target = json!(format!("open-{failed}"));
    while focus_of(&c).await != target {
        press(&c, Key::Tab).await;
        keys += 1;
        assert!(keys < 40, "the job's link is not reachable by Tab");
    }
    // Jobs change while the focus is on the row: it stays there.
    for n in 0..3 {
        common::send_job(&srv, ADMIN, "erp", &json!({"path": format!("ok-{n}")})).await;
    }
    until(
        &c,
        "return document.querySelectorAll('#jobs tr[data-id]').length;",
        json!(4),
        "the list did not update live",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        focus_of(&c).await,
        target,
        "a live update took the focus away"
    );
    press(&c, Key::Enter).await;
    keys += 1;
    wait_text(&c, "#card-state", "failed").await;
    assert_eq!(
        focus_of(&c).await,
        json!("card-title"),
        "the card takes the focus"
    );
    while focus_of(&c).await != json!("retry") {
        press(&c, Key::Tab).await;
        keys += 1;
        assert!(keys < 80, "Retry is not reachable by Tab");
    }
    press(&c, Key::Enter).await;
    keys += 1;
    wait_text(&c, "#card-state", "succeeded").await;
    eprintln!(
        "keyboard-only retry: {keys} key presses, {:.1} s (with the live update's wait)",
        started.elapsed().as_secs_f64()
    );
    no_console_errors(&c).await;
    c.close().await.unwrap();
}

in_both_browsers!(
    jobs_retry_goes_live_and_errors_show_as_text,
    jobs_retry_goes_live_and_errors_show_as_text_in_firefox,
    jobs_retry_goes_live_and_errors_show_as_text_in
);

async fn jobs_retry_goes_live_and_errors_show_as_text_in(open: (Client, Driver)) {
    let up = Upstream::start().await;
    let srv = erp_project(&up).start();
    let id = common::send_job(&srv, ADMIN, "erp", &json!({"order": 1})).await;
    common::wait_job(&srv, ADMIN, &id, &["failed"], Duration::from_secs(10)).await;
    let (c, _driver) = open;
    sign_in(&c, &srv, ADMIN).await;
    wait(&c, "#channels").await;
    c.goto(&srv.url(&format!("/console/#/jobs/{id}")))
        .await
        .unwrap();
    wait(&c, "#queue").await;
    wait_text(&c, "#card-attempts", "1/1").await;
    let error = wait_text(&c, "#job-card .error-text", "<img src=x id=injected>").await;
    assert!(error.contains("ERP answered 500"), "{error}");
    assert!(
        c.find(Locator::Css("#injected")).await.is_err(),
        "markup ran"
    );
    // The card (issue #32 point 4): the input, the errors grouped, each
    // attempt's call with its request and response, its log lines.
    wait_text(&c, "#card-input", "\"order\": 1").await;
    wait_text(&c, "#card-errors", "×1").await;
    let call = wait_text(&c, "#attempts details.call summary", "→ 500").await;
    assert!(call.contains(&format!("POST {}/fail/1", up.base)), "{call}");
    click(&c, "#attempts details.call summary").await;
    wait_text(&c, "#attempts details.call[open]", "not yet").await;
    wait_text(&c, "#attempts ol.logs", "sending to the ERP").await;
    screenshot(&c, "jobs").await;
    // Retry: the attempt runs, and the page shows it without a reload.
    click(&c, "#retry").await;
    wait_text(&c, "#card-attempts", "2/2").await;
    wait_text(&c, "#card-state", "succeeded").await;
    // The call opened before stays open when the card is drawn again.
    wait(&c, "#attempts li[data-attempt='1'] details.call[open]").await;
    // A succeeded job's old error is not shown as standing (issue #32 point 4).
    let class = c
        .find(Locator::Css("#card-error"))
        .await
        .unwrap()
        .attr("class")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(
        !class.contains("error-text"),
        "an old error in red: {class}"
    );
    wait_text(&c, "#job-card", "an earlier attempt failed").await;
    wait_text(&c, "#card-mode", "production").await;
    // Bulk retry (issue #32 point 1): the count first, then the retry.
    let mut more = Vec::new();
    for n in ["a", "b"] {
        let id =
            common::send_job(&srv, ADMIN, "erp", &json!({"path": format!("{n}/fail/1")})).await;
        more.push(id);
    }
    for id in &more {
        common::wait_job(&srv, ADMIN, id, &["failed"], Duration::from_secs(10)).await;
    }
    click(&c, "#bulk-retry").await;
    wait_text(&c, "#bulk-count", "will be retried").await;
    let input = wait(&c, "#bulk-error").await;
    input.send_keys("no such error text").await.unwrap();
    wait_text(&c, "#bulk-count", "0 jobs will be retried").await;
    input.clear().await.unwrap();
    input.send_keys("ERP answered").await.unwrap();
    wait_text(&c, "#bulk-count", "2 jobs will be retried").await;
    // A time range: both were made within the last hour (the server takes
    // the range: a refused one would say why in place of the count).
    c.find(Locator::Css("#bulk-since"))
        .await
        .unwrap()
        .select_by_value("1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_text(&c, "#bulk-count", "2 jobs will be retried").await;
    for id in &more {
        let job = common::wait_job(&srv, ADMIN, id, &["failed"], Duration::from_secs(1)).await;
        assert_eq!(job["state"], "failed", "the count changes nothing");
    }
    click(&c, "dialog[open] button.danger").await;
    for id in &more {
        common::wait_job(&srv, ADMIN, id, &["succeeded"], Duration::from_secs(10)).await;
    }
    // Focus is back on the button that opened the dialog (issue #32 point 2).
    let focused = c
        .execute(
            "return document.activeElement && document.activeElement.id;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(focused, json!("bulk-retry"));
    // The queue selector filters.
    let select = c.find(Locator::Css("#queue")).await.unwrap();
    select.select_by_value("erp-queue").await.unwrap();
    wait(&c, &format!("tr[data-id='{id}']")).await;
    // A channel made while the page is open (by another operator, or on
    // another node) shows in the queue list, and the chosen queue stays.
    let (status, _, _) = json_of(
        client()
            .post(srv.url("/admin/channels"))
            .bearer_auth(ADMIN)
            .json(&json!({"code": "billing", "token_local": "billing-token",
                "opts": {"queue": "billing-queue"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    wait(&c, "#queue option[value='billing-queue']").await;
    let chosen = c
        .find(Locator::Css("#queue"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some("erp-queue"));
    no_console_errors(&c).await;

    // The live and overview pages render.
    c.goto(&srv.url("/console/#/live")).await.unwrap();
    wait(&c, "#connections").await;
    // A tail shows what happens while it watches: a request made while the
    // browser's stream was (re)connecting is not in it, so ask until one is.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        client()
            .get(srv.url("/channels/shop/api?sku=L&token=shop-token"))
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = c
            .find(Locator::Css("#request-tail"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("shop") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no request in the tail: {text:?}"
        );
    }
    // Method and path shown; the console's own polling (/admin/connections
    // every 2 s) left out; the filter hides rows listed already.
    let rows = c
        .execute(
            r#"return [...document.querySelectorAll('#request-tail tr')]
                 .filter((r) => !r.hidden).map((r) => r.textContent);"#,
            vec![],
        )
        .await
        .unwrap();
    let rows: Vec<String> = serde_json::from_value(rows).unwrap();
    assert!(
        rows.iter()
            .any(|r| r.contains("GET") && r.contains("/channels/shop/api")),
        "{rows:?}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let shown = |c: &Client| {
        let c = c.clone();
        async move {
            let rows = c
                .execute(
                    r#"return [...document.querySelectorAll('#request-tail tr')]
                         .filter((r) => !r.hidden).map((r) => r.textContent);"#,
                    vec![],
                )
                .await
                .unwrap();
            serde_json::from_value::<Vec<String>>(rows).unwrap()
        }
    };
    let rows = shown(&c).await;
    assert!(rows.iter().all(|r| !r.contains("/admin/")), "{rows:?}");
    click(&c, "#show-admin").await;
    assert!(shown(&c)
        .await
        .iter()
        .any(|r| r.contains("/admin/connections")));
    click(&c, "#show-admin").await;
    c.find(Locator::Css("#request-filter"))
        .await
        .unwrap()
        .send_keys("no such request")
        .await
        .unwrap();
    assert!(shown(&c).await.is_empty());
    c.find(Locator::Css("#request-filter"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    // Pause holds new rows back; going on brings them in.
    let before = shown(&c).await.len();
    click(&c, "#pause").await;
    client()
        .get(srv.url("/channels/shop/api?sku=PAUSED&token=shop-token"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(shown(&c).await.len(), before, "paused: no new row");
    click(&c, "#pause").await;
    assert_eq!(shown(&c).await.len(), before + 1, "the held row comes in");
    screenshot(&c, "live").await;
    // The overview (issue #32 point 8): jobs per queue first, failures red
    // and clickable, updated live; a card of charts per channel.
    let failed = common::send_job(&srv, ADMIN, "erp", &json!({"path": "c/fail/1"})).await;
    common::wait_job(&srv, ADMIN, &failed, &["failed"], Duration::from_secs(10)).await;
    c.goto(&srv.url("/console/#/overview")).await.unwrap();
    wait_text(&c, "#queues", "erp-queue").await;
    let cell = "#queues tr[data-queue='erp-queue'] td[data-state='failed']";
    wait_text(&c, cell, "1").await;
    let class = c
        .find(Locator::Css(cell))
        .await
        .unwrap()
        .attr("class")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(class.contains("error-text"), "failures not red: {class}");
    wait(&c, "#charts [data-code='shop'] svg.spark").await;
    wait_text(&c, "#charts [data-code='shop']", "in the hour").await;
    // Live: another failure shows without a reload.
    let again = common::send_job(&srv, ADMIN, "erp", &json!({"path": "d/fail/1"})).await;
    common::wait_job(&srv, ADMIN, &again, &["failed"], Duration::from_secs(10)).await;
    wait_text(&c, cell, "2").await;
    screenshot(&c, "overview").await;
    // At 390 px the charts fit the screen: no sideways scrolling.
    c.set_window_size(390, 844).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let wide = c
        .execute(
            "return [...document.querySelectorAll('#charts svg.spark')].some((s) => s.getBoundingClientRect().right > document.documentElement.clientWidth);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(wide, json!(false), "a chart runs off a phone's screen");
    c.set_window_size(1280, 900).await.unwrap();
    // The count opens those jobs: that queue, that state.
    click(&c, &format!("{cell} a")).await;
    wait(&c, &format!("tr[data-id='{again}']")).await;
    let chosen = c
        .execute("return [document.querySelector('#queue').value, document.querySelector('#state').value];", vec![])
        .await
        .unwrap();
    assert_eq!(chosen, json!(["erp-queue", "failed"]));
    no_console_errors(&c).await;
    c.close().await.unwrap();
}

in_both_browsers!(
    a_viewer_sees_everything_and_changes_nothing,
    a_viewer_sees_everything_and_changes_nothing_in_firefox,
    a_viewer_sees_everything_and_changes_nothing_in
);

async fn a_viewer_sees_everything_and_changes_nothing_in(open: (Client, Driver)) {
    let srv = project().start();
    let viewer = jwt("vera", "viewer", 600);
    let (c, _driver) = open;
    sign_in(&c, &srv, &viewer).await;
    wait(&c, "tr[data-code='shop']").await;
    wait_text(&c, "nav .who", "vera · viewer").await;
    assert!(
        c.find(Locator::Css("tr[data-code='shop'] button.toggle"))
            .await
            .is_err(),
        "no change buttons for a viewer"
    );
    // The server refuses a viewer's change even when the page is bypassed.
    let answer = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               fetch('/console/session').then(r => r.json()).then(s =>
                 fetch('/admin/channels/shop/stop', {method: 'POST', headers: {'X-CSRF-Token': s.csrf}}))
               .then(r => r.json().then(b => done([r.status, b.error])));"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(answer, json!([403, "read_only"]));
    let answer = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               fetch('/admin/channels/shop/token').then(r => done(r.status));"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(answer, json!(403), "a viewer does not see secrets");
    assert_eq!(
        status_of(&srv, "/channels/shop/api?token=shop-token").await,
        200
    );
    // The Scripts page works for a viewer (issue #32 point 6): the compile
    // check runs, read-only; Save, Try and Replay are not offered.
    c.goto(&srv.url("/console/#/scripts/shop")).await.unwrap();
    wait_text(&c, "#problems", "Compiles").await;
    for absent in ["#save-script", "#try", "#replay"] {
        assert!(
            c.find(Locator::Css(absent)).await.is_err(),
            "{absent} offered to a viewer"
        );
    }
    no_console_errors(&c).await;
    // Sign out ends the session.
    click(&c, "#signout").await;
    wait(&c, "#token").await;
    let answer = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               fetch('/admin/channels').then(r => done(r.status));"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(answer, json!(401));
    c.close().await.unwrap();
}

/// The History tab of a channel and a script (versions, a side-by-side diff,
/// Restore behind a confirmation naming the version) and the Audit page; a
/// viewer sees both and restores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_restores_a_version_and_the_audit_page_lists_it() {
    let srv = project().start();
    // Version 2 of the channel changes its title.
    let resp = client()
        .get(srv.url("/admin/channels/shop"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let mut doc: Value = resp.json().await.unwrap();
    doc["opts"]["title"] = "Shop, second title".into();
    let resp = client()
        .put(srv.url("/admin/channels/shop"))
        .bearer_auth(ADMIN)
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    let (c, _driver) = browser().await;
    sign_in(&c, &srv, ADMIN).await;
    wait(&c, "tr[data-code='shop']").await;
    c.goto(&srv.url("/console/#/channels/shop")).await.unwrap();
    click_when_there(&c, "#tab-history").await;
    wait(&c, "#versions tr[data-version='2']").await;
    // The diff of 1 against 2, side by side: the old title left, the new right.
    wait_text(&c, "#diff", "Shop, second title").await;
    let cells = c
        .execute(
            r#"const of = (css) => [...document.querySelectorAll(css)].map((td) => td.textContent).join('\n');
               return [of('#diff td.del'), of('#diff td.add')];"#,
            vec![],
        )
        .await
        .unwrap();
    let (removed, added) = (cells[0].as_str().unwrap(), cells[1].as_str().unwrap());
    assert!(removed.contains("\"title\": \"<script>"), "{removed}");
    assert!(
        added.contains("\"title\": \"Shop, second title\""),
        "{added}"
    );
    assert!(!removed.contains("Shop, second title"), "{removed}");
    screenshot(&c, "history").await;
    // Restore 1, behind a confirmation that names it.
    click(&c, "button.restore[data-version='1']").await;
    wait_text(&c, "dialog[open] h2", "Restore version 1 of shop?").await;
    click(&c, "dialog[open] button.danger").await;
    wait(&c, "#versions tr[data-version='3']").await;
    wait_text(&c, "#versions tr[data-version='3']", "restored").await;
    let resp = client()
        .get(srv.url("/admin/channels/shop"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let now: Value = resp.json().await.unwrap();
    assert!(
        now["opts"]["title"]
            .as_str()
            .unwrap()
            .contains("<b>Shop</b>"),
        "{now}"
    );

    // A script's history.
    c.goto(&srv.url("/console/#/scripts/shop")).await.unwrap();
    click_when_there(&c, "#tab-history").await;
    wait_text(&c, "#versions tr[data-version='1']", "created").await;

    // The Audit page: the restore, filtered by action.
    c.goto(&srv.url("/console/#/audit")).await.unwrap();
    wait_text(&c, "#audit tbody", "channel.restore").await;
    let action = wait(&c, "#action").await;
    action.send_keys("channel.restore\u{E007}").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = c.find_all(Locator::Css("#audit tbody tr")).await.unwrap();
        let text = c
            .find(Locator::Css("#audit tbody"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if rows.len() == 1 && text.contains("2 → 3") {
            break;
        }
        assert!(Instant::now() < deadline, "audit rows: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    screenshot(&c, "audit").await;
    no_console_errors(&c).await;

    // A viewer sees the history and the log, and restores nothing.
    click(&c, "#signout").await;
    sign_in(&c, &srv, &jwt("vera", "viewer", 600)).await;
    wait(&c, "tr[data-code='shop']").await;
    c.goto(&srv.url("/console/#/channels/shop")).await.unwrap();
    click_when_there(&c, "#tab-history").await;
    wait(&c, "#versions tr[data-version='3']").await;
    assert!(
        c.find(Locator::Css("button.restore")).await.is_err(),
        "no Restore for a viewer"
    );
    let answer = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               fetch('/console/session').then(r => r.json()).then(s =>
                 fetch('/admin/channels/shop/restore', {method: 'POST', body: '{"version": 2}',
                   headers: {'X-CSRF-Token': s.csrf, 'Content-Type': 'application/json'}}))
               .then(r => r.json().then(b => done([r.status, b.error])));"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(answer, json!([403, "read_only"]));
    c.goto(&srv.url("/console/#/audit")).await.unwrap();
    wait_text(&c, "#audit tbody", "channel.restore").await;
    no_console_errors(&c).await;
    c.close().await.unwrap();
}

// Issue #32 point 3: the Channels page finds by code or title as you type,
// sorts by a column, shows the mode, when the credential ends (red once
// it has), and a document that no longer loads, in its row.
in_both_browsers!(
    channels_are_found_sorted_and_say_mode_expiry_and_load_errors,
    channels_are_found_sorted_and_say_mode_expiry_and_load_errors_in_firefox,
    channels_are_found_sorted_and_say_mode_expiry_and_load_errors_in
);

async fn channels_are_found_sorted_and_say_mode_expiry_and_load_errors_in(open: (Client, Driver)) {
    let past = (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
    let soon = (chrono::Utc::now() + chrono::Duration::hours(50)).to_rfc3339();
    let srv = project()
        .channel(json!({"code": "alpha", "token_local": "a-token", "recv_svcscriptcode": "shop",
            "opts": {"issync": true, "mode": "test", "title": "ERP orders", "token_valid_until": past,
                     "schedule": [{"every": "1h", "script": "shop"}]}}))
        .channel(json!({"code": "beta", "token_local": "b-token", "recv_svcscriptcode": "shop",
            "opts": {"issync": true, "title": "Billing", "token_valid_until": soon}}))
        .start();
    let (c, _driver) = open;
    sign_in(&c, &srv, ADMIN).await;
    wait(&c, "tr[data-code='beta']").await;
    wait_text(&c, "tr[data-code='alpha'] .pill.mode", "test").await;
    wait_text(&c, "tr[data-code='beta'] .pill.mode", "production").await;
    let expired = wait_text(&c, "tr[data-code='alpha'] td.credential", "expired").await;
    assert!(expired.contains("3 h ago"), "{expired}");
    let class = c
        .find(Locator::Css("tr[data-code='alpha'] td.credential"))
        .await
        .unwrap()
        .attr("class")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(class.contains("error-text"), "expired shows red: {class}");
    wait_text(&c, "tr[data-code='beta'] td.credential", "expires in 2 d").await;
    // A scheduled channel says when it runs next; one without a schedule does not.
    wait_text(&c, "tr[data-code='alpha'] td.next-run", "min").await;
    wait_text(&c, "tr[data-code='beta'] td.next-run", "—").await;
    // The queue of a channel in test mode goes to production from its row.
    assert!(c
        .find(Locator::Css("tr[data-code='beta'] button.to-production"))
        .await
        .is_err());
    click(&c, "tr[data-code='alpha'] button.to-production").await;
    wait_text(&c, "dialog[open] h2", "Switch queue alpha to production?").await;
    click(&c, "dialog[open] button.danger").await;
    wait_text(&c, "tr[data-code='alpha'] .pill.mode", "production").await;
    let doc: Value = client()
        .get(srv.url("/admin/channels/alpha"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["opts"]["mode"], "production");
    // Find by title, as you type.
    let visible = |c: &Client| {
        let c = c.clone();
        async move {
            let codes = c
                .execute(
                    r#"return [...document.querySelectorAll('#channels tr[data-code]')]
                         .filter((r) => !r.hidden).map((r) => r.dataset.code);"#,
                    vec![],
                )
                .await
                .unwrap();
            serde_json::from_value::<Vec<String>>(codes).unwrap()
        }
    };
    c.find(Locator::Css("#channel-search"))
        .await
        .unwrap()
        .send_keys("billing")
        .await
        .unwrap();
    assert_eq!(visible(&c).await, ["beta"]);
    c.find(Locator::Css("#channel-search"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    c.execute(
        "const s = document.querySelector('#channel-search'); s.dispatchEvent(new Event('input'));",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(visible(&c).await, ["alpha", "beta", "shop"]);
    // Sort: Code again turns the order round; Title sorts by title.
    click(&c, "button.sort[data-sort='Code']").await;
    assert_eq!(visible(&c).await, ["shop", "beta", "alpha"]);
    click(&c, "button.sort[data-sort='Title']").await;
    let by_title = visible(&c).await;
    assert_eq!(
        by_title,
        ["shop", "beta", "alpha"],
        "<script>… < Billing < ERP orders"
    );
    // A document broken by hand: the row says it does not load.
    let file = srv
        .project
        .as_ref()
        .unwrap()
        .path()
        .join("channels/beta.json");
    std::fs::write(
        &file,
        "{\"code\": \"beta\", \"opts\": {\"recv_timeout\": 99}}",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.refresh().await.unwrap();
    let shown = wait_text(&c, "tr[data-code='beta'] .load-error", "does not load").await;
    assert!(shown.contains("the last good version"), "{shown}");
    // And its panel says why, where the channel is looked at.
    c.goto(&srv.url("/console/#/channels/beta")).await.unwrap();
    let why = wait_text(&c, "#load-errors", "The document does not load").await;
    assert!(why.contains("the last good version"), "{why}");
    c.goto(&srv.url("/console/#/channels/alpha")).await.unwrap();
    wait_text(&c, "#next-run", "runs next").await;
    c.goto(&srv.url("/console/#/channels")).await.unwrap();
    wait(&c, "tr[data-code='shop'] button.toggle").await;
    // The row's actions show without sideways scrolling at 1280 px and 390 px.
    for (width, height) in [(1280, 900), (390, 844)] {
        c.set_window_size(width, height).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let right = c
            .execute(
                r#"const b = document.querySelector("tr[data-code='shop'] button.toggle").getBoundingClientRect();
                   return [b.right, document.documentElement.clientWidth];"#,
                vec![],
            )
            .await
            .unwrap();
        let (right, room) = (right[0].as_f64().unwrap(), right[1].as_f64().unwrap());
        assert!(
            right <= room,
            "at {width} px the actions end at {right}, past {room}"
        );
    }
    c.set_window_size(1280, 900).await.unwrap();
    screenshot(&c, "channels").await;
    no_console_errors(&c).await;
    c.close().await.unwrap();
}

/// Clicks `css` once it is there.
async fn click_when_there(c: &Client, css: &str) {
    wait(c, css).await.click().await.unwrap();
}

/// Without the session's CSRF token (a cross-site form, say), a change is refused.
#[tokio::test]
async fn changes_need_the_sessions_csrf_token() {
    let srv = project().start();
    let resp = client()
        .post(srv.url("/console/session"))
        .json(&json!({"token": ADMIN}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let csp = resp
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let csrf = resp.json::<Value>().await.unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_owned();
    let stop = |token: Option<&str>| {
        let mut req = client()
            .post(srv.url("/admin/channels/shop/stop"))
            .header("cookie", &session);
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        req.send()
    };
    let (status, _, body) = json_of(stop(None).await.unwrap()).await;
    assert_eq!((status, body["error"].clone()), (403, json!("csrf")));
    let (status, _, _) = json_of(stop(Some("forged")).await.unwrap()).await;
    assert_eq!(status, 403);
    let (status, _, _) = json_of(stop(Some(&csrf)).await.unwrap()).await;
    assert_eq!(status, 200);
    // Sign-in attempts are throttled like the admin API.
    let mut last = 0;
    for _ in 0..30 {
        last = client()
            .post(srv.url("/console/session"))
            .json(&json!({"token": "guess"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429);
}

/// A channel page (text/html answered by a script, on the console's origin)
/// visited by a signed-in admin cannot act with the console's session: its
/// scripts do not run (`Content-Security-Policy: sandbox`), the session cookie
/// is not sent to channel paths, and a script never sees it in startparam(5).
#[tokio::test]
async fn a_channel_page_cannot_act_with_the_consoles_session() {
    const PAGE: &str = r#"content_type = "text/html; charset=utf-8";
body = `<html><head><title>page</title></head><body>hello<script>
document.title = 'ran';
fetch('/console/session').then(r => r.json()).then(s =>
  fetch('/admin/channels/shop/stop', {method: 'POST', headers: {'X-CSRF-Token': s.csrf}}))
.then(() => { document.title = 'acted'; });
</script></body></html>`;"#;
    let srv = project()
        .channel(
            json!({"code": "page", "token_local": "page-token", "recv_svcscriptcode": "page",
            "opts": {"issync": true}}),
        )
        .script("page", PAGE)
        .channel(
            json!({"code": "echo", "token_local": "echo-token", "recv_svcscriptcode": "echo",
            "opts": {"issync": true}}),
        )
        .script("echo", "body = parse_json(startparam(5));")
        .start();

    // What every channel answer carries, and the console's own pages do not.
    let resp = client()
        .get(srv.url("/channels/page/api?token=page-token"))
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header("content-security-policy"), "sandbox");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("x-frame-options"), "DENY");
    let console = client().get(srv.url("/console/")).send().await.unwrap();
    let csp = console.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(!csp.contains("sandbox"), "{csp}");

    // The session cookie is scoped to /console and /admin.
    let signed = client()
        .post(srv.url("/console/session"))
        .json(&json!({"token": ADMIN}))
        .send()
        .await
        .unwrap();
    let cookies: Vec<String> = signed
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    assert!(cookies[0].contains("; Path=/console;"), "{cookies:?}");
    assert!(cookies[1].contains("; Path=/admin;"), "{cookies:?}");
    assert!(
        cookies.iter().all(|c| !c.contains("Secure")),
        "plain HTTP: {cookies:?}"
    );

    // A caller that sends it anyway: the script sees its other cookies only.
    let session = cookies[0].split(';').next().unwrap().to_owned();
    let seen: Value = client()
        .get(srv.url("/channels/echo/api?token=echo-token"))
        .header("cookie", format!("theme=dark; {session}; lang=en"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["cookie"], json!("theme=dark; lang=en"), "{seen}");

    // In a browser signed in to the console.
    let (c, _driver) = browser().await;
    sign_in(&c, &srv, ADMIN).await;
    wait(&c, "tr[data-code='shop']").await;
    c.goto(&srv.url("/channels/page/api?token=page-token"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.title().await.unwrap(), "page", "the page's script ran");
    assert_eq!(
        status_of(&srv, "/channels/shop/api?token=shop-token").await,
        200,
        "the page stopped a channel with the admin's session"
    );
    c.goto(&srv.url("/channels/echo/api?token=echo-token"))
        .await
        .unwrap();
    let text = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("user-agent"), "{text}");
    assert!(!text.contains("switchyard_session"), "{text}");
    c.close().await.unwrap();
}

/// A session opened with a JWT ends when the JWT does.
#[tokio::test]
async fn a_session_ends_with_the_jwt_it_was_opened_with() {
    let srv = project().start();
    let resp = client()
        .post(srv.url("/console/session"))
        .json(&json!({"token": jwt("ada", "admin", 3)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    let session = cookie.split(';').next().unwrap().to_owned();
    let status = |path: &'static str| {
        let session = session.clone();
        let url = srv.url(path);
        async move {
            client()
                .get(url)
                .header("cookie", session)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("/console/session").await, 200);
    assert_eq!(status("/admin/channels").await, 200);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(status("/console/session").await, 401, "outlived its JWT");
    assert_eq!(status("/admin/channels").await, 401, "outlived its JWT");
}

/// Sign-in takes its body through the one body reader: max_body_bytes (413)
/// and body_timeout (408) hold for it as for every other body.
#[tokio::test]
async fn sign_in_bodies_are_bounded_like_every_other() {
    let srv = Project::new()
        .config(&format!(
            "admin_token = \"{ADMIN}\"\nmax_body_bytes = 4096\nbody_timeout = \"1s\""
        ))
        .start();
    let (status, _, body) = json_of(
        client()
            .post(srv.url("/console/session"))
            .header("content-type", "application/json")
            .body(format!("{{\"token\": \"{}\"}}", "x".repeat(100_000)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (413, json!("payload_too_large"))
    );
    // A sign-in whose body stops coming.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(srv.base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(
        b"POST /console/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"token\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4));
    // A good sign-in still works.
    let resp = client()
        .post(srv.url("/console/session"))
        .json(&json!({"token": ADMIN}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn the_overview_keeps_each_channels_last_hour() {
    let srv = project().start();
    for sku in 0..5 {
        client()
            .get(srv.url(&format!("/channels/shop/api?sku={sku}&token=shop-token")))
            .send()
            .await
            .unwrap();
    }
    // A script error is a 5xx.
    let resp = client()
        .put(srv.url("/admin/scripts/shop"))
        .bearer_auth(ADMIN)
        .body("throw \"no\";")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    client()
        .get(srv.url("/channels/shop/api?token=shop-token"))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(
        client()
            .get(srv.url("/admin/overview"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let shop = &body["channels"]["shop"];
    let sum = |k: &str| -> u64 {
        shop[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    assert_eq!(shop["requests"].as_array().unwrap().len(), 60);
    assert_eq!(sum("requests"), 6);
    assert_eq!(sum("errors"), 1);
    assert!(shop["last_request"].as_str().is_some());
    assert!(body["bytes_per_channel"].as_u64().unwrap() < 8192);
}

/// Keyboard alone, and every control labelled, on every page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_works_from_the_keyboard_with_labelled_controls() {
    let srv = project().start();
    let (c, _driver) = browser().await;
    c.goto(&srv.url("/console/")).await.unwrap();
    // The token field has the focus; Enter submits.
    let input = wait(&c, "#token").await;
    input.send_keys(&format!("{ADMIN}\u{E007}")).await.unwrap();
    wait(&c, "tr[data-code='shop']").await;
    for page in [
        "channels",
        "scripts/shop",
        "jobs",
        "live",
        "overview",
        "audit",
        "channels/shop",
    ] {
        c.goto(&srv.url(&format!("/console/#/{page}")))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let unlabelled = c
            .execute(
                r#"const bad = [];
                   for (const el of document.querySelectorAll('a, button, input, select, textarea')) {
                     const label = el.getAttribute('aria-label') || el.textContent.trim() ||
                       (el.id && document.querySelector(`label[for="${el.id}"]`)) ||
                       el.closest('label') || el.getAttribute('title');
                     if (!label) bad.push(el.outerHTML.slice(0, 80));
                     // Tabs rove: the chosen one is in the tab order, the arrows reach the rest.
                     if (el.tabIndex < 0 && !el.disabled && el.getAttribute('role') !== 'tab') bad.push('not focusable: ' + el.outerHTML.slice(0, 80));
                   }
                   return bad;"#,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(unlabelled, json!([]), "{page}");
    }
    // A button works from the keyboard: focus it, press Enter.
    c.goto(&srv.url("/console/#/channels")).await.unwrap();
    let toggle = wait(&c, "tr[data-code='shop'] button.toggle").await;
    c.execute(
        "arguments[0].focus();",
        vec![serde_json::to_value(&toggle).unwrap()],
    )
    .await
    .unwrap();
    toggle.send_keys("\u{E007}").await.unwrap();
    wait_text(&c, "tr[data-code='shop'] button.toggle", "Activate").await;
    assert_eq!(
        status_of(&srv, "/channels/shop/api?token=shop-token").await,
        503
    );
    no_console_errors(&c).await;
    c.close().await.unwrap();
}

/// The same console in Firefox: sign-in, markup shown as text, a change, the
/// scripts editor marking an error, the jobs and live pages, no script error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_firefox() {
    let srv = project().start();
    let (c, _driver) = firefox().await;
    sign_in(&c, &srv, ADMIN).await;
    let title = wait(&c, "tr[data-code='shop'] .title").await;
    assert_eq!(
        title.text().await.unwrap(),
        "<script>document.title='pwned'</script><b>Shop</b>"
    );
    toggle_shop(&c, &srv, "Activate", 503).await;
    c.goto(&srv.url("/console/#/scripts/shop")).await.unwrap();
    let editor = wait(&c, "#editor").await;
    wait_text(&c, "#problems", "Compiles").await;
    editor.send_keys("\nlet x = ;").await.unwrap();
    wait_text(&c, "#problems", "line 3").await;
    for page in ["jobs", "live", "overview"] {
        c.goto(&srv.url(&format!("/console/#/{page}")))
            .await
            .unwrap();
        wait(&c, "main h1").await;
    }
    no_console_errors(&c).await;
    c.close().await.unwrap();
}
