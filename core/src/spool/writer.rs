//! The spool writer: the one thread that writes, committing everything that
//! queued up meanwhile in one transaction. It owns the command channel,
//! group commit (replies only after the fsync'd commit) and recovery after
//! a failed write; what each command does inside the transaction belongs to
//! its table family (`queues.rs`, `dead_letter.rs`, `subscriptions.rs`,
//! `pause.rs`, `idempotency.rs`, `backend_state.rs`, `outbox.rs`,
//! `erase.rs`, `retention.rs`, `fanout.rs`), each applied through a [`Txn`].
//!
//! Between group commits the writer expands one chunk of a large fan-out
//! accepted earlier (`fanout.rs`) in a commit of its own, so a fan-out to
//! thousands of queues never holds the requests that wait meanwhile for
//! more than one chunk.
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

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability};
use tokio::sync::oneshot;

use super::fanout::{self, Fanouts};
use super::idempotency::{KeyRecord, KeyedAppend};
use super::txn::{Effects, Sequences, Txn};
use super::{
    backend_state, dead_letter, erase, idempotency, outbox, pause, queues, retention, shared, subscriptions,
    DeadLetter, Record, Shared, SpoolError,
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
    /// Acks are waiting in `Shared::acks` (sent by the ack that found it
    /// empty): commit them within `ACK_DELAY`.
    Ack,
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

pub(crate) struct SpoolWriter {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
    next: Sequences,
    /// Acks waiting for the next commit, and since when the oldest waits.
    pending_acks: Vec<(usize, u64)>,
    pending_since: Option<Instant>,
    /// Acks whose commit failed, applied with the next commit.
    retry_acks: Vec<(usize, u64)>,
    last_recover: Option<Instant>,
    reopen_failures: u32,
    closed: bool,
    /// Fan-outs accepted whose queue rows are still to be written.
    fanouts: Fanouts,
}

impl SpoolWriter {
    pub fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Command>,
        next_seq: u64,
        next_outbox: u64,
        fanouts: Fanouts,
    ) -> Self {
        shared.fanout_pending.store(fanouts.rows(), Ordering::Relaxed);
        SpoolWriter {
            shared,
            rx,
            next: Sequences {
                seq: next_seq,
                outbox: next_outbox,
            },
            pending_acks: Vec::new(),
            pending_since: None,
            retry_acks: Vec::new(),
            last_recover: None,
            reopen_failures: 0,
            closed: false,
            fanouts,
        }
    }

    pub fn run(mut self) {
        let mut group = Vec::with_capacity(64);
        while !self.closed {
            // With a fan-out to expand, only look for what is waiting.
            let wait = if self.expanding() {
                Duration::ZERO
            } else {
                self.idle_wait()
            };
            match self.rx.recv_timeout(wait) {
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
            if !group.is_empty() || self.maintenance_due() {
                self.commit_group(&mut group, false);
            }
            // Then one chunk of a pending fan-out, in a commit of its own:
            // requests that arrive meanwhile wait for one chunk at most.
            if self.expanding() {
                self.commit_group(&mut group, true);
            }
        }
        if !self.closed {
            // Every handle is gone without a close: still leave the file clean.
            if !self.pending_acks.is_empty() || !self.shared.take_acks().is_empty() {
                self.commit_group(&mut group, false);
            }
            self.close_db();
        }
    }

    /// Acks wait for a commit to ride on; every other command is one.
    fn take(&mut self, cmd: Command, group: &mut Vec<Command>) {
        match cmd {
            Command::Ack => {
                self.pending_since.get_or_insert_with(Instant::now);
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

    /// A pending fan-out to expand, and a spool that takes writes (while
    /// failing, recovery comes first, at its own pace).
    fn expanding(&self) -> bool {
        #[cfg(test)]
        if self.shared.hold_fanouts.load(Ordering::Acquire) {
            return false;
        }
        !self.closed && !self.fanouts.is_empty() && self.shared.healthy.load(Ordering::Acquire)
    }

    fn maintenance_due(&self) -> bool {
        self.pending_since.is_some_and(|t| t.elapsed() >= ACK_DELAY)
            || !self.retry_acks.is_empty()
            || !self.shared.healthy.load(Ordering::Acquire)
    }

    /// Commit `group` (and the acks waiting); with `expand`, also write one
    /// chunk of the oldest pending fan-out.
    fn commit_group(&mut self, group: &mut Vec<Command>, expand: bool) {
        let mut fx = Effects::default();
        let next_before = self.next;
        let closing = group.iter().any(|c| matches!(c, Command::Close { .. }));
        // Acks that failed to commit before, then those that waited.
        let mut acks = std::mem::take(&mut self.retry_acks);
        acks.append(&mut self.pending_acks);
        acks.append(&mut self.shared.take_acks());
        self.pending_since = None;

        // Results per command, decided while applying; replies are sent only
        // after the commit so nobody hears "stored" before it is.
        let mut results: Vec<Result<Applied, SpoolError>> = Vec::with_capacity(group.len());
        let outcome = self.ensure_open().and_then(|db| {
            let mut txn = db.begin_write().map_err(super::io)?;
            // Every commit is durable: a 202 waits for it, and an ack that
            // reached disk is never delivered twice.
            txn.set_durability(Durability::Immediate).map_err(super::io)?;
            let mut t = Txn {
                txn: &txn,
                shared: &self.shared,
                next: &mut self.next,
                fx: &mut fx,
                refs: Default::default(),
                fanout: &mut self.fanouts,
            };
            queues::ack(&mut t, &mut acks)?;
            for cmd in group.iter() {
                match apply(&mut t, cmd) {
                    // An I/O error aborts the whole group: the transaction is
                    // dropped uncommitted, so nothing of it is half-stored.
                    Err(e @ SpoolError::Io { .. }) => return Err(e),
                    other => results.push(other),
                }
            }
            if expand {
                fanout::expand_next(&mut t)?;
            }
            let refs = std::mem::take(&mut t.refs);
            drop(t);
            fx.bytes_delta += shared::settle(&txn, &refs)?;
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
                fx.publish(&self.shared);
                // After a failed commit the index is ahead of the file: it
                // is reloaded with the file (`reopen`), and so is the gauge.
                self.shared.fanout_pending.store(self.fanouts.rows(), Ordering::Relaxed);
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
                self.next = next_before;
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
                self.next.seq = self.next.seq.max(counts.next_seq);
                self.fanouts = counts.fanouts;
                self.shared.fanout_pending.store(self.fanouts.rows(), Ordering::Relaxed);
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
}

/// Apply one command inside the transaction. A refusal (limits) returns an
/// error for that command alone; an I/O error aborts the group.
fn apply(t: &mut Txn, cmd: &Command) -> Result<Applied, SpoolError> {
    let n = match cmd {
        Command::AppendKeyed {
            items,
            changes,
            key,
            record,
            ..
        } => {
            return Ok(match idempotency::append_keyed(t, items, changes, key, record)? {
                Some(existing) => Applied::Existing(existing),
                None => Applied::Count(items.len()),
            })
        }
        Command::Erase { user, .. } => return erase::erase_all(t, user).map(Applied::Erased),
        Command::Append {
            items, changes, relay, ..
        } => {
            let n = queues::append(t, items)?;
            backend_state::fold(t.txn, changes)?;
            if *relay {
                outbox::keep_for_relay(t, changes)?;
            }
            n
        }
        Command::OutboxRemove { through, .. } => outbox::remove_through(t.txn, *through).map(|()| 0)?,
        Command::SetFlag { key, .. } => outbox::set_flag(t.txn, key).map(|()| 0)?,
        // Acks never join a group: `take` holds them for the next commit.
        Command::Ack => 0,
        Command::DeadLetter { slot, seq, record, .. } => dead_letter::bury(t, *slot, *seq, record)?,
        Command::Replay { slot, ids, .. } => {
            let ids = ids.as_deref();
            dead_letter::replay(t, *slot, &|dl| ids.is_none_or(|ids| ids.contains(&dl.id)))?
        }
        Command::ReplayWindow { slot, ids, window, .. } => {
            let ids = ids.as_deref();
            let chosen = |dl: &DeadLetter| ids.is_none_or(|ids| ids.contains(&dl.id)) && window.contains(dl);
            dead_letter::replay(t, *slot, &chosen)?
        }
        Command::Expire { cutoff_ms, .. } => retention::expire_all(t, *cutoff_ms)?,
        Command::SetPaused { slot, paused, .. } => pause::set(t, *slot, *paused)?,
        Command::Attach { slots, .. } => subscriptions::attach(t, slots)?,
        Command::Detach { slot, record_key, .. } => subscriptions::detach(t, *slot, record_key)?,
        Command::PutRecord { record, .. } => subscriptions::put(t, record)?,
        Command::PutState { entries, .. } => backend_state::apply(t.txn, entries).map(|()| 0)?,
        Command::Sync { .. } | Command::Close { .. } => 0,
    };
    Ok(Applied::Count(n))
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
        Command::Ack => {}
    }
}
