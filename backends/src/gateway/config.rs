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
    /// Identified connections at most; an upgrade beyond this is answered
    /// 503 (an Identify that finds it full since: close 1013).
    #[serde(default = "default_max_sessions", deserialize_with = "event_pusher_config::types::positive")]
    pub max_sessions: usize,
    /// Connections that have not identified yet, at most, counted apart
    /// from `max_sessions`: when full, the oldest of them is closed (1013)
    /// to make room, so sockets that never identify cannot lock out a
    /// client that does.
    #[serde(default = "default_max_pending", deserialize_with = "event_pusher_config::types::positive")]
    pub max_pending: usize,
    /// `ws://` or `wss://` base the clients reach this sidecar at (behind
    /// a proxy: its public address); `resume_gateway_url` is this plus
    /// `path`. Unset: built from the request's `Host` when it is a valid
    /// host name or address, else `ws://localhost`.
    #[serde(default, deserialize_with = "public_url")]
    pub public_url: Option<String>,
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

fn default_max_pending() -> usize {
    1024
}

fn public_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    let url = url::Url::parse(&s).map_err(|e| serde::de::Error::custom(format!("invalid URL \"{s}\": {e}")))?;
    if !matches!(url.scheme(), "ws" | "wss") || url.host().is_none() {
        return Err(serde::de::Error::custom(format!(
            "\"{s}\" must be a ws:// or wss:// URL with a host"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(serde::de::Error::custom(format!(
            "\"{s}\" must be scheme://host[:port][/prefix], no credentials, query or fragment"
        )));
    }
    Ok(Some(url.as_str().trim_end_matches('/').to_owned()))
}
