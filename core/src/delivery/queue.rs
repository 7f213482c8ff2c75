//! One backend instance's delivery queue: the async driver of a
//! [`Scheduler`].
//!
//! It holds a bounded window of the backend's spool queue in memory, lets
//! the scheduler decide what goes out and what becomes of each attempt
//! (events of one user one at a time, in spool order; retries; dead
//! letters), and carries those decisions out: attempts on the backend,
//! acks and dead letters in the spool, the circuit breaker, stats. A
//! paused backend loads and keeps its queue but sends nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::breaker::{Admission, CircuitBreaker};
use super::scheduler::{Decision, Outcome, Scheduler};
use super::throttle::Throttle;
use super::workers::{Done, Job, Workers};
use super::{BackendHandle, DeliveryOrder};
use crate::backend::{Delivery, DeliveryError};
use crate::event::Event;
use crate::metrics::BackendStats;
use crate::operational::{Reporter, Signal};
use crate::slot::Slot;
use crate::spool::{DeadLetter, LastError, SlotState, Spool};

/// An event in the window: what the scheduler does not need to know.
struct Pending {
    /// `None` while a worker has it (an attempt in flight).
    delivery: Option<Delivery>,
    first_attempt_at: Option<OffsetDateTime>,
    last_error: Option<DeliveryError>,
}

/// How often a queue whose backend is not ready checks again.
const NOT_READY_POLL: Duration = Duration::from_millis(200);

pub struct DeliveryQueue {
    slot: Slot,
    /// The slot's counters, held so a queue whose slot is being removed
    /// still has them while its last attempts finish.
    state: Arc<SlotState>,
    handle: Arc<BackendHandle>,
    spool: Spool,
    stop: watch::Receiver<bool>,
    window: Scheduler<Pending>,
    /// The attempts in flight, one worker each.
    workers: Workers,
    /// Events delivered this turn, acked together at its end.
    acks: Vec<u64>,
    breaker: CircuitBreaker,
    /// The endpoint's last real failure: what a fail-fast attempt reports.
    last_endpoint_error: Option<DeliveryError>,
    /// Highest sequence number loaded into the window.
    cursor: u64,
    started: bool,
    read_failing: bool,
    /// `rate_limit_per_s`, when set.
    throttle: Option<Throttle>,
    /// Where operational signals go (circuit, dead letters).
    reporter: Reporter,
    /// Events the spool dead-lettered on arrival, as last reported.
    overflow_seen: u64,
}

impl DeliveryQueue {
    pub fn new(slot: Slot, handle: Arc<BackendHandle>, spool: Spool, stop: watch::Receiver<bool>) -> Self {
        let breaker = CircuitBreaker::new(handle.options.breaker);
        let window = Scheduler::new(handle.options.retry);
        let state = spool.slot(slot);
        // The spool writer applies the policy when the queue is full.
        state.intake.set_overflow(handle.options.overflow);
        let throttle = handle
            .options
            .rate_limit_per_s
            .map(|r| Throttle::new(r, Instant::now()));
        let workers = Workers::new(handle.backend.clone(), handle.stats.clone());
        DeliveryQueue {
            slot,
            state,
            handle,
            spool,
            stop,
            window,
            workers,
            acks: Vec::new(),
            breaker,
            last_endpoint_error: None,
            cursor: 0,
            started: false,
            read_failing: false,
            throttle,
            reporter: Reporter::default(),
            overflow_seen: 0,
        }
    }

    /// Send operational signals (circuit opened or closed, dead letters)
    /// to `reporter`.
    pub fn with_reporter(mut self, reporter: Reporter) -> Self {
        self.overflow_seen = self.state.intake.overflow_dead_lettered.load(Ordering::Relaxed);
        self.reporter = reporter;
        self
    }

    /// Report events the spool dead-lettered on arrival (a full queue, a
    /// disabled subscription) since the last look.
    fn report_overflow(&mut self) {
        let now = self.state.intake.overflow_dead_lettered.load(Ordering::Relaxed);
        if now > self.overflow_seen {
            self.dead_lettered(now - self.overflow_seen);
            self.overflow_seen = now;
        }
    }

    fn dead_lettered(&self, count: u64) {
        self.reporter.report(Signal::DeadLettered {
            slot: self.slot,
            backend: self.name().to_owned(),
            count,
        });
    }

