//! The `gateway` backend: a live WebSocket stream of events for bots and
//! services, speaking the Uncord gateway protocol (Discord-style opcodes,
//! intents to choose event classes, resume after a dropped connection).
//! Contract: `docs/backends/gateway.md`.
//!
//! ```toml
//! [backends.gateway.live]
//! path = "/v1/gateway"
//! heartbeat_interval_ms = 41250
//! [backends.gateway.live.clients.analytics]
//! token = "${ANALYTICS_TOKEN}"
//! intents = 7
//! ```
//!
//! - `protocol`: opcodes, close codes, intents, client frames (also used by
//!   the consumer SDK);
//! - `dispatch`: an event encoded once for every session;
//! - `session`: sequence, resume buffer, attachment of one session;
//! - `hub`: all sessions of one backend, clients, fan-out, drain;
//! - `connection`: one WebSocket from Hello to close;
//! - `metrics`: counters and their Prometheus text;
//! - `publish`: `impl Backend` and the endpoint on the main listener.

mod config;
mod connection;
mod dispatch;
pub mod extra_close;
mod hub;
mod metrics;
mod publish;
mod session;

pub use config::{ClientConfig, GatewayConfig};
/// The wire protocol, shared with the consumer SDK (a crate of its own);
/// `super::protocol::...` paths keep working.
pub use event_pusher_gateway_protocol as protocol;
pub use publish::GatewayBackend;
