//! The delivery engine: one [`DeliveryQueue`] per backend instance, reading
//! its queue from the spool and carrying each event to the backend with
//! retries, per-user ordering, a circuit breaker and dead letters.
//!
//! Backends from the config start with the engine; slots added at runtime
//! (webhook subscriptions, from the API, the spool at start or the cluster
//! store) are attached, changed and removed through the engine alone
//! ([`lifecycle`]): it owns every part of a slot (registry, handle, spool
//! tables, queue task, subscription index).

mod attempt_log;
mod breaker;
mod lifecycle;
mod queue;
mod retry;
mod scheduler;
mod throttle;
mod workers;

pub use crate::backend_lookup::{find_backend, Lookup};
pub use crate::delivery_order::DeliveryOrder;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use attempt_log::AttemptLog;
pub use breaker::BreakerPolicy;
pub use lifecycle::{SlotSpec, Withdrawal};
pub use queue::DeliveryQueue;
pub use retry::RetryPolicy;

use crate::backend::{AnyBackend, Deliver};
use crate::metrics::BackendStats;
use crate::slot::{DuplicateSlot, Slot, SlotRegistry};
use crate::spool::{DeadLetter, Order, Spool, SpoolError};
use crate::subscriptions::SubscriptionIndex;

/// How one backend instance's queue delivers.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Attempts (or batches) in flight at once.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    /// Most events held in memory at once; the rest wait in the spool.
    pub window: usize,
    pub ordering: DeliveryOrder,
    /// What a full queue does to new events (`overflow`).
    pub overflow: crate::spool::Overflow,
    /// Most deliveries started per second (`rate_limit_per_s`); `None`: no limit.
    pub rate_limit_per_s: Option<f64>,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            concurrency: 32,
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            window: 4096,
            ordering: DeliveryOrder::PerUser,
            overflow: crate::spool::Overflow::Refuse,
            rate_limit_per_s: None,
        }
    }
}

/// One backend instance as the engine runs it.
pub struct BackendHandle {
    pub name: String,
    /// As in config: `http`, `rabbit`, ...
    pub kind: &'static str,
    pub backend: Arc<dyn Deliver>,
    pub options: DeliveryOptions,
    pub stats: Arc<BackendStats>,
    /// Set once the backend's `start` has succeeded.
    pub started: AtomicBool,
    /// Failed attempts at WARN, rate-limited; also holds the `KIND.NAME` label.
    pub attempt_log: AttemptLog,
}

impl BackendHandle {
    pub fn new(name: impl Into<String>, backend: AnyBackend, options: DeliveryOptions) -> Self {
        let name = name.into();
        BackendHandle {
            attempt_log: AttemptLog::new(backend.kind, &name),
            name,
            kind: backend.kind,
            backend: backend.deliver,
            options,
            stats: Arc::new(BackendStats::default()),
            started: AtomicBool::new(false),
        }
    }

    /// Started, and the backend says it can deliver.
    pub fn is_ready(&self) -> bool {
        self.started.load(Ordering::Acquire) && self.backend.is_ready()
    }
}

/// Why [`DeliveryEngine::attach`] attached nothing.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Taken(#[from] DuplicateSlot),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// A row of `GET /v1/backends`.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    pub name: String,
    pub kind: String,
    pub paused: bool,
    pub ready: bool,
    pub queued: u64,
    pub in_flight: u64,
    pub delivered: u64,
    pub failed: u64,
    pub retries: u64,
    pub dead_letters: u64,
    /// The circuit breaker is open: the endpoint keeps failing and is being
    /// backed off as a whole.
    pub circuit_open: bool,
    /// Events dead-lettered on arrival since start (full queue with
    /// `overflow = "dead_letter"`, or a disabled subscription).
    pub overflow_dead_lettered: u64,
    /// Seconds ready events waited for `rate_limit_per_s`, since start.
    pub throttled_seconds: f64,
    /// A webhook subscription disabled after failing too long: it delivers
    /// nothing and its new events go to dead letters until restarted.
    pub disabled: bool,
    /// Per provider, whether it can deliver (push backends): one whose
    /// credential is refused is not ready alone, the others go on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub providers: Option<std::collections::BTreeMap<&'static str, ProviderStatus>>,
}