    /// `KIND.NAME` (the spool's name for the slot), for logs: a bare name
    /// can be shared by several kinds.
    fn name(&self) -> &str {
        &self.state.name
    }

    pub async fn run(mut self) {
        let mut start_backoff = Duration::from_millis(200);
        let mut next_start = Instant::now();
        loop {
            if *self.stop.borrow() {
                break;
            }
            if !self.started && Instant::now() >= next_start {
                match self.handle.backend.start().await {
                    Ok(()) => {
                        tracing::info!(backend = %self.name(), "backend started");
                        self.started = true;
                        self.handle.started.store(true, Ordering::Release);
                    }
                    Err(e) => {
                        tracing::error!(backend = %self.name(), error = %e, retry_in = ?start_backoff, "backend failed to start");
                        next_start = Instant::now() + start_backoff;
                        start_backoff = (start_backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
            match self.fill_window().await {
                Ok(()) if self.read_failing => {
                    self.read_failing = false;
                    tracing::info!(backend = %self.name(), "spool queue readable again");
                }
                Ok(()) => {}
                // Once per outage; the spool writer logs the cause.
                Err(e) if !self.read_failing => {
                    self.read_failing = true;
                    tracing::error!(backend = %self.name(), error = %e, "cannot read the spool queue");
                }
                Err(e) => tracing::debug!(backend = %self.name(), error = %e, "cannot read the spool queue"),
            }
            self.window.promote_due(Instant::now());
            self.dispatch().await;
            self.report_overflow();

            self.handle
                .stats
                .circuit_open
                .store(self.breaker.is_open(), Ordering::Relaxed);
            if self.window.is_empty() {
                // Nothing left to send: idle workers go (they start again
                // with the next event).
                self.workers.release_idle();
            }
            let wake_at = self.next_wake(if self.started { None } else { Some(next_start) });
            let slot = self.state.clone();
            tokio::select! {
                done = self.workers.next_done() => {
                    Box::pin(self.finish(done)).await;
                    // Take every attempt that finished meanwhile before
                    // going round again: under load the loop's bookkeeping
                    // (refill check, dispatch, wake-up time) and the ack
                    // run once per handful of deliveries, not once per
                    // delivery.
                    while let Some(done) = self.workers.try_done() {
                        Box::pin(self.finish(done)).await;
                    }
                    self.flush_acks();
                }
                _ = slot.changed.notified() => {}
                _ = sleep_until(wake_at) => {}
                _ = self.stop.changed() => {}
            }
        }
        self.drain().await;
    }

    /// After stop: no new attempts; wait for the ones in flight (the engine
    /// bounds this with the grace period). Their events stay in the spool
    /// unless acked, so nothing is lost if we are cut short.
    async fn drain(&mut self) {
        while self.workers.busy() > 0 {
            let done = self.workers.next_done().await;
            Box::pin(self.finish(done)).await;
        }
        self.flush_acks();
        tracing::info!(backend = %self.name(), "delivery queue stopped");
    }

    fn next_wake(&self, start_at: Option<Instant>) -> Option<Instant> {
        let retry = self.window.next_retry_at();
        // Only a cooldown still to come: once it is over, dispatch has
        // already had its chance to probe (or nothing waits, or the slots
        // are full and a finishing attempt wakes us); waking for a past
        // instant would spin.
        let now = Instant::now();
        let breaker = self.breaker.reopens_at().filter(|t| *t > now);
        // A backend that is not ready has no way to wake us when it is back;
        // look again shortly while events wait.
        let waiting = self.window.has_waiting();
        let not_ready = (self.started && waiting && !self.handle.backend.is_ready()).then(|| now + NOT_READY_POLL);
        let throttled = self.throttle.as_ref().and_then(Throttle::next_at);
        [retry, breaker, start_at, not_ready, throttled]
            .into_iter()
            .flatten()
            .min()
    }

    /// Load more of the spool queue while the window has room.
    async fn fill_window(&mut self) -> Result<(), crate::spool::SpoolError> {
        let cap = self.handle.options.window;
        // Refill in chunks: with a backlog, every delivery frees one slot, and
        // reading one row per delivery (a blocking hand-off and a read
        // transaction each) cost a tenth of the CPU. Wait for room for a
        // chunk unless the window is empty.
        let chunk = (cap / 4).clamp(1, 1024);
        if !self.window.is_empty() && cap.saturating_sub(self.window.len()) < chunk {
            return Ok(());
        }
        while self.window.len() < cap && self.state.head.load(Ordering::Acquire) > self.cursor {
            // Read `head` before the read transaction starts: the writer
            // publishes `head` only after its commit, so everything up to this
            // value is visible to the read below. Taking it afterwards could
            // skip an append committed in between.
            let head_before = self.state.head.load(Ordering::Acquire);
            let (slot, after, limit) = (self.slot, self.cursor, (cap - self.window.len()).min(1024));
            // What was just committed is handed over in memory (see
            // `spool/fresh.rs`); the spool is read only when the buffer
            // does not hold everything after the cursor.
            let fresh = self
                .state
                .fresh
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take_after(after, limit);
            let rows = match fresh {
                Some(rows) if !rows.is_empty() => rows,
                // Not complete (or, unexpectedly, empty while `head` says
                // there is more): read the spool, which is never wrong.
                _ => {
                    let spool = self.spool.clone();
                    tokio::task::spawn_blocking(move || spool.read_queue(slot, after, limit))
                        .await
                        .map_err(crate::spool::SpoolError::io)??
                }
            };
            if rows.is_empty() {
                // Everything up to head_before has already left the queue
                // (delivered or dead-lettered); nothing to load.
                self.cursor = self.cursor.max(head_before);
                break;
            }
            for (seq, json) in rows {
                self.cursor = seq;
                self.admit_row(seq, json).await;
            }
        }
        Ok(())
    }

    async fn admit_row(&mut self, seq: u64, record: Bytes) {
        let (target, json) = crate::spool::record::decode(&record);
        let target: Option<Arc<str>> = target.map(Arc::from);
        let event: Event = match serde_json::from_slice(&json) {
            Ok(e) => e,
            Err(e) => {
                // Should never happen: we wrote it. Keep it anyway, where an
                // operator can see it, rather than loop on it.
                tracing::error!(backend = %self.name(), seq, error = %e, "unreadable event in spool; dead-lettering it");
                let record = DeadLetter::new(
                    format!("seq-{seq}"),
                    self.name().to_owned(),
                    serde_json::Value::String(String::from_utf8_lossy(&json).into_owned()),
                    0,
                    LastError {
                        status: None,
                        message: format!("unreadable event: {e}"),
                    },
                    OffsetDateTime::now_utc(),
                );
                let _ = self.spool.dead_letter(self.slot, seq, record).await;
                return;
            }
        };
        // Per-user order, per target when the event was claimed per target:
        // one failing device does not hold its user's other devices.
        let key = match self.handle.options.ordering {
            DeliveryOrder::PerUser => Some(match &target {
                None => event.user().to_owned(),
                Some(t) => format!("{}\u{0}{t}", event.user()),
            }),
            DeliveryOrder::Unordered => None,
        };
        let pending = Pending {
            delivery: Some(Delivery {
                event,
                json,
                attempt: 0,
                seq,
                target,
            }),
            first_attempt_at: None,
            last_error: None,
        };
        self.window.admit(seq, key, pending);
    }

    async fn dispatch(&mut self) {
        if !self.started || self.state.paused.load(Ordering::Acquire) {
            return;
        }
        if !self.handle.backend.is_ready() {
            // The backend knows it cannot deliver now (e.g. its broker
            // connection is down and being reopened): hold events rather than
            // spend their attempts; they go out as soon as it is back.
            return;
        }
        let concurrency = self.handle.options.concurrency.max(1);
        let max_batch = self.handle.backend.max_batch().max(1);
        while self.workers.busy() < concurrency && self.window.has_waiting() {
            match self.breaker.admit(Instant::now()) {
                Admission::Open => {
                    self.fail_fast_ready().await;
                    break;
                }
                Admission::Probe => {
                    if self.tokens(1) == 0 {
                        // No probe went out: the next one may.
                        self.breaker.on_inconclusive();
                        break;
                    }
                    self.window.ready_parked_probe();
                    if self.send(1) == 0 {
                        self.breaker.on_inconclusive();
                        break;
                    }
                }
                Admission::Closed => {
                    let n = self.tokens(max_batch);
                    if n == 0 {
                        break;
                    }
                    self.window.unpark();
                    if self.send(n) == 0 {
                        break;
                    }
                }
            }
        }
    }

    /// How many events may go out now under `rate_limit_per_s` (at most
    /// `want`; all of them without a limit).
    fn tokens(&mut self, want: usize) -> usize {
        match &mut self.throttle {
            None => want,
            Some(t) => t.available(want, Instant::now()),
        }
    }

    /// The circuit is open: every ready event fails fast, its attempt
    /// counted, the endpoint spared; except an event's last attempt, which
    /// is always a real one: it waits (parked) for the circuit's next probe.
    async fn fail_fast_ready(&mut self) {
        for seq in self.window.fail_fast_ready() {
            let err = self.fail_fast_error(seq);
            self.handle.stats.failed.fetch_add(1, Ordering::Relaxed);
            self.failed(seq, err, false).await;
        }
    }

    /// The endpoint failed for real while events waited for their last
    /// attempt: that failure is their last attempt.
    async fn dead_letter_parked(&mut self, err: &DeliveryError) {
        for seq in self.window.take_parked() {
            self.failed(seq, err.clone(), true).await;
        }
    }

    /// What an attempt that the open circuit kept from the endpoint reports:
    /// the endpoint's last real error, so a dead letter says what was wrong.
    fn fail_fast_error(&self, seq: u64) -> DeliveryError {
        let last = self
            .last_endpoint_error
            .clone()
            .or_else(|| self.window.get(seq).and_then(|p| p.last_error.clone()));
        let mut err = DeliveryError::retryable(match &last {
            Some(l) => format!("{} (circuit open: not sent)", l.message),
            None => "circuit open: endpoint failing (not sent)".to_owned(),
        });
        err.status = last.and_then(|l| l.status);
        err
    }

    /// Start one attempt of up to `n` ready events; how many it took.
    fn send(&mut self, n: usize) -> usize {
        let mut seqs = self.window.take_ready(n);
        let mut batch = Vec::with_capacity(seqs.len());
        // The deliveries move to the worker and come back with the results.
        seqs.retain(|&seq| {
            let attempt = self.window.attempts(seq);
            let Some(p) = self.window.get_mut(seq) else {
                return false;
            };
            let Some(mut d) = p.delivery.take() else { return false };
            d.attempt = attempt;
            p.first_attempt_at.get_or_insert_with(OffsetDateTime::now_utc);
            batch.push(d);
            true
        });
        if seqs.is_empty() {
            return 0;
        }
        let sent = seqs.len();
        if let Some(t) = &mut self.throttle {
            let waited = t.take(sent, Instant::now());
            let us = waited.as_micros() as u64;
            self.handle.stats.throttled_us.fetch_add(us, Ordering::Relaxed);
        }
        self.handle.stats.in_flight.fetch_add(sent as i64, Ordering::Relaxed);
        self.workers.start(Job { seqs, batch });
        sent
    }

    /// Ack what this turn delivered, in one message to the spool writer.
    fn flush_acks(&mut self) {
        if !self.acks.is_empty() {
            self.spool.ack_many(self.slot, std::mem::take(&mut self.acks));
        }
    }

    /// An attempt ended: ack, retry or dead-letter each of its events, as
    /// the scheduler decides. Callers box it: its state (deliveries, a dead
    /// letter being written) would otherwise sit in every queue task's
    /// future for good, a kilobyte per webhook subscription.
    async fn finish(&mut self, done: Done) {
        let Done {
            seqs, batch, results, ..
        } = done;
        let stats = self.handle.stats.clone();
        stats.in_flight.fetch_sub(seqs.len() as i64, Ordering::Relaxed);
        let mut real_failure = None;
        for ((seq, delivery), result) in seqs.into_iter().zip(batch).zip(results) {
            match result {
                Ok(()) => self.delivered(seq, &delivery, &stats),
                Err(e) => {
                    // Back into the window for its next attempt or its dead letter.
                    if let Some(p) = self.window.get_mut(seq) {
                        p.delivery = Some(delivery);
                    }
                    if let Some(real) = self.attempt_failed(seq, e, &stats).await {
                        real_failure = Some(real);
                    }
                }
            }
        }
        if let Some(e) = real_failure {
            if self.breaker.is_open() && self.window.has_parked() {
                self.dead_letter_parked(&e).await;
            }
        }
    }

    /// One event delivered: close the circuit, count it, ack it with the
    /// turn's other acks.
    fn delivered(&mut self, seq: u64, delivery: &Delivery, stats: &BackendStats) {
        if self.breaker.is_open() {
            tracing::info!(backend = %self.name(), "endpoint answers again; circuit closed");
            self.reporter.report(Signal::CircuitClosed {
                slot: self.slot,
                backend: self.name().to_owned(),
            });
        }
        stats.failing_since_ms.store(0, Ordering::Relaxed);
        self.breaker.on_success();
        self.last_endpoint_error = None;
        stats.delivered.fetch_add(1, Ordering::Relaxed);
        if self.window.after_attempt(seq, Outcome::Delivered, Instant::now()) != Some(Decision::Ack) {
            return;
        }
        self.acks.push(seq);
        if self.window.release(seq).is_some() {
            let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64;
            let accepted = delivery.event.accepted_at_ms();
            stats.latency.observe(now_ms.saturating_sub(accepted) as f64 / 1000.0);
        }
    }

    /// One event's attempt failed (or was held back): breaker, stats and
    /// the scheduler's decision. Returns the error when it was a real
    /// failure of the endpoint.
    async fn attempt_failed(&mut self, seq: u64, e: DeliveryError, stats: &BackendStats) -> Option<DeliveryError> {
        if e.held {
            // Not attempted: no failure, no breaker, no attempt.
            let wait = e.retry_after.unwrap_or(NOT_READY_POLL).max(Duration::from_millis(10));
            self.window.hold(seq, Instant::now() + wait);
            return None;
        }
        stats.failed.fetch_add(1, Ordering::Relaxed);
        let now_ms = crate::spool::now_ms();
        let _ = stats
            .failing_since_ms
            .compare_exchange(0, now_ms, Ordering::Relaxed, Ordering::Relaxed);
        let mut real = None;
        if e.retryable {
            self.last_endpoint_error = Some(e.clone());
            real = Some(e.clone());
            let was_open = self.breaker.is_open();
            if self.breaker.on_failure(Instant::now()) {
                tracing::warn!(
                    backend = %self.name(), error = %e, retry_in = ?self.breaker.cooldown(),
                    "endpoint keeps failing; circuit open"
                );
                if !was_open {
                    self.reporter.report(Signal::CircuitOpened {
                        slot: self.slot,
                        backend: self.name().to_owned(),
                        consecutive_failures: self.breaker.consecutive(),
                        last_error: e.message.clone(),
                    });
                }
            }
        } else if e.status.is_some() {
            // The endpoint answered; it just will not take this event. That
            // is not an outage.
            self.breaker.on_success();
        } else {
            self.breaker.on_inconclusive();
        }
        self.failed(seq, e, true).await;
        real
    }

    /// An attempt failed: retry later, or dead-letter, as the scheduler
    /// decides.
    async fn failed(&mut self, seq: u64, err: DeliveryError, real: bool) {
        let attempts = self.window.attempts(seq);
        let outcome = Outcome::Failed {
            retryable: err.retryable,
            retry_after: err.retry_after,
        };
        let Some(decision) = self.window.after_attempt(seq, outcome, Instant::now()) else {
            return;
        };
        let Some(p) = self.window.get_mut(seq) else { return };
        // Always here after an attempt ended: its delivery came back.
        let Some(delivery) = &p.delivery else { return };
        if real {
            self.handle.attempt_log.failed(&delivery.event.id, attempts, &err);
        }
        match decision {
            Decision::RetryAt(_) => {
                if real {
                    p.last_error = Some(err);
                }
                self.handle.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            // Never after a failure.
            Decision::Ack => {}
            Decision::DeadLetter => {
                let id = delivery.event.id.clone();
                let record = DeadLetter::new(
                    id.clone(),
                    self.handle.name.clone(),
                    serde_json::from_slice(&delivery.json).unwrap_or(serde_json::Value::Null),
                    attempts,
                    LastError {
                        status: err.status,
                        message: err.message.clone(),
                    },
                    p.first_attempt_at.unwrap_or_else(OffsetDateTime::now_utc),
                )
                .with_target(delivery.target.as_deref());
                match self.spool.dead_letter(self.slot, seq, record).await {
                    Ok(()) => {
                        tracing::warn!(backend = %self.name(), %id, attempts, error = %err, "event dead-lettered");
                        self.handle.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        self.window.release(seq);
                        self.dead_lettered(1);
                    }
                    Err(e) => {
                        // The spool cannot take it now; keep the event and try
                        // the dead-letter move again after a backoff.
                        tracing::error!(backend = %self.name(), error = %e, "cannot dead-letter; will retry");
                        self.window.dead_letter_deferred(seq, Instant::now());
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
