//! The `event-pusher` binary under test as a child process: start with a
//! generated config, wait for readiness, post, read admin rows, kill.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde_json::Value;

use super::*;

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

    /// Any admin call: `method` on `path`, with a JSON body if given.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self.client().request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = self.auth(req).send().await.expect("admin call");
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

/// A config snippet for an HTTP backend named `name` posting to `url`.
pub fn http_backend(name: &str, url: &str, extra: &str) -> String {
    format!("[backends.http.{name}]\nurl = \"{url}\"\n{extra}\n")
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

/// Poll a backend's row of `GET /v1/backends` until `f` holds.
pub async fn wait_backend(sc: &Sidecar, name: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let row = sc.backend(name).await;
        if f(&row) || Instant::now() > deadline {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
