//! The delivery scheduler: which event of a backend's window goes out next,
//! and what becomes of it after an attempt. No I/O and no clock of its own
//! (the caller passes `now`), so every rule here is unit-tested directly;
//! [`DeliveryQueue`](super::DeliveryQueue) is the async driver around it.
//!
//! - events of one user (key) go out one at a time, in the order they were
//!   admitted: a user's later events are held while an earlier one is
//!   ready, in flight, waiting to retry or parked; an event admitted
//!   without a key (`ordering = "none"`) waits for nobody;
//! - a failed attempt is retried at a backoff (or the peer's `Retry-After`),
//!   ahead of fresh events; a permanent failure or the last allowed attempt
//!   is a dead letter;
//! - while the circuit is open, ready events fail fast, except an event's
//!   last attempt, which is parked until a real attempt can be made.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::retry::RetryPolicy;

/// What to do with an event after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Delivered: remove it from the spool, then [`Scheduler::release`] it.
    Ack,
    /// Give up: move it to the dead letters, then [`Scheduler::release`] it
    /// (or [`Scheduler::dead_letter_deferred`] if the move failed).
    DeadLetter,
    /// Scheduled again at this instant; nothing to do meanwhile.
    RetryAt(Instant),
}

/// How one attempt of an event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Failed {
        retryable: bool,
        retry_after: Option<Duration>,
    },
}

/// One event in the window: its user, the attempts made so far, and the
/// caller's payload.
struct Entry<T> {
    /// `None`: unordered, held behind nothing and holding nothing.
    key: Option<String>,
    attempts: u32,
    payload: T,
}

pub struct Scheduler<T> {
    policy: RetryPolicy,
    events: HashMap<u64, Entry<T>>,
    /// Events whose user is free, in order; the next to go out.
    ready: VecDeque<u64>,
    /// Per busy user, their later events in order. A user is busy while one
    /// of their events is ready, in flight, waiting to retry or parked.
    held: HashMap<String, VecDeque<u64>>,
    retries: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Events whose last allowed attempt came due while the circuit was
    /// open. They wait for a real attempt: the probe, or the endpoint's next
    /// real failure (which dead-letters them).
    parked: VecDeque<u64>,
}

impl<T> Scheduler<T> {
    pub fn new(policy: RetryPolicy) -> Self {
        Scheduler {
            policy,
            events: HashMap::new(),
            ready: VecDeque::new(),
            held: HashMap::new(),
            retries: BinaryHeap::new(),
            parked: VecDeque::new(),
        }
    }

