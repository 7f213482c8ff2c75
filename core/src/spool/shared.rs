//! Events stored once for many queues: when one request puts the same
//! event in many queues (one event wanted by thousands of webhook
//! subscriptions), its bytes go once into `shared_events` and each queue
//! row is a small reference to them; `shared_refs` counts the queue rows
//! that point at each, and the last one removed (ack, dead letter, erase,
//! detach) deletes the bytes, in the same transaction.
//!
//! A shared event is keyed by a hash of its bytes (the first 128 bits of
//! SHA-256), so later requests with the same bytes reference the same
//! copy. Smaller fan-outs (fewer than [`SHARE_FROM`] rows of one request)
//! stay inline: the common path of configured backends is unchanged.
//!
//! Reference counts change through the group's `Txn` and are written once per
//! group (`settle`), so a group of many acks touches each shared row once.
//! Every change is in the group's transaction: after a crash the counts
//! match the rows, which `spool check` verifies.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use sha2::{Digest, Sha256};

use super::{io, SpoolError};

pub(crate) const SHARED_EVENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("shared_events");
pub(crate) const SHARED_REFS: TableDefinition<u128, u64> = TableDefinition::new("shared_refs");

/// Fewest queue rows of one request with the same bytes that are stored as
/// references to one copy.
pub(crate) const SHARE_FROM: usize = 16;

/// Fewest queue rows of one request referencing one shared event that are
/// not written in the request's transaction but recorded as a pending
/// fan-out and written by later commits (`fanout.rs`): below this, the
/// rows cost the commit less than the bookkeeping would.
pub(crate) const DEFER_FROM: usize = 256;

/// The first byte of a reference row (a targeted record starts with 0, JSON
/// with neither).
const MARK: u8 = 1;
pub(crate) const REF_LEN: usize = 17;

/// The key of a shared event's bytes.
pub(crate) fn key_of(bytes: &[u8]) -> u128 {
    let digest = Sha256::digest(bytes);
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(key)
}

/// The queue row that references shared event `key`.
pub(crate) fn reference(key: u128) -> Bytes {
    let mut row = BytesMut::with_capacity(REF_LEN);
    row.put_u8(MARK);
    row.put_u128(key);
    row.freeze()
}

/// The shared event a queue row references, if it is a reference.
pub(crate) fn referenced(row: &[u8]) -> Option<u128> {
    if row.len() != REF_LEN || row[0] != MARK {
        return None;
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&row[1..]);
    Some(u128::from_be_bytes(key))
}

/// Reference counts changed by one group, written by [`settle`].
#[derive(Default)]
pub(crate) struct Pending {
    /// Key → (change in references, the bytes when this group stores them).
    delta: HashMap<u128, (i64, Option<Bytes>)>,
}

impl Pending {
    /// One more queue row references `bytes`; the row.
    pub fn add(&mut self, key: u128, bytes: &Bytes) -> Bytes {
        let entry = self.delta.entry(key).or_insert((0, None));
        entry.0 += 1;
        entry.1.get_or_insert_with(|| bytes.clone());
        reference(key)
    }

    /// A queue row referencing `key` was removed.
    pub fn release(&mut self, key: u128) {
        self.delta.entry(key).or_insert((0, None)).0 -= 1;
    }

    /// Bytes added in this group, not stored yet.
    fn pending(&self, key: u128) -> Option<Bytes> {
        self.delta.get(&key).and_then(|(_, b)| b.clone())
    }
}

/// A queue row as the event's record: references resolved (inside the
/// writer's transaction, including what this group shares).
pub(crate) fn resolve_in(txn: &WriteTransaction, refs: &Pending, row: &[u8]) -> Result<Bytes, SpoolError> {
    let Some(key) = referenced(row) else {
        return Ok(Bytes::copy_from_slice(row));
    };
    if let Some(b) = refs.pending(key) {
        return Ok(b);
    }
    let table = txn.open_table(SHARED_EVENTS).map_err(io)?;
    lookup(&table, key)
}

