//! Starting the real `event-pusher` binary with a generated config and a
//! temporary spool, and driving it through its admin API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A port nobody listens on right now (18088 if none could be had: the
/// start then fails naming the port).
pub fn free_port() -> u16 {
    event_pusher_testkit::try_free_port().unwrap_or(18088)
}

/// Peak and current resident set of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub hwm_kb: u64,
    pub rss_kb: u64,
}

pub fn rss_of(pid: u32) -> Rss {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Rss {
        hwm_kb: field("VmHWM:"),
        rss_kb: field("VmRSS:"),
    }
}

/// A running sidecar.
pub struct Sidecar {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    client: reqwest::Client,
}

/// The config text: listener, spool in `dir`, the bench filters, `body`.
pub fn config_text(port: u16, spool_dir: &Path, spool_extra: &str, body: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_ms = 1000\nmax_body_bytes = 16777216\n\n\
         [spool]\ndir = \"{}\"\n{spool_extra}\n{}\n{body}\n",
        spool_dir.display(),
        crate::scenario::FILTERS_TOML
    )
}

/// Ask the binary whether it accepts a config (e.g. whether it was built
/// with the rabbit backend). `Err` carries its message.
pub fn check_config(bin: &Path, tmp: &Path, body: &str) -> Result<(), String> {
    let dir = tempfile::tempdir_in(tmp).map_err(|e| e.to_string())?;
    let path = dir.path().join("check.toml");
    std::fs::write(&path, config_text(free_port(), &dir.path().join("spool"), "", body)).map_err(|e| e.to_string())?;
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
    /// Write the config, start the binary, wait for `/health`.
    pub async fn start(bin: &Path, tmp: &Path, spool_extra: &str, body: &str) -> Result<Sidecar, String> {
        let dir = tempfile::tempdir_in(tmp).map_err(|e| format!("cannot make a temp dir in {}: {e}", tmp.display()))?;
        let port = free_port();
        let config = dir.path().join("sidecar.toml");
        std::fs::write(&config, config_text(port, &dir.path().join("spool"), spool_extra, body))
            .map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.path().join("sidecar.log")).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_SIDECAR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let s = Sidecar {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            client: reqwest::Client::new(),
        };
        s.wait_path("/health", Duration::from_secs(20)).await?;
        Ok(s)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss(&self) -> Rss {
        rss_of(self.pid())
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("sidecar.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Bytes of the spool file on disk.
    pub fn spool_bytes(&self) -> u64 {
        std::fs::metadata(self.dir.path().join("spool").join("spool.redb"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Wait until `path` answers 200.
    pub async fn wait_path(&self, path: &str, timeout: Duration) -> Result<(), String> {
        let until = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.client.get(format!("{}{path}", self.url)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= until {
                return Err(format!(
                    "sidecar {path} not 200 within {timeout:?}; log:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn post(&self, path: &str) -> Result<Value, String> {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("POST {path}: {status}: {}", String::from_utf8_lossy(&body)));
        }
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }

    pub async fn pause(&self, backend: &str) -> Result<(), String> {
        self.post(&format!("/v1/backends/{backend}/pause")).await.map(|_| ())
    }

    pub async fn resume(&self, backend: &str) -> Result<(), String> {
        self.post(&format!("/v1/backends/{backend}/resume")).await.map(|_| ())
    }

    /// The `GET /v1/backends` row of one backend.
    pub async fn backend(&self, name: &str) -> Result<Value, String> {
        let r = self
            .client
            .get(format!("{}/v1/backends", self.url))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = r.json_value().await?;
        v.as_array()
            .and_then(|a| a.iter().find(|b| b["name"] == name).cloned())
            .ok_or_else(|| format!("no backend {name} in {v}"))
    }

    /// Poll until the backend has delivered `n` events; returns when it saw
    /// it, and the last row.
    pub async fn wait_delivered(&self, name: &str, n: u64, timeout: Duration) -> Result<(Instant, Value), String> {
        let until = Instant::now() + timeout;
        loop {
            let row = self.backend(name).await?;
            if row["delivered"].as_u64().unwrap_or(0) >= n {
                return Ok((Instant::now(), row));
            }
            if Instant::now() >= until {
                return Err(format!(
                    "backend {name} delivered {} of {n} within {timeout:?}: {row}",
                    row["delivered"]
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stop the process (SIGKILL: benchmarks do not need a graceful stop,
    /// and the temp dir goes with it).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

trait JsonValue {
    async fn json_value(self) -> Result<Value, String>;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Result<Value, String> {
        let b = self.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&b).map_err(|e| e.to_string())
    }
}

/// CPU time (user + system) a process has used so far, in seconds.
/// 0 when it cannot be read (the process is gone).
pub fn cpu_secs(pid: u32) -> f64 {
    event_pusher_testkit::cpu_ticks(pid).unwrap_or(0) as f64 / event_pusher_testkit::CLOCK_TICKS_PER_SEC
}
