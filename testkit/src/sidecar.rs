//! The `event-pusher` binary as a child process, for the end-to-end tests
//! and the benchmarks alike: start it on a generated config (free port,
//! spool in a temporary directory), wait for readiness, call its HTTP and
//! admin API, restart it, kill -9 it or stop it with SIGTERM.
//!
//! Two calling styles share one driver. Tests want a failure to stop the
//! test with the sidecar's log in the message: the plain methods panic.
//! The benchmarks report a failed case and go on with the next: the
//! `launch` / `try_*` methods and the admin helpers they use return errors.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde_json::Value;

use crate::process::{cpu_secs, rss_of, Rss};

/// What goes into the generated config besides listen address and spool
/// dir, and how the process runs.
#[derive(Default, Clone)]
pub struct Options {
    /// Extra lines for `[server]` (e.g. `auth_token = "t"`).
    pub server: String,
    /// Extra lines for `[spool]` (e.g. `max_queue = 10`).
    pub spool: String,
    /// The rest of the file: filters and backends.
    pub body: String,
    /// Environment for the child (applied after the default `RUST_LOG`,
    /// so it can replace it).
    pub env: Vec<(String, String)>,
    /// Bearer token for the calls this driver makes.
    pub token: Option<String>,
    /// Where the temporary directory (config, spool, logs) goes; the
    /// system's temp dir when unset.
    pub tmp: Option<PathBuf>,
}

/// The sidecar binary, running as a child process.
pub struct Sidecar {
    child: Option<Child>,
    bin: PathBuf,
    pub port: u16,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub token: Option<String>,
    env: Vec<(String, String)>,
    runs: usize,
    /// Kept for the benchmarks' admin calls (one connection, not one per
    /// poll, while a measurement runs). The test-style calls below make a
    /// client per call instead: a test restarts the process, and a pooled
    /// connection to the killed one would fail the next call.
    client: reqwest::Client,
}

/// The config text: listener, spool in `spool_dir`, the extra lines.
pub fn config_text(port: u16, spool_dir: &Path, opts: &Options) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_ms = 2000\n{}\n\n[spool]\ndir = \"{}\"\n{}\n\n{}\n",
        opts.server,
        spool_dir.display(),
        opts.spool,
        opts.body
    )
}

fn tempdir(opts: &Options) -> Result<tempfile::TempDir, String> {
    match &opts.tmp {
        Some(tmp) => tempfile::tempdir_in(tmp).map_err(|e| format!("cannot make a temp dir in {}: {e}", tmp.display())),
        None => tempfile::tempdir().map_err(|e| format!("cannot make a temp dir: {e}")),
    }
}

