//! The spool writer: the one thread that writes, committing everything that
//! queued up meanwhile in one transaction.
//!
//! Group commit is what makes "202 only after fsync" affordable: while one
//! commit's fsync runs, new requests pile up in the channel, and the next
//! commit takes them all.
//!
//! When a commit fails (disk full, I/O error) redb refuses every later
//! operation until the file is reopened, so the writer reopens it, counts
//! what the file really holds again (a reopen rolls back commits made
//! without fsync), and applies the acks that were lost that way once more.
//! Until a commit succeeds the spool reports itself unhealthy and the writer
//! retries on its own every [`RECOVER_EVERY`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use super::idempotency::{self, KeyRecord, KeyedAppend};
use super::{
    count_slot, dead_table, paused_key, queue_table, DeadLetter, Record, Shared, SlotState, SlotTable, SpoolError,
    RECORDS, STATE,
};
use crate::state_change::StateChange;

type Reply<T> = oneshot::Sender<Result<T, SpoolError>>;

pub(crate) enum Command {
    /// New events and the state changes accepted with them; `reply` is
    /// `None` for changes sent without waiting (a pruned device).
    Append {
        items: Vec<(usize, Bytes)>,
        changes: Vec<StateChange>,
        /// Keep the changes in the outbox for the cluster store (when it
        /// is enabled); false for changes the store has already.
        relay: bool,
        reply: Option<Reply<()>>,
    },
    /// The cluster store has the outbox rows up to `through`.
    OutboxRemove {
        through: u64,
        reply: Reply<()>,
    },
    SetFlag {
        key: String,
        reply: Reply<()>,
    },
    /// An append under an idempotency key: stored with the key, unless the
    /// key is already there.
    AppendKeyed {
        items: Vec<(usize, Bytes)>,
        changes: Vec<StateChange>,
        key: String,
        record: KeyRecord,
        reply: Reply<KeyedAppend>,
    },
    Ack {
        slot: usize,
        seq: u64,
    },
    DeadLetter {
        slot: usize,
        seq: u64,
        record: Vec<u8>,
        reply: Reply<()>,
    },
    Replay {
        slot: usize,
        ids: Option<Vec<String>>,
        reply: Reply<usize>,
    },
    SetPaused {
        slot: usize,
        paused: bool,
        reply: Reply<()>,
    },
    /// Add runtime slots: create (or count) their tables, store records.
    Attach {
        slots: Vec<(usize, String, Option<Record>)>,
        reply: Reply<()>,
    },
    /// Remove a runtime slot: drop its tables, flag and record.
    Detach {
        slot: usize,
        record_key: String,
        reply: Reply<u64>,
    },
    /// Store (replace) a record of the `subscriptions` table.
    PutRecord {
        record: Record,
        reply: Reply<()>,
    },
    /// Set or remove backend state keys; `reply` is `None` when the caller
    /// does not wait.
    PutState {
        entries: Vec<(String, Option<Vec<u8>>)>,
        reply: Option<Reply<()>>,
    },
    /// Delete dead letters that died before `cutoff_ms` (`retention.rs`).
    Expire {
        cutoff_ms: i128,
        reply: Reply<u64>,
    },
    /// Replay the dead letters (with `ids`, if given) that died in `window`.
    ReplayWindow {
        slot: usize,
        ids: Option<Vec<String>>,
        window: super::retention::Window,
        reply: Reply<usize>,
    },
    /// Remove a user's queued events and dead letters everywhere (`erase.rs`).
    Erase {
        user: String,
        reply: Reply<super::erase::Erased>,
    },
    /// Force a durable commit.
    Sync {
        reply: Reply<()>,
    },
    /// Durable commit, close the database, stop the writer.
    Close {
        reply: Reply<()>,
    },
}

/// Most commands taken into one transaction.
const MAX_GROUP: usize = 4096;
/// An ack waits at most this long for a commit to ride on. Every commit is
/// durable; acks are not committed one by one but join the next commit
/// (an ingest group, a dead letter, ...), and only when none comes within
/// this delay do they get a commit of their own. Under load they ride on
/// ingest commits for free; at low rates one commit carries many; and
/// after kill -9 only what was delivered in the last `ACK_DELAY` (plus what
/// was in flight) is delivered again.
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(20);
/// While unhealthy, how often the writer tries to recover by itself.
pub(crate) const RECOVER_EVERY: Duration = Duration::from_millis(500);
/// How long a reopen waits for readers to let go of the old database.
const READERS_GRACE: Duration = Duration::from_secs(5);

