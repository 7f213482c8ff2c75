//! Logging failed delivery attempts at WARN without flooding the log.
//!
//! A receiver that is down fails every attempt of every event; one line per
//! attempt would bury everything else, and none at all (DEBUG only) left an
//! operator with no sign of trouble for 40 s. So each backend logs at most
//! one WARN line per [`WINDOW`], saying how many failures it left out since
//! the previous line. Every attempt still goes to DEBUG.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backend::DeliveryError;

/// At most one WARN line per backend in this much time.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The per-backend limiter. Shared by the backend's delivery tasks.
pub struct AttemptLog {
    /// `KIND.NAME`, so that `rabbit.main` and `sns.main` are told apart.
    label: String,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last_line: Option<Instant>,
    suppressed: u64,
}

impl AttemptLog {
    pub fn new(kind: &str, name: &str) -> Self {
        AttemptLog::with_window(kind, name, WINDOW)
    }

    pub fn with_window(kind: &str, name: &str, window: Duration) -> Self {
        AttemptLog {
            label: crate::BackendId::new(kind, name).to_string(),
            window,
            state: Mutex::new(State::default()),
        }
    }

    /// `KIND.NAME` of the backend.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Record one failed attempt; logs at WARN when the limiter allows.
    pub fn failed(&self, id: &str, attempts: u32, err: &DeliveryError) {
        tracing::debug!(backend = %self.label, id, attempts, error = %err, "attempt failed");
        if let Some(suppressed) = self.admit(Instant::now()) {
            tracing::warn!(
                backend = %self.label,
                id,
                attempts,
                status = err.status,
                error = %err.message,
                suppressed,
                "delivery attempt failed (suppressed: failures not logged since the previous line)"
            );
        }
    }

    /// Whether a line may be logged at `now`; if so, how many failures were
    /// left out since the last line.
    fn admit(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means another task panicked mid-update of two
        // counters; the counters are still usable.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let due = state
            .last_line
            .is_none_or(|last| now.saturating_duration_since(last) >= self.window);
        if due {
            state.last_line = Some(now);
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failure_is_logged_then_one_line_per_window_with_the_count() {
        let log = AttemptLog::with_window("http", "hook", Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(log.admit(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(log.admit(t0 + Duration::from_secs(i)), None, "second {i}");
        }
        assert_eq!(log.admit(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(log.admit(t0 + Duration::from_secs(11)), None);
        assert_eq!(log.admit(t0 + Duration::from_secs(25)), Some(1));
    }

    #[test]
    fn backends_are_limited_separately_and_named_by_kind() {
        let rabbit = AttemptLog::new("rabbit", "main");
        let sns = AttemptLog::new("sns", "main");
        let t0 = Instant::now();
        assert_eq!(rabbit.admit(t0), Some(0));
        assert_eq!(sns.admit(t0), Some(0));
        assert_eq!(rabbit.label(), "rabbit.main");
        assert_eq!(sns.label(), "sns.main");
    }
}
