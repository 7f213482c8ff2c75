//! The delivery engine: one [`DeliveryQueue`] per backend instance, reading
//! its queue from the spool and carrying each event to the backend with
//! retries, per-user ordering, a circuit breaker and dead letters.

mod breaker;
mod queue;
mod retry;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use breaker::BreakerPolicy;
pub use queue::DeliveryQueue;
pub use retry::RetryPolicy;

use crate::backend::Backend;
use crate::metrics::BackendStats;
use crate::spool::{Spool, SpoolError};

/// How one backend instance's queue delivers.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Attempts (or batches) in flight at once.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    /// Most events held in memory at once; the rest wait in the spool.
    pub window: usize,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            concurrency: 32,
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            window: 4096,
        }
    }
}

/// One backend instance as the engine runs it.
pub struct BackendHandle {
    pub name: String,
    pub backend: Arc<dyn Backend>,
    pub options: DeliveryOptions,
    pub stats: Arc<BackendStats>,
    /// Set once the backend's `start` has succeeded.
    pub started: AtomicBool,
}

impl BackendHandle {
    pub fn new(name: impl Into<String>, backend: Arc<dyn Backend>, options: DeliveryOptions) -> Self {
        BackendHandle {
            name: name.into(),
            backend,
            options,
            stats: Arc::new(BackendStats::default()),
            started: AtomicBool::new(false),
        }
    }

    /// Started, and the backend says it can deliver.
    pub fn is_ready(&self) -> bool {
        self.started.load(Ordering::Acquire) && self.backend.is_ready()
    }
}

/// A row of `GET /v1/backends`.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    pub name: String,
    pub kind: String,
    pub paused: bool,
    pub ready: bool,
    pub queued: u64,
    pub in_flight: u64,
    pub delivered: u64,
    pub failed: u64,
    pub retries: u64,
    pub dead_letters: u64,
    /// The circuit breaker is open: the endpoint keeps failing and is being
    /// backed off as a whole.
    pub circuit_open: bool,
}

/// All delivery queues of a process.
pub struct DeliveryEngine {
    spool: Spool,
    backends: Vec<Arc<BackendHandle>>,
    stop: watch::Sender<bool>,
}

impl DeliveryEngine {
    /// `backends` must be in spool slot order.
    pub fn new(spool: Spool, backends: Vec<BackendHandle>) -> Self {
        let (stop, _) = watch::channel(false);
        DeliveryEngine {
            spool,
            backends: backends.into_iter().map(Arc::new).collect(),
            stop,
        }
    }

    /// Start one delivery queue task per backend.
    pub fn start(&self) -> Vec<JoinHandle<()>> {
        self.backends
            .iter()
            .enumerate()
            .map(|(slot, b)| {
                let q = DeliveryQueue::new(slot, b.clone(), self.spool.clone(), self.stop.subscribe());
                tokio::spawn(q.run())
            })
            .collect()
    }

    /// Stop dispatching; queues finish in-flight attempts for up to `grace`.
    pub async fn shutdown(&self, handles: Vec<JoinHandle<()>>, grace: Duration) {
        let _ = self.stop.send(true);
        let all = futures_join(handles);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(?grace, "grace period over; undelivered events stay in the spool");
        }
        // Make the acks of what was delivered durable, so a restart does not
        // deliver it again, and close the file cleanly so the next start
        // needs no repair.
        if let Err(e) = self.spool.close().await {
            tracing::warn!(error = %e, "final spool sync failed");
        }
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    pub fn backends(&self) -> &[Arc<BackendHandle>] {
        &self.backends
    }

    pub fn slot(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == name)
    }

    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<Option<BackendStatus>, SpoolError> {
        let Some(slot) = self.slot(name) else { return Ok(None) };
        self.spool.set_paused(slot, paused).await?;
        Ok(Some(self.status_of(slot)))
    }

    pub fn status_of(&self, slot: usize) -> BackendStatus {
        let b = &self.backends[slot];
        let s = self.spool.slot(slot);
        BackendStatus {
            name: b.name.clone(),
            kind: b.backend.kind().to_owned(),
            paused: s.paused.load(Ordering::Relaxed),
            ready: b.is_ready(),
            queued: s.queued.load(Ordering::Relaxed),
            in_flight: b.stats.in_flight.load(Ordering::Relaxed).max(0) as u64,
            delivered: BackendStats::get(&b.stats.delivered),
            failed: BackendStats::get(&b.stats.failed),
            retries: BackendStats::get(&b.stats.retries),
            dead_letters: s.dead.load(Ordering::Relaxed),
            circuit_open: b.stats.circuit_open.load(Ordering::Relaxed),
        }
    }

    pub fn status(&self) -> Vec<BackendStatus> {
        (0..self.backends.len()).map(|i| self.status_of(i)).collect()
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
