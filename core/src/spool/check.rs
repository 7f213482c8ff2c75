//! `event-pusher spool check`: look at a stopped sidecar's spool without
//! changing what it holds: redb's own integrity check (page checksums and
//! tree structure), then every queue and dead-letter row read back, and
//! counts per table.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};

use super::subscriptions::RECORDS;
use super::{backend_state, idempotency, DeadLetter, SpoolError};
use crate::event::Event;

/// What a check found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CheckReport {
    /// Size of the spool file.
    pub bytes: u64,
    /// `(KIND.NAME, events)` per queue table.
    pub queued: Vec<(String, u64)>,
    /// `(KIND.NAME, records)` per dead-letter table.
    pub dead_letters: Vec<(String, u64)>,
    pub idempotency_keys: u64,
    /// Push devices (`*/device/*` backend-state keys).
    pub devices: u64,
    /// Runtime webhook subscriptions.
    pub subscriptions: u64,
    /// What is broken, one line each; empty when the spool is sound.
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Check the spool in `dir` (the file `spool.redb`). Fails only when the
/// file cannot be opened at all (missing, locked by a running sidecar);
/// what is wrong inside is in the report.
///
/// redb assumes its own file is sound and panics on some damage (an
/// "unreachable" page type) rather than returning an error; a check of a
/// damaged file must report that, not crash, so such a panic is caught and
/// reported as a problem (with the panic message kept off stderr).
pub fn check(dir: &Path) -> Result<CheckReport, SpoolError> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(|| check_unguarded(dir));
    std::panic::set_hook(previous);
    outcome.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_owned());
        Ok(CheckReport {
            bytes: std::fs::metadata(dir.join("spool.redb")).map_or(0, |m| m.len()),
            problems: vec![format!(
                "the file is damaged: the store cannot read its own structure ({why})"
            )],
            ..CheckReport::default()
        })
    })
}

fn check_unguarded(dir: &Path) -> Result<CheckReport, SpoolError> {
    let path = dir.join("spool.redb");
    let bytes = std::fs::metadata(&path)
        .map_err(|e| SpoolError::io_in(format!("cannot read {}", path.display()), e))?
        .len();
    let mut db = Database::open(&path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => SpoolError::Locked { dir: dir.to_path_buf() },
        e => SpoolError::io_in(format!("cannot open spool {}", path.display()), e),
    })?;
    let mut report = CheckReport {
        bytes,
        ..CheckReport::default()
    };
    match db.check_integrity() {
        Ok(true) => {}
        Ok(false) => report
            .problems
            .push("the file was repaired: it was not closed cleanly (a crash); run the check again".into()),
        Err(e) => {
            report.problems.push(format!("integrity check failed: {e}"));
            return Ok(report);
        }
    }
    let read = db.begin_read().map_err(super::io)?;
    let names: Vec<String> = read
        .list_tables()
        .map_err(super::io)?
        .map(|t| t.name().to_owned())
        .collect();
    for name in names {
        let (kind, backend) = match name.split_once('/') {
            Some(("queue", b)) => (Table::Queue, b),
            Some(("dead", b)) => (Table::Dead, b),
            _ => continue,
        };
        let t = read
            .open_table(TableDefinition::<u64, &[u8]>::new(&name))
            .map_err(super::io)?;
        let mut rows = 0u64;
        let mut unreadable = 0u64;
        for row in t.iter().map_err(super::io)? {
            let Ok((_, v)) = row else {
                unreadable += 1;
                continue;
            };
            rows += 1;
            let ok = match kind {
                Table::Queue => {
                    let record = bytes::Bytes::copy_from_slice(v.value());
                    serde_json::from_slice::<Event>(&super::record::decode(&record).1).is_ok()
                }
                Table::Dead => serde_json::from_slice::<DeadLetter>(v.value()).is_ok(),
            };
            if !ok {
                unreadable += 1;
            }
        }
        if unreadable > 0 {
            report
                .problems
                .push(format!("table {name}: {unreadable} of {rows} rows unreadable"));
        }
        match kind {
            Table::Queue => report.queued.push((backend.to_owned(), rows)),
            Table::Dead => report.dead_letters.push((backend.to_owned(), rows)),
        }
    }
    let count = |def: TableDefinition<&str, &[u8]>| -> u64 {
        read.open_table(def).ok().and_then(|t| t.len().ok()).unwrap_or(0)
    };
    report.idempotency_keys = count(idempotency::KEYS);
    report.subscriptions = count(RECORDS);
    if let Ok(t) = read.open_table(backend_state::BACKEND_STATE) {
        if let Ok(iter) = t.iter() {
            report.devices = iter
                .flatten()
                .filter(|(k, _)| {
                    k.value()
                        .split_once('/')
                        .is_some_and(|(_, rest)| rest.starts_with("device/"))
                })
                .count() as u64;
        }
    }
    Ok(report)
}

#[derive(Clone, Copy)]
enum Table {
    Queue,
    Dead,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::Slot;
    use crate::spool::{Spool, SpoolLimits};

    #[tokio::test]
    async fn counts_what_a_spool_holds_and_names_unreadable_rows() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), &["http.a".to_owned()], SpoolLimits::default()).unwrap();
        let ok = br#"{"id":"1","event":"presence","timestamp":"2026-01-01T00:00:00.000Z","jid":"a@x","status":"online","metadata":{}}"#;
        spool
            .append(vec![
                (Slot::new(0), bytes::Bytes::from_static(ok)),
                (Slot::new(0), bytes::Bytes::from_static(b"garbage")),
            ])
            .await
            .unwrap();
        spool
            .put_state(vec![("push.p/device/a@x/d1".into(), Some(b"{}".to_vec()))])
            .await
            .unwrap();
        spool.close().await.unwrap();
        let r = check(dir.path()).unwrap();
        assert_eq!(r.queued, [("http.a".to_owned(), 2)]);
        assert_eq!(r.dead_letters, [("http.a".to_owned(), 0)]);
        assert_eq!(r.devices, 1);
        assert!(r.bytes > 0);
        assert_eq!(r.problems, ["table queue/http.a: 1 of 2 rows unreadable"]);
    }
}
