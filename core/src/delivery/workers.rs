//! The attempts of one delivery queue: long-lived workers, one per
//! concurrency slot in use.
//!
//! A worker owns the deliveries of its attempt: the queue moves them out of
//! its window into the worker's job and gets them back, with the results,
//! when the attempt ends. Nothing is cloned and no task is spawned per
//! attempt; under load the same few tasks carry every attempt, and the
//! queue collects every finished attempt in one turn.
//!
//! Workers start on demand (up to the backend's `concurrency`) and are let
//! go when the queue has nothing left to send, so thousands of idle webhook
//! subscriptions hold no tasks.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::backend::{Deliver, Delivery, DeliveryError};
use crate::metrics::BackendStats;

/// One attempt: the events' sequence numbers and their deliveries.
pub(super) struct Job {
    pub seqs: Vec<u64>,
    pub batch: Vec<Delivery>,
}

/// An attempt that ended: its job back, with one result per delivery.
pub(super) struct Done {
    worker: usize,
    pub seqs: Vec<u64>,
    pub batch: Vec<Delivery>,
    pub results: Vec<Result<(), DeliveryError>>,
}

pub(super) struct Workers {
    backend: Arc<dyn Deliver>,
    stats: Arc<BackendStats>,
    /// One job channel per worker; `None` once that worker was let go.
    senders: Vec<Option<mpsc::Sender<Job>>>,
    /// Workers waiting for a job.
    idle: Vec<usize>,
    /// Attempts in flight.
    busy: usize,
    /// Where workers hand their jobs back. Made with the first worker and
    /// dropped with the last: an idle queue (thousands of webhook
    /// subscriptions) holds no channel.
    done: Option<(mpsc::UnboundedSender<Done>, mpsc::UnboundedReceiver<Done>)>,
    /// The worker tasks: dropping the queue (a removed slot) aborts the
    /// attempts still in flight, as it did when each was a task of its own.
    tasks: JoinSet<()>,
}

impl Workers {
    pub fn new(backend: Arc<dyn Deliver>, stats: Arc<BackendStats>) -> Self {
        Workers {
            backend,
            stats,
            senders: Vec::new(),
            idle: Vec::new(),
            busy: 0,
            done: None,
            tasks: JoinSet::new(),
        }
    }

    /// Attempts in flight.
    pub fn busy(&self) -> usize {
        self.busy
    }

    /// Hand `job` to an idle worker, starting one when none waits.
    pub fn start(&mut self, job: Job) {
        self.busy += 1;
        let mut job = job;
        while let Some(w) = self.idle.pop() {
            let Some(tx) = &self.senders[w] else { continue };
            // A worker takes one job at a time and is idle only after it
            // handed its last one back: its channel has room.
            match tx.try_send(job) {
                Ok(()) => return,
                Err(e) => {
                    // Its task is gone (the runtime is shutting down).
                    self.senders[w] = None;
                    job = match e {
                        mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
                    };
                }
            }
        }
        // Workers let go earlier have ended by now (or soon): reap them.
        while self.tasks.try_join_next().is_some() {}
        let w = self.senders.len();
        let (tx, rx) = mpsc::channel(1);
        // Just created with room for one: cannot fail.
        let _ = tx.try_send(job);
        self.senders.push(Some(tx));
        let done = self.done.get_or_insert_with(mpsc::unbounded_channel).0.clone();
        self.tasks
            .spawn(work(w, rx, self.backend.clone(), self.stats.clone(), done));
    }

    /// The next attempt to end (pending while none is in flight).
    pub async fn next_done(&mut self) -> Done {
        if self.busy == 0 {
            return std::future::pending().await;
        }
        // Busy workers exist, so the channel does, and its sender is held
        // here: it never closes while they work.
        let next = match &mut self.done {
            Some((_, rx)) => rx.recv().await,
            None => None,
        };
        match next {
            Some(done) => self.returned(done),
            None => std::future::pending().await,
        }
    }

