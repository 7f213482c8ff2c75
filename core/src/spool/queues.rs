//! The queues: one table per slot (`queue/KIND.NAME`, sequence number →
//! stored record, see `record.rs`), what ingest appends to and what a
//! delivery's ack removes from.
//!
//! Appends are all or nothing per request: the limits (events per queue,
//! bytes in the spool, a slot's overflow policy) are checked for the whole
//! request before anything is written.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::fanout::{self, DEFER_FROM};
use super::names::queue_table;
use super::shared::{self, SHARE_FROM};
use super::txn::Txn;
use super::{io, pause, SlotState, Spool, SpoolError};
use crate::slot::Slot;

/// A slot's queue or dead-letter table, open for reading.
pub(crate) type SlotTableRead = redb::ReadOnlyTable<u64, &'static [u8]>;

/// What is in one backend's tables.
pub(crate) struct SlotCounts {
    pub queued: u64,
    pub dead: u64,
    pub head: u64,
    pub paused: bool,
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
    let counts = SlotCounts {
        queued: q.len().map_err(io)?,
        dead: d.len().map_err(io)?,
        head,
        paused: pause::is_paused(state, name)?,
    };
    Ok((counts, stored, next_seq))
}

/// Store new events, all or nothing: the limits are checked for the whole
/// request first. Events over a full queue whose policy is `dead_letter`
/// (or for a disabled subscription) become dead letters (`overflow.rs`).
pub(crate) fn append(t: &mut Txn, items: &[(usize, Bytes)]) -> Result<usize, SpoolError> {
    let slots = t.shared.slots.load();
    let limits = t.shared.limits;
    // A slot removed since the chain claimed for it (a webhook detached
    // while this request ran): its events are dropped with it.
    let detached = &t.fx.detached;
    let live = |slot: usize| -> Option<&Arc<SlotState>> {
        if detached.contains(&slot) {
            return None;
        }
        slots.get(slot).and_then(Option::as_ref)
    };
    let items: Vec<(&Arc<SlotState>, usize, &Bytes)> = items
        .iter()
        .filter_map(|(s, b)| live(*s).map(|st| (st, *s, b)))
        .collect();
    let mut per_slot: HashMap<usize, u64> = HashMap::new();
    for (_, slot, _) in &items {
        *per_slot.entry(*slot).or_default() += 1;
    }
    // Bytes put in many queues by this request are stored once
    // (`shared.rs`): counted by identity, since one event's claims share
    // one buffer, and the pipeline puts them next to each other. A batch
    // of distinct events (the ingest hot path) costs one pointer compare
    // per item to rule that out.
    let mut copies: HashMap<(usize, usize), usize> = HashMap::new();
    if has_run(&items, SHARE_FROM) {
        for (_, _, b) in &items {
            *copies.entry(identity(b)).or_default() += 1;
        }
        copies.retain(|_, n| *n >= SHARE_FROM);
    }
    let mut bytes = 0u64;
    for (_, _, b) in &items {
        bytes += if !copies.is_empty() && copies.contains_key(&identity(b)) {
            shared::REF_LEN as u64
        } else {
            b.len() as u64
        };
    }
    let shared_bytes: u64 = copies.keys().map(|(_, len)| *len as u64).sum();
    // How many of each slot's events enter its queue; the rest go to
    // its dead letters (`overflow.rs`).
    let mut room: HashMap<usize, u64> = HashMap::new();
    for (slot, add) in &per_slot {
        let Some(state) = live(*slot) else { continue };
        let queued = state.queued.load(Ordering::Relaxed) as i64 + t.fx.queued_delta.get(slot).copied().unwrap_or(0);
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
    let stored = t.shared.stored_bytes.load(Ordering::Relaxed) as i64 + t.fx.bytes_delta;
    if stored as u64 + bytes + shared_bytes > limits.max_bytes {
        return Err(SpoolError::Full(format!(
            "spool holds {stored} bytes (limit {})",
            limits.max_bytes
        )));
    }
    let mut keys: HashMap<(usize, usize), u128> = HashMap::new();
    // A buffer claimed by `DEFER_FROM` queues or more: its rows are written
    // by later commits (`fanout.rs`), except in a queue this request also
    // appends something else to (that row must come after it, now).
    let mut deferred: Vec<((usize, usize), Vec<String>)> = Vec::new();
    let defers = copies.values().any(|n| *n >= DEFER_FROM);
    // Each slot's table opened once per request, not once per item.
    let mut tables = HashMap::new();
    for (state, slot, b) in &items {
        match room.get_mut(slot) {
            Some(0) => {
                let seq = t.take_seq();
                let reason = state.intake.reason();
                let stored = super::overflow::dead_letter_on_arrival(t.txn, &state.name, seq, b, reason)?;
                t.fx.bytes_delta += stored as i64;
                t.fx.dead(*slot, 1);
                *t.fx.overflowed.entry(*slot).or_default() += 1;
                // Its queue reports the dead letters.
                t.fx.notify.push(*slot);
                continue;
            }
            Some(left) => *left -= 1,
            None => {}
        }
        let id = identity(b);
        if defers && per_slot.get(slot) == Some(&1) && copies.get(&id).is_some_and(|n| *n >= DEFER_FROM) {
            let key = *keys.entry(id).or_insert_with(|| shared::key_of(b));
            t.refs.add(key, b);
            t.fx.bytes_delta += shared::REF_LEN as i64;
            t.fx.queued(*slot, 1);
            match deferred.iter_mut().find(|(d, _)| *d == id) {
                Some((_, names)) => names.push(state.name.clone()),
                None => deferred.push((id, vec![state.name.clone()])),
            }
            continue;
        }
        let table = match tables.entry(*slot) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                // Rows of earlier fan-outs still pending for this queue
                // are written first: a queue stays in accept order.
                fanout::flush_queue(t, Some(*slot), &state.name)?;
                e.insert(t.slot_table(&queue_table(&state.name))?)
            }
        };
        let seq = t.take_seq();
        if !copies.is_empty() && copies.contains_key(&id) {
            let key = *keys.entry(id).or_insert_with(|| shared::key_of(b));
            let row = t.refs.add(key, b);
            table.insert(seq, row.as_ref()).map_err(io)?;
            t.fx.bytes_delta += row.len() as i64;
        } else {
            table.insert(seq, b.as_ref()).map_err(io)?;
            t.fx.bytes_delta += b.len() as i64;
        }
        t.fx.appended.push((*slot, seq));
        t.fx.fresh.push((*slot, seq, (*b).clone()));
        t.fx.queued(*slot, 1);
        t.fx.notify.push(*slot);
    }
    drop(tables);
    for (id, names) in deferred {
        let Some(key) = keys.get(&id).copied() else { continue };
        let Some((_, _, b)) = items.iter().find(|(_, _, b)| identity(b) == id) else {
            continue;
        };
        fanout::defer(t, key, (*b).clone(), names)?;
    }
    Ok(items.len())
}

