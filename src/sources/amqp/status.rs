//! What a running AMQP source reports: whether it can consume now (for
//! `/ready`) and its message counters (for `/metrics`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// What happened to a message; the `outcome` label of
/// `event_pusher_source_messages_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Received from the broker (every message, once per delivery).
    Consumed,
    /// Its events are in the spool and the broker has the ack.
    Acked,
    /// Not valid input: published to the dead-letter queue, then rejected.
    Rejected,
    /// Received with the broker's redelivered flag (a sidecar died or let
    /// go of it before acking).
    Redelivered,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Consumed,
        Outcome::Acked,
        Outcome::Rejected,
        Outcome::Redelivered,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Consumed => "consumed",
            Outcome::Acked => "acked",
            Outcome::Rejected => "rejected",
            Outcome::Redelivered => "redelivered",
        }
    }
}

/// Shared by a source's tasks and the HTTP handlers.
#[derive(Default)]
pub struct SourceStatus {
    consuming: AtomicBool,
    /// Why the source is not consuming, when it is not.
    problem: Mutex<Option<String>>,
    counts: [AtomicU64; 4],
    /// Partitions this sidecar is the active consumer of (as last seen
    /// by the balancer).
    active_partitions: AtomicU64,
}

impl SourceStatus {
    pub fn count(&self, outcome: Outcome, n: u64) {
        self.counts[outcome as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        self.counts[outcome as usize].load(Ordering::Relaxed)
    }

    pub fn set_active_partitions(&self, n: usize) {
        self.active_partitions.store(n as u64, Ordering::Relaxed);
    }

    pub fn active_partitions(&self) -> u64 {
        self.active_partitions.load(Ordering::Relaxed)
    }

    /// Connected, topology in place, a consumer on every partition.
    pub fn set_consuming(&self) {
        *self.problem_lock() = None;
        self.consuming.store(true, Ordering::Release);
    }

    pub fn set_not_consuming(&self, why: impl Into<String>) {
        self.consuming.store(false, Ordering::Release);
        self.active_partitions.store(0, Ordering::Relaxed);
        *self.problem_lock() = Some(why.into());
    }

    /// `None` while consuming; otherwise why not.
    pub fn not_consuming(&self) -> Option<String> {
        if self.consuming.load(Ordering::Acquire) {
            return None;
        }
        Some(self.problem_lock().clone().unwrap_or_else(|| "starting".to_owned()))
    }

    fn problem_lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A poisoned lock only means a panic elsewhere; the text is valid.
        self.problem.lock().unwrap_or_else(|e| e.into_inner())
    }
}
