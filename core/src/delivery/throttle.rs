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
        Some(self.at + Duration::from_secs_f64(missing / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
