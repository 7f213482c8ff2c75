//! The spool: the embedded durable store behind "202 means stored".
//!
//! One redb file holds, per backend instance, a queue table (`queue/NAME`,
//! sequence number → canonical event JSON) and a dead-letter table
//! (`dead/NAME`, keyed by a sequence number taken when the event died, so
//! in dying order), plus a small `state` table (paused flags), the
//! idempotency keys of recent requests and the records of slots added at
//! runtime (`subscriptions`, see [`Spool::attach_slots`]). All writes go
//! through one [`SpoolWriter`](writer) thread that commits whatever has
//! queued up in a single fsync'd transaction (group commit), so durability
//! costs one fsync per batch of concurrent requests, not one per event.
//!
//! Each table family owns its tables and what a command does to them in
//! the writer's transaction, in a file of its own: `queues.rs` (append,
//! ack, queue reads), `dead_letter.rs` (dead-lettering, replay, listings),
//! `subscriptions.rs` (runtime slots and their records), `pause.rs`
//! (paused flags), `idempotency.rs`, `backend_state.rs`, `outbox.rs`,
//! `erase.rs` and `retention.rs`; large fan-outs written after their
//! request's commit, a chunk per commit, are `fanout.rs`'s; `txn.rs` is the transaction they share
//! and the effects published after it commits. `writes.rs` holds the
//! handle's writes (each one command to the writer), `writer.rs` only
//! batches commands, commits and recovers.
//!
//! Readers (the delivery queues) read in their own MVCC read transactions
//! and never block the writer. The queue lives here, not in RAM: a delivery
//! queue holds only a bounded window of it.
//!
//! A failed write (disk full, I/O error) leaves redb refusing every later
//! operation until the database is reopened, so the writer reopens it, and
//! keeps trying until the disk takes writes again; meanwhile ingest answers
//! 503 and nothing already stored is lost.

mod backend_state;
pub mod check;
mod dead_letter;
mod erase;
mod fanout;
mod fanout_index;
mod fresh;
mod idempotency;
mod names;
mod outbox;
mod overflow;
mod pause;
mod queues;
pub mod record;
mod retention;
mod shared;
mod subscriptions;
mod txn;
mod writer;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError, RwLock};

use arc_swap::ArcSwap;
use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::Notify;

pub use dead_letter::{DeadLetter, LastError, Order};
pub use erase::Erased;
pub use fresh::FreshRows;
pub use idempotency::{now_ms, KeyPolicy, KeyRecord, KeyedAppend};
pub(crate) use names::dead_table;
pub(crate) use names::queue_table;
pub use overflow::{Intake, Overflow};
use queues::{count_slot, SlotCounts};
pub use retention::Window;
pub use subscriptions::Record;

use crate::slot::Slot;
use crate::state_change::StateSink;
use writer::Command;

/// The error a spool failure came from, shared so [`SpoolError`] can be
/// `Clone` (one failed commit answers every request in its group).
pub type SpoolSource = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why the spool refused or failed a write.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    /// A queue or the spool itself is at its configured limit.
    #[error("spool full: {0}")]
    Full(String),
    /// The store could not be written (disk full, permissions, I/O error).
    /// `context` says what was being done, `source` is redb's or the OS's
    /// error, kept for callers that look into it.
    #[error("spool write failed: {context}{sep}{source}", sep = if context.is_empty() { "" } else { ": " })]
    Io { context: String, source: SpoolSource },
    /// Another process has the spool file open (redb allows one at a time):
    /// a second sidecar, or `dlq` run against a live spool.
    #[error("another process holds the spool in {} (only one event-pusher can use a spool directory at a time)", dir.display())]
    Locked { dir: PathBuf },
    #[error("spool is shut down")]
    Closed,
}

impl SpoolError {
    /// An I/O failure with what was being done when it happened.
    pub fn io_in(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        SpoolError::Io {
            context: context.into(),
            source: Arc::from(source.into()),
        }
    }

    /// An I/O failure whose source says it all.
    pub fn io(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::io_in(String::new(), source)
    }
}

