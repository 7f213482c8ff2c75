//! Helpers for the reliability tests (dead letters, crash, backpressure,
//! admin), on top of `support`: hook-call builders, posting with 503
//! handling, running the CLI, reading `/metrics`, counting deliveries, and a
//! tmpfs that can be filled to make the spool unwritable for real.
//!
//! A test file does `mod support; mod harness;`.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{Received, Receiver, Sidecar};

/// `[backends.http.NAME.retry]` with short backoffs, so tests stay fast.
pub fn fast_retry(name: &str, max_attempts: u32) -> String {
    format!(
        "[backends.http.{name}.retry]\nmax_attempts = {max_attempts}\ninitial_backoff_ms = 50\nmax_backoff_ms = 500\n"
    )
}

/// A chat message sent by `from` (a bare JID; a resource is added) with
/// `body`.
pub fn chat(from: &str, body: &str) -> Value {
    json!({"hook": "user_send_message", "from": format!("{from}/res"), "to": "peer@localhost", "type": "chat", "body": body})
}

/// POST /v1/events; status, answer and the `Retry-After` header.
pub async fn post(sc: &Sidecar, body: &Value) -> (u16, Value, Option<String>) {
    let (status, v, headers) = sc.post_raw("application/json", serde_json::to_vec(body).unwrap()).await;
    let retry_after = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, v, retry_after)
}

/// Ids of a 202 answer.
pub fn ids(answer: &Value) -> Vec<String> {
    answer["ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Post and insist on 202; returns the ids.
pub async fn post_ok(sc: &Sidecar, body: &Value) -> Vec<String> {
    let (status, v, _) = post(sc, body).await;
    assert_eq!(status, 202, "expected 202, got {status}: {v}");
    ids(&v)
}

/// Event ids of what a receiver got (2xx answers only).
pub fn received_ids(rx: &Receiver) -> Vec<String> {
    rx.received().iter().map(id_of).collect()
}

pub fn id_of(r: &Received) -> String {
    r.json()["id"].as_str().unwrap_or_default().to_owned()
}

/// Wait until every id in `want` was received at least once.
pub async fn wait_all(rx: &Receiver, want: &HashSet<String>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let got: HashSet<String> = received_ids(rx).into_iter().collect();
        if want.is_subset(&got) {
            return true;
        }
        if Instant::now() > deadline {
            let missing = want.difference(&got).count();
            eprintln!("still missing {missing} of {} ids", want.len());
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deliveries received beyond the first of each id.
pub fn duplicates(rx: &Receiver) -> usize {
    let all = received_ids(rx);
    let unique: HashSet<&String> = all.iter().collect();
    all.len() - unique.len()
}

/// The bodies each sender's messages arrived with, in arrival order.
pub fn bodies_by_user(got: &[Received]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for r in got {
        let v = r.json();
        let from = v["from"].as_str().unwrap_or_default();
        let bare = from.split('/').next().unwrap_or_default().to_owned();
        out.entry(bare)
            .or_default()
            .push(v["body"].as_str().unwrap_or_default().to_owned());
    }
    out
}

/// Run the binary with arguments (e.g. `status --url ...`); exit code,
/// stdout, stderr.
pub async fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(Sidecar::bin());
        cmd.args(&args).env("RUST_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run event-pusher");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The value of one sample of `/metrics`: the line that starts with `name{`
/// and holds every label in `labels` (or is exactly `name` when there are
/// none).
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let matches = if labels.is_empty() {
            series == name
        } else {
            series.starts_with(&format!("{name}{{")) && labels.iter().all(|lab| series.contains(lab))
        };
        if matches {
            value.parse().ok()
        } else {
            None
        }
    })
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

/// A tmpfs mounted for the life of this value: a disk that really fills up,
/// even for root (whom file modes do not stop).
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` bytes on `path` (created if needed). None if
    /// this machine does not allow mounting.
    pub fn mount(path: &Path, size: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).ok()?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        st.success().then(|| Tmpfs { path: path.to_owned() })
    }

    /// Write a file until the filesystem is full; returns the bytes written.
    pub fn fill(&self, name: &str) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path.join(name)).expect("create filler");
        let chunk = vec![0xA5u8; 4096];
        let mut n = 0u64;
        while f.write_all(&chunk).is_ok() {
            n += chunk.len() as u64;
        }
        // Fill the last partial block too.
        while f.write_all(&chunk[..1]).is_ok() {
            n += 1;
        }
        let _ = f.sync_all();
        n
    }

    pub fn free(&self, name: &str) {
        std::fs::remove_file(self.path.join(name)).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// CPU time (user + system, in clock ticks) a process has used, from
/// `/proc`; None where there is no `/proc`.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// A file made immutable (`chattr +i`) for the life of this value: every
/// write to it fails, even for root and even through descriptors opened
/// before, and so does opening it for writing.
pub struct Immutable {
    pub path: PathBuf,
}

impl Immutable {
    /// None if the file system or the machine does not allow it.
    pub fn set(path: &Path) -> Option<Immutable> {
        let st = Command::new("chattr").arg("+i").arg(path).status().ok()?;
        st.success().then(|| Immutable { path: path.to_owned() })
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.path).status();
    }
}
