//! Large fan-outs written to their queues after the request's commit.
//!
//! One event wanted by thousands of queues (an `unacknowledged_message`
//! for thousands of webhook subscriptions) is stored once (`shared.rs`),
//! but each queue is a table of its own, and a commit writes a page per
//! table: written in the request's transaction, 5,000 reference rows make
//! that commit take about a second, and every other request's 202 waits
//! behind it (the writer commits one transaction at a time).
//!
//! So when one request puts the same shared event into at least
//! [`DEFER_FROM`] queues, its transaction writes the shared event (counted
//! for every queue, as before) and a durable *pending fan-out*: the names
//! (`KIND.NAME`, slot indexes are per process) of the queues that still
//! need a reference row, in chunks of at most [`CHUNK`] names (table
//! `fanout_pending`, keyed by (fan-out id, chunk number)). Everything is in
//! the request's own transaction, after the same limit checks as any
//! append, so a refused request or a repeated idempotency key leaves
//! nothing, and the in-memory `queued` counters count the pending rows
//! from the start (limits, `/v1/backends` and metrics do not change).
//!
//! The writer then expands one chunk per commit ([`expand_next`]), each
//! after the requests that waited meanwhile were committed: the chunk's
//! rows are written and its record deleted in one transaction. Sequence
//! numbers are taken when a row is written, and a queue's pending rows are
//! written before anything else is appended to it ([`flush_queue`], in the
//! same transaction), so every queue stays in accept order. Detaching a
//! queue drops its pending rows with it ([`drop_queue`]); an erasure
//! expands everything first ([`expand_all`]) so that it sees every row.
//!
//! Rows are written by table name whether or not the queue's slot is
//! attached yet: after a restart, expansion resumes before the webhook
//! subscriptions are attached again, and a queue's table holds its rows
//! whether its slot comes back or not (as the rest of its queue does).
//! What is pending for a queue is counted into its `queued` count and the
//! spool's bytes when its slot is counted (`scan`, `attach`).
//!
//! Memory: the in-memory index holds one copy of each pending event and
//! the names still to write, so it grows with what is queued and shrinks
//! as it is written.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

pub(crate) use super::fanout_index::{decode, Fanouts, FANOUT_PENDING};
use super::fanout_index::{encode, Fanout};
use super::names::queue_table;
use super::shared::{self, REF_LEN};
use super::txn::Txn;
use super::{io, SpoolError};

/// Most queue names in one chunk record, and so the most queue tables an
/// expansion commit writes: at about 0.2 ms per table, a chunk holds a
/// waiting request for some 50 ms, not a second.
pub(crate) const CHUNK: usize = 256;

pub(crate) use super::shared::DEFER_FROM;

/// Record a fan-out of shared event `key` (`bytes`) to the queues `names`,
/// to be written later: in the request's transaction, after its limit
/// checks. The reference counts and `queued` counters are the caller's.
pub(crate) fn defer(t: &mut Txn, key: u128, bytes: Bytes, names: Vec<String>) -> Result<(), SpoolError> {
    if names.is_empty() {
        return Ok(());
    }
    let id = t.fanout.next_id.max(1);
    t.fanout.next_id = id + 1;
    let mut table = t.txn.open_table(FANOUT_PENDING).map_err(io)?;
    let mut chunks = BTreeMap::new();
    for (n, part) in names.chunks(CHUNK).enumerate() {
        let chunk = n as u32;
        table.insert((id, chunk), encode(key, part).as_ref()).map_err(io)?;
        for name in part {
            t.fanout.by_queue.entry(name.clone()).or_default().push((id, chunk));
        }
        chunks.insert(chunk, part.to_vec());
    }
    t.fanout.rows += names.len() as u64;
    t.fanout.list.insert(id, Fanout { key, bytes, chunks });
    Ok(())
}

/// Write queue `name`'s pending rows (in fan-out order) now: before
/// anything else is appended to it in this transaction, so its rows stay
/// in accept order. `slot` is its live slot, told of the new rows.
/// Call it before the queue's table is opened in the transaction.
pub(crate) fn flush_queue(t: &mut Txn, slot: Option<usize>, name: &str) -> Result<(), SpoolError> {
    if t.fanout.by_queue.is_empty() {
        return Ok(());
    }
    let rows = t.fanout.take_queue(t.txn, name)?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut table = t.slot_table(&queue_table(name))?;
    for (key, bytes) in rows {
        write_row(t, &mut table, slot, key, &bytes)?;
    }
    Ok(())
}