/// Limits that make ingest answer 503 instead of growing without bound.
#[derive(Debug, Clone, Copy)]
pub struct SpoolLimits {
    /// Events waiting per backend queue.
    pub max_queue: u64,
    /// Bytes of event data held (queues and dead letters together).
    pub max_bytes: u64,
    /// How long and how many idempotency keys are remembered.
    pub keys: KeyPolicy,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        SpoolLimits {
            max_queue: 1_000_000,
            max_bytes: 1 << 30,
            keys: KeyPolicy::default(),
        }
    }
}

/// Per-backend counters and signals shared with the delivery queue.
pub struct SlotState {
    pub name: String,
    /// Events in the queue table (not yet delivered or dead-lettered).
    pub queued: AtomicU64,
    /// Events in the dead-letter table.
    pub dead: AtomicU64,
    /// Highest sequence number committed to this queue.
    pub head: AtomicU64,
    pub paused: AtomicBool,
    /// Woken when new events are committed to the queue or `paused` changes.
    pub changed: Notify,
    /// Rows just appended, for the delivery queue to take without reading
    /// them back (`fresh.rs`).
    pub fresh: Mutex<FreshRows>,
    /// Overflow policy and counters (`overflow.rs`).
    pub intake: Intake,
}

impl SlotState {
    fn new(name: String, c: &SlotCounts) -> Self {
        SlotState {
            name,
            queued: AtomicU64::new(c.queued),
            dead: AtomicU64::new(c.dead),
            head: AtomicU64::new(c.head),
            paused: AtomicBool::new(c.paused),
            changed: Notify::new(),
            fresh: Mutex::new(FreshRows::new(c.head)),
            intake: Intake::default(),
        }
    }
}

/// The live slots by [`Slot::index`]: sparse, since slots added at runtime
/// can be removed and their ids are never reused (`None` = retired). Swapped
/// whole by the writer on attach and detach, so readers never lock.
pub(crate) type SlotTable = Vec<Option<Arc<SlotState>>>;

pub(crate) struct Shared {
    /// None while the writer reopens the file after a failed write.
    db: RwLock<Option<Arc<Database>>>,
    pub path: PathBuf,
    pub slots: ArcSwap<SlotTable>,
    pub limits: SpoolLimits,
    /// Bytes of event data held, for the `max_bytes` limit and metrics.
    pub stored_bytes: AtomicU64,
    pub healthy: AtomicBool,
    /// Why the last write failed, while unhealthy.
    pub last_error: Mutex<Option<String>>,
    /// Where committed state changes are applied in memory.
    pub state_sink: arc_swap::ArcSwapOption<Box<dyn StateSink>>,
    /// Whether relayed state changes are kept in the outbox (a cluster
    /// store is configured).
    pub outbox_enabled: AtomicBool,
    /// Woken after a commit added outbox rows.
    pub outbox_added: Notify,
    /// This spool's id (see `outbox`).
    pub origin: String,
    /// Queue rows of large fan-outs accepted but not yet written to their
    /// queues (`fanout.rs`), as of the last commit.
    pub fanout_pending: AtomicU64,
    /// Delivered events (slot index, seq) waiting for the writer's next
    /// commit. Queues add to it without a message each: only the ack that
    /// finds it empty wakes the writer (`Command::Ack`), which then lets
    /// acks gather for up to `ACK_DELAY`.
    pub acks: Mutex<Vec<(usize, u64)>>,
    /// Tests: the writer leaves pending fan-outs alone while set, so a
    /// test can look at them (and append behind them) before they are
    /// written, without racing the writer.
    #[cfg(test)]
    pub hold_fanouts: AtomicBool,
}

impl Shared {
    /// The open database, for one read (or the writer's one transaction).
    /// Hold the `Arc` only for as long as the transaction: the writer waits
    /// for every holder to let go before it reopens the file.
    /// The acks waiting for a commit (the writer takes them all).
    pub(crate) fn take_acks(&self) -> Vec<(usize, u64)> {
        std::mem::take(&mut *self.acks.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn db(&self) -> Result<Arc<Database>, SpoolError> {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| SpoolError::io(self.unavailable()))
    }

    pub(crate) fn set_db(&self, db: Option<Arc<Database>>) -> Option<Arc<Database>> {
        std::mem::replace(&mut *self.db.write().unwrap_or_else(PoisonError::into_inner), db)
    }

    /// While the database is closed after a failure: the failure.
    fn unavailable(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "the spool is being reopened".to_owned())
    }

