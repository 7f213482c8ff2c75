//! One group's write transaction as the table families see it: the redb
//! transaction, the spool's shared state, the writer's sequence counters,
//! and the [`Effects`] the commit publishes once it is durable.
//!
//! Each table family (`queues.rs`, `dead_letter.rs`, `subscriptions.rs`,
//! ...) applies its commands through a [`Txn`]; the writer owns the
//! transaction's life (begin, commit, replies) and calls
//! [`Effects::publish`] only after the commit, so no queue, counter or
//! caller sees anything that is not stored.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use redb::{Table, TableDefinition, WriteTransaction};

use super::fanout_index::Fanouts;
use super::shared::Pending;
use super::{Shared, SlotState, SlotTable, SpoolError};

/// The writer's counters that a transaction advances and a failed commit
/// rolls back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sequences {
    /// The next queue / dead-letter key (one sequence across all slots).
    pub seq: u64,
    /// The next outbox row's number.
    pub outbox: u64,
}

/// What one group's commands do inside its transaction.
pub(crate) struct Txn<'a> {
    pub txn: &'a WriteTransaction,
    pub shared: &'a Shared,
    pub next: &'a mut Sequences,
    pub fx: &'a mut Effects,
    /// Shared events' reference counts changed by the group (`shared.rs`),
    /// written once before the commit.
    pub refs: Pending,
    /// Fan-outs whose queue rows are still to be written (`fanout.rs`).
    pub fanout: &'a mut Fanouts,
}

impl<'a> Txn<'a> {
    /// Take the next sequence number.
    pub fn take_seq(&mut self) -> u64 {
        let seq = self.next.seq;
        self.next.seq += 1;
        seq
    }

    /// The tables' name of a slot that is live in this transaction: not
    /// retired, and not removed by an earlier command of the group (opening
    /// a dropped table would create it again).
    pub fn live_name(&self, slot: usize) -> Option<String> {
        if self.fx.detached.contains(&slot) {
            return None;
        }
        self.shared.slot(slot).map(|s| s.name.clone())
    }

    /// `(index, KIND.NAME)` of every slot live in this transaction.
    pub fn live_names(&self) -> Vec<(usize, String)> {
        let mut live = self.shared.live_names();
        live.retain(|(slot, _)| !self.fx.detached.contains(slot));
        live
    }

    /// One of a slot's tables (`queue_table(name)` or `dead_table(name)`).
    pub fn slot_table(&self, table: &str) -> Result<Table<'a, u64, &'static [u8]>, SpoolError> {
        self.txn
            .open_table(TableDefinition::<u64, &[u8]>::new(table))
            .map_err(super::io)
    }
}

/// What one group changed, applied to the shared counters only after the
/// transaction commits. Keyed by slot index: with thousands of slots a
/// commit touches few of them.
#[derive(Default)]
pub(crate) struct Effects {
    pub appended: Vec<(usize, u64)>,
    /// Rows appended, for the queues' fresh buffers.
    pub fresh: Vec<(usize, u64, Bytes)>,
    /// Rows put in a queue by a replay (not in the fresh buffers).
    pub replayed: Vec<(usize, u64)>,
    pub queued_delta: HashMap<usize, i64>,
    pub dead_delta: HashMap<usize, i64>,
    pub bytes_delta: i64,
    pub notify: Vec<usize>,
    pub paused: Vec<(usize, bool)>,
    /// Slots added in this transaction, published after it commits.
    pub attached: Vec<(usize, Arc<SlotState>)>,
    /// Slots removed in this transaction: later commands skip them.
    pub detached: HashSet<usize>,
    /// Rows were added to the outbox.
    pub outbox_added: bool,
    /// Events dead-lettered on arrival (`overflow.rs`), per slot.
    pub overflowed: HashMap<usize, u64>,
    /// Dead letters deleted by retention, per slot.
    pub expired: HashMap<usize, u64>,
}

impl Effects {
    pub fn queued(&mut self, slot: usize, d: i64) {
        *self.queued_delta.entry(slot).or_default() += d;
    }

    pub fn dead(&mut self, slot: usize, d: i64) {
        *self.dead_delta.entry(slot).or_default() += d;
    }

    /// Make committed changes visible to the delivery queues.
    pub fn publish(&self, shared: &Shared) {
        if !self.attached.is_empty() || !self.detached.is_empty() {
            let mut table: SlotTable = (**shared.slots.load()).clone();
            for (slot, state) in &self.attached {
                if table.len() <= *slot {
                    table.resize(*slot + 1, None);
                }
                table[*slot] = Some(state.clone());
            }
            for slot in &self.detached {
                if let Some(s) = table.get_mut(*slot) {
                    *s = None;
                }
            }
            shared.slots.store(Arc::new(table));
        }
        let slots = shared.slots.load();
        let live = |slot: usize| slots.get(slot).and_then(Option::as_ref);
        for (slot, d) in &self.queued_delta {
            if let Some(s) = live(*slot) {
                add(&s.queued, *d);
            }
        }
        for (slot, d) in &self.dead_delta {
            if let Some(s) = live(*slot) {
                add(&s.dead, *d);
            }
        }
        add(&shared.stored_bytes, self.bytes_delta);
        for (slot, n) in &self.overflowed {
            if let Some(s) = live(*slot) {
                s.intake.overflow_dead_lettered.fetch_add(*n, Ordering::Relaxed);
            }
        }
        for (slot, n) in &self.expired {
            if let Some(s) = live(*slot) {
                s.intake.expired.fetch_add(*n, Ordering::Relaxed);
            }
        }
        for (slot, paused) in &self.paused {
            if let Some(s) = live(*slot) {
                s.paused.store(*paused, Ordering::Release);
            }
        }
        // Fresh rows first: a queue that sees the new `head` must find
        // them in its buffer (or find the buffer marked incomplete).
        for (slot, seq) in &self.replayed {
            if let Some(s) = live(*slot) {
                s.fresh.lock().unwrap_or_else(PoisonError::into_inner).gap(*seq);
            }
        }
        for (slot, seq, row) in &self.fresh {
            if let Some(s) = live(*slot) {
                s.fresh
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(*seq, row.clone());
            }
        }
        for (slot, seq) in &self.appended {
            if let Some(s) = live(*slot) {
                s.head.fetch_max(*seq, Ordering::Release);
            }
        }
        let mut notified = HashSet::new();
        for slot in &self.notify {
            if notified.insert(*slot) {
                if let Some(s) = live(*slot) {
                    s.changed.notify_one();
                }
            }
        }
    }
}

fn add(counter: &AtomicU64, delta: i64) {
    if delta >= 0 {
        counter.fetch_add(delta as u64, Ordering::Relaxed);
    } else {
        counter.fetch_sub((-delta) as u64, Ordering::Relaxed);
    }
}
