//! Small per-backend state kept in the spool beside the queues (the push
//! backend's device registry and presence): one table of string keys to
//! bytes. Backends prefix their keys with their `KIND.NAME`.
//!
//! Writes go through the spool writer like everything else, so they are
//! fsync'd in a group commit; a put that is not awaited is still committed
//! before any command sent after it (the writer takes commands in order).

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{Spool, SpoolError};
use crate::state_change::{state_key, StateChange, UserPresence};

pub(crate) const BACKEND_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("backend_state");

/// Set (`Some`) or remove (`None`) each key.
pub(crate) fn apply(txn: &WriteTransaction, entries: &[(String, Option<Vec<u8>>)]) -> Result<(), SpoolError> {
    let mut t = txn.open_table(BACKEND_STATE).map_err(super::io)?;
    for (key, value) in entries {
        match value {
            Some(v) => {
                t.insert(key.as_str(), v.as_slice()).map_err(super::io)?;
            }
            None => {
                t.remove(key.as_str()).map_err(super::io)?;
            }
        }
    }
    Ok(())
}

/// Fold state changes into their keys, in order: presence and counts into
/// the user's [`UserPresence`] (removed once empty), devices set or removed.
pub(crate) fn fold(txn: &WriteTransaction, changes: &[StateChange]) -> Result<(), SpoolError> {
    let mut t = txn.open_table(BACKEND_STATE).map_err(super::io)?;
    for change in changes {
        let key = state_key(change);
        match change {
            StateChange::Presence { .. } | StateChange::Count { .. } => {
                let mut presence: UserPresence = t
                    .get(key.as_str())
                    .map_err(super::io)?
                    .and_then(|v| serde_json::from_slice(v.value()).ok())
                    .unwrap_or_default();
                if !presence.apply(change) {
                    continue;
                }
                if presence.is_empty() {
                    t.remove(key.as_str()).map_err(super::io)?;
                } else {
                    let bytes = serde_json::to_vec(&presence).map_err(super::io)?;
                    t.insert(key.as_str(), bytes.as_slice()).map_err(super::io)?;
                }
            }
            StateChange::DevicePut { record, .. } => {
                let bytes = serde_json::to_vec(record).map_err(super::io)?;
                t.insert(key.as_str(), bytes.as_slice()).map_err(super::io)?;
            }
            StateChange::DeviceRemove { .. } => {
                t.remove(key.as_str()).map_err(super::io)?;
            }
        }
    }
    Ok(())
}

/// Every key starting with `prefix`, in key order, with its value.
pub(crate) fn scan(db: &redb::Database, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, SpoolError> {
    let read = db.begin_read().map_err(super::io)?;
    let t = read.open_table(BACKEND_STATE).map_err(super::io)?;
    let mut out = Vec::new();
    for row in t.range(prefix..).map_err(super::io)? {
        let (k, v) = row.map_err(super::io)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push((k.value().to_owned(), v.value().to_vec()));
    }
    Ok(out)
}

impl Spool {
    /// Every backend state key starting with `prefix`, with its value.
    /// Blocking.
    pub fn read_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, SpoolError> {
        scan(&*self.shared.db()?, prefix)
    }
}
