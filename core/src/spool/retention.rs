//! `spool.dead_letter_retention_s`: deleting dead letters past their age,
//! and recovering the ones that died in a time window.
//!
//! Both read a dead letter's `dead_at`. The dead-letter table is keyed in
//! the order events died, so an expiry sweep reads from the oldest end and
//! stops at the first record that is young enough: a sweep costs what it
//! deletes, plus one read per table.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use time::OffsetDateTime;

use super::names::dead_table;
use super::txn::Txn;
use super::{DeadLetter, SpoolError};

/// When a dead letter died, in ms since the epoch (`None`: unreadable).
pub(crate) fn dead_at_ms(record: &[u8]) -> Option<i128> {
    let dl: DeadLetter = serde_json::from_slice(record).ok()?;
    let t = crate::event::timestamp_millis::parse(&dl.dead_at).ok()?;
    Some(t.unix_timestamp_nanos() / 1_000_000)
}

/// A `since`/`until` window over `dead_at` (both ends inclusive, either open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}

impl Window {
    pub fn contains(&self, dead_letter: &DeadLetter) -> bool {
        let Ok(at) = crate::event::timestamp_millis::parse(&dead_letter.dead_at) else {
            // Unreadable time: only an unbounded window takes it.
            return self.since.is_none() && self.until.is_none();
        };
        self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at <= u)
    }
}

/// Delete the dead letters of table `name` that died before `cutoff_ms`;
/// how many, and their bytes.
pub(crate) fn expire(txn: &WriteTransaction, name: &str, cutoff_ms: i128) -> Result<(u64, u64), SpoolError> {
    let mut d = txn
        .open_table(TableDefinition::<u64, &[u8]>::new(&dead_table(name)))
        .map_err(super::io)?;
    let mut doomed = Vec::new();
    let mut bytes = 0u64;
    for row in d.iter().map_err(super::io)? {
        let (k, v) = row.map_err(super::io)?;
        match dead_at_ms(v.value()) {
            Some(at) if at < cutoff_ms => {
                doomed.push(k.value());
                bytes += v.value().len() as u64;
            }
            // Unreadable records are left for an operator to look at.
            None => continue,
            Some(_) => break,
        }
    }
    for key in &doomed {
        d.remove(key).map_err(super::io)?;
    }
    Ok((doomed.len() as u64, bytes))
}

/// Delete expired dead letters of every live slot; how many.
pub(crate) fn expire_all(t: &mut Txn, cutoff_ms: i128) -> Result<usize, SpoolError> {
    let mut total = 0;
    for (slot, name) in t.live_names() {
        let (n, bytes) = expire(t.txn, &name, cutoff_ms)?;
        if n > 0 {
            t.fx.dead(slot, -(n as i64));
            t.fx.bytes_delta -= bytes as i64;
            *t.fx.expired.entry(slot).or_default() += n;
            total += n as usize;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::slot::Slot;
    use crate::spool::Spool;
    use crate::spool::{LastError, SpoolLimits};

    fn dead(id: &str, dead_at: &str) -> DeadLetter {
        let mut d = DeadLetter::new(
            id.into(),
            "a".into(),
            serde_json::json!({"id": id}),
            1,
            LastError {
                status: None,
                message: "x".into(),
            },
            OffsetDateTime::now_utc(),
        );
        d.dead_at = dead_at.into();
        d
    }

    /// Old dead letters go, young ones stay; a window picks by `dead_at`.
    #[tokio::test]
    async fn expiry_and_windows_go_by_dead_at() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), &["http.a".to_owned()], SpoolLimits::default()).unwrap();
        let a = Slot::new(0);
        let ev = || Bytes::from_static(b"{\"id\":\"x\"}");
        spool.append(vec![(a, ev()), (a, ev()), (a, ev())]).await.unwrap();
        let now = crate::event::timestamp_millis::format(&OffsetDateTime::now_utc());
        spool
            .dead_letter(a, 1, dead("old", "2020-01-01T00:00:00.000Z"))
            .await
            .unwrap();
        spool
            .dead_letter(a, 2, dead("mid", "2024-06-01T00:00:00.000Z"))
            .await
            .unwrap();
        spool.dead_letter(a, 3, dead("new", &now)).await.unwrap();
        let w = Window {
            since: Some(crate::event::timestamp_millis::parse("2024-01-01T00:00:00Z").unwrap()),
            until: Some(crate::event::timestamp_millis::parse("2025-01-01T00:00:00Z").unwrap()),
        };
        assert_eq!(spool.replay_window(a, None, w).await.unwrap(), 1, "only mid");
        assert_eq!(spool.slot(a).queued.load(Ordering::Relaxed), 1);
        assert_eq!(
            spool.expire_dead(Duration::from_secs(3600)).await.unwrap(),
            1,
            "only old"
        );
        let left: Vec<String> = spool.list_dead(a).unwrap().into_iter().map(|d| d.id).collect();
        assert_eq!(left, ["new"]);
        assert_eq!(spool.slot(a).dead.load(Ordering::Relaxed), 1);
        assert_eq!(spool.slot(a).intake.expired.load(Ordering::Relaxed), 1);
        spool.close().await.unwrap();
    }
}
