//! `rate_limit_per_s`: a token bucket in front of a backend's attempts.
//!
//! Deliveries wait for a token rather than being dropped or failed, and the
//! scheduler still decides *which* event goes next, so per-user order holds.
//! The bucket holds at most one second of tokens (at least one), so a queue
//! that was idle sends a short burst, never more than a second's worth.
//! Pure: the caller passes the time.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
    /// Since when ready events have been waiting for a token.
    waiting_since: Option<Instant>,
}

impl Throttle {
    pub fn new(rate_per_s: f64, now: Instant) -> Self {
        let capacity = rate_per_s.max(1.0);
        Throttle {
            rate: rate_per_s,
            capacity,
            tokens: capacity,
            at: now,
            waiting_since: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.at = now;
    }

    /// How many attempts (events) may start now, at most `want`. When none,
    /// the queue is throttled from now until [`next_at`](Self::next_at).
    pub fn available(&mut self, want: usize, now: Instant) -> usize {
        self.refill(now);
        let n = (self.tokens.floor() as usize).min(want);
        if n == 0 && want > 0 {
            self.waiting_since.get_or_insert(now);
        }
        n
    }

    /// `n` events started now; returns how long they had waited for tokens
    /// (counted once, for `event_pusher_throttled_seconds_total`).
    pub fn take(&mut self, n: usize, now: Instant) -> Duration {
        self.refill(now);
        self.tokens = (self.tokens - n as f64).max(0.0);
        self.waiting_since
            .take()
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// When the next token is there, while events wait for one.
    pub fn next_at(&self) -> Option<Instant> {
        self.waiting_since?;
        let missing = (1.0 - self.tokens).max(0.0);
        // A tiny rate would make the wait overflow a Duration (or an
        // Instant): wake at least hourly instead; the tokens decide anyway.
        let wait = Duration::try_from_secs_f64(missing / self.rate)
            .unwrap_or(MAX_WAKE)
            .min(MAX_WAKE);
        Some(self.at.checked_add(wait).unwrap_or(self.at + MAX_WAKE))
    }
}

/// The longest a throttled queue sleeps before looking again.
const MAX_WAKE: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_rate_waits_at_most_an_hour_and_does_not_overflow() {
        let t0 = Instant::now();
        let mut t = Throttle::new(1e-30, t0);
        let _ = t.available(1, t0);
        t.take(1, t0);
        let _ = t.available(1, t0);
        if let Some(next) = t.next_at() {
            assert!(next <= t0 + MAX_WAKE);
        }
    }

    #[test]
    fn tokens_refill_at_the_rate_and_waits_are_counted() {
        let t0 = Instant::now();
        let mut t = Throttle::new(2.0, t0);
        assert_eq!(t.available(10, t0), 2, "a second's worth at most");
        t.take(2, t0);
        assert_eq!(t.available(1, t0), 0);
        let next = t.next_at().unwrap();
        assert_eq!(next, t0 + Duration::from_millis(500));
        assert_eq!(t.available(1, next), 1);
        assert_eq!(t.take(1, next), Duration::from_millis(500));
        assert_eq!(t.next_at(), None, "nobody waits");
        // Idle for long: still only a second's worth.
        let later = next + Duration::from_secs(60);
        assert_eq!(t.available(10, later), 2);
    }
}
