//! The circuit breaker: an endpoint that keeps failing is backed off as a
//! whole.
//!
//! After `threshold` consecutive retryable failures the circuit opens: for a
//! cooldown no attempt reaches the endpoint; events that come due meanwhile
//! fail fast (their attempt counts, with the endpoint's last real error), so
//! an outage neither hammers the endpoint nor stalls the path to dead
//! letters. When the cooldown is over one probe goes through (half-open): a
//! success closes the circuit, a failure opens it again for twice as long.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the circuit; 0 disables the breaker.
    pub threshold: u32,
    pub initial_cooldown: Duration,
    pub max_cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            threshold: 10,
            initial_cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(30),
        }
    }
}

/// What the breaker allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send normally.
    Closed,
    /// Send this one as the probe; hold others back until it answers.
    Probe,
    /// Do not send: fail fast.
    Open,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    policy: BreakerPolicy,
    consecutive: u32,
    cooldown: Duration,
    open_until: Option<Instant>,
    probing: bool,
}

impl CircuitBreaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        CircuitBreaker {
            policy,
            consecutive: 0,
            cooldown: policy.initial_cooldown,
            open_until: None,
            probing: false,
        }
    }

    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.open_until {
            None => Admission::Closed,
            Some(until) if now < until => Admission::Open,
            Some(_) if self.probing => Admission::Open,
            Some(_) => {
                self.probing = true;
                Admission::Probe
            }
        }
    }

    /// When the current cooldown ends, if the circuit is open and no probe
    /// is out (while one is, only its answer changes anything).
    pub fn reopens_at(&self) -> Option<Instant> {
        if self.probing {
            None
        } else {
            self.open_until
        }
    }

    /// The cooldown the circuit opens (or last opened) for.
    pub fn cooldown(&self) -> std::time::Duration {
        self.cooldown
    }

    /// Retryable failures in a row (for `backend.failing`).
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }

    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }

    /// An attempt ended in a way that says nothing about the endpoint (a
    /// local, permanent error): if it was the probe, let another one go.
    pub fn on_inconclusive(&mut self) {
        self.probing = false;
    }

    pub fn on_success(&mut self) {
        self.consecutive = 0;
        self.open_until = None;
        self.probing = false;
        self.cooldown = self.policy.initial_cooldown;
    }

    /// A real attempt failed in a way that says the endpoint is unwell.
    /// Returns true when this opened (or re-opened) the circuit.
    pub fn on_failure(&mut self, now: Instant) -> bool {
        if self.policy.threshold == 0 {
            return false;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        if self.probing {
            self.probing = false;
            self.cooldown = (self.cooldown * 2).min(self.policy.max_cooldown);
            self.open_until = Some(now + self.cooldown);
            return true;
        }
        if self.open_until.is_none() && self.consecutive >= self.policy.threshold {
            self.open_until = Some(now + self.cooldown);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_and_recovers() {
        let p = BreakerPolicy {
            threshold: 3,
            initial_cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(4),
        };
        let mut b = CircuitBreaker::new(p);
        let t0 = Instant::now();
        assert_eq!(b.admit(t0), Admission::Closed);
        assert!(!b.on_failure(t0));
        assert!(!b.on_failure(t0));
        assert!(b.on_failure(t0));
        assert_eq!(b.admit(t0), Admission::Open);
        let t1 = t0 + Duration::from_millis(1100);
        assert_eq!(b.admit(t1), Admission::Probe);
        assert_eq!(b.admit(t1), Admission::Open, "only one probe at a time");
        assert!(b.on_failure(t1));
        assert_eq!(b.reopens_at(), Some(t1 + Duration::from_secs(2)));
        let t2 = t1 + Duration::from_secs(3);
        assert_eq!(b.admit(t2), Admission::Probe);
        b.on_success();
        assert_eq!(b.admit(t2), Admission::Closed);
    }

    #[test]
    fn an_inconclusive_probe_lets_another_go() {
        let p = BreakerPolicy {
            threshold: 1,
            initial_cooldown: Duration::from_millis(10),
            max_cooldown: Duration::from_secs(1),
        };
        let mut b = CircuitBreaker::new(p);
        let t0 = Instant::now();
        assert!(b.on_failure(t0));
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(b.admit(t1), Admission::Probe);
        assert_eq!(b.admit(t1), Admission::Open);
        b.on_inconclusive();
        assert!(b.is_open());
        assert_eq!(b.admit(t1), Admission::Probe);
    }

    #[test]
    fn zero_threshold_disables() {
        let mut b = CircuitBreaker::new(BreakerPolicy {
            threshold: 0,
            ..Default::default()
        });
        for _ in 0..100 {
            assert!(!b.on_failure(Instant::now()));
        }
        assert_eq!(b.admit(Instant::now()), Admission::Closed);
    }
}