/// Whether `n` or more items in a row carry one buffer.
fn has_run(items: &[(&Arc<SlotState>, usize, &Bytes)], n: usize) -> bool {
    let mut run = 0usize;
    let mut last = None;
    for (_, _, b) in items {
        let id = identity(b);
        run = if last == Some(id) { run + 1 } else { 1 };
        if run >= n {
            return true;
        }
        last = Some(id);
    }
    false
}

/// Which buffer a claim's bytes are (clones of one `Bytes` share it).
fn identity(b: &Bytes) -> (usize, usize) {
    (b.as_ptr() as usize, b.len())
}

/// Acks at most this far apart are removed in one ordered scan of their
/// stretch (`retain_in`: one pass over the leaves) instead of one B-tree
/// descent each; rows in between that are not acked are read and kept.
const SCAN_GAP: u64 = 64;
/// A stretch with fewer acks than this is removed key by key.
const SCAN_FROM: usize = 8;

/// Remove delivered events from their queues: each slot's table is opened
/// once for all of its acks in the group, and close acks are removed in
/// one scan.
pub(crate) fn ack(t: &mut Txn, acks: &mut [(usize, u64)]) -> Result<(), SpoolError> {
    acks.sort_unstable();
    for run in acks.chunk_by(|a, b| a.0 == b.0) {
        let slot = run[0].0;
        // The slot was removed meanwhile: its queue is gone already.
        let Some(name) = t.live_name(slot) else { continue };
        let mut table = t.slot_table(&queue_table(&name))?;
        let (mut removed, mut bytes) = (0i64, 0i64);
        let refs = &mut t.refs;
        let mut forget = |row: &[u8]| {
            removed += 1;
            bytes += row.len() as i64;
            if let Some(key) = shared::referenced(row) {
                refs.release(key);
            }
        };
        for stretch in run.chunk_by(|a, b| b.1 - a.1 <= SCAN_GAP) {
            if stretch.len() < SCAN_FROM {
                for (_, seq) in stretch {
                    if let Some(old) = table.remove(*seq).map_err(io)? {
                        forget(old.value());
                    }
                }
                continue;
            }
            let (first, last) = (stretch[0].1, stretch[stretch.len() - 1].1);
            // Both in key order: walk the acks beside the scan.
            let mut acked = stretch.iter().map(|a| a.1).peekable();
            table
                .retain_in(first..=last, |seq, row| {
                    while acked.next_if(|&a| a < seq).is_some() {}
                    if acked.peek() == Some(&seq) {
                        forget(row);
                        false
                    } else {
                        true
                    }
                })
                .map_err(io)?;
        }
        t.fx.bytes_delta -= bytes;
        t.fx.queued(slot, -removed);
    }
    Ok(())
}

