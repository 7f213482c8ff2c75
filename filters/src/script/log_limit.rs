//! At most one log line per interval for a filter whose script keeps
//! failing: an error on every event must not flood the log, yet the first
//! one is shown at once and the count of the ones held back is kept.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets one message through per interval, counting the ones it holds back.
#[derive(Debug)]
pub struct LogLimit {
    start: Instant,
    interval: Duration,
    /// Milliseconds since `start` when a message may next go out; 0 = now.
    next_ms: AtomicU64,
    held_back: AtomicU64,
}

impl LogLimit {
    pub fn new(interval: Duration) -> Self {
        LogLimit {
            start: Instant::now(),
            interval,
            next_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this message should be logged, `n` being how many
    /// were held back since the last one; `None` to drop it.
    pub fn admit(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        let until = now + self.interval.as_millis() as u64;
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, until, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_passes_then_holds_back_and_counts() {
        let limit = LogLimit::new(Duration::from_secs(3600));
        assert_eq!(limit.admit(), Some(0));
        assert_eq!(limit.admit(), None);
        assert_eq!(limit.admit(), None);
        assert_eq!(limit.held_back.load(Ordering::Relaxed), 2);
        let zero = LogLimit::new(Duration::ZERO);
        assert_eq!(zero.admit(), Some(0));
        assert_eq!(zero.admit(), Some(0));
    }
}