/// A provider of a backend in its `/v1/backends` row.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderStatus {
    pub ready: bool,
}

/// A delivery queue started at runtime: stopped on its own.
struct RunningQueue {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// All delivery queues of a process.
pub struct DeliveryEngine {
    spool: Spool,
    slots: RwLock<SlotRegistry>,
    /// By [`Slot::index`]; `None` for a removed slot.
    backends: RwLock<Vec<Option<Arc<BackendHandle>>>>,
    stop: watch::Sender<bool>,
    /// Set by [`start`](Self::start): slots added before it start with it.
    started: AtomicBool,
    runtime: Mutex<HashMap<Slot, RunningQueue>>,
    /// Where the queues send operational signals (none until set).
    reporter: std::sync::OnceLock<crate::operational::Reporter>,
    /// The pipeline's subscription index: runtime slots are listed in it
    /// when attached and unlisted when removed, here only.
    index: Arc<SubscriptionIndex>,
}

impl DeliveryEngine {
    /// `backends` holds the handle of each slot of `slots` (the spool was
    /// opened with `slots.ids()`); `index` is the pipeline's
    /// ([`Pipeline::subscription_index`](crate::Pipeline::subscription_index)).
    pub fn new(
        spool: Spool,
        slots: SlotRegistry,
        backends: Vec<(Slot, BackendHandle)>,
        index: Arc<SubscriptionIndex>,
    ) -> Self {
        let (stop, _) = watch::channel(false);
        let mut by_slot: Vec<Option<Arc<BackendHandle>>> = Vec::new();
        for (slot, handle) in backends {
            if by_slot.len() <= slot.index() {
                by_slot.resize(slot.index() + 1, None);
            }
            by_slot[slot.index()] = Some(Arc::new(handle));
        }
        DeliveryEngine {
            spool,
            slots: RwLock::new(slots),
            backends: RwLock::new(by_slot),
            stop,
            started: AtomicBool::new(false),
            runtime: Mutex::new(HashMap::new()),
            reporter: std::sync::OnceLock::new(),
            index,
        }
    }

    /// Send operational signals to `reporter` (before [`start`](Self::start)).
    pub fn set_reporter(&self, reporter: crate::operational::Reporter) {
        let _ = self.reporter.set(reporter);
    }

    /// The reporter, if one was set, without cloning it (the ingest path).
    pub fn reporter_ref(&self) -> Option<&crate::operational::Reporter> {
        self.reporter.get()
    }

    /// Where operational signals go (a no-op reporter if none was set).
    pub fn reporter(&self) -> crate::operational::Reporter {
        self.reporter.get().cloned().unwrap_or_default()
    }