impl Spool {
    /// Read up to `limit` queued events of a backend with sequence numbers
    /// above `after`. Blocking: call from `spawn_blocking`.
    /// A row that references a shared event comes back as the event.
    pub fn read_queue(&self, slot: Slot, after: u64, limit: usize) -> Result<Vec<(u64, Bytes)>, SpoolError> {
        let name = queue_table(&self.table_name(slot)?);
        let db = self.shared.db()?;
        let read = db.begin_read().map_err(io)?;
        let q = read.open_table(TableDefinition::<u64, &[u8]>::new(&name)).map_err(io)?;
        let mut shared_events = None;
        let mut out = Vec::with_capacity(limit.min(1024));
        for row in q.range(after.saturating_add(1)..).map_err(io)?.take(limit) {
            let (k, v) = row.map_err(io)?;
            let bytes = match shared::referenced(v.value()) {
                None => Bytes::copy_from_slice(v.value()),
                Some(key) => {
                    if shared_events.is_none() {
                        shared_events = Some(read.open_table(shared::SHARED_EVENTS).map_err(io)?);
                    }
                    match &shared_events {
                        Some(t) => shared::lookup(t, key)?,
                        None => continue,
                    }
                }
            };
            out.push((k.value(), bytes));
        }
        Ok(out)
    }

    /// One of a slot's tables (`queue_table` or `dead_table`), in a read
    /// transaction of its own, with the database handle to hold while
    /// reading (the writer waits for holders before it reopens). Blocking.
    pub(crate) fn read_table(
        &self,
        slot: Slot,
        table: fn(&str) -> String,
    ) -> Result<(Arc<Database>, SlotTableRead), SpoolError> {
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use bytes::Bytes;

    use super::super::{check, SpoolLimits};
    use super::*;

    /// Close acks go in one scan, scattered ones key by key; either way
    /// exactly the acked rows leave, and the counts and shared events
    /// follow (what `spool check` verifies).
    #[tokio::test]
    async fn acks_in_stretches_and_scattered_remove_exactly_what_was_acked() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..SHARE_FROM).map(|i| format!("http.s{i}")).collect();
        let spool = Spool::open(dir.path(), &names, SpoolLimits::default()).unwrap();
        let a = Slot::new(0);
        let event = |id: &str| {
            Bytes::from(format!(
                r#"{{"id":"{id}","event":"unacked","timestamp":"2026-01-01T00:00:00.000Z","to":"alice@x","body":"hi","metadata":{{}}}}"#
            ))
        };
        let rows: Vec<(Slot, Bytes)> = (0..300).map(|i| (a, event(&format!("E{i}")))).collect();
        spool.append(rows).await.unwrap();
        // One event shared by every slot: slot 0's row references it.
        let shared = event("SHARED");
        spool
            .append((0..SHARE_FROM).map(|i| (Slot::new(i as u32), shared.clone())).collect())
            .await
            .unwrap();
        let all: Vec<u64> = spool.read_queue(a, 0, 1000).unwrap().iter().map(|r| r.0).collect();
        assert_eq!(all.len(), 301);

        // A dense stretch with holes (a scan), the shared row inside a
        // second stretch, two scattered acks (one by one), a repeat.
        let mut acked: Vec<u64> = all[..120].iter().copied().filter(|s| s % 7 != 0).collect();
        acked.extend(&all[280..]);
        // 190 and 200 are more than SCAN_GAP from the stretches around
        // them: removed key by key.
        acked.extend([all[190], all[200], all[10]]);
        spool.ack_many(a, acked.clone());
        spool.sync().await.unwrap();

        acked.sort_unstable();
        acked.dedup();
        let left: Vec<u64> = spool.read_queue(a, 0, 1000).unwrap().iter().map(|r| r.0).collect();
        let expected: Vec<u64> = all
            .iter()
            .copied()
            .filter(|s| acked.binary_search(s).is_err())
            .collect();
        assert_eq!(left, expected);
        assert_eq!(spool.slot(a).queued.load(Ordering::Relaxed), expected.len() as u64);
        let report = check::check_open(&spool).unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
        assert_eq!(report.shared_events, 1, "still referenced by the other slots");
        spool.close().await.unwrap();
    }
}