/// What one command changed, applied to the shared counters only after the
/// transaction commits. Keyed by slot index: with thousands of slots a
/// commit touches few of them.
#[derive(Default)]
struct Effects {
    appended: Vec<(usize, u64)>,
    /// Rows appended, for the queues' fresh buffers.
    fresh: Vec<(usize, u64, Bytes)>,
    /// Rows put in a queue by a replay (not in the fresh buffers).
    replayed: Vec<(usize, u64)>,
    queued_delta: HashMap<usize, i64>,
    dead_delta: HashMap<usize, i64>,
    bytes_delta: i64,
    notify: Vec<usize>,
    paused: Vec<(usize, bool)>,
    /// Slots added in this transaction, published after it commits.
    attached: Vec<(usize, Arc<SlotState>)>,
    /// Slots removed in this transaction: later commands skip them.
    detached: HashSet<usize>,
    /// Rows were added to the outbox.
    outbox_added: bool,
    /// Events dead-lettered on arrival (`overflow.rs`), per slot.
    overflowed: HashMap<usize, u64>,
    /// Dead letters deleted by retention, per slot.
    expired: HashMap<usize, u64>,
}

impl Effects {
    fn queued(&mut self, slot: usize, d: i64) {
        *self.queued_delta.entry(slot).or_default() += d;
    }

    fn dead(&mut self, slot: usize, d: i64) {
        *self.dead_delta.entry(slot).or_default() += d;
    }
}

pub(crate) struct SpoolWriter {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
    next_seq: u64,
    /// The next outbox row's number.
    next_outbox: u64,
    /// Acks waiting for the next commit, and since when the oldest waits.
    pending_acks: Vec<(usize, u64)>,
    pending_since: Option<Instant>,
    /// Acks whose commit failed, applied with the next commit.
    retry_acks: Vec<(usize, u64)>,
    last_recover: Option<Instant>,
    reopen_failures: u32,
    closed: bool,
}

impl SpoolWriter {
    pub fn new(shared: Arc<Shared>, rx: mpsc::Receiver<Command>, next_seq: u64, next_outbox: u64) -> Self {
        SpoolWriter {
            shared,
            rx,
            next_seq,
            next_outbox,
            pending_acks: Vec::new(),
            pending_since: None,
            retry_acks: Vec::new(),
            last_recover: None,
            reopen_failures: 0,
            closed: false,
        }
    }

