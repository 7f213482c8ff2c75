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
mod fresh;
mod idempotency;
mod maintenance;
mod outbox;
mod overflow;
pub mod record;
mod retention;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError, RwLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{oneshot, Notify};

pub use dead_letter::{DeadLetter, LastError};
pub use erase::Erased;
pub use fresh::FreshRows;
pub use idempotency::{now_ms, KeyPolicy, KeyRecord, KeyedAppend};
pub use overflow::{Intake, Overflow};
pub use retention::Window;

use crate::slot::Slot;
use crate::state_change::{StateChange, StateSink};
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

/// A slot's queue or dead-letter table, open for reading.
type SlotTableRead = redb::ReadOnlyTable<u64, &'static [u8]>;

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
}

impl Shared {
    /// The open database, for one read (or the writer's one transaction).
    /// Hold the `Arc` only for as long as the transaction: the writer waits
    /// for every holder to let go before it reopens the file.
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

pub(crate) fn queue_table(name: &str) -> String {
    format!("queue/{name}")
}

pub(crate) fn dead_table(name: &str) -> String {
    format!("dead/{name}")
}

pub(crate) const STATE: TableDefinition<&str, u64> = TableDefinition::new("state");

/// Records of slots added at runtime (webhook subscriptions), by key.
pub(crate) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("subscriptions");

/// One row of the `subscriptions` table: what the owner of a runtime slot
/// stores to recreate it at the next start (the spool does not read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub value: Vec<u8>,
}

