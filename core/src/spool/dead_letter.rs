//! The dead-letter record: an event that will not be retried any more, with
//! what happened to it, kept until an operator replays it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::event::timestamp_millis;

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
