//! The binary under test: `event_pusher_testkit::Sidecar` started on the
//! `event-pusher` binary Cargo built for these tests. Only the binary's
//! path is the root crate's own; everything else is the shared driver,
//! reached through `Deref` (`sc.post(..)`, `sc.port`, `sc.kill9()`, ...).

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// The sidecar binary under test, running as a child process.
pub struct Sidecar(event_pusher_testkit::Sidecar);

impl Sidecar {
    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_event-pusher")
    }

    /// Write a config and start the binary; waits until `/health` answers.
    pub async fn start(opts: Options) -> Sidecar {
        Sidecar(event_pusher_testkit::Sidecar::start(Path::new(Self::bin()), opts).await)
    }
}

impl Deref for Sidecar {
    type Target = event_pusher_testkit::Sidecar;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Sidecar {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
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

/// A sidecar with one gateway backend (`extra`: more keys of its table),
/// ready.
pub async fn start_gateway(extra: &str) -> Sidecar {
    let sc = Sidecar::start(Options {
        body: gateway_backend(extra),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    sc
}
