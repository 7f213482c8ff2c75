//! Retry timing: exponential backoff with jitter, honouring a peer's
//! `Retry-After`.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// The longest `Retry-After` we honour, so a bogus header cannot park an
/// event for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl RetryPolicy {
    /// The wait before attempt `failed_attempts + 1`: `initial * 2^(n-1)`
    /// capped at `max`, with "equal jitter" (half fixed, half random) so
    /// that retries of a burst spread out but never come early.
    pub fn backoff(&self, failed_attempts: u32, retry_after: Option<Duration>) -> Duration {
        let exp = failed_attempts.saturating_sub(1).min(31);
        let base = self.initial_backoff.saturating_mul(1u32 << exp).min(self.max_backoff);
        let half = base / 2;
        let jitter = if half.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_micros(rand::rng().random_range(0..=half.as_micros() as u64))
        };
        let backoff = half + jitter;
        match retry_after {
            Some(wait) => wait.min(MAX_RETRY_AFTER).max(backoff),
            None => backoff,
        }
    }

    pub fn exhausted(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_bounds() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let b1 = p.backoff(1, None);
            assert!(
                b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100),
                "{b1:?}"
            );
            let b3 = p.backoff(3, None);
            assert!(
                b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400),
                "{b3:?}"
            );
            let b10 = p.backoff(10, None);
            assert!(
                b10 >= Duration::from_millis(500) && b10 <= Duration::from_secs(1),
                "{b10:?}"
            );
        }
    }

    #[test]
    fn honours_retry_after() {
        let p = RetryPolicy::default();
        assert!(p.backoff(1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
        assert!(p.backoff(1, Some(Duration::from_secs(86400))) <= MAX_RETRY_AFTER);
    }

    #[test]
    fn exhausts_at_max_attempts() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..Default::default()
        };
        assert!(!p.exhausted(2));
        assert!(p.exhausted(3));
    }
}
