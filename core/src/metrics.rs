//! Counters and histograms for Prometheus, kept as plain atomics so the hot
//! path never takes a lock to count.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Bucket upper bounds in seconds, from 1 ms to 5 minutes.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

/// A fixed-bucket histogram of durations in seconds.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds, so it can be an integer atomic.
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Write the `_bucket`, `_sum` and `_count` lines for one label set.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Delivery counters of one backend instance.
#[derive(Default)]
pub struct BackendStats {
    pub delivered: AtomicU64,
    /// Failed attempts (each retry that failed counts once).
    pub failed: AtomicU64,
    pub retries: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub in_flight: AtomicI64,
    /// The circuit breaker is open: the endpoint is being backed off.
    pub circuit_open: AtomicBool,
    /// Accepted (202) to delivered.
    pub latency: Histogram,
    /// One attempt's call to the backend.
    pub publish: Histogram,
    /// Microseconds ready events waited for `rate_limit_per_s` tokens.
    pub throttled_us: AtomicU64,
    /// Since when (ms since the epoch) attempts have failed without a
    /// success in between; 0 while the last attempt succeeded.
    pub failing_since_ms: AtomicU64,
}

impl BackendStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Escape a label value for the text format.
pub fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
