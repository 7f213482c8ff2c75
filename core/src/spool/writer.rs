//! The spool writer: the one thread that writes, committing everything that
//! queued up meanwhile in one transaction.
//!
//! Group commit is what makes "202 only after fsync" affordable: while one
//! commit's fsync runs, new requests pile up in the channel, and the next
//! commit takes them all.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Durability, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::{dead_table, queue_table, DeadLetter, Shared, SpoolError, STATE};

type Reply<T> = oneshot::Sender<Result<T, SpoolError>>;

pub(crate) enum Command {
    Append { items: Vec<(usize, Bytes)>, reply: Reply<()> },
    Ack { slot: usize, seq: u64 },
    DeadLetter { slot: usize, seq: u64, record: Vec<u8>, reply: Reply<()> },
    Replay { slot: usize, ids: Option<Vec<String>>, reply: Reply<usize> },
    SetPaused { slot: usize, paused: bool, reply: Reply<()> },
    /// Force a durable commit.
    Sync { reply: Reply<()> },
}

/// Most commands taken into one transaction.
const MAX_GROUP: usize = 4096;
/// Acks alone are committed without fsync (losing them costs a duplicate,
/// not an event), but made durable at least this often so the file's free
/// space can be reused.
const ACK_SYNC_EVERY: Duration = Duration::from_millis(500);

/// What one command changed, applied to the shared counters only after the
/// transaction commits.
#[derive(Default)]
struct Effects {
    appended: Vec<(usize, u64)>,
    queued_delta: Vec<i64>,
    dead_delta: Vec<i64>,
    bytes_delta: i64,
    notify: Vec<usize>,
    paused: Vec<(usize, bool)>,
}

pub(crate) struct SpoolWriter {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Command>,
    next_seq: u64,
    last_sync: Instant,
}

impl SpoolWriter {
    pub fn new(shared: Arc<Shared>, rx: mpsc::UnboundedReceiver<Command>, next_seq: u64) -> Self {
        SpoolWriter { shared, rx, next_seq, last_sync: Instant::now() }
    }

