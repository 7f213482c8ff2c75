//! What the config allows a gateway: the clients that may connect (name,
//! token, most intents) and the session timings and limits. Shared by the
//! hub, which enforces them, and the persisted sessions, which are
//! restored under them.

use std::time::Duration;

/// A client that may connect: its name (for metrics), token and the most
/// intents it may ask for.
pub struct Client {
    pub name: String,
    pub token: String,
    pub intents: u64,
}

/// Session timings and limits, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub heartbeat_interval: Duration,
    pub resume_buffer: usize,
    pub resume_timeout: Duration,
    pub max_queued: usize,
    pub max_sessions: usize,
    pub max_pending: usize,
}
