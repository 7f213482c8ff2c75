//! Erasing one user's data from every queue and dead-letter table
//! (`DELETE /v1/users/{jid}`, `event-pusher erase-user`).
//!
//! An event is the user's when its `from`, `to` or `jid` (compared as bare
//! JIDs, case-insensitively) is theirs. It is one scan of every table, in
//! one transaction: the erasure is all or nothing, and nothing is left half
//! gone after a crash.

use redb::{ReadableTable, TableDefinition};

use super::names::{dead_table, queue_table};
use super::txn::Txn;
use super::SpoolError;

/// What one erasure removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    pub queued: u64,
    pub dead_letters: u64,
}

/// Whether the event JSON names `user` (a bare JID, lower-case) as its
/// `from`, `to` or `jid`.
pub(crate) fn concerns(json: &[u8], user: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Parties<'a> {
        #[serde(borrow, default)]
        from: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        to: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        jid: Option<std::borrow::Cow<'a, str>>,
    }
    let Ok(p) = serde_json::from_slice::<Parties>(json) else {
        return false;
    };
    [p.from, p.to, p.jid]
        .iter()
        .flatten()
        .any(|j| crate::jid::bare(j).eq_ignore_ascii_case(user))
}

/// Remove `user`'s events from slot `name`'s queue (keys and bytes of each)
/// and dead letters (count, bytes).
pub(crate) fn erase_slot(t: &mut Txn, name: &str, user: &str) -> Result<(Vec<u64>, u64, u64, u64), SpoolError> {
    let txn = t.txn;
    let mut q = t.slot_table(&queue_table(name))?;
    let mut queued = Vec::new();
    let mut bytes = 0u64;
    for row in q.iter().map_err(super::io)? {
        let (k, v) = row.map_err(super::io)?;
        // A shared event is read (once per row: erasure is rare).
        let record = super::shared::resolve_in(t.txn, &t.refs, v.value())?;
        let (_, json) = super::record::decode(&record);
        if concerns(&json, user) {
            queued.push(k.value());
            bytes += v.value().len() as u64;
        }
    }
    for key in &queued {
        if let Some(old) = q.remove(key).map_err(super::io)? {
            if let Some(shared) = super::shared::referenced(old.value()) {
                t.refs.release(shared);
            }
        }
    }
    let mut d = txn
        .open_table(TableDefinition::<u64, &[u8]>::new(&dead_table(name)))
        .map_err(super::io)?;
    let mut dead = Vec::new();
    for row in d.iter().map_err(super::io)? {
        let (k, v) = row.map_err(super::io)?;
        let hit = serde_json::from_slice::<super::DeadLetter>(v.value())
            .is_ok_and(|dl| serde_json::to_vec(&dl.event).is_ok_and(|json| concerns(&json, user)));
        if hit {
            dead.push(k.value());
            bytes += v.value().len() as u64;
        }
    }
    for key in &dead {
        d.remove(key).map_err(super::io)?;
    }
    let dead_n = dead.len() as u64;
    let queued_n = queued.len() as u64;
    Ok((queued, queued_n, dead_n, bytes))
}

/// Remove a user's events from every live slot's queue and dead letters.
pub(crate) fn erase_all(t: &mut Txn, user: &str) -> Result<Erased, SpoolError> {
    let (mut queued, mut dead) = (0u64, 0u64);
    // Rows of fan-outs not written yet are written first, so the scan
    // below sees (and removes) them too.
    super::fanout::expand_all(t)?;
    for (slot, name) in t.live_names() {
        let (seqs, q, d, bytes) = erase_slot(t, &name, user)?;
        t.fx.queued(slot, -(q as i64));
        t.fx.dead(slot, -(d as i64));
        t.fx.bytes_delta -= bytes as i64;
        // Rows just appended may wait in the queue's fresh buffer: it must
        // read the spool (where they are gone) instead.
        if let Some(last) = seqs.last() {
            t.fx.replayed.push((slot, *last));
        }
        queued += q;
        dead += d;
    }
    Ok(Erased {
        queued,
        dead_letters: dead,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use bytes::Bytes;

    use super::*;
    use crate::slot::Slot;
    use crate::spool::Spool;
    use crate::spool::{DeadLetter, LastError, SpoolLimits};

    #[test]
    fn matches_from_to_and_jid_as_bare_jids() {
        assert!(concerns(br#"{"from":"Alice@x/phone","to":"b@x"}"#, "alice@x"));
        assert!(concerns(br#"{"to":"alice@x"}"#, "alice@x"));
        assert!(concerns(br#"{"jid":"alice@x/r"}"#, "alice@x"));
        assert!(!concerns(br#"{"from":"alice@y","to":"b@x"}"#, "alice@x"));
        assert!(!concerns(b"not json", "alice@x"));
    }

    #[tokio::test]
    async fn erases_queued_and_dead_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["http.a".to_owned(), "http.b".to_owned()];
        let spool = Spool::open(dir.path(), &names, SpoolLimits::default()).unwrap();
        let (a, b) = (Slot::new(0), Slot::new(1));
        let alice = Bytes::from_static(br#"{"id":"1","from":"alice@x/r","to":"bob@x"}"#);
        let bob = Bytes::from_static(br#"{"id":"2","jid":"bob@x"}"#);
        let targeted = super::super::record::encode(Some("dev"), br#"{"id":"3","to":"alice@x"}"#);
        spool
            .append(vec![(a, alice.clone()), (a, bob.clone()), (b, targeted), (b, alice)])
            .await
            .unwrap();
        let dl = DeadLetter::new(
            "1".into(),
            "b".into(),
            serde_json::json!({"id": "1", "from": "alice@x"}),
            1,
            LastError {
                status: None,
                message: "x".into(),
            },
            time::OffsetDateTime::now_utc(),
        );
        spool.dead_letter(b, 4, dl).await.unwrap();
        let before = spool.stored_bytes();
        let erased = spool.erase_user("Alice@x/anything").await.unwrap();
        assert_eq!(
            erased,
            Erased {
                queued: 2,
                dead_letters: 1
            }
        );
        assert_eq!(spool.slot(a).queued.load(Ordering::Relaxed), 1);
        assert_eq!(spool.slot(b).queued.load(Ordering::Relaxed), 0);
        assert_eq!(spool.slot(b).dead.load(Ordering::Relaxed), 0);
        assert!(spool.stored_bytes() < before);
        assert_eq!(spool.erase_user("alice@x").await.unwrap(), Erased::default());
        spool.close().await.unwrap();
    }
}