    pub(crate) fn set_unhealthy(&self, e: &SpoolError) {
        let why = match e {
            // Without the "spool write failed" prefix: this is reported as
            // why the spool is unavailable.
            SpoolError::Io { context, source } if context.is_empty() => source.to_string(),
            SpoolError::Io { context, source } => format!("{context}: {source}"),
            other => other.to_string(),
        };
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
        self.healthy.store(false, Ordering::Release);
    }

    /// A live slot's state; `None` once it is retired (or never was).
    pub(crate) fn slot(&self, index: usize) -> Option<Arc<SlotState>> {
        self.slots.load().get(index).cloned().flatten()
    }

    /// `(index, KIND.NAME)` of every live slot.
    pub(crate) fn live_names(&self) -> Vec<(usize, String)> {
        let table = self.slots.load();
        table
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.name.clone())))
            .collect()
    }

    pub(crate) fn set_healthy(&self) {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.healthy.store(true, Ordering::Release);
    }
}

/// A handle to the spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// redb's in-process page cache. It is what RSS grows by with a backlog
/// (the queue itself stays on disk): 24 MiB keeps a sidecar with 1M events
/// queued under 60 MB; appends and sequential queue reads do not need more.
const SPOOL_CACHE_BYTES: usize = 24 << 20;

fn io(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SpoolError {
    SpoolError::io(e)
}

impl Spool {
    /// Open (or create) the spool in `dir` for the given backend instance
    /// names, in slot order, and start its writer thread.
    pub fn open(dir: &Path, backends: &[String], limits: SpoolLimits) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| SpoolError::io_in(format!("cannot create spool dir {}", dir.display()), e))?;
        let path = dir.join("spool.redb");
        let db = open_db(&path, backends)?;
        let counts = scan(&db, backends)?;
        let origin = {
            let txn = db.begin_write().map_err(io)?;
            let origin = outbox::origin(&txn)?;
            txn.commit().map_err(io)?;
            origin
        };
        let (_, next_outbox) = outbox::stats(&db)?;

        let slots: SlotTable = backends
            .iter()
            .zip(&counts.slots)
            .map(|(name, c)| Some(Arc::new(SlotState::new(name.clone(), c))))
            .collect();
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(Arc::new(db))),
            path,
            slots: ArcSwap::from_pointee(slots),
            limits,
            stored_bytes: AtomicU64::new(counts.stored),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
            state_sink: arc_swap::ArcSwapOption::empty(),
            outbox_enabled: AtomicBool::new(false),
            outbox_added: Notify::new(),
            origin,
            fanout_pending: AtomicU64::new(0),
            acks: Mutex::new(Vec::new()),
            #[cfg(test)]
            hold_fanouts: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        let (next_seq, fanouts) = (counts.next_seq, counts.fanouts);
        let writer = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer::SpoolWriter::new(writer_shared, rx, next_seq, next_outbox, fanouts).run())
            .map_err(|e| SpoolError::io_in("cannot start spool writer", e))?;
        Ok(Spool {
            shared,
            tx,
            writer: Arc::new(Mutex::new(Some(writer))),
        })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Every live slot's state, in slot order.
    pub fn slots(&self) -> Vec<Arc<SlotState>> {
        self.shared.slots.load().iter().flatten().cloned().collect()
    }

    /// A slot's state. A retired slot (removed at runtime) answers with an
    /// empty placeholder named after its id, so a caller racing a removal
    /// reads zeros instead of failing.
    pub fn slot(&self, slot: Slot) -> Arc<SlotState> {
        self.shared.slot(slot.index()).unwrap_or_else(|| {
            Arc::new(SlotState::new(
                format!("retired{slot}"),
                &SlotCounts {
                    queued: 0,
                    dead: 0,
                    head: 0,
                    paused: false,
                },
            ))
        })
    }

    pub fn stored_bytes(&self) -> u64 {
        self.shared.stored_bytes.load(Ordering::Relaxed)
    }

    /// Queue rows of large fan-outs accepted (and counted as queued) but
    /// not yet written to their queues: the writer's backlog.
    pub fn fanout_pending(&self) -> u64 {
        self.shared.fanout_pending.load(Ordering::Relaxed)
    }

    /// False after a write failed, until one succeeds again.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// Why the spool is unhealthy, if it is.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Where committed state changes are applied in memory (set once the
    /// backends are attached, before serving).
    pub fn set_state_sink(&self, sink: Box<dyn StateSink>) {
        self.shared.state_sink.store(Some(Arc::new(sink)));
    }
}