    /// An attempt that already ended, without waiting.
    pub fn try_done(&mut self) -> Option<Done> {
        let done = self.done.as_mut()?.1.try_recv().ok()?;
        Some(self.returned(done))
    }

    fn returned(&mut self, done: Done) -> Done {
        self.busy -= 1;
        self.idle.push(done.worker);
        done
    }

    /// Let every idle worker go (the queue has nothing to send).
    pub fn release_idle(&mut self) {
        if self.busy == 0 && !self.senders.is_empty() {
            self.senders.clear();
            self.idle.clear();
            self.done = None;
        }
    }
}

/// A worker: take a job, attempt it, hand it back; until its channel closes.
async fn work(
    worker: usize,
    mut jobs: mpsc::Receiver<Job>,
    backend: Arc<dyn Deliver>,
    stats: Arc<BackendStats>,
    done: mpsc::UnboundedSender<Done>,
) {
    while let Some(Job { seqs, batch }) = jobs.recv().await {
        let t = Instant::now();
        // A backend that panics fails this attempt (retried like any
        // failure), not the worker and not its events.
        let mut results = match AssertUnwindSafe(backend.deliver(&batch)).catch_unwind().await {
            Ok(results) => results,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".to_owned());
                tracing::error!(error = %why, "delivery attempt panicked");
                vec![Err(DeliveryError::retryable(format!("delivery attempt panicked: {why}"))); batch.len()]
            }
        };
        // A backend that answers short must not lose events.
        results.resize_with(batch.len(), || {
            Err(DeliveryError::retryable("backend returned no result"))
        });
        stats.publish.observe(t.elapsed().as_secs_f64());
        let back = Done {
            worker,
            seqs,
            batch,
            results,
        };
        if done.send(back).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::backend::Backend;
    use crate::hook::HookTranslator;

    /// Panics on its first attempt, delivers afterwards, and counts the
    /// attempts in flight at once.
    #[derive(Default)]
    struct Flaky {
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Backend for Flaky {
        const KIND: &'static str = "flaky";
        async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("first call");
            }
            tokio::task::yield_now().await;
            batch.iter().map(|_| Ok(())).collect()
        }
    }

    fn delivery(seq: u64) -> Delivery {
        let event = HookTranslator
            .translate(&serde_json::json!({"hook":"user_available","jid":"a@x/r"}))
            .unwrap();
        Delivery {
            json: Bytes::from(event.to_json()),
            event,
            attempt: 1,
            seq,
            target: None,
        }
    }

    #[tokio::test]
    async fn jobs_come_back_with_their_deliveries_and_a_panic_fails_only_its_attempt() {
        let backend = Arc::new(Flaky::default());
        let mut workers = Workers::new(backend.clone(), Arc::new(BackendStats::default()));
        workers.start(Job {
            seqs: vec![1, 2],
            batch: vec![delivery(1), delivery(2)],
        });
        let done = workers.next_done().await;
        assert_eq!(done.seqs, [1, 2]);
        assert_eq!(done.batch.iter().map(|d| d.seq).collect::<Vec<_>>(), [1, 2]);
        assert!(done.results.iter().all(|r| r.as_ref().is_err_and(|e| e.retryable)));
        assert_eq!(workers.busy(), 0);

        // The same worker takes the next jobs: it survived the panic.
        for seq in 3..6 {
            workers.start(Job {
                seqs: vec![seq],
                batch: vec![delivery(seq)],
            });
        }
        assert_eq!(workers.busy(), 3);
        let mut back = Vec::new();
        while workers.busy() > 0 {
            let done = workers.next_done().await;
            assert!(done.results.iter().all(Result::is_ok));
            back.extend(done.seqs);
        }
        back.sort_unstable();
        assert_eq!(back, [3, 4, 5]);
        // Three jobs at once needed three workers; the first one was reused.
        assert_eq!(workers.senders.len(), 3);
        workers.release_idle();
        assert!(workers.senders.is_empty() && workers.idle.is_empty() && workers.done.is_none());
        assert_eq!(backend.calls.load(Ordering::SeqCst), 4);
    }
}
