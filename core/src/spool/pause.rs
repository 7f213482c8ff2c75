//! Paused flags: a backend's or subscription's pause, kept in the `state`
//! table (`paused/KIND.NAME` → 0 or 1) so it survives a restart.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::txn::Txn;
use super::{io, SpoolError};

pub(crate) const STATE: TableDefinition<&str, u64> = TableDefinition::new("state");

/// The key of a slot's paused flag in the `state` table.
pub(crate) fn paused_key(name: &str) -> String {
    format!("paused/{name}")
}

/// Whether slot `name` is paused.
pub(crate) fn is_paused(state: &impl ReadableTable<&'static str, u64>, name: &str) -> Result<bool, SpoolError> {
    Ok(state
        .get(paused_key(name).as_str())
        .map_err(io)?
        .map(|v| v.value() != 0)
        .unwrap_or(false))
}

/// Remember a pause or resume across restarts.
pub(crate) fn set(t: &mut Txn, slot: usize, paused: bool) -> Result<usize, SpoolError> {
    let Some(name) = t.live_name(slot) else {
        return Ok(0);
    };
    let mut table = t.txn.open_table(STATE).map_err(io)?;
    table
        .insert(paused_key(&name).as_str(), u64::from(paused))
        .map_err(io)?;
    t.fx.paused.push((slot, paused));
    t.fx.notify.push(slot);
    Ok(0)
}

/// Drop slot `name`'s flag (the slot is gone).
pub(crate) fn forget(txn: &WriteTransaction, name: &str) -> Result<(), SpoolError> {
    txn.open_table(STATE)
        .map_err(io)?
        .remove(paused_key(name).as_str())
        .map_err(io)?;
    Ok(())
}