    /// A copy of the registry as it is now (slots come and go at runtime).
    pub fn slots(&self) -> SlotRegistry {
        self.slots.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The handle of a live slot.
    pub fn backend(&self, slot: Slot) -> Option<Arc<BackendHandle>> {
        let backends = self.backends.read().unwrap_or_else(PoisonError::into_inner);
        backends.get(slot.index()).cloned().flatten()
    }

    /// Start one delivery queue task per backend registered so far; slots
    /// added later start with [`start_slot`](Self::start_slot).
    pub fn start(&self) -> Vec<JoinHandle<()>> {
        self.started.store(true, Ordering::Release);
        let registry = self.slots();
        let mut handles = Vec::new();
        for entry in registry.entries() {
            let slot = entry.slot;
            let Some(b) = self.backend(slot) else { continue };
            if entry.runtime {
                self.spawn_runtime(slot, b);
            } else {
                let q = DeliveryQueue::new(slot, b, self.spool.clone(), self.stop.subscribe())
                    .with_reporter(self.reporter());
                handles.push(tokio::spawn(q.run()));
            }
        }
        handles
    }

    /// Stop dispatching; queues finish in-flight attempts for up to `grace`.
    pub async fn shutdown(&self, mut handles: Vec<JoinHandle<()>>, grace: Duration) {
        let _ = self.stop.send(true);
        let runtime: Vec<RunningQueue> = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, q)| q)
            .collect();
        for q in runtime {
            let _ = q.stop.send(true);
            handles.push(q.task);
        }
        let all = futures_join(handles);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(?grace, "grace period over; undelivered events stay in the spool");
        }
        // Make the acks of what was delivered durable, so a restart does not
        // deliver it again, and close the file cleanly so the next start
        // needs no repair.
        if let Err(e) = self.spool.close().await {
            tracing::warn!(error = %e, "final spool sync failed");
        }
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Every live backend, in slot order.
    pub fn backends(&self) -> Vec<Arc<BackendHandle>> {
        let backends = self.backends.read().unwrap_or_else(PoisonError::into_inner);
        backends.iter().flatten().cloned().collect()
    }

    /// The slot of the backend called `query`: its name, or `KIND.NAME`
    /// where two kinds use the same name.
    pub fn slot(&self, query: &str) -> Result<Slot, Lookup> {
        self.slots.read().unwrap_or_else(PoisonError::into_inner).find(query)
    }

    pub async fn set_paused(&self, slot: Slot, paused: bool) -> Result<BackendStatus, SpoolError> {
        self.spool.set_paused(slot, paused).await?;
        Ok(self.status_of(slot))
    }

    /// A backend's row; `None` once its slot is removed.
    pub fn try_status_of(&self, slot: Slot) -> Option<BackendStatus> {
        let b = self.backend(slot)?;
        let s = self.spool.slot(slot);
        Some(BackendStatus {
            name: b.name.clone(),
            kind: b.kind.to_owned(),
            paused: s.paused.load(Ordering::Relaxed),
            ready: b.is_ready(),
            queued: s.queued.load(Ordering::Relaxed),
            in_flight: b.stats.in_flight.load(Ordering::Relaxed).max(0) as u64,
            delivered: BackendStats::get(&b.stats.delivered),
            failed: BackendStats::get(&b.stats.failed),
            retries: BackendStats::get(&b.stats.retries),
            dead_letters: s.dead.load(Ordering::Relaxed),
            circuit_open: b.stats.circuit_open.load(Ordering::Relaxed),
            overflow_dead_lettered: s.intake.overflow_dead_lettered.load(Ordering::Relaxed),
            throttled_seconds: b.stats.throttled_us.load(Ordering::Relaxed) as f64 / 1e6,
            disabled: s.intake.is_diverted(),
            providers: b.backend.providers_ready().map(|p| {
                p.into_iter()
                    .map(|(name, ready)| (name, ProviderStatus { ready }))
                    .collect()
            }),
        })
    }

    /// A backend's row (zeros, named after the slot, if it was removed
    /// meanwhile).
    pub fn status_of(&self, slot: Slot) -> BackendStatus {
        self.try_status_of(slot).unwrap_or_else(|| BackendStatus {
            name: format!("retired{slot}"),
            kind: String::new(),
            paused: false,
            ready: false,
            queued: 0,
            in_flight: 0,
            delivered: 0,
            failed: 0,
            retries: 0,
            dead_letters: 0,
            circuit_open: false,
            overflow_dead_lettered: 0,
            throttled_seconds: 0.0,
            disabled: false,
            providers: None,
        })
    }

    /// Every live backend with its row, in slot order.
    pub fn snapshot(&self) -> Vec<(Arc<BackendHandle>, BackendStatus)> {
        self.slots()
            .slots()
            .filter_map(|s| Some((self.backend(s)?, self.try_status_of(s)?)))
            .collect()
    }

    pub fn status(&self) -> Vec<BackendStatus> {
        self.slots().slots().filter_map(|s| self.try_status_of(s)).collect()
    }
}

