//! A backend written in Rust: build your own sidecar binary with
//! event-pusher as a library and add a delivery target the way you add
//! filters.
//!
//! ```sh
//! cargo run --example custom_backend              # embedded default config
//! cargo run --example custom_backend -- FILE.toml
//! ```
//!
//! A backend implements `event_pusher::Backend`: `KIND` (as it would appear
//! in config), optionally `wants` (runs in the chain: cheap, no I/O), and
//! `deliver` (runs in its delivery queue: all the I/O; it takes a batch of
//! up to `max_batch()` events, 1 by default, and `one_by_one` adapts a
//! function that sends one). Retries with
//! backoff, dead letters, pause/resume and the spool are the engine's;
//! the backend only says how one attempt went.
//!
//! This one appends a line per chat message to a file. Its test
//! (`cargo nextest run --example custom_backend`) runs the sidecar, posts a
//! hook call and reads the file.

use std::path::PathBuf;
use std::process::ExitCode;

use event_pusher::core::event::EventBody;
use event_pusher::{one_by_one, Backend, Delivery, DeliveryError, Event, Sidecar};
use tokio::io::AsyncWriteExt;

/// Appends `ID FROM -> TO: BODY` for every chat message.
struct ChatLog {
    path: PathBuf,
}

#[event_pusher::async_trait]
impl Backend for ChatLog {
    const KIND: &'static str = "chatlog";

    fn wants(&self, event: &Event) -> bool {
        matches!(event.body, EventBody::Chat(_))
    }

    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        one_by_one(batch, |d| self.append(d)).await
    }
}

impl ChatLog {
    async fn append(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let EventBody::Chat(chat) = &delivery.event.body else {
            return Err(DeliveryError::permanent("not a chat message"));
        };
        let line = format!(
            "{} {} -> {}: {}\n",
            delivery.event.id,
            chat.from,
            chat.to,
            chat.body.as_deref().unwrap_or("")
        );
        // A failed write is worth retrying (disk full now, not forever).
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(|e| DeliveryError::retryable(format!("cannot open {}: {e}", self.path.display())))?;
        file.write_all(line.as_bytes())
            .await
            .map_err(|e| DeliveryError::retryable(format!("cannot write {}: {e}", self.path.display())))
    }
}

fn sidecar(config: Option<PathBuf>, out: PathBuf) -> Result<Sidecar, event_pusher::config_crate::ConfigError> {
    let sidecar = match config {
        Some(path) => Sidecar::from_file(&path)?,
        None => Sidecar::embedded_default()?,
    };
    Ok(sidecar.with_backend("chats", 50, ChatLog { path: out }))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let config = std::env::args().nth(1).map(PathBuf::from);
    let sidecar = match sidecar(config, "chats.log".into()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sidecar.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test]
    async fn a_posted_chat_message_reaches_the_custom_backend() {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = dir.path().join("sidecar.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[spool]\ndir = \"{}\"\n",
                dir.path().join("spool").display()
            ),
        )
        .expect("write config");
        let out = dir.path().join("chats.log");
        let sc = sidecar(Some(config), out.clone()).expect("config is valid");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(sc.run_until(async {
            let _ = stopped.await;
        }));

        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/v1/events");
        let calls = serde_json::json!([
            {"hook": "user_available", "jid": "alice@localhost/phone"},
            {"hook": "user_send_message", "from": "alice@localhost/phone", "to": "bob@localhost", "type": "chat", "body": "hi"}
        ]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let ids = loop {
            if let Ok(r) = client.post(&url).json(&calls).send().await {
                assert_eq!(r.status(), 202);
                let v: serde_json::Value = r.json().await.expect("json answer");
                break v["ids"].clone();
            }
            assert!(Instant::now() < deadline, "sidecar did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let chat_id = ids[1].as_str().expect("id").to_owned();
        let written = loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if !text.is_empty() || Instant::now() > deadline {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // The presence event was not wanted; the chat message was delivered.
        assert_eq!(
            written,
            format!("{chat_id} alice@localhost/phone -> bob@localhost: hi\n")
        );
        let _ = stop.send(());
        run.await.expect("join").expect("clean shutdown");
    }
}
