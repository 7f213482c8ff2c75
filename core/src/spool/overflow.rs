//! What a queue does when it is full (`overflow`), and the dead letters of
//! events that never entered their queue.
//!
//! Every backend shares `spool.max_queue`; with `overflow = "refuse"` a full
//! queue makes the whole request answer 503 (nothing lost, the sender
//! retries). With `overflow = "dead_letter"` (the default of runtime webhook
//! subscriptions) the events that do not fit go straight to that backend's
//! dead letters with last error "queue full", in the same transaction as the
//! rest of the request, so one dead endpoint never stops ingest for the
//! others. A disabled subscription takes every new event that way.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use redb::{TableDefinition, WriteTransaction};
use time::OffsetDateTime;

use super::{dead_table, DeadLetter, LastError, SpoolError};

/// `overflow` of a backend or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Ingest answers 503 while this queue is full (config backends' default).
    #[default]
    Refuse,
    /// New events for this full queue go to its dead letters; ingest goes on.
    DeadLetter,
}

impl Overflow {
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::Refuse => "refuse",
            Overflow::DeadLetter => "dead_letter",
        }
    }
}

/// The last error of an event that found its queue full.
pub const QUEUE_FULL: &str = "queue full";
/// The last error of an event for a disabled subscription.
pub const DISABLED: &str = "subscription disabled";

/// How a slot takes new events, read by the spool writer; and what it did.
#[derive(Debug, Default)]
pub struct Intake {
    overflow: AtomicU8,
    /// Every new event goes to dead letters (a disabled subscription).
    diverted: AtomicBool,
    /// Events dead-lettered on arrival (full queue or disabled), since start.
    pub overflow_dead_lettered: AtomicU64,
    /// Dead letters deleted by `spool.dead_letter_retention_s`, since start.
    pub expired: AtomicU64,
}

impl Intake {
    pub fn set_overflow(&self, overflow: Overflow) {
        self.overflow.store(overflow as u8, Ordering::Release);
    }

    pub fn overflow(&self) -> Overflow {
        match self.overflow.load(Ordering::Acquire) {
            0 => Overflow::Refuse,
            _ => Overflow::DeadLetter,
        }
    }

    /// Send every new event to dead letters (`true`) or queue them again.
    pub fn set_diverted(&self, diverted: bool) {
        self.diverted.store(diverted, Ordering::Release);
    }

    pub fn is_diverted(&self) -> bool {
        self.diverted.load(Ordering::Acquire)
    }

    /// Of `add` new events for a queue holding `queued` (limit `max`): how
    /// many enter the queue (the rest are dead-lettered), or `None` when
    /// the request must be refused.
    pub fn admit(&self, queued: u64, add: u64, max: u64) -> Option<u64> {
        if self.is_diverted() {
            return Some(0);
        }
        let room = max.saturating_sub(queued);
        match self.overflow() {
            _ if add <= room => Some(add),
            Overflow::Refuse => None,
            Overflow::DeadLetter => Some(room),
        }
    }

    /// The last error of an event turned away now.
    pub fn reason(&self) -> &'static str {
        if self.is_diverted() {
            DISABLED
        } else {
            QUEUE_FULL
        }
    }
}

/// Store one spool record (`record::encode`d event) of slot `name` as a dead
/// letter under `key`, never attempted; its size in bytes.
pub(crate) fn dead_letter_on_arrival(
    txn: &WriteTransaction,
    name: &str,
    key: u64,
    row: &bytes::Bytes,
    reason: &str,
) -> Result<u64, SpoolError> {
    let (target, json) = super::record::decode(row);
    let event: serde_json::Value = serde_json::from_slice(&json).unwrap_or(serde_json::Value::Null);
    let id = event.get("id").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    // Dead letters carry the instance name (`NAME`), as the delivery
    // queue writes them; the spool knows the slot as `KIND.NAME`.
    let backend = name.split_once('.').map_or(name, |(_, n)| n).to_owned();
    let record = DeadLetter::new(
        id,
        backend,
        event,
        0,
        LastError {
            status: None,
            message: reason.to_owned(),
        },
        OffsetDateTime::now_utc(),
    )
    .with_target(target);
    let bytes = serde_json::to_vec(&record).map_err(super::io)?;
    let mut d = txn
        .open_table(TableDefinition::<u64, &[u8]>::new(&dead_table(name)))
        .map_err(super::io)?;
    d.insert(key, bytes.as_slice()).map_err(super::io)?;
    Ok(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_follows_the_policy() {
        let i = Intake::default();
        assert_eq!(i.admit(8, 2, 10), Some(2));
        assert_eq!(i.admit(9, 2, 10), None, "refuse is all or nothing");
        i.set_overflow(Overflow::DeadLetter);
        assert_eq!(i.admit(9, 3, 10), Some(1), "what fits is queued");
        assert_eq!(i.admit(12, 3, 10), Some(0));
        assert_eq!(i.reason(), QUEUE_FULL);
        i.set_diverted(true);
        assert_eq!(i.admit(0, 3, 10), Some(0), "disabled: nothing is queued");
        assert_eq!(i.reason(), DISABLED);
    }
}
