//! The outbox: state changes accepted with requests, kept in order until a
//! cluster store has them (see `cluster.md` in docs: the relay carries them
//! to PostgreSQL and removes them once applied there).
//!
//! Rows are written in the same transaction as the request's events, so a
//! change answered `2xx` is either in the store already or here, across a
//! store outage and a `kill -9` alike. Off unless a cluster store is
//! configured ([`Spool::enable_outbox`](super::Spool::enable_outbox)).
//!
//! The spool's `origin` (a ULID made when the spool file was created) tells
//! the store whose sequence numbers these are.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use std::sync::atomic::Ordering;

use super::txn::Txn;
use super::{Spool, SpoolError};
use crate::state_change::StateChange;

pub(crate) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
pub(crate) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

const ORIGIN: &str = "origin";

/// Append one request's changes under the next number.
pub(crate) fn append(txn: &WriteTransaction, next: &mut u64, changes: &[StateChange]) -> Result<(), SpoolError> {
    let bytes = serde_json::to_vec(changes).map_err(super::io)?;
    let mut t = txn.open_table(OUTBOX).map_err(super::io)?;
    t.insert(*next, bytes.as_slice()).map_err(super::io)?;
    *next += 1;
    Ok(())
}

/// Forget every row up to and including `seq`.
pub(crate) fn remove_through(txn: &WriteTransaction, seq: u64) -> Result<(), SpoolError> {
    let mut t = txn.open_table(OUTBOX).map_err(super::io)?;
    t.retain_in(..=seq, |_, _| false).map_err(super::io)?;
    Ok(())
}

/// Up to `limit` of the oldest rows, in order. An unreadable row (written
/// by a newer build) is logged and skipped as empty, so it cannot hold the
/// rest back.
pub(crate) fn read(db: &redb::Database, limit: usize) -> Result<Vec<(u64, Vec<StateChange>)>, SpoolError> {
    let read = db.begin_read().map_err(super::io)?;
    let t = read.open_table(OUTBOX).map_err(super::io)?;
    let mut out = Vec::new();
    for row in t.iter().map_err(super::io)?.take(limit) {
        let (k, v) = row.map_err(super::io)?;
        let changes = serde_json::from_slice(v.value()).unwrap_or_else(|e| {
            tracing::error!(seq = k.value(), error = %e, "unreadable outbox entry skipped");
            Vec::new()
        });
        out.push((k.value(), changes));
    }
    Ok(out)
}

/// Rows waiting, and the number after the last one.
pub(crate) fn stats(db: &redb::Database) -> Result<(u64, u64), SpoolError> {
    let read = db.begin_read().map_err(super::io)?;
    let t = read.open_table(OUTBOX).map_err(super::io)?;
    let next = t.last().map_err(super::io)?.map_or(1, |(k, _)| k.value() + 1);
    Ok((t.len().map_err(super::io)?, next))
}

/// The spool's origin id, made on first use.
pub(crate) fn origin(txn: &WriteTransaction) -> Result<String, SpoolError> {
    let mut t = txn.open_table(META).map_err(super::io)?;
    if let Some(v) = t.get(ORIGIN).map_err(super::io)? {
        return Ok(v.value().to_owned());
    }
    let id = ulid::Ulid::generate().to_string();
    t.insert(ORIGIN, id.as_str()).map_err(super::io)?;
    Ok(id)
}

/// A flag in the meta table (e.g. "merged into the cluster store").
pub(crate) fn flag(db: &redb::Database, key: &str) -> Result<bool, SpoolError> {
    let read = db.begin_read().map_err(super::io)?;
    let t = read.open_table(META).map_err(super::io)?;
    Ok(t.get(key).map_err(super::io)?.is_some())
}

pub(crate) fn set_flag(txn: &WriteTransaction, key: &str) -> Result<(), SpoolError> {
    let mut t = txn.open_table(META).map_err(super::io)?;
    t.insert(key, "1").map_err(super::io)?;
    Ok(())
}

/// Keep a request's state changes in the outbox, when a cluster store is
/// configured.
pub(crate) fn keep_for_relay(t: &mut Txn, changes: &[StateChange]) -> Result<(), SpoolError> {
    if changes.is_empty() || !t.shared.outbox_enabled.load(Ordering::Acquire) {
        return Ok(());
    }
    append(t.txn, &mut t.next.outbox, changes)?;
    t.fx.outbox_added = true;
    Ok(())
}

impl Spool {
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
        read(&*self.shared.db()?, limit)
    }

    /// Outbox rows waiting to be relayed. Blocking.
    pub fn outbox_len(&self) -> Result<u64, SpoolError> {
        stats(&*self.shared.db()?).map(|(n, _)| n)
    }

    /// Resolves after a commit added outbox rows (or at once if one did
    /// since the last call).
    pub async fn outbox_added(&self) {
        self.shared.outbox_added.notified().await
    }

    /// A flag kept in the spool (e.g. "merged into the cluster store").
    /// Blocking.
    pub fn flag(&self, key: &str) -> Result<bool, SpoolError> {
        flag(&*self.shared.db()?, key)
    }
}

#[cfg(test)]
mod tests {
    use crate::spool::{Spool, SpoolLimits};
    use crate::state_change::StateChange;

    fn count(user: &str) -> StateChange {
        StateChange::Count {
            scope: "push.m".into(),
            user: user.into(),
        }
    }

    #[tokio::test]
    async fn relayed_changes_wait_in_order_until_removed_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), &[], SpoolLimits::default()).unwrap();
        let origin = spool.origin().to_owned();
        spool.commit(Vec::new(), vec![count("a@x")]).await.unwrap();
        assert_eq!(spool.outbox_len().unwrap(), 0, "off until enabled");
        spool.enable_outbox();
        spool.commit(Vec::new(), vec![count("a@x")]).await.unwrap();
        spool.commit_local(vec![count("b@x")]).await.unwrap();
        spool
            .commit(Vec::new(), vec![count("c@x"), count("d@x")])
            .await
            .unwrap();
        let batch = spool.outbox_batch(10).unwrap();
        let users: Vec<Vec<&str>> = batch
            .iter()
            .map(|(_, c)| c.iter().map(|c| c.user()).collect())
            .collect();
        assert_eq!(
            users,
            vec![vec!["a@x"], vec!["c@x", "d@x"]],
            "local commits are not relayed"
        );
        spool.outbox_remove_through(batch[0].0).await.unwrap();
        spool.close().await.unwrap();

        let spool = Spool::open(dir.path(), &[], SpoolLimits::default()).unwrap();
        assert_eq!(spool.origin(), origin, "the origin is the spool's");
        let left = spool.outbox_batch(10).unwrap();
        assert_eq!(left.len(), 1);
        assert!(left[0].0 > batch[0].0);
        spool.enable_outbox();
        spool.commit(Vec::new(), vec![count("e@x")]).await.unwrap();
        let all = spool.outbox_batch(10).unwrap();
        assert!(all[1].0 > all[0].0, "numbers keep growing after a reopen");
        spool.close().await.unwrap();
    }
}