    pub fn run(mut self) {
        let mut group = Vec::with_capacity(64);
        while !self.closed {
            match self.rx.recv_timeout(self.idle_wait()) {
                Ok(cmd) => self.take(cmd, &mut group),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while group.len() < MAX_GROUP {
                match self.rx.try_recv() {
                    Ok(cmd) => self.take(cmd, &mut group),
                    Err(_) => break,
                }
            }
            if group.is_empty() && !self.maintenance_due() {
                continue;
            }
            self.commit_group(&mut group);
        }
        if !self.closed {
            // Every handle is gone without a close: still leave the file clean.
            if !self.pending_acks.is_empty() {
                self.commit_group(&mut group);
            }
            self.close_db();
        }
    }

    /// Acks wait for a commit to ride on; every other command is one.
    fn take(&mut self, cmd: Command, group: &mut Vec<Command>) {
        match cmd {
            Command::Ack { slot, seq } => {
                self.pending_since.get_or_insert_with(Instant::now);
                self.pending_acks.push((slot, seq));
            }
            other => group.push(other),
        }
    }

    /// How long to wait for a command before doing maintenance: committing
    /// acks that waited [`ACK_DELAY`], or retrying after a failure.
    fn idle_wait(&self) -> Duration {
        // While failing, retry at a steady pace (the ack deadline may be
        // long past: waiting for it would spin).
        if !self.shared.healthy.load(Ordering::Acquire) || !self.retry_acks.is_empty() {
            RECOVER_EVERY
        } else if let Some(since) = self.pending_since {
            ACK_DELAY.saturating_sub(since.elapsed())
        } else {
            Duration::from_secs(3600)
        }
    }

    fn maintenance_due(&self) -> bool {
        self.pending_since.is_some_and(|t| t.elapsed() >= ACK_DELAY)
            || !self.retry_acks.is_empty()
            || !self.shared.healthy.load(Ordering::Acquire)
    }

    fn commit_group(&mut self, group: &mut Vec<Command>) {
        let mut fx = Effects::default();
        let seq_before = self.next_seq;
        let outbox_before = self.next_outbox;
        let closing = group.iter().any(|c| matches!(c, Command::Close { .. }));
        // Acks that failed to commit before, then those that waited.
        let mut acks = std::mem::take(&mut self.retry_acks);
        acks.append(&mut self.pending_acks);
        self.pending_since = None;

        // Results per command, decided while applying; replies are sent only
        // after the commit so nobody hears "stored" before it is.
        let mut results: Vec<Result<Applied, SpoolError>> = Vec::with_capacity(group.len());
        let outcome = self.ensure_open().and_then(|db| {
            let mut txn = db.begin_write().map_err(super::io)?;
            // Every commit is durable: a 202 waits for it, and an ack that
            // reached disk is never delivered twice.
            txn.set_durability(Durability::Immediate).map_err(super::io)?;
            self.apply_acks(&txn, &mut acks, &mut fx)?;
            for cmd in group.iter() {
                match self.apply(&txn, cmd, &mut fx) {
                    // An I/O error aborts the whole group: the transaction is
                    // dropped uncommitted, so nothing of it is half-stored.
                    Err(e @ SpoolError::Io { .. }) => return Err(e),
                    other => results.push(other),
                }
            }
            txn.commit().map_err(super::io)
        });

        match outcome {
            Ok(()) => {
                if !self.shared.healthy.load(Ordering::Acquire) {
                    tracing::info!("spool writable again");
                    self.shared.set_healthy();
                    // Queues may have failed to read meanwhile: let them look.
                    for slot in self.shared.slots.load().iter().flatten() {
                        slot.changed.notify_one();
                    }
                }
                // In-memory views follow the commit, in commit order, before
                // anybody hears "stored" and before the delivery queues see
                // the new rows (a push reads the badge count it carries).
                if let Some(sink) = self.shared.state_sink.load_full() {
                    for (cmd, res) in group.iter().zip(&results) {
                        if let (
                            Command::Append { changes, .. } | Command::AppendKeyed { changes, .. },
                            Ok(Applied::Count(_)),
                        ) = (cmd, res)
                        {
                            if !changes.is_empty() {
                                sink.applied(changes);
                            }
                        }
                    }
                }
                self.publish(&fx);
                if fx.outbox_added {
                    self.shared.outbox_added.notify_one();
                }
                for (cmd, res) in group.drain(..).zip(results) {
                    reply(cmd, res);
                }
            }
            Err(e) => {
                if self.shared.healthy.load(Ordering::Acquire) {
                    tracing::error!(error = %e, "spool commit failed; refusing writes until it succeeds again");
                } else {
                    tracing::debug!(error = %e, "spool still not writable");
                }
                self.shared.set_unhealthy(&e);
                self.next_seq = seq_before;
                self.next_outbox = outbox_before;
                // Acks cannot be answered "failed": keep them for later.
                self.retry_acks = acks;
                for cmd in group.drain(..) {
                    reply(cmd, Err(e.clone()));
                }
                // redb refuses everything after an I/O error until reopened:
                // drop the handle now, reopen now or (rate-limited) with the
                // next command or recovery tick.
                self.release_db();
                if self.last_recover.is_none_or(|t| t.elapsed() >= RECOVER_EVERY) {
                    self.reopen();
                }
            }
        }
        if closing {
            self.close_db();
        }
    }

    /// The database, reopening it first if an earlier failure closed it
    /// (at most every [`RECOVER_EVERY`], so a full disk is not hammered).
    fn ensure_open(&mut self) -> Result<Arc<Database>, SpoolError> {
        if let Ok(db) = self.shared.db() {
            return Ok(db);
        }
        if self.last_recover.is_some_and(|t| t.elapsed() < RECOVER_EVERY) {
            return self.shared.db();
        }
        self.reopen();
        self.shared.db()
    }

    /// Drop the database handle (after every reader let go of it) and open
    /// the file again. On success the counters are recounted from the file
    /// and the acks a rollback may have undone are queued again.
    fn reopen(&mut self) {
        self.last_recover = Some(Instant::now());
        self.release_db();
        let live = self.shared.live_names();
        let names: Vec<String> = live.iter().map(|(_, n)| n.clone()).collect();
        let reopened = super::open_db(&self.shared.path, &names).and_then(|db| Ok((super::scan(&db, &names)?, db)));
        match reopened {
            Ok((counts, db)) => {
                let slots = self.shared.slots.load();
                let live_slots = live.iter().filter_map(|(i, _)| slots.get(*i).cloned().flatten());
                for (slot, c) in live_slots.zip(&counts.slots) {
                    slot.queued.store(c.queued, Ordering::Relaxed);
                    slot.dead.store(c.dead, Ordering::Relaxed);
                    slot.head.fetch_max(c.head, Ordering::Release);
                }
                self.shared.stored_bytes.store(counts.stored, Ordering::Relaxed);
                self.next_seq = self.next_seq.max(counts.next_seq);
                self.shared.set_db(Some(Arc::new(db)));
                tracing::info!(path = %self.shared.path.display(), failed_attempts = self.reopen_failures, "spool reopened");
                self.reopen_failures = 0;
            }
            Err(e) => {
                if self.reopen_failures == 0 {
                    tracing::warn!(error = %e, retry_every = ?RECOVER_EVERY, "cannot reopen the spool yet");
                } else {
                    tracing::debug!(error = %e, "cannot reopen the spool yet");
                }
                self.reopen_failures += 1;
                self.shared.set_unhealthy(&e);
            }
        }
    }

    /// Take the database out of reach of new readers and wait (bounded) for
    /// the current ones, so the file is really closed when this returns.
    fn release_db(&mut self) {
        let Some(old) = self.shared.set_db(None) else { return };
        let deadline = Instant::now() + READERS_GRACE;
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if Arc::strong_count(&old) > 1 {
            tracing::warn!("a spool reader still holds the database; reopening may fail until it finishes");
        }
        drop(old);
    }

    fn close_db(&mut self) {
        self.closed = true;
        self.release_db();
        tracing::debug!("spool closed");
    }

    /// The tables' name of a slot that is live in this transaction: not
    /// retired, and not removed by an earlier command of the group (opening
    /// a dropped table would create it again).
    fn live_name(&self, slot: usize, fx: &Effects) -> Option<String> {
        if fx.detached.contains(&slot) {
            return None;
        }
        self.shared.slot(slot).map(|s| s.name.clone())
    }

    /// Remove delivered events from their queues: each slot's table is
    /// opened once for all of its acks in the group.
    fn apply_acks(
        &self,
        txn: &WriteTransaction,
        acks: &mut [(usize, u64)],
        fx: &mut Effects,
    ) -> Result<(), SpoolError> {
        acks.sort_unstable();
        for run in acks.chunk_by(|a, b| a.0 == b.0) {
            let slot = run[0].0;
            // The slot was removed meanwhile: its queue is gone already.
            let Some(name) = self.live_name(slot, fx) else { continue };
            let mut t = txn
                .open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(&name)))
                .map_err(super::io)?;
            for (_, seq) in run {
                if let Some(old) = t.remove(*seq).map_err(super::io)? {
                    fx.bytes_delta -= old.value().len() as i64;
                    fx.queued(slot, -1);
                }
            }
        }
        Ok(())
    }

    /// Apply one command inside the transaction. A refusal (limits) returns
    /// an error for that command alone; an I/O error aborts the group.
    fn apply(&mut self, txn: &WriteTransaction, cmd: &Command, fx: &mut Effects) -> Result<Applied, SpoolError> {
        if let Command::AppendKeyed {
            items,
            changes,
            key,
            record,
            ..
        } = cmd
        {
            return self.apply_append_keyed(txn, items, changes, key, record, fx);
        }
        if let Command::Erase { user, .. } = cmd {
            return self.apply_erase(txn, user, fx).map(Applied::Erased);
        }
        self.apply_counted(txn, cmd, fx).map(Applied::Count)
    }

    fn apply_counted(&mut self, txn: &WriteTransaction, cmd: &Command, fx: &mut Effects) -> Result<usize, SpoolError> {
        match cmd {
            Command::Append {
                items, changes, relay, ..
            } => {
                let n = self.apply_append(txn, items, changes, fx)?;
                if *relay {
                    self.keep_for_relay(txn, changes, fx)?;
                }
                Ok(n)
            }
            Command::OutboxRemove { through, .. } => super::outbox::remove_through(txn, *through).map(|()| 0),
            Command::SetFlag { key, .. } => super::outbox::set_flag(txn, key).map(|()| 0),
            Command::AppendKeyed { .. } => Ok(0),
            // Acks never join a group: `take` holds them for the next commit.
            Command::Ack { .. } => Ok(0),
            Command::DeadLetter { slot, seq, record, .. } => self.apply_dead_letter(txn, *slot, *seq, record, fx),
            Command::Replay { slot, ids, .. } => {
                let ids = ids.as_deref();
                self.apply_replay(txn, *slot, &|dl| ids.is_none_or(|ids| ids.contains(&dl.id)), fx)
            }
            Command::ReplayWindow { slot, ids, window, .. } => {
                let ids = ids.as_deref();
                let chosen = |dl: &DeadLetter| ids.is_none_or(|ids| ids.contains(&dl.id)) && window.contains(dl);
                self.apply_replay(txn, *slot, &chosen, fx)
            }
            Command::Expire { cutoff_ms, .. } => self.apply_expire(txn, *cutoff_ms, fx),
            Command::Erase { .. } => Ok(0),
            Command::SetPaused { slot, paused, .. } => self.apply_set_paused(txn, *slot, *paused, fx),
            Command::Attach { slots, .. } => self.apply_attach(txn, slots, fx),
            Command::Detach { slot, record_key, .. } => self.apply_detach(txn, *slot, record_key, fx),
            Command::PutRecord { record, .. } => {
                let mut t = txn.open_table(RECORDS).map_err(super::io)?;
                t.insert(record.key.as_str(), record.value.as_slice())
                    .map_err(super::io)?;
                Ok(0)
            }
            Command::PutState { entries, .. } => super::backend_state::apply(txn, entries).map(|()| 0),
            Command::Sync { .. } | Command::Close { .. } => Ok(0),
        }
    }

    /// Store new events under an idempotency key: nothing when the key is
    /// live already (its record is the answer), else the events and the
    /// key together; then forget keys past the window or the cap.
    fn apply_append_keyed(
        &mut self,
        txn: &WriteTransaction,
        items: &[(usize, Bytes)],
        changes: &[StateChange],
        key: &str,
        record: &KeyRecord,
        fx: &mut Effects,
    ) -> Result<Applied, SpoolError> {
        let policy = self.shared.limits.keys;
        if let Some(existing) = idempotency::take_live(txn, key, &policy)? {
            return Ok(Applied::Existing(existing));
        }
        self.apply_append(txn, items, changes, fx)?;
        self.keep_for_relay(txn, changes, fx)?;
        idempotency::store(txn, key, record)?;
        idempotency::prune(txn, &policy)?;
        Ok(Applied::Count(items.len()))
    }

    /// Keep a request's state changes in the outbox, when a cluster store
    /// is configured.
    fn keep_for_relay(
        &mut self,
        txn: &WriteTransaction,
        changes: &[StateChange],
        fx: &mut Effects,
    ) -> Result<(), SpoolError> {
        if changes.is_empty() || !self.shared.outbox_enabled.load(Ordering::Acquire) {
            return Ok(());
        }
        super::outbox::append(txn, &mut self.next_outbox, changes)?;
        fx.outbox_added = true;
        Ok(())
    }

    /// Store new events and the state changes accepted with them, all or
    /// nothing: the limits are checked for the whole request first.
    fn apply_append(
        &mut self,
        txn: &WriteTransaction,
        items: &[(usize, Bytes)],
        changes: &[StateChange],
        fx: &mut Effects,
    ) -> Result<usize, SpoolError> {
        let slots = self.shared.slots.load();
        let limits = self.shared.limits;
        // A slot removed since the chain claimed for it (a webhook detached
        // while this request ran): its events are dropped with it.
        let live = |slot: usize| -> Option<&Arc<SlotState>> {
            if fx.detached.contains(&slot) {
                return None;
            }
            slots.get(slot).and_then(Option::as_ref)
        };
        let items: Vec<(&Arc<SlotState>, usize, &Bytes)> = items
            .iter()
            .filter_map(|(s, b)| live(*s).map(|st| (st, *s, b)))
            .collect();
        let mut per_slot: HashMap<usize, u64> = HashMap::new();
        let mut bytes = 0u64;
        for (_, slot, b) in &items {
            *per_slot.entry(*slot).or_default() += 1;
            bytes += b.len() as u64;
        }
        // How many of each slot's events enter its queue; the rest go to
        // its dead letters (`overflow.rs`).
        let mut room: HashMap<usize, u64> = HashMap::new();
        for (slot, add) in &per_slot {
            let Some(state) = live(*slot) else { continue };
            let queued = state.queued.load(Ordering::Relaxed) as i64 + fx.queued_delta.get(slot).copied().unwrap_or(0);
            match state.intake.admit(queued.max(0) as u64, *add, limits.max_queue) {
                Some(n) => {
                    room.insert(*slot, n);
                }
                None => {
                    return Err(SpoolError::Full(format!(
                        "queue of backend \"{}\" holds {queued} events (limit {})",
                        state.name, limits.max_queue
                    )))
                }
            }
        }
        let stored = self.shared.stored_bytes.load(Ordering::Relaxed) as i64 + fx.bytes_delta;
        if stored as u64 + bytes > limits.max_bytes {
            return Err(SpoolError::Full(format!(
                "spool holds {stored} bytes (limit {})",
                limits.max_bytes
            )));
        }
        // Each slot's table opened once per request, not once per item.
        let mut tables = HashMap::new();
        for (state, slot, b) in &items {
            let seq = self.next_seq;
            self.next_seq += 1;
            match room.get_mut(slot) {
                Some(0) => {
                    let reason = state.intake.reason();
                    let stored = super::overflow::dead_letter_on_arrival(txn, &state.name, seq, b, reason)?;
                    fx.bytes_delta += stored as i64 - b.len() as i64;
                    fx.dead(*slot, 1);
                    *fx.overflowed.entry(*slot).or_default() += 1;
                    // Its queue reports the dead letters.
                    fx.notify.push(*slot);
                    continue;
                }
                Some(left) => *left -= 1,
                None => {}
            }
            let t = match tables.entry(*slot) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    txn.open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(&state.name)))
                        .map_err(super::io)?,
                ),
            };
            t.insert(seq, b.as_ref()).map_err(super::io)?;
            fx.appended.push((*slot, seq));
            fx.fresh.push((*slot, seq, (*b).clone()));
            fx.queued(*slot, 1);
            fx.notify.push(*slot);
        }
        fx.bytes_delta += bytes as i64;
        if !changes.is_empty() {
            super::backend_state::fold(txn, changes)?;
        }
        Ok(items.len())
    }

    /// Move an event from its queue to the dead letters.
    fn apply_dead_letter(
        &mut self,
        txn: &WriteTransaction,
        slot: usize,
        seq: u64,
        record: &[u8],
        fx: &mut Effects,
    ) -> Result<usize, SpoolError> {
        let Some(name) = self.live_name(slot, fx) else {
            return Ok(0);
        };
        let name = &name;
        let mut q = txn
            .open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(name)))
            .map_err(super::io)?;
        let Some(old) = q.remove(seq).map_err(super::io)? else {
            // Already acked or dead-lettered: nothing to move.
            return Ok(0);
        };
        fx.bytes_delta -= old.value().len() as i64;
        fx.queued(slot, -1);
        drop(old);
        // A fresh sequence number, not the queue's: the dead-letter table
        // is then in the order events died, across backends too, which is
        // what "newest first" in a listing means.
        let key = self.next_seq;
        self.next_seq += 1;
        let mut d = txn
            .open_table(TableDefinition::<u64, &[u8]>::new(&dead_table(name)))
            .map_err(super::io)?;
        d.insert(key, record).map_err(super::io)?;
        fx.dead(slot, 1);
        fx.bytes_delta += record.len() as i64;
        Ok(1)
    }

    /// Delete expired dead letters of every live slot; how many.
    fn apply_expire(&mut self, txn: &WriteTransaction, cutoff_ms: i128, fx: &mut Effects) -> Result<usize, SpoolError> {
        let mut total = 0;
        for (slot, name) in self.shared.live_names() {
            if fx.detached.contains(&slot) {
                continue;
            }
            let (n, bytes) = super::retention::expire(txn, &name, cutoff_ms)?;
            if n > 0 {
                fx.dead(slot, -(n as i64));
                fx.bytes_delta -= bytes as i64;
                *fx.expired.entry(slot).or_default() += n;
                total += n as usize;
            }
        }
        Ok(total)
    }

    /// Remove a user's events from every live slot's queue and dead
    /// letters.
    fn apply_erase(
        &mut self,
        txn: &WriteTransaction,
        user: &str,
        fx: &mut Effects,
    ) -> Result<super::erase::Erased, SpoolError> {
        let (mut queued, mut dead) = (0u64, 0u64);
        for (slot, name) in self.shared.live_names() {
            if fx.detached.contains(&slot) {
                continue;
            }
            let (seqs, q, d, bytes) = super::erase::erase_slot(txn, &name, user)?;
            fx.queued(slot, -(q as i64));
            fx.dead(slot, -(d as i64));
            fx.bytes_delta -= bytes as i64;
            // Rows just appended may wait in the queue's fresh buffer: it
            // must read the spool (where they are gone) instead.
            if let Some(last) = seqs.last() {
                fx.replayed.push((slot, *last));
            }
            queued += q;
            dead += d;
        }
        Ok(super::erase::Erased {
            queued,
            dead_letters: dead,
        })
    }

    /// Put the dead letters `chosen` picks back at the end of their queue;
    /// how many.
    fn apply_replay(
        &mut self,
        txn: &WriteTransaction,
        slot: usize,
        chosen_by: &dyn Fn(&DeadLetter) -> bool,
        fx: &mut Effects,
    ) -> Result<usize, SpoolError> {
        let Some(name) = self.live_name(slot, fx) else {
            return Ok(0);
        };
        let name = &name;
        let mut d = txn
            .open_table(TableDefinition::<u64, &[u8]>::new(&dead_table(name)))
            .map_err(super::io)?;
        let mut q = txn
            .open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(name)))
            .map_err(super::io)?;
        let mut chosen = Vec::new();
        for row in d.iter().map_err(super::io)? {
            let (k, v) = row.map_err(super::io)?;
            let dl: DeadLetter = match serde_json::from_slice(v.value()) {
                Ok(dl) => dl,
                Err(e) => {
                    tracing::warn!(backend = %name, seq = k.value(), error = %e, "unreadable dead letter skipped");
                    continue;
                }
            };
            if chosen_by(&dl) {
                chosen.push((k.value(), v.value().len(), dl));
            }
        }
        for (key, len, dl) in &chosen {
            d.remove(key).map_err(super::io)?;
            let json = serde_json::to_vec(&dl.event).map_err(super::io)?;
            // The same record as before it died: to its target only.
            let event = super::record::encode(dl.target.as_deref(), &json);
            let seq = self.next_seq;
            self.next_seq += 1;
            q.insert(seq, event.as_ref()).map_err(super::io)?;
            fx.bytes_delta += event.len() as i64 - *len as i64;
            fx.dead(slot, -1);
            fx.queued(slot, 1);
            fx.appended.push((slot, seq));
            fx.replayed.push((slot, seq));
        }
        fx.notify.push(slot);
        Ok(chosen.len())
    }

    /// Remember a pause or resume across restarts.
    fn apply_set_paused(
        &self,
        txn: &WriteTransaction,
        slot: usize,
        paused: bool,
        fx: &mut Effects,
    ) -> Result<usize, SpoolError> {
        let Some(name) = self.live_name(slot, fx) else {
            return Ok(0);
        };
        let mut t = txn.open_table(STATE).map_err(super::io)?;
        t.insert(paused_key(&name).as_str(), u64::from(paused))
            .map_err(super::io)?;
        fx.paused.push((slot, paused));
        fx.notify.push(slot);
        Ok(0)
    }

    /// Create the tables of new slots (or, at start, count what the
    /// stored ones hold) and store their records.
    fn apply_attach(
        &mut self,
        txn: &WriteTransaction,
        slots: &[(usize, String, Option<Record>)],
        fx: &mut Effects,
    ) -> Result<usize, SpoolError> {
        let state = txn.open_table(STATE).map_err(super::io)?;
        let mut records = txn.open_table(RECORDS).map_err(super::io)?;
        for (slot, name, record) in slots {
            let q = txn
                .open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(name)))
                .map_err(super::io)?;
            let d = txn
                .open_table(TableDefinition::<u64, &[u8]>::new(&dead_table(name)))
                .map_err(super::io)?;
            let (counts, bytes, next_seq) = count_slot(&q, &d, &state, name)?;
            self.next_seq = self.next_seq.max(next_seq);
            fx.bytes_delta += bytes as i64;
            if let Some(r) = record {
                records.insert(r.key.as_str(), r.value.as_slice()).map_err(super::io)?;
            }
            fx.attached
                .push((*slot, Arc::new(SlotState::new(name.clone(), &counts))));
        }
        Ok(slots.len())
    }

    /// Drop a runtime slot's tables, paused flag and record; how many
    /// queued events went with it.
    fn apply_detach(
        &mut self,
        txn: &WriteTransaction,
        slot: usize,
        record_key: &str,
        fx: &mut Effects,
    ) -> Result<usize, SpoolError> {
        let Some(name) = self.live_name(slot, fx) else {
            return Ok(0);
        };
        let (qname, dname) = (queue_table(&name), dead_table(&name));
        let qdef = TableDefinition::<u64, &[u8]>::new(&qname);
        let ddef = TableDefinition::<u64, &[u8]>::new(&dname);
        let mut discarded = 0usize;
        let mut bytes = 0i64;
        {
            let q = txn.open_table(qdef).map_err(super::io)?;
            let d = txn.open_table(ddef).map_err(super::io)?;
            for row in q.iter().map_err(super::io)? {
                let (_, v) = row.map_err(super::io)?;
                bytes += v.value().len() as i64;
                discarded += 1;
            }
            for row in d.iter().map_err(super::io)? {
                let (_, v) = row.map_err(super::io)?;
                bytes += v.value().len() as i64;
            }
        }
        txn.delete_table(qdef).map_err(super::io)?;
        txn.delete_table(ddef).map_err(super::io)?;
        txn.open_table(STATE)
            .map_err(super::io)?
            .remove(paused_key(&name).as_str())
            .map_err(super::io)?;
        txn.open_table(RECORDS)
            .map_err(super::io)?
            .remove(record_key)
            .map_err(super::io)?;
        fx.bytes_delta -= bytes;
        fx.detached.insert(slot);
        Ok(discarded)
    }

    /// Make committed changes visible to the delivery queues.
    fn publish(&self, fx: &Effects) {
        if !fx.attached.is_empty() || !fx.detached.is_empty() {
            let mut table: SlotTable = (**self.shared.slots.load()).clone();
            for (slot, state) in &fx.attached {
                if table.len() <= *slot {
                    table.resize(*slot + 1, None);
                }
                table[*slot] = Some(state.clone());
            }
            for slot in &fx.detached {
                if let Some(s) = table.get_mut(*slot) {
                    *s = None;
                }
            }
            self.shared.slots.store(Arc::new(table));
        }
        let slots = self.shared.slots.load();
        let live = |slot: usize| slots.get(slot).and_then(Option::as_ref);
        for (slot, d) in &fx.queued_delta {
            if let Some(s) = live(*slot) {
                add(&s.queued, *d);
            }
        }
        for (slot, d) in &fx.dead_delta {
            if let Some(s) = live(*slot) {
                add(&s.dead, *d);
            }
        }
        add(&self.shared.stored_bytes, fx.bytes_delta);
        for (slot, n) in &fx.overflowed {
            if let Some(s) = live(*slot) {
                s.intake.overflow_dead_lettered.fetch_add(*n, Ordering::Relaxed);
            }
        }
        for (slot, n) in &fx.expired {
            if let Some(s) = live(*slot) {
                s.intake.expired.fetch_add(*n, Ordering::Relaxed);
            }
        }
        for (slot, paused) in &fx.paused {
            if let Some(s) = live(*slot) {
                s.paused.store(*paused, Ordering::Release);
            }
        }
        // Fresh rows first: a queue that sees the new `head` must find
        // them in its buffer (or find the buffer marked incomplete).
        for (slot, seq) in &fx.replayed {
            if let Some(s) = live(*slot) {
                s.fresh.lock().unwrap_or_else(PoisonError::into_inner).gap(*seq);
            }
        }
        for (slot, seq, row) in &fx.fresh {
            if let Some(s) = live(*slot) {
                s.fresh
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(*seq, row.clone());
            }
        }
        for (slot, seq) in &fx.appended {
            if let Some(s) = live(*slot) {
                s.head.fetch_max(*seq, Ordering::Release);
            }
        }
        let mut notified = HashSet::new();
        for slot in &fx.notify {
            if notified.insert(*slot) {
                if let Some(s) = live(*slot) {
                    s.changed.notify_one();
                }
            }
        }
    }
}

