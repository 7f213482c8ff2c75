//! Slots added at runtime (webhook subscriptions): creating and dropping
//! their tables, and their records in the `subscriptions` table, which the
//! owner of a runtime slot reads at the next start to recreate it (the
//! spool does not read them).

use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::names::{dead_table, queue_table};
use super::queues::count_slot;
use super::txn::Txn;
use super::{io, pause, SlotState, Spool, SpoolError};

/// Records of slots added at runtime (webhook subscriptions), by key.
pub(crate) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("subscriptions");

/// One row of the `subscriptions` table: what the owner of a runtime slot
/// stores to recreate it at the next start (the spool does not read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub value: Vec<u8>,
}

/// Create the tables of new slots (or, at start, count what the stored
/// ones hold) and store their records.
pub(crate) fn attach(t: &mut Txn, slots: &[(usize, String, Option<Record>)]) -> Result<usize, SpoolError> {
    let state = t.txn.open_table(pause::STATE).map_err(io)?;
    let mut records = t.txn.open_table(RECORDS).map_err(io)?;
    for (slot, name, record) in slots {
        let q = t.slot_table(&queue_table(name))?;
        let d = t.slot_table(&dead_table(name))?;
        let (mut counts, bytes, next_seq) = count_slot(&q, &d, &state, name)?;
        // Rows of a fan-out accepted before a restart and not written yet
        // (`fanout.rs`) are queued all the same.
        let pending = t.fanout.pending_for(name);
        counts.queued += pending;
        t.next.seq = t.next.seq.max(next_seq);
        t.fx.bytes_delta += (bytes + pending * super::shared::REF_LEN as u64) as i64;
        if let Some(r) = record {
            records.insert(r.key.as_str(), r.value.as_slice()).map_err(io)?;
        }
        t.fx.attached
            .push((*slot, Arc::new(SlotState::new(name.clone(), &counts))));
    }
    Ok(slots.len())
}

/// Drop a runtime slot's tables, paused flag and record; how many queued
/// events went with it.
pub(crate) fn detach(t: &mut Txn, slot: usize, record_key: &str) -> Result<usize, SpoolError> {
    let Some(name) = t.live_name(slot) else {
        return Ok(0);
    };
    let (qname, dname) = (queue_table(&name), dead_table(&name));
    // Rows of fan-outs not written to it yet go with it.
    let mut discarded = super::fanout::drop_queue(t, &name)? as usize;
    let mut bytes = 0i64;
    {
        let q = t.slot_table(&qname)?;
        let d = t.slot_table(&dname)?;
        for row in q.iter().map_err(io)? {
            let (_, v) = row.map_err(io)?;
            bytes += v.value().len() as i64;
            discarded += 1;
            if let Some(key) = super::shared::referenced(v.value()) {
                t.refs.release(key);
            }
        }
        for row in d.iter().map_err(io)? {
            let (_, v) = row.map_err(io)?;
            bytes += v.value().len() as i64;
        }
    }
    t.txn
        .delete_table(TableDefinition::<u64, &[u8]>::new(&qname))
        .map_err(io)?;
    t.txn
        .delete_table(TableDefinition::<u64, &[u8]>::new(&dname))
        .map_err(io)?;
    pause::forget(t.txn, &name)?;
    t.txn.open_table(RECORDS).map_err(io)?.remove(record_key).map_err(io)?;
    t.fx.bytes_delta -= bytes;
    t.fx.detached.insert(slot);
    Ok(discarded)
}

/// Store (replace) one record.
pub(crate) fn put(t: &mut Txn, record: &Record) -> Result<usize, SpoolError> {
    let mut table = t.txn.open_table(RECORDS).map_err(io)?;
    table.insert(record.key.as_str(), record.value.as_slice()).map_err(io)?;
    Ok(0)
}

impl Spool {
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use bytes::Bytes;

    use super::*;
    use crate::slot::Slot;
    use crate::spool::SpoolLimits;

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
