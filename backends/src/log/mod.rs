//! The `log` backend: each event as one line of canonical JSON, to stdout or
//! appended to a file.
//!
//! ```toml
//! [backends.log.console]          # stdout
//! [backends.log.audit]
//! path = "events.jsonl"
//! ```

use std::path::PathBuf;

use async_trait::async_trait;
use event_pusher_core::{one_by_one, Backend, BackendError, Delivery, DeliveryError};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::common::backend_config;

backend_config! {
one_writer;
pub struct LogConfig {
    /// Append to this file instead of writing to stdout.
    #[serde(default)]
    pub path: Option<PathBuf>,
}
}

enum Sink {
    Stdout(tokio::io::Stdout),
    File(tokio::fs::File),
}

pub struct LogBackend {
    path: Option<PathBuf>,
    sink: Mutex<Option<Sink>>,
}

impl LogBackend {
    pub fn new(_name: &str, config: &LogConfig) -> Result<Self, BackendError> {
        Ok(LogBackend {
            path: config.path.clone(),
            sink: Mutex::new(None),
        })
    }

    /// Where the lines go, for error messages.
    fn target(&self) -> String {
        match &self.path {
            None => "stdout".to_owned(),
            Some(p) => p.display().to_string(),
        }
    }

    async fn open(&self) -> Result<Sink, std::io::Error> {
        match &self.path {
            None => Ok(Sink::Stdout(tokio::io::stdout())),
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(dir).await?;
                }
                let f = tokio::fs::OpenOptions::new().create(true).append(true).open(p).await?;
                Ok(Sink::File(f))
            }
        }
    }
}

#[async_trait]
impl Backend for LogBackend {
    const KIND: &'static str = "log";

    async fn start(&self) -> Result<(), BackendError> {
        let sink = self
            .open()
            .await
            .map_err(|e| BackendError::with_source(format!("cannot open log output {}: {e}", self.target()), e))?;
        *self.sink.lock().await = Some(sink);
        Ok(())
    }

    /// One event at a time: there is no batch call to use.
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        one_by_one(batch, |d| self.publish(d)).await
    }
}

impl LogBackend {
    /// Write one event's line.
    pub async fn publish(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let mut line = Vec::with_capacity(delivery.json.len() + 1);
        line.extend_from_slice(&delivery.json);
        line.push(b'\n');
        let mut guard = self.sink.lock().await;
        if guard.is_none() {
            let sink = self
                .open()
                .await
                .map_err(|e| DeliveryError::retryable(format!("cannot open log output {}: {e}", self.target())))?;
            *guard = Some(sink);
        }
        let result = match guard.as_mut() {
            Some(Sink::Stdout(s)) => write(s, &line).await,
            Some(Sink::File(f)) => write(f, &line).await,
            None => Ok(()),
        };
        if let Err(e) = result {
            // Reopen next time: the file may have been rotated away.
            *guard = None;
            return Err(DeliveryError::retryable(format!(
                "cannot write log line to {}: {e}",
                self.target()
            )));
        }
        Ok(())
    }
}

async fn write<W: AsyncWriteExt + Unpin>(w: &mut W, line: &[u8]) -> std::io::Result<()> {
    w.write_all(line).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A start error names the output and keeps the I/O error as its source.
    #[tokio::test]
    async fn start_error_keeps_the_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"").expect("write");
        let config = LogConfig {
            path: Some(not_a_dir.join("events.jsonl")),
            ..toml::from_str("").expect("empty log config")
        };
        let backend = LogBackend::new("audit", &config).expect("builds");
        let err = Backend::start(&backend).await.expect_err("parent is a file");
        assert!(err.to_string().starts_with("cannot open log output "), "{err}");
        let source = std::error::Error::source(&err).expect("source kept");
        assert!(source.downcast_ref::<std::io::Error>().is_some(), "{source:?}");
    }
}
