//! `event_pusher_filter_errors_total{filter="..."}`: events whose filter
//! failed (a script threw or broke a limit), per filter name.
//!
//! The counters live in one process-wide registry, not in the chain: a
//! reload swaps the chain, and a counter must survive that (Prometheus
//! counters only go up), and `/metrics` finds them here without reaching
//! into the chain's `dyn Filter`s. Counting is one atomic add.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use event_pusher_core::metrics::label;

fn registry() -> &'static Mutex<BTreeMap<String, Arc<AtomicU64>>> {
    static REGISTRY: OnceLock<Mutex<BTreeMap<String, Arc<AtomicU64>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The error counter of the filter called `name`, created at 0 if new; the
/// same counter for the same name, so a reloaded filter counts on.
pub fn error_counter(name: &str) -> Arc<AtomicU64> {
    registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(name.to_owned())
        .or_default()
        .clone()
}

/// Append the series in Prometheus text format.
pub fn render(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP event_pusher_filter_errors_total Events whose filter failed (script error or limit); each got the filter's on_error."
    );
    let _ = writeln!(out, "# TYPE event_pusher_filter_errors_total counter");
    for (name, n) in registry().lock().unwrap_or_else(PoisonError::into_inner).iter() {
        let _ = writeln!(
            out,
            "event_pusher_filter_errors_total{{filter=\"{}\"}} {}",
            label(name),
            n.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_shared_by_name_and_rendered() {
        let a = error_counter("metrics-test-\"q\"");
        a.fetch_add(2, Ordering::Relaxed);
        error_counter("metrics-test-\"q\"").fetch_add(1, Ordering::Relaxed);
        let mut out = String::new();
        render(&mut out);
        assert!(
            out.contains("event_pusher_filter_errors_total{filter=\"metrics-test-\\\"q\\\"\"} 3"),
            "{out}"
        );
    }
}
