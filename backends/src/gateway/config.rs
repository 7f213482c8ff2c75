//! `[backends.gateway.NAME]`: where the WebSocket endpoint is mounted, the
//! session timings and limits, and the clients that may connect.

use indexmap::IndexMap;
use serde::Deserialize;

use crate::common::backend_config;

backend_config! {
one_writer;
/// One writer: every event is fanned out in spool order, so all sessions
/// see events in the same order and `s` follows ingest order.
pub struct GatewayConfig {
    /// The path on the main listener.
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_heartbeat", deserialize_with = "event_pusher_config::types::positive_ms")]
    pub heartbeat_interval_ms: u64,
    /// Dispatches kept per session for resume.
    #[serde(default = "default_resume_buffer", deserialize_with = "event_pusher_config::types::positive")]
    pub resume_buffer: usize,
    /// How long a dropped session can be resumed.
    #[serde(default = "default_resume_timeout", deserialize_with = "event_pusher_config::types::positive_ms")]
    pub resume_timeout_ms: u64,
    /// Frames waiting to be written to one connection; beyond this the
    /// session is closed with 4000 (it can resume).
    #[serde(default = "default_max_queued", deserialize_with = "event_pusher_config::types::positive")]
    pub max_queued: usize,
    /// Open WebSocket connections at most; more are answered 503.
    #[serde(default = "default_max_sessions", deserialize_with = "event_pusher_config::types::positive")]
    pub max_sessions: usize,
    /// One table per client that may connect.
    #[serde(default)]
    pub clients: IndexMap<String, ClientConfig>,
}
}

/// `[backends.gateway.NAME.clients.CLIENT]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub token: String,
    /// The most intents this client may ask for.
    pub intents: u64,
}

fn default_path() -> String {
    "/v1/gateway".to_owned()
}

fn default_heartbeat() -> u64 {
    41_250
}

fn default_resume_buffer() -> usize {
    10_000
}

fn default_resume_timeout() -> u64 {
    60_000
}

fn default_max_queued() -> usize {
    1024
}

fn default_max_sessions() -> usize {
    10_000
}