/// Open (or create, or repair after a crash) the database file and make
/// sure every table exists, so readers never see "no such table".
pub(crate) fn open_db(path: &Path, backends: &[String]) -> Result<Database, SpoolError> {
    let db = Database::builder()
        // redb caches up to 1 GiB of the file by default, so memory would
        // grow with the queue; bounded, the queue really lives on disk
        // (the OS page cache still keeps hot pages).
        .set_cache_size(SPOOL_CACHE_BYTES)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => SpoolError::Locked {
                dir: path.parent().unwrap_or(path).to_path_buf(),
            },
            e => SpoolError::io_in(format!("cannot open spool {}", path.display()), e),
        })?;
    let txn = db.begin_write().map_err(io)?;
    {
        txn.open_table(pause::STATE).map_err(io)?;
        txn.open_table(backend_state::BACKEND_STATE).map_err(io)?;
        txn.open_table(idempotency::KEYS).map_err(io)?;
        txn.open_table(idempotency::KEYS_BY_TIME).map_err(io)?;
        txn.open_table(subscriptions::RECORDS).map_err(io)?;
        txn.open_table(outbox::OUTBOX).map_err(io)?;
        txn.open_table(outbox::META).map_err(io)?;
        txn.open_table(shared::SHARED_EVENTS).map_err(io)?;
        txn.open_table(shared::SHARED_REFS).map_err(io)?;
        txn.open_table(fanout::FANOUT_PENDING).map_err(io)?;
        for name in backends {
            txn.open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(name)))
                .map_err(io)?;
            txn.open_table(TableDefinition::<u64, &[u8]>::new(&dead_table(name)))
                .map_err(io)?;
        }
    }
    txn.commit().map_err(io)?;
    Ok(db)
}

pub(crate) struct Counts {
    pub slots: Vec<SlotCounts>,
    pub stored: u64,
    pub next_seq: u64,
    /// Fan-outs whose rows are still to be written.
    pub fanouts: fanout::Fanouts,
}

/// Count what the file holds: at open, and again after a reopen (which may
/// have rolled back commits that were made without fsync).
pub(crate) fn scan(db: &Database, backends: &[String]) -> Result<Counts, SpoolError> {
    let mut slots = Vec::with_capacity(backends.len());
    let mut next_seq = 1u64;
    let mut stored = 0u64;
    let read = db.begin_read().map_err(io)?;
    let state = read.open_table(pause::STATE).map_err(io)?;
    let fanouts = fanout::Fanouts::load(&read)?;
    for name in backends {
        let q = read
            .open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(name)))
            .map_err(io)?;
        let d = read
            .open_table(TableDefinition::<u64, &[u8]>::new(&dead_table(name)))
            .map_err(io)?;
        let (mut c, bytes, seq) = count_slot(&q, &d, &state, name)?;
        // Rows accepted for it but not written yet are queued all the same.
        let pending = fanouts.pending_for(name);
        c.queued += pending;
        stored += bytes + pending * shared::REF_LEN as u64;
        next_seq = next_seq.max(seq);
        slots.push(c);
    }
    // Events stored once for many queues (their rows count as references).
    stored += shared::stored_bytes(&read)?;
    Ok(Counts {
        slots,
        stored,
        next_seq,
        fanouts,
    })
}
