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
//! - `persist`: sessions and the dispatch log in the spool (restarts);
//! - `connection`: one WebSocket from Hello to close;
//! - `writer`: a connection's outgoing frames, plain or compressed;
//! - `metrics`: counters and their Prometheus text;
//! - `publish`: `impl Backend` and the endpoint on the main listener.

mod config;
mod connection;
mod dispatch;
pub mod extra_close;
mod hub;
mod limits;
mod metrics;
mod persist;
mod publish;
mod session;
mod writer;

pub use config::{ClientConfig, GatewayConfig};
/// The wire protocol, shared with the consumer SDK (a crate of its own);
/// `super::protocol::...` paths keep working.
pub use event_pusher_gateway_protocol as protocol;
pub use publish::GatewayBackend;