    /// Events in the window, whatever their state.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn get(&self, seq: u64) -> Option<&T> {
        self.events.get(&seq).map(|e| &e.payload)
    }

    pub fn get_mut(&mut self, seq: u64) -> Option<&mut T> {
        self.events.get_mut(&seq).map(|e| &mut e.payload)
    }

    /// Attempts made so far (0 before the first).
    pub fn attempts(&self, seq: u64) -> u32 {
        self.events.get(&seq).map_or(0, |e| e.attempts)
    }

    /// Take an event into the window, behind its user's earlier events
    /// (or, with no key, straight into the ready queue). Sequence numbers
    /// are the spool's: unique and increasing.
    pub fn admit(&mut self, seq: u64, key: Option<String>, payload: T) {
        match &key {
            None => self.ready.push_back(seq),
            Some(k) => match self.held.get_mut(k) {
                Some(later) => later.push_back(seq),
                None => {
                    self.held.insert(k.clone(), VecDeque::new());
                    self.ready.push_back(seq);
                }
            },
        }
        self.events.insert(
            seq,
            Entry {
                key,
                attempts: 0,
                payload,
            },
        );
    }

    /// Something waits to be sent: ready or parked events.
    pub fn has_waiting(&self) -> bool {
        !(self.ready.is_empty() && self.parked.is_empty())
    }

    pub fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// When the earliest retry comes due.
    pub fn next_retry_at(&self) -> Option<Instant> {
        self.retries.peek().map(|Reverse((t, _))| *t)
    }

    /// Make retries that are due ready. A retry goes before fresh events:
    /// it is older.
    pub fn promote_due(&mut self, now: Instant) {
        while let Some(Reverse((at, seq))) = self.retries.peek().copied() {
            if at > now {
                break;
            }
            self.retries.pop();
            self.ready.push_front(seq);
        }
    }

    /// Start an attempt of up to `n` ready events, in order: each one's
    /// attempt is counted. They are in flight until the caller reports
    /// their [`Outcome`].
    pub fn take_ready(&mut self, n: usize) -> Vec<u64> {
        let mut seqs = Vec::with_capacity(n.min(self.ready.len()));
        while seqs.len() < n {
            let Some(seq) = self.ready.pop_front() else { break };
            let Some(e) = self.events.get_mut(&seq) else { continue };
            e.attempts += 1;
            seqs.push(seq);
        }
        seqs
    }

    /// The circuit is open: every ready event fails fast. Returns those
    /// whose (counted) attempt failed without reaching the endpoint; report
    /// each with [`after_attempt`](Self::after_attempt). An event due for
    /// its last attempt is parked instead: that one is always a real one.
    pub fn fail_fast_ready(&mut self) -> Vec<u64> {
        let mut failed = Vec::new();
        for seq in std::mem::take(&mut self.ready) {
            let Some(e) = self.events.get_mut(&seq) else { continue };
            if self.policy.exhausted(e.attempts + 1) {
                self.parked.push_back(seq);
            } else {
                e.attempts += 1;
                failed.push(seq);
            }
        }
        failed
    }

    /// The circuit lets one probe through and only parked events wait: the
    /// oldest of them becomes the probe.
    pub fn ready_parked_probe(&mut self) {
        if self.ready.is_empty() {
            if let Some(seq) = self.parked.pop_front() {
                self.ready.push_front(seq);
            }
        }
    }

    /// The circuit closed: parked events go first, in their order.
    pub fn unpark(&mut self) {
        while let Some(seq) = self.parked.pop_back() {
            self.ready.push_front(seq);
        }
    }

    /// The endpoint failed for real while events waited for their last
    /// attempt: that failure is their last attempt. Returns them, attempt
    /// counted; report each with [`after_attempt`](Self::after_attempt).
    pub fn take_parked(&mut self) -> Vec<u64> {
        let parked: Vec<u64> = self.parked.drain(..).collect();
        for seq in &parked {
            if let Some(e) = self.events.get_mut(seq) {
                e.attempts += 1;
            }
        }
        parked
    }

    /// Decide what becomes of an event after an attempt. A retry is
    /// scheduled here; an ack or dead letter is the caller's to carry out.
    /// `None` if the event is not in the window.
    pub fn after_attempt(&mut self, seq: u64, outcome: Outcome, now: Instant) -> Option<Decision> {
        let attempts = self.events.get(&seq)?.attempts;
        let decision = match outcome {
            Outcome::Delivered => Decision::Ack,
            Outcome::Failed { retryable, .. } if !retryable || self.policy.exhausted(attempts) => Decision::DeadLetter,
            Outcome::Failed { retry_after, .. } => {
                let at = now + self.policy.backoff(attempts, retry_after);
                self.retries.push(Reverse((at, seq)));
                Decision::RetryAt(at)
            }
        };
        Some(decision)
    }

    /// A dead-letter move failed (the spool cannot take it now): keep the
    /// event and decide again after a backoff, without counting the attempt
    /// that led there twice.
    pub fn dead_letter_deferred(&mut self, seq: u64, now: Instant) -> Option<Instant> {
        let e = self.events.get_mut(&seq)?;
        let attempts = e.attempts;
        e.attempts = attempts.saturating_sub(1);
        let at = now + self.policy.backoff(attempts.max(1), None);
        self.retries.push(Reverse((at, seq)));
        Some(at)
    }

    /// The backend did not attempt the event (it knew it could not go
    /// now): uncount the attempt and make it ready again at `at`.
    pub fn hold(&mut self, seq: u64, at: Instant) -> Option<Instant> {
        let e = self.events.get_mut(&seq)?;
        e.attempts = e.attempts.saturating_sub(1);
        self.retries.push(Reverse((at, seq)));
        Some(at)
    }

    /// An event is done (acked or dead-lettered): drop it from the window
    /// and let its user's next event go. Returns its payload.
    pub fn release(&mut self, seq: u64) -> Option<T> {
        let e = self.events.remove(&seq)?;
        if let Some(key) = &e.key {
            match self.held.get_mut(key).and_then(VecDeque::pop_front) {
                Some(next) => self.ready.push_back(next),
                None => {
                    self.held.remove(key);
                }
            }
        }
        Some(e.payload)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    const FAIL: Outcome = Outcome::Failed {
        retryable: true,
        retry_after: None,
    };
    const REJECT: Outcome = Outcome::Failed {
        retryable: false,
        retry_after: None,
    };

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }

    fn scheduler(max_attempts: u32, events: &[(u64, &str)]) -> Scheduler<()> {
        let mut s = Scheduler::new(policy(max_attempts));
        for (seq, key) in events {
            s.admit(*seq, Some((*key).to_owned()), ());
        }
        s
    }

    #[test]
    fn one_event_per_user_at_a_time_others_in_parallel() {
        let mut s = scheduler(3, &[(1, "a"), (2, "a"), (3, "b"), (4, "a")]);
        assert_eq!(s.take_ready(10), vec![1, 3]);
        assert_eq!(s.take_ready(10), Vec::<u64>::new());
        assert_eq!(
            s.after_attempt(1, Outcome::Delivered, Instant::now()),
            Some(Decision::Ack)
        );
        s.release(1);
        assert_eq!(s.take_ready(10), vec![2]);
    }

    #[test]
    fn unordered_events_of_one_user_go_out_together_and_a_retry_holds_nobody() {
        let now = Instant::now();
        let mut s = Scheduler::new(policy(3));
        for seq in 1..=3 {
            s.admit(seq, None, ());
        }
        assert_eq!(s.take_ready(10), vec![1, 2, 3], "no key: nothing waits");
        assert!(matches!(s.after_attempt(1, FAIL, now), Some(Decision::RetryAt(_))));
        s.admit(4, None, ());
        assert_eq!(s.take_ready(10), vec![4], "a retry does not hold later events");
        assert_eq!(s.after_attempt(2, Outcome::Delivered, now), Some(Decision::Ack));
        assert_eq!(s.release(2), Some(()));
    }

    #[test]
    fn a_held_event_spends_no_attempt() {
        let now = Instant::now();
        let mut s = scheduler(2, &[(1, "a")]);
        for _ in 0..5 {
            s.promote_due(now + Duration::from_secs(3600));
            assert_eq!(s.take_ready(10), vec![1]);
            assert_eq!(s.hold(1, now), Some(now));
        }
        assert_eq!(s.attempts(1), 0, "held, not attempted");
        s.promote_due(now);
        assert_eq!(s.take_ready(10), vec![1]);
        assert!(matches!(s.after_attempt(1, FAIL, now), Some(Decision::RetryAt(_))));
    }

    #[test]
    fn a_retry_holds_the_user_and_goes_before_fresh_events() {
        let now = Instant::now();
        let mut s = scheduler(3, &[(1, "a"), (2, "a")]);
        assert_eq!(s.take_ready(1), vec![1]);
        let Some(Decision::RetryAt(at)) = s.after_attempt(1, FAIL, now) else {
            panic!("a retryable failure with attempts left is retried")
        };
        assert!(at >= now + Duration::from_millis(50) && at <= now + Duration::from_millis(100));
        assert_eq!(s.next_retry_at(), Some(at));
        s.promote_due(at - Duration::from_millis(1));
        assert_eq!(s.take_ready(10), Vec::<u64>::new(), "2 waits behind 1's retry");
        s.admit(3, Some("b".into()), ());
        s.promote_due(at);
        assert_eq!(s.take_ready(10), vec![1, 3]);
        assert_eq!(s.attempts(1), 2);
    }

    #[test]
    fn the_last_attempt_and_a_permanent_failure_dead_letter() {
        let now = Instant::now();
        let mut s = scheduler(2, &[(1, "a"), (2, "b")]);
        assert_eq!(s.take_ready(2), vec![1, 2]);
        assert_eq!(s.after_attempt(2, REJECT, now), Some(Decision::DeadLetter));
        assert!(matches!(s.after_attempt(1, FAIL, now), Some(Decision::RetryAt(_))));
        s.promote_due(now + Duration::from_secs(2));
        assert_eq!(s.take_ready(1), vec![1]);
        assert_eq!(s.after_attempt(1, FAIL, now), Some(Decision::DeadLetter));
    }

    #[test]
    fn retry_after_is_honoured() {
        let now = Instant::now();
        let mut s = scheduler(3, &[(1, "a")]);
        s.take_ready(1);
        let wait = Duration::from_secs(7);
        let outcome = Outcome::Failed {
            retryable: true,
            retry_after: Some(wait),
        };
        assert_eq!(s.after_attempt(1, outcome, now), Some(Decision::RetryAt(now + wait)));
    }

    #[test]
    fn a_failed_dead_letter_move_is_decided_again_later() {
        let now = Instant::now();
        let mut s = scheduler(1, &[(1, "a"), (2, "a")]);
        s.take_ready(1);
        assert_eq!(s.after_attempt(1, FAIL, now), Some(Decision::DeadLetter));
        let at = s.dead_letter_deferred(1, now).expect("in the window");
        assert_eq!(s.attempts(1), 0);
        s.promote_due(at);
        assert_eq!(s.take_ready(10), vec![1], "the user's next event still waits");
    }

    #[test]
    fn an_open_circuit_fails_fast_but_parks_last_attempts() {
        let now = Instant::now();
        let mut s = scheduler(2, &[(1, "a"), (2, "b")]);
        assert_eq!(s.take_ready(1), vec![1]);
        assert!(matches!(s.after_attempt(1, FAIL, now), Some(Decision::RetryAt(_))));
        s.promote_due(now + Duration::from_secs(2));
        // 1 is due for its last attempt, 2 for its first.
        assert_eq!(s.fail_fast_ready(), vec![2]);
        assert_eq!(s.attempts(2), 1);
        assert!(s.has_parked());
        s.ready_parked_probe();
        assert_eq!(s.take_ready(10), vec![1]);
        assert_eq!(s.attempts(1), 2);
    }

    #[test]
    fn a_real_failure_is_the_last_attempt_of_parked_events() {
        let now = Instant::now();
        let mut s = scheduler(1, &[(1, "a"), (2, "b")]);
        assert_eq!(s.fail_fast_ready(), Vec::<u64>::new());
        assert_eq!(s.take_parked(), vec![1, 2]);
        assert_eq!(s.after_attempt(1, FAIL, now), Some(Decision::DeadLetter));
        assert!(!s.has_waiting());
    }

    #[test]
    fn unparked_events_go_first_in_their_order() {
        let mut s = scheduler(1, &[(1, "a"), (2, "b")]);
        s.fail_fast_ready();
        s.admit(3, Some("c".into()), ());
        s.unpark();
        assert_eq!(s.take_ready(10), vec![1, 2, 3]);
    }

    /// One step of the property test's driver.
    #[derive(Debug, Clone)]
    enum Op {
        Admit(u8),
        Send(usize),
        /// Finish the in-flight event at this index (modulo) with an outcome:
        /// 0 delivered, 1 retryable failure, 2 permanent failure.
        Finish(usize, u8),
        /// The dead-letter move of that finished event fails once.
        DeadLetterFails(bool),
        Advance(u64),
        FailFast,
        Probe,
        Unpark,
        RealFailure,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..4).prop_map(Op::Admit),
            3 => (1usize..4).prop_map(Op::Send),
            4 => (any::<usize>(), 0u8..3).prop_map(|(i, o)| Op::Finish(i, o)),
            1 => any::<bool>().prop_map(Op::DeadLetterFails),
            2 => (0u64..3000).prop_map(Op::Advance),
            1 => Just(Op::FailFast),
            1 => Just(Op::Probe),
            1 => Just(Op::Unpark),
            1 => Just(Op::RealFailure),
        ]
    }

    /// Drives a scheduler like the queue does and checks, at every step,
    /// that a user never has two events out at once, that events start and
    /// end in order per user, and that every event ends exactly once.
    struct Harness {
        s: Scheduler<u8>,
        now: Instant,
        next_seq: u64,
        dead_letter_fails: bool,
        in_flight: Vec<u64>,
        user_of: BTreeMap<u64, u8>,
        done: BTreeSet<u64>,
        /// Per user, the events ended, in the order they ended.
        ended: BTreeMap<u8, Vec<u64>>,
    }

    impl Harness {
        fn new(max_attempts: u32) -> Self {
            Harness {
                s: Scheduler::new(policy(max_attempts)),
                now: Instant::now(),
                next_seq: 1,
                dead_letter_fails: false,
                in_flight: Vec::new(),
                user_of: BTreeMap::new(),
                done: BTreeSet::new(),
                ended: BTreeMap::new(),
            }
        }

        fn started(&mut self, seqs: Vec<u64>) -> Result<(), TestCaseError> {
            for seq in seqs {
                prop_assert!(!self.in_flight.contains(&seq), "{seq} dispatched twice");
                prop_assert!(!self.done.contains(&seq), "{seq} dispatched after it ended");
                let user = self.user_of[&seq];
                // Every earlier event of this user has ended.
                for (earlier, u) in self.user_of.range(..seq) {
                    prop_assert!(*u != user || self.done.contains(earlier), "{seq} overtook {earlier}");
                }
                self.in_flight.push(seq);
            }
            Ok(())
        }

        fn decide(&mut self, seq: u64, outcome: Outcome) -> Result<(), TestCaseError> {
            let decision = self.s.after_attempt(seq, outcome, self.now);
            match decision {
                Some(Decision::Ack) => self.end(seq),
                Some(Decision::DeadLetter) if self.dead_letter_fails => {
                    prop_assert!(self.s.dead_letter_deferred(seq, self.now).is_some());
                    Ok(())
                }
                Some(Decision::DeadLetter) => self.end(seq),
                Some(Decision::RetryAt(at)) => {
                    prop_assert!(at >= self.now);
                    Ok(())
                }
                None => Err(TestCaseError::fail(format!("{seq} lost from the window"))),
            }
        }

        fn end(&mut self, seq: u64) -> Result<(), TestCaseError> {
            prop_assert!(self.done.insert(seq), "{seq} ended twice");
            self.ended.entry(self.user_of[&seq]).or_default().push(seq);
            prop_assert_eq!(self.s.release(seq), Some(self.user_of[&seq]));
            Ok(())
        }

        fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
            match op {
                Op::Admit(user) => {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.user_of.insert(seq, user);
                    self.s.admit(seq, Some(format!("user{user}@example.com")), user);
                }
                Op::Send(n) => {
                    let seqs = self.s.take_ready(n);
                    self.started(seqs)?;
                }
                Op::Finish(i, o) if !self.in_flight.is_empty() => {
                    let seq = self.in_flight.remove(i % self.in_flight.len());
                    let outcome = match o {
                        0 => Outcome::Delivered,
                        1 => FAIL,
                        _ => REJECT,
                    };
                    self.decide(seq, outcome)?;
                }
                Op::Finish(..) => {}
                Op::DeadLetterFails(fails) => self.dead_letter_fails = fails,
                Op::Advance(ms) => {
                    self.now += Duration::from_millis(ms);
                    self.s.promote_due(self.now);
                }
                Op::FailFast => {
                    for seq in self.s.fail_fast_ready() {
                        self.started(vec![seq])?;
                        self.in_flight.retain(|s| *s != seq);
                        self.decide(seq, FAIL)?;
                    }
                }
                Op::Probe => {
                    self.s.ready_parked_probe();
                    let seqs = self.s.take_ready(1);
                    self.started(seqs)?;
                }
                Op::Unpark => self.s.unpark(),
                Op::RealFailure => {
                    for seq in self.s.take_parked() {
                        self.started(vec![seq])?;
                        self.in_flight.retain(|s| *s != seq);
                        self.decide(seq, FAIL)?;
                    }
                }
            }
            Ok(())
        }

        /// Let everything finish: every admitted event must end, once.
        fn drain(&mut self) -> Result<(), TestCaseError> {
            self.dead_letter_fails = false;
            for _ in 0..10_000 {
                if self.done.len() == self.user_of.len() {
                    break;
                }
                while let Some(seq) = self.in_flight.pop() {
                    self.decide(seq, Outcome::Delivered)?;
                }
                self.s.unpark();
                self.now += Duration::from_secs(2);
                self.s.promote_due(self.now);
                let seqs = self.s.take_ready(usize::MAX);
                self.started(seqs)?;
            }
            prop_assert_eq!(self.done.len(), self.user_of.len(), "events lost");
            prop_assert!(self.s.is_empty());
            for (user, ended) in &self.ended {
                let mut sorted = ended.clone();
                sorted.sort_unstable();
                prop_assert_eq!(ended, &sorted, "user {} out of order", user);
            }
            Ok(())
        }
    }

    proptest! {
        #[test]
        fn order_per_user_kept_nothing_lost_or_duplicated(
            max_attempts in 1u32..4,
            ops in prop::collection::vec(op(), 0..200),
        ) {
            let mut h = Harness::new(max_attempts);
            for op in ops {
                h.step(op)?;
            }
            h.drain()?;
        }
    }
}
