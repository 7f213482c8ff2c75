//! The operator's status page at `/ui`, end to end: the real binary with
//! auth on and real HTTP receivers, driven in real headless Chromium over
//! WebDriver (Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/setup.sh`; nothing here downloads a browser).
//!
//! `UPDATE_SCREENSHOT=1 cargo nextest run --test status_page` also writes
//! `docs/status-page.png` (shown in docs/operations.md).

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use support::{free_port, http_backend, Answer, Options, Receiver, Sidecar};

const TOKEN: &str = "s3cret-ui-token";
const ENTER: &str = "\u{e007}";
/// The page shows this many dead letters per page (`PAGE_SIZE` in app.js).
const PAGE_SIZE: usize = 20;

// ---- the browser -------------------------------------------------------

/// A program on `PATH`, or a failure that says how to install it.
fn required_program(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed: run scripts/setup.sh (it installs Debian's chromium and \
             chromium-driver), then run this test again"
        )
    })
}

/// chromedriver (in a process group of its own, so the Chromium it starts
/// goes with it) and one WebDriver session in a fresh profile.
struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let chromedriver = required_program("chromedriver");
        let chromium = required_program("chromium");
        let profile = tempfile::tempdir().expect("profile dir");
        let port = free_port();
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).expect("driver log");
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()))
        };
        let mut browser = Browser {
            driver,
            client: None,
            _profile: profile,
        };
        let url = format!("http://127.0.0.1:{port}");
        browser.wait_driver(&url).await;

        let user_data_dir = browser._profile.path().join("chromium");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--window-size=1280,800", "--force-device-scale-factor=1", "--lang=en-US",
                    format!("--user-data-dir={}", user_data_dir.display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(caps) = caps else { unreachable!() };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot open a Chromium session: {e}\n{}", browser.driver_log()));
        browser.client = Some(client);
        browser
    }

    async fn wait_driver(&mut self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("{url}/status")).await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        return;
                    }
                }
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!("chromedriver exited with {status}:\n{}", self.driver_log());
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not come up:\n{}",
                self.driver_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn driver_log(&self) -> String {
        std::fs::read_to_string(self._profile.path().join("chromedriver.log")).unwrap_or_default()
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("session open")
    }

    /// Run `script` (a function body; `arguments` holds `args`).
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.c()
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Poll `script` until `done` holds for its value; fail naming `what`,
    /// the last value and what the page's error banner says.
    async fn wait_js(&self, what: &str, script: &str, args: Vec<Value>, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script, args.clone()).await;
            if done(&v) {
                return v;
            }
            if Instant::now() > deadline {
                let banner = self
                    .js(
                        "const e = document.querySelector('[data-role=error]'); return e.hidden ? '' : e.textContent;",
                        vec![],
                    )
                    .await;
                panic!("timed out waiting for {what}: last value {v}; error banner: {banner:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A backend row's number (`data-field` = queued, delivered, dead_letters...).
    async fn wait_field(&self, backend: &str, field: &str, want: u64) {
        self.wait_js(
            &format!("{backend} {field} = {want} on the page"),
            "const e = document.querySelector(`[data-backend=\"${arguments[0]}\"] [data-field=\"${arguments[1]}\"]`);
             return e ? Number(e.dataset.value) : null;",
            vec![json!(backend), json!(field)],
            |v| v.as_u64() == Some(want),
        )
        .await;
    }

    /// The ids of the dead-letter rows on the page, top to bottom, and their `dead_at`.
    async fn dead_rows(&self) -> Vec<(String, String)> {
        let v = self
            .js(
                "return Array.from(document.querySelectorAll('[data-role=dead-letters] tr[data-id]'))
                   .map(r => [r.dataset.id, r.querySelector('time').getAttribute('datetime')]);",
                vec![],
            )
            .await;
        serde_json::from_value(v).expect("rows")
    }

    async fn wait_dead_row_count(&self, n: usize) {
        self.wait_js(
            &format!("{n} dead-letter rows"),
            "return document.querySelectorAll('[data-role=dead-letters] tr[data-id]').length;",
            vec![],
            |v| v.as_u64() == Some(n as u64),
        )
        .await;
    }

    /// Pick the backend whose dead letters the page lists.
    async fn choose_dead_letters_of(&self, backend: &str) {
        self.c()
            .find(Locator::Css("[data-role=dead-letter-backend]"))
            .await
            .expect("the dead-letter backend choice")
            .select_by_value(backend)
            .await
            .unwrap_or_else(|e| panic!("cannot choose {backend}: {e}"));
    }

    async fn click(&self, css: &str) {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    async fn enabled(&self, css: &str) -> bool {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
            .is_enabled()
            .await
            .expect("is_enabled")
    }

    /// Chromium's console messages since the session started (chromedriver's
    /// log endpoint; the entries have `level`, `source` and `message`).
    async fn console_log(&self) -> Vec<Value> {
        let v = self.c().issue_cmd(BrowserLog).await.expect("read the browser log");
        v.as_array().cloned().unwrap_or_default()
    }

    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium it started. Through
        // kill(2), never the `kill` program (see Cargo.toml), and only for a
        // real group id: kill(-1) or kill(0) would hit far more than ours.
        match libc::pid_t::try_from(self.driver.id()) {
            Ok(pgid) if pgid > 1 => {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            _ => {
                let _ = self.driver.kill();
            }
        }
        let _ = self.driver.wait();
    }
}

/// chromedriver's `POST /session/{id}/se/log {"type": "browser"}`: the
/// console messages (JavaScript errors, CSP violations, failed loads).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

// ---- the sidecar -------------------------------------------------------

/// Four backends: `http.ok` (healthy), `http.flaky` (two attempts, then
/// dead letters; no breaker so the count is exact), `http.gone` (presence
/// only, to a port nobody listens on: errors without an HTTP status) and
/// `log.audit`.
async fn sidecar(ok: &Receiver, flaky: &Receiver, audit: &Path) -> Sidecar {
    let gone = format!("http://127.0.0.1:{}/hook", free_port());
    let body = format!(
        "{}{}[backends.http.flaky.retry]\nmax_attempts = 2\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n\n\
         {}[backends.http.gone.retry]\nmax_attempts = 1\n\n[backends.log.audit]\npath = \"{}\"\n",
        http_backend("ok", &ok.url("/hook"), ""),
        http_backend("flaky", &flaky.url("/hook"), "breaker_threshold = 100000"),
        http_backend("gone", &gone, "events = [\"presence\"]"),
        audit.display()
    );
    let sc = Sidecar::start(Options {
        body,
        server: format!("auth_token = \"{TOKEN}\""),
        token: Some(TOKEN.to_owned()),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    sc
}

fn ids_of(received: &[support::Received]) -> HashSet<String> {
    received
        .iter()
        .filter_map(|r| r.json()["id"].as_str().map(str::to_owned))
        .collect()
}

async fn wait_received(rx: &Receiver, want: &HashSet<String>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !want.is_subset(&ids_of(&rx.received())) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_api(sc: &Sidecar, name: &str, what: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = sc.backend(name).await;
        if done(&row) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {row}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_contains_all(text: &str, parts: &[&str], what: &str) {
    for part in parts {
        assert!(text.contains(part), "{what} lacks {part}: {text}");
    }
}

// ---- tests -------------------------------------------------------------

#[tokio::test]
async fn status_page_is_open_embedded_and_locked_down() {
    let audit = tempfile::tempdir().expect("tempdir");
    let sc = Sidecar::start(Options {
        body: format!(
            "[backends.log.audit]\npath = \"{}\"\n",
            audit.path().join("a.jsonl").display()
        ),
        server: format!("auth_token = \"{TOKEN}\""),
        ..Default::default()
    })
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    // Open without a token; the API behind it is not.
    let page = http.get(format!("{}/ui", sc.url)).send().await.expect("GET /ui");
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let html = page.text().await.expect("body");
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-type").starts_with("text/html"), "{headers:?}");
    let csp = header("content-security-policy");
    assert_contains_all(
        &csp,
        &[
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ],
        "the CSP",
    );
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("x-frame-options"), "DENY");
    let unauthorized = http.get(format!("{}/v1/backends", sc.url)).send().await.expect("GET");
    assert_eq!(
        unauthorized.status(),
        401,
        "the page must grant nothing the API does not"
    );

    // No inline script (the CSP would block it), and every file the page
    // names is served, with its type, from the binary.
    for (i, tag) in html.split("<script").skip(1).enumerate() {
        let open = tag.split('>').next().unwrap_or_default();
        assert!(open.contains("src="), "inline <script> #{i} in /ui: {open}");
    }
    for (path, kind) in [
        ("ui/app.js", "text/javascript"),
        ("ui/app.css", "text/css"),
        ("ui/icon.svg", "image/svg+xml"),
    ] {
        assert!(html.contains(&format!("\"{path}\"")), "/ui does not reference {path}");
        let r = http.get(format!("{}/{path}", sc.url)).send().await.expect("GET asset");
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap_or_default().to_owned();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        assert!(r.headers().contains_key("content-security-policy"), "{path}");
        assert!(!r.text().await.unwrap_or_default().is_empty(), "{path} is empty");
    }
    assert_contains_all(
        &html,
        &[
            "data-role=\"token-form\"",
            "data-role=\"backends\"",
            "data-role=\"dead-letters\"",
            "data-action=\"replay-all\"",
        ],
        "/ui",
    );

    // `/ui/` leads to the page (relative, so a path prefix survives).
    let slash = http.get(format!("{}/ui/", sc.url)).send().await.expect("GET /ui/");
    assert!(slash.status().is_redirection(), "{}", slash.status());
    assert_eq!(slash.headers()["location"], "../ui");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_chromium() {
    let browser = Browser::start().await;
    let ok = Receiver::start().await;
    let flaky = Receiver::start().await;
    flaky.set_default(Answer::status(503).with_body("endpoint down for maintenance"));
    let audit = tempfile::tempdir().expect("tempdir");
    let sc = sidecar(&ok, &flaky, &audit.path().join("audit.jsonl")).await;
    let c = browser.c();

    // The page asks for the token; a wrong one is refused, on the page.
    c.goto(&format!("{}/ui", sc.url)).await.expect("open /ui");
    browser
        .wait_js(
            "the token prompt",
            "return !document.querySelector('[data-role=token-form]').hidden;",
            vec![],
            |v| v == true,
        )
        .await;
    let field = c.find(Locator::Css("#token")).await.expect("token field");
    field.send_keys(&format!("not-the-token{ENTER}")).await.expect("type");
    let refused = browser
        .wait_js(
            "'token refused'",
            "return document.querySelector('[data-role=token-message]').textContent;",
            vec![],
            |v| v.as_str().is_some_and(|s| s.contains("Token refused")),
        )
        .await;
    assert!(
        refused.as_str().is_some_and(|s| s.contains("invalid bearer token")),
        "{refused}"
    );

    // The right one (typed, submitted with Enter): every backend has a row.
    let field = c.find(Locator::Css("#token")).await.expect("token field");
    field.send_keys(&format!("{TOKEN}{ENTER}")).await.expect("type");
    let rows = browser
        .wait_js(
            "the backend rows",
            "return Array.from(document.querySelectorAll('[data-role=backends] tr[data-backend]')).map(r => r.dataset.backend);",
            vec![],
            |v| v.as_array().is_some_and(|a| a.len() == 4),
        )
        .await;
    let rows: HashSet<String> = serde_json::from_value(rows).expect("names");
    let want: HashSet<String> = ["http.ok", "http.flaky", "http.gone", "log.audit"]
        .map(String::from)
        .into();
    assert_eq!(rows, want);

    // Events flow: the delivered counts rise by themselves (polling).
    // 24 chat messages and one presence (which `http.gone` also takes).
    let mut calls: Vec<Value> = (0..24)
        .map(|i| json!({"hook": "user_send_message", "from": format!("user{}@localhost/res", i % 5), "to": "peer@localhost", "type": "chat", "body": format!("m{i}")}))
        .collect();
    calls.insert(0, json!({"hook": "user_available", "jid": "carol@localhost/laptop"}));
    let (status, answer) = sc.post(&Value::Array(calls)).await;
    assert_eq!(status, 202, "{answer}");
    let posted: HashSet<String> = serde_json::from_value(answer["ids"].clone()).expect("ids");
    browser.wait_field("http.ok", "delivered", 25).await;
    browser.wait_field("log.audit", "delivered", 25).await;
    browser.wait_field("http.flaky", "dead_letters", 25).await;
    browser.wait_field("http.gone", "dead_letters", 1).await;

    // Pause from the page; the API agrees.
    browser
        .click("[data-backend=\"http.ok\"] [data-action=\"pause\"]")
        .await;
    wait_api(&sc, "ok", "http.ok paused", |r| r["paused"] == true).await;
    browser
        .wait_js(
            "http.ok shown paused",
            "const r = document.querySelector('[data-backend=\"http.ok\"]');
             return [r.dataset.state, r.querySelector('[data-action=resume]') !== null];",
            vec![],
            |v| v == &json!(["paused", true]),
        )
        .await;

    // Dead letters of http.flaky: newest first, 20 a page.
    browser.choose_dead_letters_of("http.flaky").await;
    browser.wait_dead_row_count(PAGE_SIZE).await;
    let first_page = browser.dead_rows().await;
    let times: Vec<&String> = first_page.iter().map(|(_, t)| t).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "not newest first: {times:?}");
    let row = browser
        .js(
            "const r = Array.from(document.querySelectorAll('[data-role=dead-letters] tr[data-id]'))
               .find(r => r.querySelector('.class').textContent !== 'presence');
             return [r.querySelector('.class').textContent, r.querySelector('.user').textContent,
                     r.querySelector('.attempts').textContent, r.querySelector('.last-error').textContent];",
            vec![],
        )
        .await;
    assert_eq!(row[0], "chat", "{row}");
    assert!(row[1].as_str().is_some_and(|u| u.ends_with("@localhost/res")), "{row}");
    assert_eq!(row[2], "2", "{row}");
    assert!(
        row[3]
            .as_str()
            .is_some_and(|e| e.contains("503") && e.contains("endpoint down for maintenance")),
        "{row}"
    );

    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        browser.js("window.scrollTo(0, 0);", vec![]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = c.screenshot().await.expect("screenshot");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
        std::fs::create_dir_all(path.parent().expect("docs")).expect("docs dir");
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("wrote {}", path.display());
    }

    // The second page holds the rest; back again.
    assert!(!browser.enabled("[data-action=newer]").await);
    browser.click("[data-action=older]").await;
    browser.wait_dead_row_count(25 - PAGE_SIZE).await;
    let second_page = browser.dead_rows().await;
    assert!(!browser.enabled("[data-action=older]").await);
    let all: HashSet<String> = first_page
        .iter()
        .chain(&second_page)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(all, posted, "the two pages together are every dead letter, once");
    assert!(first_page.last().map(|r| &r.1) >= second_page.first().map(|r| &r.1));
    browser.click("[data-action=newer]").await;
    browser.wait_dead_row_count(PAGE_SIZE).await;

    // An error without an HTTP status (nothing listens): just the message.
    browser.choose_dead_letters_of("http.gone").await;
    browser.wait_dead_row_count(1).await;
    let gone = browser
        .js(
            "const r = document.querySelector('[data-role=dead-letters] tr[data-id]');
             return [r.querySelector('.class').textContent, r.querySelector('.user').textContent,
                     r.querySelector('.last-error .message').textContent,
                     r.querySelector('.last-error').firstChild.className];",
            vec![],
        )
        .await;
    assert_eq!(gone[0], "presence", "{gone}");
    assert_eq!(gone[1], "carol@localhost/laptop", "{gone}");
    assert!(gone[2].as_str().is_some_and(|m| !m.is_empty()), "{gone}");
    assert_eq!(
        gone[3], "message",
        "a status badge (or stray text) before the message: {gone}"
    );
    browser.choose_dead_letters_of("http.flaky").await;
    browser.wait_dead_row_count(PAGE_SIZE).await;

    // Phone width: no sideways scrolling.
    c.set_window_size(390, 844).await.expect("resize");
    let widths = browser
        .wait_js(
            "the layout at phone width",
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
            |v| v[1].as_u64().is_some_and(|w| w < 500),
        )
        .await;
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "overflows at phone width: {widths}"
    );
    c.set_window_size(1280, 800).await.expect("resize");

    // Resume with the keyboard (Enter on the focused button).
    c.find(Locator::Css("[data-backend=\"http.ok\"] [data-action=\"resume\"]"))
        .await
        .expect("resume button")
        .send_keys(ENTER)
        .await
        .expect("press Enter");
    wait_api(&sc, "ok", "http.ok resumed", |r| r["paused"] == false).await;
    browser
        .wait_js(
            "http.ok shown ready",
            "return document.querySelector('[data-backend=\"http.ok\"]').dataset.state;",
            vec![],
            |v| v == "ready",
        )
        .await;

    // The endpoint is fixed: replay one from its row, then all.
    flaky.set_default(Answer::status(200));
    let (one, _) = first_page[0].clone();
    browser
        .click(&format!(
            "[data-role=dead-letters] tr[data-id=\"{one}\"] [data-action=replay]"
        ))
        .await;
    wait_received(&flaky, &HashSet::from([one.clone()]), "the replayed event").await;
    browser.wait_field("http.flaky", "dead_letters", 24).await;
    browser
        .wait_js(
            "the replayed row gone",
            "return document.querySelector(`tr[data-id=\"${arguments[0]}\"]`) === null;",
            vec![json!(one)],
            |v| v == true,
        )
        .await;
    assert_eq!(ids_of(&flaky.received()).len(), 1, "replay of one sent more");

    browser.click("[data-action=replay-all]").await;
    wait_received(&flaky, &posted, "every replayed event").await;
    browser.wait_field("http.flaky", "dead_letters", 0).await;
    browser.wait_dead_row_count(0).await;
    browser
        .wait_js(
            "the empty dead-letter list",
            "return !document.querySelector('[data-role=no-dead-letters]').hidden;",
            vec![],
            |v| v == true,
        )
        .await;
    let (_, left) = sc.get("/v1/dead-letters?backend=http.flaky").await;
    assert_eq!(left, json!([]));

    // No script error, CSP violation or failed load during the run; the
    // only failed requests are the refused-token ones.
    let errors = browser.js("return window.__eventPusherErrors;", vec![]).await;
    assert_eq!(errors, json!([]), "script errors on the page");
    let problems: Vec<Value> = browser
        .console_log()
        .await
        .into_iter()
        .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
        .filter(|e| {
            let msg = e["message"].as_str().unwrap_or_default();
            !(e["source"] == "network" && msg.contains("401"))
        })
        .collect();
    assert!(problems.is_empty(), "browser console: {problems:#?}");

    // The sidecar goes away: the page says so instead of going quiet.
    let mut sc = sc;
    sc.kill9();
    browser
        .wait_js(
            "the 'cannot reach' error",
            "const e = document.querySelector('[data-role=error]'); return e.hidden ? '' : e.textContent;",
            vec![],
            |v| v.as_str().is_some_and(|s| s.contains("cannot reach the sidecar")),
        )
        .await;
    browser.close().await;
}

/// Operations on the page: a webhook subscription disabled after failing
/// (`[webhooks] disable_after_s`) shows as disabled, and the overflow and
/// throttle counters have their columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_subscriptions_and_operations_counters_in_chromium() {
    let browser = Browser::start().await;
    let ok = Receiver::start().await;
    let down = Receiver::start().await;
    down.set_default(Answer::status(503));
    let body = format!(
        "{}[webhooks]\ndisable_after_s = 1\n\n[egress]\nallow_private = true\n",
        http_backend("ok", &ok.url("/hook"), "rate_limit_per_s = 2")
    );
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    let (status, v) = sc
        .admin(
            reqwest::Method::POST,
            "/v1/webhooks",
            Some(&json!({"id": "crm", "url": down.url("/hook"), "events": ["chat"],
                "retry": {"max_attempts": 1000, "initial_backoff_ms": 20, "max_backoff_ms": 50}})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let chats = |n: usize, tag: &str| -> Value {
        Value::Array(
            (0..n)
                .map(|i| json!({"hook": "user_send_message", "from": "a@localhost/r", "to": "b@localhost", "type": "chat", "body": format!("{tag}{i}")}))
                .collect(),
        )
    };
    let (status, answer) = sc.post(&chats(2, "before")).await;
    assert_eq!(status, 202, "{answer}");

    let c = browser.c();
    c.goto(&format!("{}/ui", sc.url)).await.expect("open /ui");
    browser
        .wait_js(
            "webhook.crm shown disabled",
            "const r = document.querySelector('[data-backend=\"webhook.crm\"]');
             return r ? r.dataset.state : null;",
            vec![],
            |v| v == "disabled",
        )
        .await;
    // Disabled: new events are dead-lettered on arrival, and counted.
    let (status, answer) = sc.post(&chats(3, "after")).await;
    assert_eq!(status, 202, "{answer}");
    browser.wait_field("webhook.crm", "overflow_dead_lettered", 3).await;
    browser.wait_field("http.ok", "delivered", 5).await;
    // 2 tokens a second, at most 2 held: the fifth event waited.
    let throttled = browser
        .wait_js(
            "http.ok throttled seconds",
            "const e = document.querySelector('[data-backend=\"http.ok\"] [data-field=\"throttled_seconds\"]');
             return e ? Number(e.dataset.value) : null;",
            vec![],
            |v| v.as_f64().is_some_and(|s| s > 0.0),
        )
        .await;
    assert!(throttled.as_f64() > Some(0.0));
    browser.close().await;
}

/// With `[cluster]`, the page shows the store (up, then down with its error
/// while the proxy in front of PostgreSQL is cut) and the nodes seen.
#[tokio::test]
async fn cluster_store_and_nodes_in_chromium() {
    use support::{Proxy, TestDb};
    let browser = Browser::start().await;
    let db = TestDb::create().await;
    let proxy = Proxy::start(event_pusher_testkit::postgres::PG).await;
    let sc = Sidecar::start(Options {
        body: format!(
            "[cluster]\npostgres = \"{}\"\nnode = \"chat-7\"\n\n[backends.log.audit]\n",
            db.url_via(&proxy.addr())
        ),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    let c = browser.c();
    c.goto(&format!("{}/ui", sc.url)).await.expect("open /ui");
    browser
        .wait_js(
            "the store shown up, with this node listed",
            "const s = document.querySelector('[data-role=cluster-store]');
             const n = document.querySelector('[data-role=cluster-nodes]');
             return s && !document.querySelector('[data-role=cluster]').hidden
               ? [s.dataset.up, s.textContent, n.textContent] : null;",
            vec![],
            |v| {
                v[0] == "true"
                    && v[1].as_str().is_some_and(|t| t.contains("chat-7"))
                    && v[2].as_str().is_some_and(|t| t.contains("chat-7"))
            },
        )
        .await;
    proxy.cut();
    browser
        .wait_js(
            "the store shown down",
            "const s = document.querySelector('[data-role=cluster-store]');
             return s ? [s.dataset.up, s.textContent] : null;",
            vec![],
            |v| v[0] == "false" && v[1].as_str().is_some_and(|t| t.contains("DOWN")),
        )
        .await;
    proxy.restore();
    browser
        .wait_js(
            "the store shown up again",
            "return document.querySelector('[data-role=cluster-store]').dataset.up;",
            vec![],
            |v| v == "true",
        )
        .await;
    browser.close().await;
}
