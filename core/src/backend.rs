//! The `Backend` trait: what a delivery target implements.
//!
//! A backend does two things. In the chain it *claims* the events it wants
//! (`wants`, beside the class mask from its config), which is CPU-only. In
//! its delivery queue it *delivers* claimed events, which is where all I/O
//! happens. Retries, backoff, ordering, dead letters and pausing are the
//! delivery engine's job, not the backend's: a backend only reports what
//! happened to one attempt.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::event::Event;

/// One attempt to deliver one event.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: Event,
    /// The canonical JSON of `event`, as stored in the spool.
    pub json: Bytes,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// Why an attempt failed, and whether trying again could help.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryError {
    pub retryable: bool,
    /// A wait the peer asked for (HTTP `Retry-After`, throttling).
    pub retry_after: Option<Duration>,
    /// A status code from the peer, when it gave one.
    pub status: Option<u16>,
    pub message: String,
}

impl DeliveryError {
    /// A failure that may succeed later (timeouts, 5xx, broker down).
    pub fn retryable(message: impl Into<String>) -> Self {
        DeliveryError {
            retryable: true,
            retry_after: None,
            status: None,
            message: message.into(),
        }
    }

    /// A failure that no retry can fix (400, 404, invalid parameter).
    pub fn permanent(message: impl Into<String>) -> Self {
        DeliveryError {
            retryable: false,
            retry_after: None,
            status: None,
            message: message.into(),
        }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "status {s}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DeliveryError {}

/// A backend could not start (bad endpoint, failed declare).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The kind, as in config: `http`, `log`, `rabbit`, ...
    fn kind(&self) -> &'static str;

    /// Whether to claim this event, beyond the `events` class mask. Runs in
    /// the chain, so it must be cheap and must not block.
    fn wants(&self, _event: &Event) -> bool {
        true
    }

    /// Connect, declare, warm up. Called once before delivery starts; an
    /// error here leaves the backend not ready, and the engine calls it again
    /// with backoff.
    async fn start(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Whether the backend can deliver right now (used by `/ready`).
    fn is_ready(&self) -> bool {
        true
    }

    /// How many events `deliver_batch` takes at once. 1 means one at a time.
    fn max_batch(&self) -> usize {
        1
    }

    /// Deliver one event.
    async fn deliver(&self, delivery: &Delivery) -> Result<(), DeliveryError>;

    /// Deliver several events; one result per event, in order. The default
    /// delivers them one after the other.
    async fn deliver_batch(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        let mut out = Vec::with_capacity(batch.len());
        for d in batch {
            out.push(self.deliver(d).await);
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Claims everything, delivers nowhere: for chain and ingest tests.
    pub(crate) struct NullBackend;

    #[async_trait]
    impl Backend for NullBackend {
        fn kind(&self) -> &'static str {
            "null"
        }
        async fn deliver(&self, _: &Delivery) -> Result<(), DeliveryError> {
            Ok(())
        }
    }
}