/// A referenced event's bytes from an open `shared_events` table.
pub(crate) fn lookup(table: &impl ReadableTable<u128, &'static [u8]>, key: u128) -> Result<Bytes, SpoolError> {
    match table.get(key).map_err(io)? {
        Some(v) => Ok(Bytes::copy_from_slice(v.value())),
        None => Err(SpoolError::io(format!("shared event {key:032x} is missing"))),
    }
}

/// Write the group's reference counts: store bytes referenced for the
/// first time, delete those no row references any more. Returns the change
/// in stored bytes.
pub(crate) fn settle(txn: &WriteTransaction, pending: &Pending) -> Result<i64, SpoolError> {
    if pending.delta.is_empty() {
        return Ok(0);
    }
    let mut refs = txn.open_table(SHARED_REFS).map_err(io)?;
    let mut events = txn.open_table(SHARED_EVENTS).map_err(io)?;
    let mut bytes = 0i64;
    for (key, (delta, new)) in &pending.delta {
        if *delta == 0 {
            continue;
        }
        let old = refs.get(*key).map_err(io)?.map_or(0, |v| v.value());
        let now = (old as i64 + delta).max(0) as u64;
        if now == 0 {
            refs.remove(*key).map_err(io)?;
            if let Some(gone) = events.remove(*key).map_err(io)? {
                bytes -= gone.value().len() as i64;
            }
            continue;
        }
        if old == 0 {
            let Some(new) = new else {
                return Err(SpoolError::io(format!("shared event {key:032x} is missing")));
            };
            events.insert(*key, new.as_ref()).map_err(io)?;
            bytes += new.len() as i64;
        }
        refs.insert(*key, now).map_err(io)?;
    }
    Ok(bytes)
}