/// Dead letters over slots: the one implementation behind the admin API
/// and the offline `dlq` command.
pub mod dead_letters {
    use super::*;

    /// The dead letters of `slots`, oldest first per slot.
    pub async fn list(spool: &Spool, slots: Vec<Slot>) -> Result<Vec<DeadLetter>, SpoolError> {
        let spool = spool.clone();
        tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            for slot in slots {
                all.extend(spool.list_dead(slot)?);
            }
            Ok(all)
        })
        .await
        .map_err(SpoolError::io)?
    }

    /// Largest page a caller may ask for.
    pub const MAX_PAGE: usize = 10_000;
    /// Page size when the caller does not say.
    pub const DEFAULT_PAGE: usize = 1_000;

    /// Which page of a dead-letter listing.
    #[derive(Debug, Clone)]
    pub struct PageRequest {
        /// The event id of the last record of the previous page.
        pub after: Option<String>,
        pub limit: usize,
        pub order: Order,
    }

    /// One page, and the cursor of the next one when more records remain.
    #[derive(Debug, Clone)]
    pub struct Page {
        pub records: Vec<DeadLetter>,
        /// The `after` of the next page: the last record's event id.
        pub next_after: Option<String>,
    }

    /// Why a page could not be read.
    #[derive(Debug, Clone, thiserror::Error)]
    pub enum PageError {
        #[error("after: no dead letter with id \"{0}\" (it may have been replayed since)")]
        UnknownAfter(String),
        #[error(transparent)]
        Spool(#[from] SpoolError),
    }

    /// A page of the dead letters of `slots`, merged by dead-letter key
    /// (the order the events died, one sequence across slots). Reads at most
    /// `limit + 1` records per slot.
    ///
    /// `after` names a record by event id. One event dead in two backends
    /// has two records with the same id; the cursor then resumes after the
    /// earlier of them in page order, so a page boundary between the two
    /// repeats a record rather than skipping one.
    pub async fn page(spool: &Spool, slots: Vec<Slot>, req: PageRequest) -> Result<Page, PageError> {
        let spool = spool.clone();
        tokio::task::spawn_blocking(move || {
            let after = match &req.after {
                None => None,
                Some(id) => {
                    let mut seqs = Vec::new();
                    for slot in &slots {
                        seqs.extend(spool.find_dead(*slot, id)?);
                    }
                    let pick = match req.order {
                        Order::Asc => seqs.into_iter().min(),
                        Order::Desc => seqs.into_iter().max(),
                    };
                    Some(pick.ok_or_else(|| PageError::UnknownAfter(id.clone()))?)
                }
            };
            let want = req.limit.saturating_add(1);
            let mut rows = Vec::new();
            for slot in slots {
                rows.extend(spool.read_dead(slot, after, req.order, want)?);
            }
            match req.order {
                Order::Asc => rows.sort_by_key(|(seq, _)| *seq),
                Order::Desc => rows.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq)),
            }
            let more = rows.len() > req.limit;
            rows.truncate(req.limit);
            let records: Vec<DeadLetter> = rows.into_iter().map(|(_, d)| d).collect();
            let next_after = more.then(|| records.last().map(|r| r.id.clone())).flatten();
            Ok(Page { records, next_after })
        })
        .await
        .map_err(|e| PageError::Spool(SpoolError::io(e)))?
    }

    /// [`replay`], only what died in `window`.
    pub async fn replay_window(
        spool: &Spool,
        slots: Vec<Slot>,
        ids: Option<Vec<String>>,
        window: crate::spool::Window,
    ) -> Result<usize, SpoolError> {
        if window == crate::spool::Window::default() {
            return replay(spool, slots, ids).await;
        }
        let mut replayed = 0;
        for slot in slots {
            replayed += spool.replay_window(slot, ids.clone(), window).await?;
        }
        Ok(replayed)
    }

    /// Move the dead letters of `slots` (all, or those with `ids`) back to
    /// their queues; how many moved.
    pub async fn replay(spool: &Spool, slots: Vec<Slot>, ids: Option<Vec<String>>) -> Result<usize, SpoolError> {
        let mut replayed = 0;
        for slot in slots {
            replayed += spool.replay(slot, ids.clone()).await?;
        }
        Ok(replayed)
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

#[cfg(test)]
mod lookup_tests {
    use super::*;

    #[test]
    fn finds_by_name_or_kind_dot_name() {
        let b = [("rabbit", "main"), ("sns", "main"), ("http", "notify")];
        assert_eq!(find_backend(b, "notify"), Ok(2));
        assert_eq!(find_backend(b, "sns.main"), Ok(1));
        assert_eq!(find_backend(b, "http.notify"), Ok(2));
        assert!(
            matches!(find_backend(b, "main"), Err(Lookup::Ambiguous(_, ids)) if ids == ["rabbit.main", "sns.main"])
        );
        assert_eq!(find_backend(b, "nope"), Err(Lookup::NotFound("nope".into())));
    }
}

#[cfg(test)]
mod page_tests {
    use super::dead_letters::{page, PageError, PageRequest};
    use super::*;
    use crate::spool::{LastError, SpoolLimits};
    use bytes::Bytes;

    fn dead(id: &str, backend: &str) -> DeadLetter {
        DeadLetter::new(
            id.to_owned(),
            backend.to_owned(),
            serde_json::json!({"id": id}),
            1,
            LastError {
                status: Some(500),
                message: "boom".into(),
            },
            time::OffsetDateTime::now_utc(),
        )
    }

    fn ids(p: &dead_letters::Page) -> Vec<&str> {
        p.records.iter().map(|r| r.id.as_str()).collect()
    }

    /// Pages run in the order events died (not the order they were queued),
    /// merged across backends, and the cursor resumes right after its record.
    #[tokio::test]
    async fn pages_follow_the_order_of_dying_across_backends() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["http.a".to_owned(), "http.b".to_owned()];
        let spool = Spool::open(dir.path(), &names, SpoolLimits::default()).unwrap();
        let (a, b) = (Slot::new(0), Slot::new(1));
        let ev = || Bytes::from_static(b"{}");
        spool.append(vec![(a, ev()), (a, ev()), (b, ev())]).await.unwrap();
        // Queued as 1, 2 (a) and 3 (b); they die as 3, 2, 1.
        spool.dead_letter(b, 3, dead("E3", "b")).await.unwrap();
        spool.dead_letter(a, 2, dead("E2", "a")).await.unwrap();
        spool.dead_letter(a, 1, dead("E1", "a")).await.unwrap();

        let req = |after: Option<&str>, limit, order| PageRequest {
            after: after.map(str::to_owned),
            limit,
            order,
        };
        let all = vec![a, b];
        let p = page(&spool, all.clone(), req(None, 2, Order::Asc)).await.unwrap();
        assert_eq!(ids(&p), ["E3", "E2"]);
        assert_eq!(p.next_after.as_deref(), Some("E2"));
        let p = page(&spool, all.clone(), req(Some("E2"), 2, Order::Asc)).await.unwrap();
        assert_eq!(ids(&p), ["E1"]);
        assert_eq!(p.next_after, None);
        let p = page(&spool, all.clone(), req(None, 1, Order::Desc)).await.unwrap();
        assert_eq!(ids(&p), ["E1"]);
        let p = page(&spool, all.clone(), req(Some("E1"), 5, Order::Desc))
            .await
            .unwrap();
        assert_eq!(ids(&p), ["E2", "E3"]);
        let p = page(&spool, vec![a], req(None, 5, Order::Desc)).await.unwrap();
        assert_eq!(ids(&p), ["E1", "E2"]);
        let err = page(&spool, all, req(Some("nope"), 5, Order::Asc)).await.unwrap_err();
        assert!(matches!(err, PageError::UnknownAfter(_)), "{err}");
        spool.close().await.unwrap();
    }
}