fn add(counter: &std::sync::atomic::AtomicU64, delta: i64) {
    if delta >= 0 {
        counter.fetch_add(delta as u64, Ordering::Relaxed);
    } else {
        counter.fetch_sub((-delta) as u64, Ordering::Relaxed);
    }
}

/// What applying one command gave: a count, or for a keyed append whose
/// key was there, the first request's record.
enum Applied {
    Count(usize),
    Existing(KeyRecord),
    Erased(super::erase::Erased),
}

impl Applied {
    fn count(self) -> usize {
        match self {
            Applied::Count(n) => n,
            Applied::Existing(_) | Applied::Erased(_) => 0,
        }
    }
}

fn reply(cmd: Command, res: Result<Applied, SpoolError>) {
    match cmd {
        Command::AppendKeyed { reply, .. } => {
            let _ = reply.send(res.map(|a| match a {
                Applied::Existing(r) => KeyedAppend::Existing(r),
                Applied::Count(_) | Applied::Erased(_) => KeyedAppend::Stored,
            }));
        }
        Command::Append { reply, .. } => {
            if let Some(reply) = reply {
                let _ = reply.send(res.map(|_| ()));
            }
        }
        Command::DeadLetter { reply, .. }
        | Command::SetPaused { reply, .. }
        | Command::Attach { reply, .. }
        | Command::PutRecord { reply, .. }
        | Command::OutboxRemove { reply, .. }
        | Command::SetFlag { reply, .. }
        | Command::Sync { reply }
        | Command::Close { reply } => {
            let _ = reply.send(res.map(|_| ()));
        }
        Command::Replay { reply, .. } | Command::ReplayWindow { reply, .. } => {
            let _ = reply.send(res.map(Applied::count));
        }
        Command::Expire { reply, .. } => {
            let _ = reply.send(res.map(|a| a.count() as u64));
        }
        Command::Erase { reply, .. } => {
            let _ = reply.send(res.map(|a| match a {
                Applied::Erased(e) => e,
                _ => super::erase::Erased::default(),
            }));
        }
        Command::Detach { reply, .. } => {
            let _ = reply.send(res.map(|a| a.count() as u64));
        }
        Command::PutState { reply, .. } => {
            if let Some(reply) = reply {
                let _ = reply.send(res.map(|_| ()));
            }
        }
        Command::Ack { .. } => {}
    }
}
