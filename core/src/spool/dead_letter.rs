//! Dead letters: events that will not be retried any more, with what
//! happened to them, kept until an operator replays them (or retention
//! deletes them). One table per slot (`dead/KIND.NAME`), keyed by a
//! sequence number taken when the event died, so in dying order.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::names::{dead_table, queue_table};
use super::txn::Txn;
use super::{io, Spool, SpoolError};
use crate::event::timestamp_millis;
use crate::slot::Slot;

/// The last failure of a dead-lettered event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The event id.
    pub id: String,
    pub backend: String,
    /// The event as it was claimed (canonical JSON).
    pub event: serde_json::Value,
    pub attempts: u32,
    pub last_error: LastError,
    pub first_attempt_at: String,
    pub last_attempt_at: String,
    pub dead_at: String,
    /// The target the queue item was for (a push device), when the backend
    /// claimed the event per target: a replay sends to it only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl DeadLetter {
    /// The record of an event given up now, after `attempts` attempts of
    /// which the first was at `first_attempt_at` and the last just now.
    pub fn new(
        id: String,
        backend: String,
        event: serde_json::Value,
        attempts: u32,
        last_error: LastError,
        first_attempt_at: OffsetDateTime,
    ) -> Self {
        let now = timestamp_millis::format(&OffsetDateTime::now_utc());
        DeadLetter {
            id,
            backend,
            event,
            attempts,
            last_error,
            first_attempt_at: timestamp_millis::format(&first_attempt_at),
            last_attempt_at: now.clone(),
            dead_at: now,
            target: None,
        }
    }

    /// The same record, for one target of the event.
    pub fn with_target(mut self, target: Option<&str>) -> Self {
        self.target = target.map(str::to_owned);
        self
    }
}

/// Move an event from its queue to the dead letters.
pub(crate) fn bury(t: &mut Txn, slot: usize, seq: u64, record: &[u8]) -> Result<usize, SpoolError> {
    let Some(name) = t.live_name(slot) else {
        return Ok(0);
    };
    let mut q = t.slot_table(&queue_table(&name))?;
    let Some(old) = q.remove(seq).map_err(io)? else {
        // Already acked or dead-lettered: nothing to move.
        return Ok(0);
    };
    t.fx.bytes_delta -= old.value().len() as i64;
    t.fx.queued(slot, -1);
    if let Some(key) = super::shared::referenced(old.value()) {
        t.refs.release(key);
    }
    drop(old);
    // A fresh sequence number, not the queue's: the dead-letter table is
    // then in the order events died, across backends too, which is what
    // "newest first" in a listing means.
    let key = t.take_seq();
    t.slot_table(&dead_table(&name))?.insert(key, record).map_err(io)?;
    t.fx.dead(slot, 1);
    t.fx.bytes_delta += record.len() as i64;
    Ok(1)
}

/// Put the dead letters `chosen_by` picks back at the end of their queue;
/// how many.
pub(crate) fn replay(t: &mut Txn, slot: usize, chosen_by: &dyn Fn(&DeadLetter) -> bool) -> Result<usize, SpoolError> {
    let Some(name) = t.live_name(slot) else {
        return Ok(0);
    };
    // Replayed events go after the rows of fan-outs accepted before them.
    super::fanout::flush_queue(t, Some(slot), &name)?;
    let mut d = t.slot_table(&dead_table(&name))?;
    let mut q = t.slot_table(&queue_table(&name))?;
    let mut chosen = Vec::new();
    for row in d.iter().map_err(io)? {
        let (k, v) = row.map_err(io)?;
        let dl: DeadLetter = match serde_json::from_slice(v.value()) {
            Ok(dl) => dl,
            Err(e) => {
                tracing::warn!(backend = %name, seq = k.value(), error = %e, "unreadable dead letter skipped");
                continue;
            }
        };
        if chosen_by(&dl) {
            chosen.push((k.value(), v.value().len(), dl));
        }
    }
    for (key, len, dl) in &chosen {
        d.remove(key).map_err(io)?;
        let json = serde_json::to_vec(&dl.event).map_err(io)?;
        // The same record as before it died: to its target only.
        let event = super::record::encode(dl.target.as_deref(), &json);
        let seq = t.take_seq();
        q.insert(seq, event.as_ref()).map_err(io)?;
        t.fx.bytes_delta += event.len() as i64 - *len as i64;
        t.fx.dead(slot, -1);
        t.fx.queued(slot, 1);
        t.fx.appended.push((slot, seq));
        t.fx.replayed.push((slot, seq));
    }
    t.fx.notify.push(slot);
    Ok(chosen.len())
}

/// Which way a dead-letter listing runs: by key, which is the order the
/// events were dead-lettered (each gets a fresh sequence number then).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

impl Spool {
    /// All dead letters of a backend, oldest first. Blocking.
    pub fn list_dead(&self, slot: Slot) -> Result<Vec<DeadLetter>, SpoolError> {
        Ok(self
            .read_dead(slot, None, Order::Asc, usize::MAX)?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    /// Up to `limit` dead letters of a backend with their sequence numbers,
    /// in `order`, starting after sequence number `after` (exclusive). A
    /// range scan: reads only what it returns. Blocking.
    pub fn read_dead(
        &self,
        slot: Slot,
        after: Option<u64>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetter)>, SpoolError> {
        let (_db, d) = self.read_table(slot, dead_table)?;
        let rows = match (order, after) {
            (Order::Asc, None) => d.range::<u64>(..),
            (Order::Asc, Some(a)) => d.range(a.saturating_add(1)..),
            (Order::Desc, None) => d.range::<u64>(..),
            (Order::Desc, Some(a)) => d.range(..a),
        }
        .map_err(io)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut push = |row: Result<(redb::AccessGuard<u64>, redb::AccessGuard<&[u8]>), redb::StorageError>| {
            let (k, v) = row.map_err(io)?;
            out.push((k.value(), serde_json::from_slice(v.value()).map_err(io)?));
            Ok::<_, SpoolError>(())
        };
        match order {
            Order::Asc => rows.take(limit).try_for_each(&mut push)?,
            Order::Desc => rows.rev().take(limit).try_for_each(&mut push)?,
        }
        Ok(out)
    }

    /// The sequence numbers of a backend's dead letters for event `id`
    /// (one, unless the event was dead-lettered, replayed and dead-lettered
    /// again). Scans the table but parses only each record's leading `id`
    /// field. Blocking.
    pub fn find_dead(&self, slot: Slot, id: &str) -> Result<Vec<u64>, SpoolError> {
        let (_db, d) = self.read_table(slot, dead_table)?;
        // Records are written by `DeadLetter`'s serializer: `id` first.
        let prefix = format!("{{\"id\":{}", serde_json::Value::from(id));
        let mut out = Vec::new();
        for row in d.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let bytes = v.value();
            let hit = if bytes.starts_with(b"{\"id\":") {
                bytes.starts_with(prefix.as_bytes()) && matches!(bytes.get(prefix.len()), Some(b',') | Some(b'}'))
            } else {
                // Not our serializer's layout: parse it.
                serde_json::from_slice::<DeadLetter>(bytes).is_ok_and(|d| d.id == id)
            };
            if hit {
                out.push(k.value());
            }
        }
        Ok(out)
    }
}
