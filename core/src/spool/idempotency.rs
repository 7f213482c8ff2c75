//! Idempotency keys in the spool: what a request with a key produced, kept
//! for a bounded window so a client that retries after a lost answer gets
//! the first answer instead of a second copy of its events.
//!
//! The key is written by the writer in the same transaction as the
//! request's events, so a crash can never keep one without the other; and
//! it is checked inside that transaction, so two concurrent requests with
//! one key store the events once.
//!
//! Two tables: `idempotency` (key → [`KeyRecord`] JSON) and
//! `idempotency_by_time` ((stored-at ms, key) → ()), the second an index
//! the writer prunes from in age order: keys older than the window, and
//! the oldest beyond the key cap, a bounded number per commit.

use std::time::Duration;

use bytes::Bytes;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::txn::Txn;
use super::{Spool, SpoolError};
use crate::state_change::StateChange;

pub(crate) const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
pub(crate) const KEYS_BY_TIME: TableDefinition<(u64, &str), ()> = TableDefinition::new("idempotency_by_time");

/// Most expired keys removed in one commit, so pruning a large backlog
/// does not stall ingest.
const PRUNE_PER_COMMIT: usize = 1000;

/// How long and how many keys are remembered.
#[derive(Debug, Clone, Copy)]
pub struct KeyPolicy {
    /// Zero: keys are not remembered at all.
    pub window: Duration,
    pub max_keys: u64,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            window: Duration::from_secs(24 * 3600),
            max_keys: 1_000_000,
        }
    }
}

impl KeyPolicy {
    pub fn enabled(&self) -> bool {
        !self.window.is_zero() && self.max_keys > 0
    }

    fn expired(&self, record: &KeyRecord, now_ms: u64) -> bool {
        now_ms.saturating_sub(record.at_ms) > self.window.as_millis() as u64
    }
}

/// What a keyed request produced: enough to answer a retry the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// A hash of the request's content; a retry must match it.
    pub fingerprint: String,
    pub ids: Vec<String>,
    pub stopped: u64,
    /// When it was stored (Unix ms).
    pub at_ms: u64,
}

/// The answer to a keyed append.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyedAppend {
    /// The events and the key are stored now.
    Stored,
    /// The key was there already (its first request's record); nothing new
    /// was stored.
    Existing(KeyRecord),
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn io(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SpoolError {
    SpoolError::io(e)
}

fn parse(bytes: &[u8]) -> Result<KeyRecord, SpoolError> {
    serde_json::from_slice(bytes).map_err(|e| SpoolError::io_in("unreadable idempotency record", e))
}

/// The live record of `key`, if any (read side).
pub(crate) fn lookup(
    read: &redb::ReadTransaction,
    key: &str,
    policy: &KeyPolicy,
) -> Result<Option<KeyRecord>, SpoolError> {
    let t = read.open_table(KEYS).map_err(io)?;
    let Some(v) = t.get(key).map_err(io)? else {
        return Ok(None);
    };
    let record = parse(v.value())?;
    Ok((!policy.expired(&record, now_ms())).then_some(record))
}

/// Inside the writer's transaction: the live record of `key`, dropping an
/// expired one so the key can be stored again.
pub(crate) fn take_live(
    txn: &WriteTransaction,
    key: &str,
    policy: &KeyPolicy,
) -> Result<Option<KeyRecord>, SpoolError> {
    let mut t = txn.open_table(KEYS).map_err(io)?;
    let old = match t.get(key).map_err(io)? {
        None => return Ok(None),
        Some(v) => parse(v.value())?,
    };
    if !policy.expired(&old, now_ms()) {
        return Ok(Some(old));
    }
    t.remove(key).map_err(io)?;
    let mut by_time = txn.open_table(KEYS_BY_TIME).map_err(io)?;
    by_time.remove((old.at_ms, key)).map_err(io)?;
    Ok(None)
}

/// Inside the writer's transaction: remember `key`.
pub(crate) fn store(txn: &WriteTransaction, key: &str, record: &KeyRecord) -> Result<(), SpoolError> {
    let bytes = serde_json::to_vec(record).map_err(io)?;
    txn.open_table(KEYS)
        .map_err(io)?
        .insert(key, bytes.as_slice())
        .map_err(io)?;
    txn.open_table(KEYS_BY_TIME)
        .map_err(io)?
        .insert((record.at_ms, key), ())
        .map_err(io)?;
    Ok(())
}

/// Inside the writer's transaction: forget the oldest keys that are past
/// the window or beyond the cap, at most [`PRUNE_PER_COMMIT`].
pub(crate) fn prune(txn: &WriteTransaction, policy: &KeyPolicy) -> Result<(), SpoolError> {
    let mut by_time = txn.open_table(KEYS_BY_TIME).map_err(io)?;
    let mut keys = txn.open_table(KEYS).map_err(io)?;
    let oldest_live = now_ms().saturating_sub(policy.window.as_millis() as u64);
    let mut over = by_time.len().map_err(io)?.saturating_sub(policy.max_keys);
    let mut doomed: Vec<(u64, String)> = Vec::new();
    for row in by_time.iter().map_err(io)?.take(PRUNE_PER_COMMIT) {
        let (k, _) = row.map_err(io)?;
        let (at, key) = k.value();
        if at >= oldest_live && over == 0 {
            break;
        }
        over = over.saturating_sub(1);
        doomed.push((at, key.to_owned()));
    }
    for (at, key) in &doomed {
        by_time.remove((*at, key.as_str())).map_err(io)?;
        // Only if the key was not stored again since (then it has a newer
        // index entry of its own).
        let same = match keys.get(key.as_str()).map_err(io)? {
            Some(v) => parse(v.value()).is_ok_and(|r| r.at_ms == *at),
            None => false,
        };
        if same {
            keys.remove(key.as_str()).map_err(io)?;
        }
    }
    Ok(())
}

/// Store new events under an idempotency key: nothing when the key is live
/// already (its record is the answer, `Some`), else the events, their
/// state changes and the key together; then forget keys past the window or
/// the cap.
pub(crate) fn append_keyed(
    t: &mut Txn,
    items: &[(usize, Bytes)],
    changes: &[StateChange],
    key: &str,
    record: &KeyRecord,
) -> Result<Option<KeyRecord>, SpoolError> {
    let policy = t.shared.limits.keys;
    if let Some(existing) = take_live(t.txn, key, &policy)? {
        return Ok(Some(existing));
    }
    super::queues::append(t, items)?;
    super::backend_state::fold(t.txn, changes)?;
    super::outbox::keep_for_relay(t, changes)?;
    store(t.txn, key, record)?;
    prune(t.txn, &policy)?;
    Ok(None)
}

impl Spool {
    /// The record of a live idempotency key. Blocking.
    pub fn lookup_key(&self, key: &str) -> Result<Option<KeyRecord>, SpoolError> {
        let db = self.shared.db()?;
        let read = redb::ReadableDatabase::begin_read(&*db).map_err(io)?;
        lookup(&read, key, &self.shared.limits.keys)
    }

    /// How long and how many idempotency keys this spool remembers.
    pub fn key_policy(&self) -> KeyPolicy {
        self.shared.limits.keys
    }
}
