//! `event-pusher spool check`: look at a stopped sidecar's spool without
//! changing what it holds: redb's own integrity check (page checksums and
//! tree structure), then every queue and dead-letter row read back, and
//! counts per table.

use std::collections::HashMap;
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
    /// Events stored once for many queues (`shared_events`).
    pub shared_events: u64,
    /// Queue rows of large fan-outs accepted but not yet written to their
    /// queues (`fanout_pending`): the sidecar writes them when it runs.
    pub fanout_pending: u64,
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
    inspect(&read, &mut report)?;
    Ok(report)
}

/// A live spool's rows, counts and shared events, as [`check`] reads them
/// (without the file's integrity check, which needs it closed).
#[cfg(test)]
pub(crate) fn check_open(spool: &super::Spool) -> Result<CheckReport, SpoolError> {
    let db = spool.shared.db()?;
    let read = db.begin_read().map_err(super::io)?;
    let mut report = CheckReport::default();
    inspect(&read, &mut report)?;
    Ok(report)
}

/// Read back every queue and dead-letter row and count what the spool holds.
fn inspect(read: &redb::ReadTransaction, report: &mut CheckReport) -> Result<(), SpoolError> {
    let names: Vec<String> = read
        .list_tables()
        .map_err(super::io)?
        .map(|t| t.name().to_owned())
        .collect();
    // Shared events: absent from spools written before they existed.
    let shared_events = read.open_table(super::shared::SHARED_EVENTS).ok();
    let mut referenced: HashMap<u128, u64> = HashMap::new();
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
                    let record = match super::shared::referenced(v.value()) {
                        None => Some(bytes::Bytes::copy_from_slice(v.value())),
                        Some(key) => {
                            *referenced.entry(key).or_default() += 1;
                            shared_events.as_ref().and_then(|t| super::shared::lookup(t, key).ok())
                        }
                    };
                    record.is_some_and(|r| serde_json::from_slice::<Event>(&super::record::decode(&r).1).is_ok())
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
    // Rows of a fan-out not written yet reference its event all the same.
    if let Ok(t) = read.open_table(super::fanout::FANOUT_PENDING) {
        for row in t.iter().map_err(super::io)? {
            let decoded = row
                .map_err(super::io)
                .and_then(|(_, v)| super::fanout::decode(v.value()));
            match decoded {
                Ok((key, names)) => {
                    *referenced.entry(key).or_default() += names.len() as u64;
                    report.fanout_pending += names.len() as u64;
                }
                Err(e) => report.problems.push(format!("table fanout_pending: {e}")),
            }
        }
    }
    check_shared(read, &referenced, report);
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
    Ok(())
}

/// Every shared event's reference count against the queue rows that
/// reference it: a count too high would keep the bytes forever (a leak),
/// too low would delete them under a queued row.
fn check_shared(read: &redb::ReadTransaction, referenced: &HashMap<u128, u64>, report: &mut CheckReport) {
    let mut counted: HashMap<u128, u64> = HashMap::new();
    if let Ok(refs) = read.open_table(super::shared::SHARED_REFS) {
        if let Ok(iter) = refs.iter() {
            for (k, v) in iter.flatten() {
                counted.insert(k.value(), v.value());
            }
        }
    }
    report.shared_events = read
        .open_table(super::shared::SHARED_EVENTS)
        .ok()
        .and_then(|t| t.len().ok())
        .unwrap_or(0);
    let mut wrong = 0u64;
    for (key, n) in &counted {
        if referenced.get(key) != Some(n) {
            wrong += 1;
        }
    }
    wrong += referenced.keys().filter(|k| !counted.contains_key(k)).count() as u64;
    if wrong > 0 {
        report.problems.push(format!(
            "{wrong} shared events whose reference count does not match the queue rows (and pending fan-out rows) that reference them"
        ));
    }
    if report.shared_events != counted.len() as u64 {
        report.problems.push(format!(
            "{} shared events but {} reference counts",
            report.shared_events,
            counted.len()
        ));
    }
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