/// Drop queue `name`'s pending rows (its slot is being detached): their
/// references are released like the rows of its table. How many.
pub(crate) fn drop_queue(t: &mut Txn, name: &str) -> Result<u64, SpoolError> {
    if t.fanout.by_queue.is_empty() {
        return Ok(0);
    }
    let rows = t.fanout.take_queue(t.txn, name)?;
    for (key, _) in &rows {
        t.refs.release(*key);
        t.fx.bytes_delta -= REF_LEN as i64;
    }
    Ok(rows.len() as u64)
}

/// Expand the oldest pending chunk: write its rows and delete its record.
/// How many rows were written.
pub(crate) fn expand_next(t: &mut Txn) -> Result<usize, SpoolError> {
    let Some(mut entry) = t.fanout.list.first_entry() else {
        return Ok(0);
    };
    let id = *entry.key();
    let f = entry.get_mut();
    let (key, bytes) = (f.key, f.bytes.clone());
    let Some((chunk, names)) = f.chunks.pop_first() else {
        entry.remove();
        return Ok(0);
    };
    if f.chunks.is_empty() {
        entry.remove();
    }
    for name in &names {
        if let Some(pending) = t.fanout.by_queue.get_mut(name) {
            pending.retain(|e| *e != (id, chunk));
            if pending.is_empty() {
                t.fanout.by_queue.remove(name);
            }
        }
    }
    t.fanout.rows -= names.len() as u64;
    t.txn
        .open_table(FANOUT_PENDING)
        .map_err(io)?
        .remove((id, chunk))
        .map_err(io)?;
    // Rows go to a queue by its name; live slots are told of them.
    let live: HashMap<String, usize> = t.live_names().into_iter().map(|(i, n)| (n, i)).collect();
    for name in &names {
        let mut table = t.slot_table(&queue_table(name))?;
        write_row(t, &mut table, live.get(name).copied(), key, &bytes)?;
    }
    Ok(names.len())
}

/// Expand everything pending (before an erasure scans the queues).
pub(crate) fn expand_all(t: &mut Txn) -> Result<(), SpoolError> {
    while !t.fanout.is_empty() {
        expand_next(t)?;
    }
    Ok(())
}