/// Bytes held by shared events (for the spool's byte count at open).
pub(crate) fn stored_bytes(read: &redb::ReadTransaction) -> Result<u64, SpoolError> {
    let t = read.open_table(SHARED_EVENTS).map_err(io)?;
    let mut total = 0u64;
    for row in t.iter().map_err(io)? {
        let (_, v) = row.map_err(io)?;
        total += v.value().len() as u64;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::slot::Slot;
    use crate::spool::{check, DeadLetter, LastError, Record, Spool, SpoolLimits};

    const N: usize = 40;

    fn slot(i: usize) -> Slot {
        Slot::new(i as u32)
    }

    fn names() -> Vec<String> {
        (0..N).map(|i| format!("webhook.w{i}")).collect()
    }

    fn event() -> Bytes {
        Bytes::from(format!(
            r#"{{"id":"E1","event":"unacked","timestamp":"2026-01-01T00:00:00.000Z","to":"alice@x","body":"{}","metadata":{{}}}}"#,
            "b".repeat(1000)
        ))
    }

    /// One buffer claimed by every slot, as the pipeline hands a fan-out.
    fn fan_out(event: &Bytes) -> Vec<(Slot, Bytes)> {
        (0..N).map(|i| (slot(i), event.clone())).collect()
    }

    fn queued(spool: &Spool) -> u64 {
        spool.slots().iter().map(|s| s.queued.load(Ordering::Relaxed)).sum()
    }

    fn dead(id: &str) -> DeadLetter {
        let last_error = LastError {
            status: Some(500),
            message: "x".into(),
        };
        DeadLetter::new(
            id.into(),
            "w0".into(),
            serde_json::from_slice(&event()).unwrap(),
            3,
            last_error,
            time::OffsetDateTime::now_utc(),
        )
    }

    /// Stored once, read back whole by every queue, kept while any row
    /// references it and deleted with the last ack; a few claims stay inline.
    #[tokio::test]
    async fn a_fan_out_is_stored_once_and_freed_by_the_last_ack() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), &names(), SpoolLimits::default()).unwrap();
        let ev = event();
        spool.append(fan_out(&ev)).await.unwrap();
        assert_eq!(spool.stored_bytes(), (ev.len() + N * REF_LEN) as u64);
        for i in 0..N {
            let rows = spool.read_queue(slot(i), 0, 10).unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].1, ev, "slot {i} reads the event");
        }
        let report = check::check_open(&spool).unwrap();
        assert_eq!((report.shared_events, report.problems.len()), (1, 0), "{report:?}");
        let seqs: Vec<u64> = (0..N).map(|i| spool.read_queue(slot(i), 0, 1).unwrap()[0].0).collect();
        for (i, seq) in seqs.iter().enumerate().take(N - 1) {
            spool.ack(slot(i), *seq);
        }
        spool.sync().await.unwrap();
        assert_eq!(
            spool.stored_bytes(),
            (ev.len() + REF_LEN) as u64,
            "kept for the last row"
        );
        assert_eq!(spool.read_queue(slot(N - 1), 0, 1).unwrap()[0].1, ev);
        spool.ack(slot(N - 1), seqs[N - 1]);
        spool.sync().await.unwrap();
        assert_eq!(spool.stored_bytes(), 0, "the last ack deletes the shared bytes");
        assert_eq!(check::check_open(&spool).unwrap().shared_events, 0);

        // Below `SHARE_FROM` claims of one buffer: inline rows.
        let few: Vec<(Slot, Bytes)> = (0..SHARE_FROM - 1).map(|i| (slot(i), ev.clone())).collect();
        spool.append(few).await.unwrap();
        assert_eq!(spool.stored_bytes(), ((SHARE_FROM - 1) * ev.len()) as u64);
        assert_eq!(check::check_open(&spool).unwrap().shared_events, 0);
        spool.close().await.unwrap();
    }

    /// Dead-lettering, erasing and detaching drop references like acks; a
    /// replay brings the event back inline; a reopen counts what is there.
    #[tokio::test]
    async fn dead_letters_erasure_detach_and_reopen_keep_the_count_right() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), &names(), SpoolLimits::default()).unwrap();
        let ev = event();
        spool.append(fan_out(&ev)).await.unwrap();
        let seq = |i: usize| spool.read_queue(slot(i), 0, 1).unwrap()[0].0;
        let s0 = seq(0);
        spool.dead_letter(slot(0), s0, dead("E1")).await.unwrap();
        assert_eq!(spool.slot(slot(0)).queued.load(Ordering::Relaxed), 0);
        assert_eq!(spool.replay(slot(0), None).await.unwrap(), 1);
        let replayed = spool.read_queue(slot(0), 0, 1).unwrap();
        assert_eq!(referenced(&replayed[0].1), None, "a replayed event is stored inline");
        assert_eq!(queued(&spool), N as u64);
        spool.close().await.unwrap();

        // Reopened: the same bytes counted (shared once, references, inline).
        let spool = Spool::open(dir.path(), &names(), SpoolLimits::default()).unwrap();
        let stored = spool.stored_bytes();
        assert!(stored < (3 * ev.len() + N * REF_LEN) as u64, "{stored}");
        let report = check::check_open(&spool).unwrap();
        assert_eq!((report.shared_events, report.problems.len()), (1, 0), "{report:?}");

        // A runtime slot's references go with its tables.
        let w = slot(N);
        let record = Record {
            key: "w".into(),
            value: b"{}".to_vec(),
        };
        spool
            .attach_slots(vec![(w, "webhook.extra".into(), Some(record))])
            .await
            .unwrap();
        let mut with_w = fan_out(&ev);
        with_w.push((w, ev.clone()));
        spool.append(with_w).await.unwrap();
        assert_eq!(spool.detach_slot(w, "w".into()).await.unwrap(), 1);
        assert!(check::check_open(&spool).unwrap().problems.is_empty());

        // Erasing the user drops every row, shared or not, and the bytes.
        let erased = spool.erase_user("alice@x").await.unwrap();
        assert_eq!(erased.queued, 2 * N as u64);
        assert_eq!(queued(&spool), 0);
        assert_eq!(spool.stored_bytes(), 0);
        let report = check::check_open(&spool).unwrap();
        assert_eq!((report.shared_events, report.problems.len()), (0, 0), "{report:?}");
        spool.close().await.unwrap();
    }

    /// Only a reference row reads as one: JSON and targeted records never.
    #[test]
    fn references_are_recognised_only_in_their_layout() {
        let key = key_of(b"{}");
        assert_eq!(referenced(&reference(key)), Some(key));
        assert_eq!(referenced(b"{\"id\":\"x\"}"), None);
        assert_eq!(referenced(&crate::spool::record::encode(Some("dev"), b"{}")), None);
    }
}