    pub fn run(mut self) {
        let mut group = Vec::with_capacity(64);
        while let Some(first) = self.rx.blocking_recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match self.rx.try_recv() {
                    Ok(cmd) => group.push(cmd),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group);
        }
    }

    fn commit_group(&mut self, group: &mut Vec<Command>) {
        let n = self.shared.slots.len();
        let mut fx = Effects { queued_delta: vec![0; n], dead_delta: vec![0; n], ..Default::default() };
        let seq_before = self.next_seq;
        let needs_sync = group.iter().any(|c| !matches!(c, Command::Ack { .. }))
            || self.last_sync.elapsed() >= ACK_SYNC_EVERY;

        // Results per command, decided while applying; replies are sent only
        // after the commit so nobody hears "stored" before it is.
        let mut results: Vec<Result<usize, SpoolError>> = Vec::with_capacity(group.len());
        let outcome = (|| -> Result<(), SpoolError> {
            let mut txn = self.shared.db.begin_write().map_err(super::io)?;
            txn.set_durability(if needs_sync { Durability::Immediate } else { Durability::None })
                .map_err(super::io)?;
            for cmd in group.iter() {
                match self.apply(&txn, cmd, &mut fx) {
                    // An I/O error aborts the whole group: the transaction is
                    // dropped uncommitted, so nothing of it is half-stored.
                    Err(e @ SpoolError::Io(_)) => return Err(e),
                    other => results.push(other),
                }
            }
            txn.commit().map_err(super::io)
        })();

        match outcome {
            Ok(()) => {
                if needs_sync {
                    self.last_sync = Instant::now();
                }
                self.shared.healthy.store(true, Ordering::Relaxed);
                self.publish(&fx);
                for (cmd, res) in group.drain(..).zip(results) {
                    reply(cmd, res);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "spool commit failed");
                self.shared.healthy.store(false, Ordering::Relaxed);
                self.next_seq = seq_before;
                for cmd in group.drain(..) {
                    reply(cmd, Err(e.clone()));
                }
            }
        }
    }

    /// Apply one command inside the transaction. A refusal (limits) returns
    /// an error for that command alone; an I/O error aborts the group.
    fn apply(&mut self, txn: &WriteTransaction, cmd: &Command, fx: &mut Effects) -> Result<usize, SpoolError> {
        let slots = &self.shared.slots;
        match cmd {
            Command::Append { items, .. } => {
                // Limits first, for the whole request: all or nothing.
                let limits = self.shared.limits;
                let mut per_slot = vec![0u64; slots.len()];
                let mut bytes = 0u64;
                for (slot, b) in items {
                    per_slot[*slot] += 1;
                    bytes += b.len() as u64;
                }
                for (slot, add) in per_slot.iter().enumerate() {
                    let queued = slots[slot].queued.load(Ordering::Relaxed) as i64 + fx.queued_delta[slot];
                    if *add > 0 && queued as u64 + add > limits.max_queue {
                        return Err(SpoolError::Full(format!(
                            "queue of backend \"{}\" holds {queued} events (limit {})",
                            slots[slot].name, limits.max_queue
                        )));
                    }
                }
                let stored = self.shared.stored_bytes.load(Ordering::Relaxed) as i64 + fx.bytes_delta;
                if stored as u64 + bytes > limits.max_bytes {
                    return Err(SpoolError::Full(format!(
                        "spool holds {stored} bytes (limit {})",
                        limits.max_bytes
                    )));
                }
                for (slot, b) in items {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    let mut t = txn
                        .open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(&slots[*slot].name)))
                        .map_err(super::io)?;
                    t.insert(seq, b.as_ref()).map_err(super::io)?;
                    fx.appended.push((*slot, seq));
                    fx.queued_delta[*slot] += 1;
                    fx.notify.push(*slot);
                }
                fx.bytes_delta += bytes as i64;
                Ok(items.len())
            }
            Command::Ack { slot, seq } => {
                let mut t = txn
                    .open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(&slots[*slot].name)))
                    .map_err(super::io)?;
                if let Some(old) = t.remove(seq).map_err(super::io)? {
                    fx.bytes_delta -= old.value().len() as i64;
                    fx.queued_delta[*slot] -= 1;
                }
                Ok(0)
            }
            Command::DeadLetter { slot, seq, record, .. } => {
                let name = &slots[*slot].name;
                let mut q = txn.open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(name))).map_err(super::io)?;
                if let Some(old) = q.remove(seq).map_err(super::io)? {
                    fx.bytes_delta -= old.value().len() as i64;
                    fx.queued_delta[*slot] -= 1;
                }
                let mut d = txn.open_table(TableDefinition::<u64, &[u8]>::new(&dead_table(name))).map_err(super::io)?;
                if d.insert(seq, record.as_slice()).map_err(super::io)?.is_none() {
                    fx.dead_delta[*slot] += 1;
                }
                fx.bytes_delta += record.len() as i64;
                Ok(1)
            }
            Command::Replay { slot, ids, .. } => {
                let name = &slots[*slot].name;
                let mut d = txn.open_table(TableDefinition::<u64, &[u8]>::new(&dead_table(name))).map_err(super::io)?;
                let mut q = txn.open_table(TableDefinition::<u64, &[u8]>::new(&queue_table(name))).map_err(super::io)?;
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
                    if ids.as_ref().is_none_or(|ids| ids.contains(&dl.id)) {
                        chosen.push((k.value(), v.value().len(), dl));
                    }
                }
                for (key, len, dl) in &chosen {
                    d.remove(key).map_err(super::io)?;
                    let event = serde_json::to_vec(&dl.event).map_err(super::io)?;
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    q.insert(seq, event.as_slice()).map_err(super::io)?;
                    fx.bytes_delta += event.len() as i64 - *len as i64;
                    fx.dead_delta[*slot] -= 1;
                    fx.queued_delta[*slot] += 1;
                    fx.appended.push((*slot, seq));
                }
                fx.notify.push(*slot);
                Ok(chosen.len())
            }
            Command::Sync { .. } => Ok(0),
            Command::SetPaused { slot, paused, .. } => {
                let mut t = txn.open_table(STATE).map_err(super::io)?;
                t.insert(format!("paused/{}", slots[*slot].name).as_str(), u64::from(*paused))
                    .map_err(super::io)?;
                fx.paused.push((*slot, *paused));
                fx.notify.push(*slot);
                Ok(0)
            }
        }
    }

    /// Make committed changes visible to the delivery queues.
    fn publish(&self, fx: &Effects) {
        let slots = &self.shared.slots;
        for (slot, d) in fx.queued_delta.iter().enumerate() {
            add(&slots[slot].queued, *d);
        }
        for (slot, d) in fx.dead_delta.iter().enumerate() {
            add(&slots[slot].dead, *d);
        }
        add(&self.shared.stored_bytes, fx.bytes_delta);
        for (slot, paused) in &fx.paused {
            slots[*slot].paused.store(*paused, Ordering::Release);
        }
        for (slot, seq) in &fx.appended {
            slots[*slot].head.fetch_max(*seq, Ordering::Release);
        }
        let mut notified = vec![false; slots.len()];
        for slot in &fx.notify {
            if !std::mem::replace(&mut notified[*slot], true) {
                slots[*slot].changed.notify_one();
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

fn reply(cmd: Command, res: Result<usize, SpoolError>) {
    match cmd {
        Command::Append { reply, .. }
        | Command::DeadLetter { reply, .. }
        | Command::SetPaused { reply, .. }
        | Command::Sync { reply } => {
            let _ = reply.send(res.map(|_| ()));
        }
        Command::Replay { reply, .. } => {
            let _ = reply.send(res);
        }
        Command::Ack { .. } => {}
    }
}
