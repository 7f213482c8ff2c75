//! Test harness for end-to-end tests: the real `event-pusher` binary on a
//! free port with its own spool directory, and a real HTTP receiver whose
//! answers a test can script.
//!
//! Each test file does `mod support;` and uses what it needs.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::Value;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// The sidecar binary under test, running as a child process.
pub struct Sidecar {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub token: Option<String>,
    env: Vec<(String, String)>,
    runs: usize,
}

/// What goes into the generated config besides listen address and spool dir.
#[derive(Default, Clone)]
pub struct Options {
    /// Extra lines for `[server]` (e.g. `auth_token = "t"`).
    pub server: String,
    /// Extra lines for `[spool]` (e.g. `max_queue = 10`).
    pub spool: String,
    /// The rest of the file: filters and backends.
    pub body: String,
    /// Environment for the child.
    pub env: Vec<(String, String)>,
    pub token: Option<String>,
}

impl Sidecar {
    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_event-pusher")
    }

    /// Write a config and start the binary; waits until `/health` answers.
    pub async fn start(opts: Options) -> Sidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let spool = dir.path().join("spool");
        let config = dir.path().join("sidecar.toml");
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_ms = 2000\n{}\n\n[spool]\ndir = \"{}\"\n{}\n\n{}\n",
            opts.server,
            spool.display(),
            opts.spool,
            opts.body
        );
        std::fs::write(&config, text).expect("write config");
        let mut s = Sidecar {
            child: None,
            port,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            config,
            token: opts.token.clone(),
            env: opts.env,
            runs: 0,
        };
        s.spawn().await;
        s
    }

    /// (Re)start the process on the same config, port and spool.
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.runs += 1;
        let out = std::fs::File::create(self.dir.path().join(format!("stdout.{}.log", self.runs))).expect("log file");
        let err = std::fs::File::create(self.dir.path().join(format!("stderr.{}.log", self.runs))).expect("log file");
        let mut cmd = Command::new(Self::bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        cmd.env("RUST_LOG", "info,event_pusher_core=debug");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn event-pusher"));
        self.wait_health().await;
    }

    async fn wait_health(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(format!("{}/health", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("event-pusher exited early with {status}:\n{}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "event-pusher did not come up:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until `/ready` answers 200 (backends started).
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(format!("{}/ready", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "event-pusher never became ready:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the current and earlier runs wrote to stderr.
    pub fn stderr(&self) -> String {
        (1..=self.runs)
            .map(|i| std::fs::read_to_string(self.dir.path().join(format!("stderr.{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    pub fn stdout(&self) -> String {
        (1..=self.runs)
            .map(|i| std::fs::read_to_string(self.dir.path().join(format!("stdout.{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit; returns the exit code.
    pub fn sigterm(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("event-pusher did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// POST a JSON body to /v1/events; returns status and parsed answer.
    pub async fn post(&self, body: &Value) -> (u16, Value) {
        let r = self
            .auth(self.client().post(format!("{}/v1/events", self.url)).json(body))
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST raw bytes with a content type.
    pub async fn post_raw(&self, content_type: &str, body: Vec<u8>) -> (u16, Value, HeaderMap) {
        let r = self
            .auth(
                self.client()
                    .post(format!("{}/v1/events", self.url))
                    .header("content-type", content_type)
                    .body(body),
            )
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, r.json().await.unwrap_or(Value::Null), headers)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .auth(self.client().get(format!("{}{path}", self.url)))
            .send()
            .await
            .expect("get");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .auth(self.client().get(format!("{}{path}", self.url)))
            .send()
            .await
            .expect("get");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .auth(self.client().post(format!("{}{path}", self.url)).json(body))
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The row of `GET /v1/backends` for one backend.
    pub async fn backend(&self, name: &str) -> Value {
        let (_, all) = self.get("/v1/backends").await;
        all.as_array()
            .and_then(|a| a.iter().find(|b| b["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no backend {name} in {all}"))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- event-pusher stderr ----\n{}", self.stderr());
        }
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }
}

/// How the receiver answers: scripted answers first, then `default`.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Answer {
            status,
            headers: vec![],
            body: String::new(),
        }
    }

    pub fn with_header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn with_body(mut self, b: &str) -> Self {
        self.body = b.to_owned();
        self
    }
}

#[derive(Default)]
struct ReceiverState {
    got: Vec<Received>,
    /// Every request, including those answered with an error.
    attempts: Vec<Received>,
    script: VecDeque<Answer>,
    default: Option<Answer>,
}

/// A real HTTP server in the test process that records what it receives.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    shutdown: Arc<Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_on(0).await
    }

    /// Listen on a given port (0: any), e.g. to come back up where a
    /// stopped receiver was.
    pub async fn start_on(port: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = axum::Router::new().fallback(record).with_state(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Receiver {
            addr,
            state,
            shutdown: Arc::new(Mutex::new(Some(tx))),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stop listening (connections are then refused).
    pub fn stop(&self) {
        if let Some(tx) = self.shutdown.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }

    /// Queue answers to give, in order, before the default.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    /// The answer after the script runs out (200 unless set).
    pub fn set_default(&self, answer: Answer) {
        self.state.lock().unwrap().default = Some(answer);
    }

    /// Requests answered 2xx.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().got.clone()
    }

    /// Every request, whatever the answer.
    pub fn attempts(&self) -> Vec<Received> {
        self.state.lock().unwrap().attempts.clone()
    }

    /// Wait until at least `n` requests were answered 2xx.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn record(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let rec = Received {
        at: Instant::now(),
        path: uri.path().to_owned(),
        headers,
        body,
    };
    let mut s = state.lock().unwrap();
    s.attempts.push(rec.clone());
    let answer = s
        .script
        .pop_front()
        .or_else(|| s.default.clone())
        .unwrap_or(Answer::status(200));
    if (200..300).contains(&answer.status) {
        s.got.push(rec);
    }
    let mut resp = (
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK),
        answer.body,
    )
        .into_response();
    for (k, v) in answer.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// Poll `f` until it returns true or the timeout passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    f()
}

/// A config snippet for an HTTP backend named `name` posting to `url`.
pub fn http_backend(name: &str, url: &str, extra: &str) -> String {
    format!("[backends.http.{name}]\nurl = \"{url}\"\n{extra}\n")
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// What a one-shot run of the binary (e.g. `check-config`) produced.
#[derive(Debug)]
pub struct CliOutput {
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `event-pusher ARGS...` to completion with extra environment.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut cmd = Command::new(Sidecar::bin());
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run event-pusher");
    CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether `s` looks like a ULID: 26 Crockford base32 characters whose
/// first is at most `7` (128 bits).
pub fn is_ulid(s: &str) -> bool {
    const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    s.len() == 26 && s.chars().all(|c| ALPHABET.contains(c)) && s.as_bytes()[0] <= b'7'
}

impl Sidecar {
    /// The process id of the running child, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// Import MongooseIM config `text` with `event-pusher import-mongooseim`
/// and start the binary on the result (ready); also returns the imported
/// config, for failure messages.
pub async fn start_imported_mongooseim(text: &str) -> (Sidecar, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mongooseim.toml");
    std::fs::write(&file, text).expect("write MongooseIM config");
    let out = run_cli(&["import-mongooseim", &path_str(&file)], &[]);
    assert_eq!(out.code, Some(0), "import-mongooseim failed: {}", out.stderr);
    let sc = Sidecar::start(Options {
        body: out.stdout.clone(),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    (sc, out.stdout)
}
