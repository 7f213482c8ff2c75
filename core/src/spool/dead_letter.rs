//! The dead-letter record: an event that will not be retried any more, with
//! what happened to it, kept until an operator replays it.

use serde::{Deserialize, Serialize};

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
}
