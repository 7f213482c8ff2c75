//! The Uncord gateway protocol: opcodes, close codes, intent bits and the
//! frames a client may send. Shared by the server
//! (`event_pusher_backends::gateway`, which re-exports it as `protocol`)
//! and the consumer SDK (`event-pusher-gateway-sdk`), so both speak one
//! definition of the wire. A crate of its own so the SDK needs nothing of
//! the server.

use serde::Deserialize;
use serde_json::Value;

pub mod compress;

/// Frame opcodes (`op`).
pub mod op {
    pub const DISPATCH: i64 = 0;
    pub const HEARTBEAT: i64 = 1;
    pub const IDENTIFY: i64 = 2;
    pub const PRESENCE_UPDATE: i64 = 3;
    pub const RESUME: i64 = 6;
    pub const RECONNECT: i64 = 7;
    pub const INVALID_SESSION: i64 = 9;
    pub const HELLO: i64 = 10;
    pub const HEARTBEAT_ACK: i64 = 11;
}

/// Close codes the server sends.
pub mod close {
    /// The session's outgoing queue overflowed (a slow client), or a resume
    /// on another connection took the session over: reconnect and resume.
    pub const QUEUE_OVERFLOW: u16 = 4000;
    pub const UNKNOWN_OPCODE: u16 = 4001;
    pub const DECODE_ERROR: u16 = 4002;
    /// An op other than Heartbeat, Identify or Resume before Identify, or
    /// no Identify within one heartbeat interval.
    pub const NOT_AUTHENTICATED: u16 = 4003;
    pub const AUTHENTICATION_FAILED: u16 = 4004;
    pub const ALREADY_AUTHENTICATED: u16 = 4005;
    pub const INVALID_SEQ: u16 = 4007;
    /// No heartbeat within 1.5 × the interval; the session can be resumed.
    pub const SESSION_TIMED_OUT: u16 = 4009;
    pub const INVALID_INTENTS: u16 = 4013;
    pub const DISALLOWED_INTENTS: u16 = 4014;
    /// After op 7 on shutdown (RFC 6455 "service restart").
    pub const SERVICE_RESTART: u16 = 1012;
}

/// Every intent bit: presence 1<<0 ... unacked 1<<5, operational 1<<6 (the event classes).
pub const ALL_INTENTS: u64 = 0b111_1111;

/// Dispatch types (`t`).
pub mod dispatch {
    pub const READY: &str = "READY";
    pub const RESUMED: &str = "RESUMED";
    pub const PRESENCE_UPDATE: &str = "PRESENCE_UPDATE";
    pub const DM_MESSAGE_CREATE: &str = "DM_MESSAGE_CREATE";
    pub const MESSAGE_CREATE: &str = "MESSAGE_CREATE";
    pub const MESSAGE_UNACKED: &str = "MESSAGE_UNACKED";
}

/// Any frame as read off the wire: `{"op", "s"?, "t"?, "d"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Frame {
    pub op: i64,
    #[serde(default)]
    pub s: Option<u64>,
    #[serde(default)]
    pub t: Option<String>,
    #[serde(default)]
    pub d: Value,
}

/// op 2's `d`.
#[derive(Debug, Clone, Deserialize)]
pub struct Identify {
    pub token: String,
    pub intents: i64,
    #[serde(default)]
    pub properties: Option<Value>,
}

/// op 6's `d`.
#[derive(Debug, Clone, Deserialize)]
pub struct Resume {
    pub token: String,
    pub session_id: String,
    pub seq: u64,
}

/// A frame the server sends that is not a dispatch: `{"op":N,"d":...}`
/// (`op` first, as in dispatches, for people reading a transcript).
pub fn control(op: i64, d: Value) -> String {
    format!("{{\"op\":{op},\"d\":{d}}}")
}