/// One reference row into `table`, with a sequence number taken now. The
/// row was counted (`queued`, bytes, reference) when it was accepted.
fn write_row(
    t: &mut Txn,
    table: &mut redb::Table<'_, u64, &'static [u8]>,
    slot: Option<usize>,
    key: u128,
    bytes: &Bytes,
) -> Result<(), SpoolError> {
    let seq = t.take_seq();
    table.insert(seq, shared::reference(key).as_ref()).map_err(io)?;
    if let Some(slot) = slot {
        t.fx.appended.push((slot, seq));
        t.fx.fresh.push((slot, seq, bytes.clone()));
        t.fx.notify.push(slot);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::slot::Slot;
    use crate::spool::{check, KeyRecord, KeyedAppend, Record, Spool, SpoolLimits};

    /// Three chunks: 256 + 256 + 88.
    const N: usize = 600;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("webhook.w{i}")).collect()
    }

    fn event(id: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"id":"{id}","event":"unacked","timestamp":"2026-01-01T00:00:00.000Z","to":"alice@x","body":"{}","metadata":{{}}}}"#,
            "b".repeat(500)
        ))
    }

    /// One buffer claimed by slots `from..to`, as the pipeline hands a fan-out.
    fn fan_out(ev: &Bytes, slots: impl Iterator<Item = usize>) -> Vec<(Slot, Bytes)> {
        slots.map(|i| (Slot::new(i as u32), ev.clone())).collect()
    }

    fn hold(spool: &Spool, held: bool) {
        spool.shared.hold_fanouts.store(held, Ordering::Release);
    }

    /// Let the writer expand everything: every commit is followed by one
    /// chunk, so each `sync` sees at least one more chunk written.
    async fn expand(spool: &Spool) {
        hold(spool, false);
        for _ in 0..1000 {
            spool.sync().await.unwrap();
            if spool.fanout_pending() == 0 {
                return;
            }
        }
        panic!("{} fan-out rows still pending", spool.fanout_pending());
    }

    fn rows(spool: &Spool, slot: usize) -> Vec<(u64, Bytes)> {
        spool.read_queue(Slot::new(slot as u32), 0, 100).unwrap()
    }

    fn queued(spool: &Spool, slot: usize) -> u64 {
        spool.slot(Slot::new(slot as u32)).queued.load(Ordering::Relaxed)
    }

    fn clean(spool: &Spool) -> check::CheckReport {
        let report = check::check_open(spool).unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
        report
    }

    /// Accepted whole (counted, referenced) but written later; an append
    /// to one of its queues meanwhile writes that queue's row first; an
    /// erasure sees the rows not written yet.
    #[tokio::test]
    async fn a_large_fan_out_is_written_later_and_stays_first_in_its_queues() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), &names(N), SpoolLimits::default()).unwrap();
        hold(&spool, true);
        let ev = event("F");
        spool.append(fan_out(&ev, 0..N)).await.unwrap();
        assert_eq!(spool.fanout_pending(), N as u64);
        assert!(rows(&spool, 5).is_empty(), "not written in the request's commit");
        assert_eq!(queued(&spool, 5), 1, "but counted as queued");
        assert_eq!(spool.stored_bytes(), (ev.len() + N * REF_LEN) as u64);
        let report = clean(&spool);
        assert_eq!((report.fanout_pending, report.shared_events), (N as u64, 1));

        // Later events for two of its queues come after it.
        let later = event("L");
        spool
            .append(vec![
                (Slot::new(5), later.clone()),
                (Slot::new(N as u32 - 1), later.clone()),
            ])
            .await
            .unwrap();
        assert_eq!(spool.fanout_pending(), N as u64 - 2);
        for slot in [5, N - 1] {
            let got = rows(&spool, slot);
            assert_eq!(got.len(), 2, "slot {slot}");
            assert_eq!((&got[0].1, &got[1].1), (&ev, &later), "slot {slot}: in accept order");
            assert!(got[0].0 < got[1].0);
            assert_eq!(queued(&spool, slot), 2);
        }
        clean(&spool);

        expand(&spool).await;
        for slot in 0..N {
            let got = rows(&spool, slot);
            assert_eq!(got[0].1, ev, "slot {slot}");
            assert_eq!(got.len(), if slot == 5 || slot == N - 1 { 2 } else { 1 }, "slot {slot}");
        }
        assert_eq!(spool.stored_bytes(), (ev.len() + N * REF_LEN + 2 * later.len()) as u64);
        assert_eq!(clean(&spool).fanout_pending, 0);

        // An erasure expands what is pending first, then removes it all.
        hold(&spool, true);
        spool.append(fan_out(&ev, 0..N)).await.unwrap();
        assert_eq!(spool.fanout_pending(), N as u64);
        let erased = spool.erase_user("alice@x").await.unwrap();
        assert_eq!(erased.queued, 2 * N as u64 + 2);
        assert_eq!((spool.fanout_pending(), spool.stored_bytes()), (0, 0));
        assert_eq!(clean(&spool).shared_events, 0);
        spool.close().await.unwrap();
    }

    /// Pending rows outlive the process (every commit is fsync'd: a kill
    /// after the 202 leaves the file as a close with the fan-out held
    /// does); they are counted when their runtime slots are attached
    /// again and written to every queue once; a detached slot's pending
    /// row goes with it (and its reference).
    #[tokio::test]
    async fn pending_fan_outs_survive_a_restart_and_go_with_a_detached_slot() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = |spool: &Spool| {
            let slots: Vec<_> = (0..N)
                .map(|i| {
                    let record = Record {
                        key: format!("w{i}"),
                        value: b"{}".to_vec(),
                    };
                    (Slot::new(i as u32 + 1), format!("webhook.w{i}"), Some(record))
                })
                .collect();
            let spool = spool.clone();
            async move { spool.attach_slots(slots).await.unwrap() }
        };
        let spool = Spool::open(dir.path(), &["http.a".to_owned()], SpoolLimits::default()).unwrap();
        runtime(&spool).await;
        hold(&spool, true);
        let ev = event("F");
        spool.append(fan_out(&ev, 1..=N)).await.unwrap();
        // Detached before its row was written: the row and its reference go.
        assert_eq!(spool.detach_slot(Slot::new(8), "w7".into()).await.unwrap(), 1);
        assert_eq!(spool.fanout_pending(), N as u64 - 1);
        assert_eq!(clean(&spool).fanout_pending, N as u64 - 1);
        spool.close().await.unwrap();
        let file = check::check(dir.path()).unwrap();
        assert_eq!(
            (file.problems.len(), file.fanout_pending),
            (0, N as u64 - 1),
            "{file:?}"
        );

        // Restarted: expansion resumes at once, before or after the slots
        // are attached again; either way each queue counts its one row.
        let spool = Spool::open(dir.path(), &["http.a".to_owned()], SpoolLimits::default()).unwrap();
        let slots: Vec<_> = (0..N)
            .filter(|i| *i != 7)
            .map(|i| (Slot::new(i as u32 + 1), format!("webhook.w{i}"), None))
            .collect();
        spool.attach_slots(slots).await.unwrap();
        for slot in (1..=N).filter(|s| *s != 8) {
            assert_eq!(queued(&spool, slot), 1, "slot {slot}");
        }
        assert_eq!(spool.stored_bytes(), (ev.len() + (N - 1) * REF_LEN) as u64);
        expand(&spool).await;
        for slot in (1..=N).filter(|s| *s != 8) {
            let got = rows(&spool, slot);
            assert_eq!(got.len(), 1, "slot {slot}");
            assert_eq!(got[0].1, ev);
        }
        assert_eq!(spool.stored_bytes(), (ev.len() + (N - 1) * REF_LEN) as u64);
        let report = clean(&spool);
        assert_eq!((report.fanout_pending, report.shared_events), (0, 1));
        spool.close().await.unwrap();
        assert!(check::check(dir.path()).unwrap().is_ok());
    }

    /// A refused request and a repeated idempotency key store nothing, no
    /// pending fan-out included.
    #[tokio::test]
    async fn refused_and_repeated_requests_leave_no_pending_fan_out() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_queue: 1,
            ..SpoolLimits::default()
        };
        let spool = Spool::open(dir.path(), &names(N), limits).unwrap();
        hold(&spool, true);
        // One queue already full: the whole fan-out is refused.
        spool.append(vec![(Slot::new(3), event("X"))]).await.unwrap();
        let ev = event("F");
        let refused = spool.append(fan_out(&ev, 0..N)).await;
        assert!(matches!(refused, Err(crate::spool::SpoolError::Full(_))), "{refused:?}");
        assert_eq!(spool.fanout_pending(), 0);
        let report = clean(&spool);
        assert_eq!((report.fanout_pending, report.shared_events), (0, 0));

        // Under a key: stored once; the same key again stores nothing.
        let record = KeyRecord {
            fingerprint: "f".into(),
            ids: vec!["F".into()],
            stopped: 0,
            at_ms: crate::spool::now_ms(),
        };
        let keyed = || spool.append_keyed(fan_out(&ev, 4..N), Vec::new(), "k".into(), record.clone());
        assert_eq!(keyed().await.unwrap(), KeyedAppend::Stored);
        assert_eq!(spool.fanout_pending(), N as u64 - 4);
        assert!(matches!(keyed().await.unwrap(), KeyedAppend::Existing(_)));
        assert_eq!(spool.fanout_pending(), N as u64 - 4);
        assert_eq!(clean(&spool).fanout_pending, N as u64 - 4);
        // And the queues are full now: a second fan-out is refused whole.
        let again = spool.append(fan_out(&event("G"), 4..N)).await;
        assert!(matches!(again, Err(crate::spool::SpoolError::Full(_))), "{again:?}");
        assert_eq!(spool.fanout_pending(), N as u64 - 4);
        expand(&spool).await;
        assert_eq!(clean(&spool).shared_events, 1);
        spool.close().await.unwrap();
    }

    #[test]
    fn chunk_records_read_back() {
        let names = names(3);
        let record = encode(7, &names);
        assert_eq!(decode(&record).unwrap(), (7, names));
        assert!(decode(&record[..record.len() - 1]).is_err());
        assert!(decode(&[0; 3]).is_err());
    }
}