/// Ask the binary whether it accepts a config (`check-config`), e.g.
/// whether it was built with the backend a benchmark needs. `Err` carries
/// its message.
pub fn check_config(bin: &Path, opts: &Options) -> Result<(), String> {
    let dir = tempdir(opts)?;
    let path = dir.path().join("check.toml");
    let port = crate::try_free_port().map_err(|e| format!("no free port: {e}"))?;
    std::fs::write(&path, config_text(port, &dir.path().join("spool"), opts)).map_err(|e| e.to_string())?;
    let out = Command::new(bin)
        .arg("check-config")
        .arg(&path)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

impl Sidecar {
    /// Write a config and start `bin` on it; returns once `/health`
    /// answers, or why it did not.
    pub async fn launch(bin: &Path, opts: Options) -> Result<Sidecar, String> {
        let dir = tempdir(&opts)?;
        let port = crate::try_free_port().map_err(|e| format!("no free port: {e}"))?;
        let config = dir.path().join("sidecar.toml");
        std::fs::write(&config, config_text(port, &dir.path().join("spool"), &opts))
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let mut s = Sidecar {
            child: None,
            bin: bin.to_owned(),
            port,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            config,
            token: opts.token,
            env: opts.env,
            runs: 0,
            client: reqwest::Client::new(),
        };
        s.try_spawn().await?;
        Ok(s)
    }

    /// Like [`Sidecar::launch`], panicking (with the log) on failure.
    pub async fn start(bin: &Path, opts: Options) -> Sidecar {
        Self::launch(bin, opts).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// (Re)start the process on the same config, port and spool.
    pub async fn spawn(&mut self) {
        if let Err(e) = self.try_spawn().await {
            panic!("{e}");
        }
    }

    /// (Re)start the process; returns once `/health` answers.
    pub async fn try_spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        self.runs += 1;
        let log = |name: &str| {
            let path = self.dir.path().join(format!("{name}.{}.log", self.runs));
            std::fs::File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))
        };
        let (out, err) = (log("stdout")?, log("stderr")?);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        cmd.env("RUST_LOG", "info,event_pusher_core=debug");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(
            cmd.spawn()
                .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?,
        );
        self.wait_up("/health", Duration::from_secs(20)).await
    }

    /// Wait until `path` answers 200; fails early when the process exits.
    /// A client of its own, dropped after: no idle connection stays open
    /// to the process under test.
    async fn wait_up(&mut self, path: &str, timeout: Duration) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if self.answers_ok(&client, path).await {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("event-pusher exited early with {status}:\n{}", self.stderr()));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "event-pusher {path} not 200 within {timeout:?}:\n{}",
                    self.stderr()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn answers_ok(&self, client: &reqwest::Client, path: &str) -> bool {
        match client.get(format!("{}{path}", self.url)).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// Wait until `path` answers 200 (e.g. `/ready`: backends started).
    pub async fn wait_path(&self, path: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !self.answers_ok(&self.client, path).await {
            if Instant::now() >= deadline {
                return Err(format!(
                    "event-pusher {path} not 200 within {timeout:?}:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Wait until `/ready` answers 200 (backends started).
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.answers_ok(&client, "/ready").await {
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

    /// The last ten lines of stderr, for error messages.
    pub fn log_tail(&self) -> String {
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Bytes of the spool file on disk.
    pub fn spool_bytes(&self) -> u64 {
        std::fs::metadata(self.spool_dir().join("spool.redb"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The process id of the running child, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// CPU time (user + system) the running process has used, in seconds
    /// (0 when it is not running).
    pub fn cpu_secs(&self) -> f64 {
        self.pid().map(cpu_secs).unwrap_or(0.0)
    }

    /// Peak and current resident set of the running process.
    pub fn rss(&self) -> Rss {
        self.pid().map(rss_of).unwrap_or_default()
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// kill -9 and remove the temporary directory (the benchmarks do not
    /// need a graceful stop).
    pub fn stop(mut self) {
        self.kill9();
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

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// POST a JSON body to /v1/events; returns status and parsed answer.
    pub async fn post(&self, body: &Value) -> (u16, Value) {
        self.admin(reqwest::Method::POST, "/v1/events", Some(body)).await
    }

    /// POST raw bytes with a content type.
    pub async fn post_raw(&self, content_type: &str, body: Vec<u8>) -> (u16, Value, HeaderMap) {
        let r = self
            .auth(
                reqwest::Client::new()
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
        self.admin(reqwest::Method::GET, path, None).await
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .auth(reqwest::Client::new().get(format!("{}{path}", self.url)))
            .send()
            .await
            .expect("get");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.admin(reqwest::Method::POST, path, Some(body)).await
    }

    /// Any admin call: `method` on `path`, with a JSON body if given.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = reqwest::Client::new().request(method.clone(), format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = self
            .auth(req)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The row of `GET /v1/backends` for one backend.
    pub async fn backend(&self, name: &str) -> Value {
        let (_, all) = self.get("/v1/backends").await;
        find_backend(&all, name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The row of `GET /v1/backends` for one backend, or why there is none.
    pub async fn try_backend(&self, name: &str) -> Result<Value, String> {
        let all = self.call(reqwest::Method::GET, "/v1/backends").await?;
        find_backend(&all, name)
    }

    /// One admin call on the kept client; the answer's JSON, or the status
    /// and body when it is not a success.
    async fn call(&self, method: reqwest::Method, path: &str) -> Result<Value, String> {
        let r = self
            .auth(self.client.request(method.clone(), format!("{}{path}", self.url)))
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {}", String::from_utf8_lossy(&body)));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{method} {path}: {e}"))
    }

    /// `POST /v1/backends/NAME/pause`.
    pub async fn pause(&self, backend: &str) -> Result<(), String> {
        let path = format!("/v1/backends/{backend}/pause");
        self.call(reqwest::Method::POST, &path).await.map(|_| ())
    }

    /// `POST /v1/backends/NAME/resume`.
    pub async fn resume(&self, backend: &str) -> Result<(), String> {
        let path = format!("/v1/backends/{backend}/resume");
        self.call(reqwest::Method::POST, &path).await.map(|_| ())
    }

    /// Poll until the backend's row has `field` ≥ `n` (e.g. `queued`,
    /// `delivered`), every `every`; returns when it saw it, and the row.
    pub async fn wait_count(
        &self,
        name: &str,
        field: &str,
        n: u64,
        every: Duration,
        timeout: Duration,
    ) -> Result<(Instant, Value), String> {
        let until = Instant::now() + timeout;
        loop {
            let row = self.try_backend(name).await?;
            if row[field].as_u64().unwrap_or(0) >= n {
                return Ok((Instant::now(), row));
            }
            if Instant::now() >= until {
                return Err(format!(
                    "backend {name} has {field} {} of {n} within {timeout:?}: {row}",
                    row[field]
                ));
            }
            tokio::time::sleep(every).await;
        }
    }
}

fn find_backend(all: &Value, name: &str) -> Result<Value, String> {
    all.as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == name).cloned())
        .ok_or_else(|| format!("no backend {name} in {all}"))
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