/// The key of a slot's paused flag in the `state` table.
pub(crate) fn paused_key(name: &str) -> String {
    format!("paused/{name}")
}

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
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer::SpoolWriter::new(writer_shared, rx, counts.next_seq, next_outbox).run())
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

    /// One of a slot's tables (`queue_table` or `dead_table`), in a read
    /// transaction of its own, with the database handle to hold while
    /// reading (the writer waits for holders before it reopens). Blocking.
    fn read_table(&self, slot: Slot, table: fn(&str) -> String) -> Result<(Arc<Database>, SlotTableRead), SpoolError> {
        let name = table(&self.table_name(slot)?);
        let db = self.shared.db()?;
        let read = db.begin_read().map_err(io)?;
        let t = read.open_table(TableDefinition::<u64, &[u8]>::new(&name)).map_err(io)?;
        Ok((db, t))
    }

    /// The `KIND.NAME` of a live slot: its tables' names.
    fn table_name(&self, slot: Slot) -> Result<String, SpoolError> {
        self.shared
            .slot(slot.index())
            .map(|s| s.name.clone())
            .ok_or_else(|| io(format!("backend slot {slot} has been removed")))
    }

    /// Add slots at runtime (a webhook subscription; at start, the ones
    /// stored before): create their queue and dead-letter tables (or count
    /// what they already hold) and store each one's `record` under its key
    /// in the `subscriptions` table, all in one fsync'd commit. The slots
    /// take events once this returns. `names` are `KIND.NAME` as for
    /// [`open`](Self::open).
    pub async fn attach_slots(&self, slots: Vec<(Slot, String, Option<Record>)>) -> Result<(), SpoolError> {
        let slots = slots.into_iter().map(|(s, n, r)| (s.index(), n, r)).collect();
        self.call(|reply| Command::Attach { slots, reply }).await
    }

    /// Remove a slot added at runtime: drop its tables, its paused flag and
    /// its record (key `record_key`) in one fsync'd commit, and retire the
    /// slot. Stop its delivery queue first. Returns how many queued events
    /// were discarded.
    pub async fn detach_slot(&self, slot: Slot, record_key: String) -> Result<u64, SpoolError> {
        self.call(|reply| Command::Detach {
            slot: slot.index(),
            record_key,
            reply,
        })
        .await
    }

    /// Replace a stored record (a subscription's changed settings), fsync'd.
    pub async fn put_record(&self, record: Record) -> Result<(), SpoolError> {
        self.call(|reply| Command::PutRecord { record, reply }).await
    }

    /// Every record of the `subscriptions` table, by key. Blocking.
    pub fn records(&self) -> Result<Vec<Record>, SpoolError> {
        let db = self.shared.db()?;
        let read = db.begin_read().map_err(io)?;
        let t = read.open_table(RECORDS).map_err(io)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            out.push(Record {
                key: k.value().to_owned(),
                value: v.value().to_vec(),
            });
        }
        Ok(out)
    }

    pub fn stored_bytes(&self) -> u64 {
        self.shared.stored_bytes.load(Ordering::Relaxed)
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

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SpoolError>>) -> Command,
    ) -> Result<T, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Durably append events to backend queues: `(slot, canonical JSON)`.
    /// Returns once they are committed with fsync, all or none.
    pub async fn append(&self, items: Vec<(Slot, Bytes)>) -> Result<(), SpoolError> {
        self.commit(items, Vec::new()).await
    }

    /// Durably append events and the state changes accepted with them, in
    /// one fsync'd transaction, all or none. The changes reach the
    /// [`StateSink`] right after the commit, before this returns.
    pub async fn commit(&self, items: Vec<(Slot, Bytes)>, changes: Vec<StateChange>) -> Result<(), SpoolError> {
        if items.is_empty() && changes.is_empty() {
            return Ok(());
        }
        // Same layout: collected in place.
        let items = items.into_iter().map(|(s, b)| (s.index(), b)).collect();
        self.call(|reply| Command::Append {
            items,
            changes,
            relay: true,
            reply: Some(reply),
        })
        .await
    }

    /// [`commit`](Self::commit) of changes that are not to be relayed to a
    /// cluster store (they came from it, or were written to it first).
    pub async fn commit_local(&self, changes: Vec<StateChange>) -> Result<(), SpoolError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.call(|reply| Command::Append {
            items: Vec::new(),
            changes,
            relay: false,
            reply: Some(reply),
        })
        .await
    }

    /// Keep relayed state changes in the outbox from now on (a cluster
    /// store is configured). Call before serving.
    pub fn enable_outbox(&self) {
        self.shared.outbox_enabled.store(true, Ordering::Release);
    }

    /// This spool's id: whose outbox numbers these are.
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// Up to `limit` of the oldest outbox rows, in order. Blocking.
    pub fn outbox_batch(&self, limit: usize) -> Result<Vec<(u64, Vec<StateChange>)>, SpoolError> {
        outbox::read(&*self.shared.db()?, limit)
    }

    /// Outbox rows waiting to be relayed. Blocking.
    pub fn outbox_len(&self) -> Result<u64, SpoolError> {
        outbox::stats(&*self.shared.db()?).map(|(n, _)| n)
    }

    /// Forget outbox rows up to and including `seq` (the store has them).
    pub async fn outbox_remove_through(&self, seq: u64) -> Result<(), SpoolError> {
        self.call(|reply| Command::OutboxRemove { through: seq, reply }).await
    }

    /// Resolves after a commit added outbox rows (or at once if one did
    /// since the last call).
    pub async fn outbox_added(&self) {
        self.shared.outbox_added.notified().await
    }

    /// A flag kept in the spool (e.g. "merged into the cluster store").
    /// Blocking.
    pub fn flag(&self, key: &str) -> Result<bool, SpoolError> {
        outbox::flag(&*self.shared.db()?, key)
    }

    pub async fn set_flag(&self, key: &str) -> Result<(), SpoolError> {
        let key = key.to_owned();
        self.call(|reply| Command::SetFlag { key, reply }).await
    }

    /// [`commit`](Self::commit) of state changes alone, without waiting:
    /// committed with the next group (for what a lost change costs little,
    /// such as a device pruned after its provider refused its token: a
    /// crash before the commit means one more refusal).
    pub fn commit_soon(&self, changes: Vec<StateChange>) {
        let _ = self.tx.send(Command::Append {
            items: Vec::new(),
            changes,
            relay: true,
            reply: None,
        });
    }

    /// Where committed state changes are applied in memory (set once the
    /// backends are attached, before serving).
    pub fn set_state_sink(&self, sink: Box<dyn StateSink>) {
        self.shared.state_sink.store(Some(Arc::new(sink)));
    }

    /// Like [`append`](Self::append), under an idempotency key: the events
    /// and `record` are committed together, unless `key` is already live,
    /// in which case nothing is stored and its first record comes back.
    pub async fn append_keyed(
        &self,
        items: Vec<(Slot, Bytes)>,
        changes: Vec<StateChange>,
        key: String,
        record: KeyRecord,
    ) -> Result<KeyedAppend, SpoolError> {
        let items = items.into_iter().map(|(s, b)| (s.index(), b)).collect();
        self.call(|reply| Command::AppendKeyed {
            items,
            changes,
            key,
            record,
            reply,
        })
        .await
    }

    /// The record of a live idempotency key. Blocking.
    pub fn lookup_key(&self, key: &str) -> Result<Option<KeyRecord>, SpoolError> {
        let db = self.shared.db()?;
        let read = db.begin_read().map_err(io)?;
        idempotency::lookup(&read, key, &self.shared.limits.keys)
    }

    /// How long and how many idempotency keys this spool remembers.
    pub fn key_policy(&self) -> KeyPolicy {
        self.shared.limits.keys
    }

    /// Mark an event delivered: remove it from its queue. Not awaited; a
    /// crash before it is committed means one duplicate delivery, never a loss.
    pub fn ack(&self, slot: Slot, seq: u64) {
        let _ = self.tx.send(Command::Ack {
            slot: slot.index(),
            seq,
        });
    }

    /// Move an event from its queue to the dead-letter table, durably.
    pub async fn dead_letter(&self, slot: Slot, seq: u64, record: DeadLetter) -> Result<(), SpoolError> {
        let bytes = serde_json::to_vec(&record).map_err(io)?;
        self.call(|reply| Command::DeadLetter {
            slot: slot.index(),
            seq,
            record: bytes,
            reply,
        })
        .await
    }

    /// Move dead letters back to the queue (all of them, or those with the
    /// given event ids). Returns how many were moved.
    pub async fn replay(&self, slot: Slot, ids: Option<Vec<String>>) -> Result<usize, SpoolError> {
        self.call(|reply| Command::Replay {
            slot: slot.index(),
            ids,
            reply,
        })
        .await
    }

    /// Durably set (`Some`) or remove (`None`) backend state keys (see
    /// `backend_state`); returns once committed with fsync.
    pub async fn put_state(&self, entries: Vec<(String, Option<Vec<u8>>)>) -> Result<(), SpoolError> {
        self.call(|reply| Command::PutState {
            entries,
            reply: Some(reply),
        })
        .await
    }

    /// [`put_state`](Self::put_state) without waiting: committed (with
    /// fsync) with the next group, before any command sent after it, so an
    /// ingest append that follows is answered only once this is stored too.
    pub fn put_state_soon(&self, entries: Vec<(String, Option<Vec<u8>>)>) {
        let _ = self.tx.send(Command::PutState { entries, reply: None });
    }

    /// Every backend state key starting with `prefix`, with its value.
    /// Blocking.
    pub fn read_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, SpoolError> {
        backend_state::scan(&*self.shared.db()?, prefix)
    }

    /// Commit with fsync whatever is pending (acks included).
    pub async fn sync(&self) -> Result<(), SpoolError> {
        self.call(|reply| Command::Sync { reply }).await
    }

    /// Commit what is pending with fsync, close the database cleanly (so the
    /// next open needs no repair) and stop the writer. Every later write, on
    /// any clone of this handle, fails with [`SpoolError::Closed`].
    pub async fn close(&self) -> Result<(), SpoolError> {
        let res = self.call(|reply| Command::Close { reply }).await;
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(w) = writer {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        match res {
            Err(SpoolError::Closed) => Ok(()),
            other => other,
        }
    }

    /// Persist and apply a backend's paused flag.
    pub async fn set_paused(&self, slot: Slot, paused: bool) -> Result<(), SpoolError> {
        self.call(|reply| Command::SetPaused {
            slot: slot.index(),
            paused,
            reply,
        })
        .await
    }

    /// Read up to `limit` queued events of a backend with sequence numbers
    /// above `after`. Blocking: call from `spawn_blocking`.
    pub fn read_queue(&self, slot: Slot, after: u64, limit: usize) -> Result<Vec<(u64, Bytes)>, SpoolError> {
        let (_db, q) = self.read_table(slot, queue_table)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        for row in q.range(after.saturating_add(1)..).map_err(io)?.take(limit) {
            let (k, v) = row.map_err(io)?;
            out.push((k.value(), Bytes::copy_from_slice(v.value())));
        }
        Ok(out)
    }

    /// All dead letters of a backend, oldest first. Blocking.
    pub fn list_dead(&self, slot: Slot) -> Result<Vec<DeadLetter>, SpoolError> {
        Ok(self
            .read_dead(slot, None, Order::Asc, usize::MAX)?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    /// Up to `limit` dead letters of a backend with their sequence numbers,
    /// in `order`, starting after sequence number `after` (exclusive). A
    /// range scan: reads only what it returns. Blocking.
    pub fn read_dead(
        &self,
        slot: Slot,
        after: Option<u64>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetter)>, SpoolError> {
        let (_db, d) = self.read_table(slot, dead_table)?;
        let rows = match (order, after) {
            (Order::Asc, None) => d.range::<u64>(..),
            (Order::Asc, Some(a)) => d.range(a.saturating_add(1)..),
            (Order::Desc, None) => d.range::<u64>(..),
            (Order::Desc, Some(a)) => d.range(..a),
        }
        .map_err(io)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut push = |row: Result<(redb::AccessGuard<u64>, redb::AccessGuard<&[u8]>), redb::StorageError>| {
            let (k, v) = row.map_err(io)?;
            out.push((k.value(), serde_json::from_slice(v.value()).map_err(io)?));
            Ok::<_, SpoolError>(())
        };
        match order {
            Order::Asc => rows.take(limit).try_for_each(&mut push)?,
            Order::Desc => rows.rev().take(limit).try_for_each(&mut push)?,
        }
        Ok(out)
    }

    /// The sequence numbers of a backend's dead letters for event `id`
    /// (one, unless the event was dead-lettered, replayed and dead-lettered
    /// again). Scans the table but parses only each record's leading `id`
    /// field. Blocking.
    pub fn find_dead(&self, slot: Slot, id: &str) -> Result<Vec<u64>, SpoolError> {
        let (_db, d) = self.read_table(slot, dead_table)?;
        // Records are written by `DeadLetter`'s serializer: `id` first.
        let prefix = format!("{{\"id\":{}", serde_json::Value::from(id));
        let mut out = Vec::new();
        for row in d.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let bytes = v.value();
            let hit = if bytes.starts_with(b"{\"id\":") {
                bytes.starts_with(prefix.as_bytes()) && matches!(bytes.get(prefix.len()), Some(b',') | Some(b'}'))
            } else {
                // Not our serializer's layout: parse it.
                serde_json::from_slice::<DeadLetter>(bytes).is_ok_and(|d| d.id == id)
            };
            if hit {
                out.push(k.value());
            }
        }
        Ok(out)
    }
}

/// Which way a dead-letter listing runs: by key, which is the order the
/// events were dead-lettered (each gets a fresh sequence number then).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
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
        txn.open_table(STATE).map_err(io)?;
        txn.open_table(backend_state::BACKEND_STATE).map_err(io)?;
        txn.open_table(idempotency::KEYS).map_err(io)?;
        txn.open_table(idempotency::KEYS_BY_TIME).map_err(io)?;
        txn.open_table(RECORDS).map_err(io)?;
        txn.open_table(outbox::OUTBOX).map_err(io)?;
        txn.open_table(outbox::META).map_err(io)?;
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

/// What is in one backend's tables.
pub(crate) struct SlotCounts {
    pub queued: u64,
    pub dead: u64,
    pub head: u64,
    pub paused: bool,
}

pub(crate) struct Counts {
    pub slots: Vec<SlotCounts>,
    pub stored: u64,
    pub next_seq: u64,
}

/// Count what the file holds: at open, and again after a reopen (which may
/// have rolled back commits that were made without fsync).
pub(crate) fn scan(db: &Database, backends: &[String]) -> Result<Counts, SpoolError> {
    let mut slots = Vec::with_capacity(backends.len());
    let mut next_seq = 1u64;
    let mut stored = 0u64;
    let read = db.begin_read().map_err(io)?;
    let state = read.open_table(STATE).map_err(io)?;
    for name in backends {
        let q = read
            .open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(name)))
            .map_err(io)?;
        let d = read
            .open_table(TableDefinition::<u64, &[u8]>::new(&dead_table(name)))
            .map_err(io)?;
        let (c, bytes, seq) = count_slot(&q, &d, &state, name)?;
        stored += bytes;
        next_seq = next_seq.max(seq);
        slots.push(c);
    }
    Ok(Counts {
        slots,
        stored,
        next_seq,
    })
}

/// What one slot's tables hold: its counts, their bytes, and the next free
/// sequence number as far as they tell.
pub(crate) fn count_slot(
    q: &impl ReadableTable<u64, &'static [u8]>,
    d: &impl ReadableTable<u64, &'static [u8]>,
    state: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> Result<(SlotCounts, u64, u64), SpoolError> {
    let mut next_seq = 1u64;
    let mut stored = 0u64;
    let mut head = 0;
    for row in q.iter().map_err(io)? {
        let (k, v) = row.map_err(io)?;
        head = k.value();
        stored += v.value().len() as u64;
    }
    for row in d.iter().map_err(io)? {
        let (k, v) = row.map_err(io)?;
        next_seq = next_seq.max(k.value() + 1);
        stored += v.value().len() as u64;
    }
    next_seq = next_seq.max(head + 1);
    let paused = state
        .get(paused_key(name).as_str())
        .map_err(io)?
        .map(|v| v.value() != 0)
        .unwrap_or(false);
    let counts = SlotCounts {
        queued: q.len().map_err(io)?,
        dead: d.len().map_err(io)?,
        head,
        paused,
    };
    Ok((counts, stored, next_seq))
}

#[cfg(test)]
mod runtime_slot_tests {
    use super::*;

    fn ev() -> Bytes {
        Bytes::from_static(b"{\"id\":\"E\"}")
    }

    /// A slot added at runtime takes events, keeps its record, survives a
    /// reopen when attached again, and once detached drops its queue,
    /// ignores late appends and acks, and frees its bytes.
    #[tokio::test]
    async fn runtime_slots_attach_store_and_detach() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), &["http.a".to_owned()], SpoolLimits::default()).unwrap();
        let (a, w) = (Slot::new(0), Slot::new(5));
        let record = Record {
            key: "w".into(),
            value: b"{}".to_vec(),
        };
        spool
            .attach_slots(vec![(w, "webhook.w".into(), Some(record.clone()))])
            .await
            .unwrap();
        spool.append(vec![(a, ev()), (w, ev()), (w, ev())]).await.unwrap();
        assert_eq!(spool.slot(w).queued.load(Ordering::Relaxed), 2);
        assert_eq!(spool.read_queue(w, 0, 10).unwrap().len(), 2);
        assert_eq!(spool.records().unwrap(), std::slice::from_ref(&record));
        spool.close().await.unwrap();

        // Reopened: the config slot as before, the runtime one attached again.
        let spool = Spool::open(dir.path(), &["http.a".to_owned()], SpoolLimits::default()).unwrap();
        spool.attach_slots(vec![(w, "webhook.w".into(), None)]).await.unwrap();
        assert_eq!(spool.slot(w).queued.load(Ordering::Relaxed), 2);
        let before = spool.stored_bytes();
        assert_eq!(spool.detach_slot(w, "w".into()).await.unwrap(), 2);
        assert!(spool.records().unwrap().is_empty());
        assert_eq!(spool.stored_bytes(), before - 2 * ev().len() as u64);
        assert_eq!(spool.slot(w).name, "retired#5");
        // Late traffic for the retired slot is dropped, the rest stored.
        spool.append(vec![(w, ev()), (a, ev())]).await.unwrap();
        spool.ack(w, 1);
        spool.sync().await.unwrap();
        assert_eq!(spool.slot(a).queued.load(Ordering::Relaxed), 2);
        assert!(spool.read_queue(w, 0, 10).is_err(), "a retired slot has no queue");
        spool.close().await.unwrap();
    }
}
