//! The gateway consumer SDK: connect to a sidecar's gateway backend with a
//! token and intents, and have every dispatch handed, typed, to your
//! [`EventHandler`]. The client heartbeats, resumes after a dropped
//! connection (backoff with jitter), identifies again when the session is
//! gone (op 9), and keeps a presence cache so a [`GatewayEvent::Presence`]
//! carries the user's previous status. Like Nostrum's consumers, N tasks can
//! share one connection ([`Client::consumers`]).
//!
//! ```no_run
//! use event_pusher_gateway_sdk::{Client, Dispatch, EventHandler, GatewayEvent, intents};
//!
//! struct Print;
//!
//! #[event_pusher_gateway_sdk::async_trait]
//! impl EventHandler for Print {
//!     async fn handle_event(&self, dispatch: Dispatch) {
//!         if let GatewayEvent::Presence { event, previous } = &dispatch.event {
//!             println!("{} was {previous:?}", event.user());
//!         }
//!     }
//! }
//!
//! # async fn run() -> Result<(), event_pusher_gateway_sdk::ClientError> {
//! Client::new("ws://127.0.0.1:8088/v1/gateway", "token", intents::PRESENCE | intents::CHAT)
//!     .consumers(4)
//!     .run(Print)
//!     .await
//! # }
//! ```
//!
//! Wire and contract: the sidecar repository's `docs/backends/gateway.md`
//! and `docs/gateway-sdk.md`. The server side is
//! `event_pusher_backends::gateway`; both speak
//! `event_pusher_gateway_protocol`. The sidecar crate re-exports this one
//! as `event_pusher::gateway`. This crate depends on no part of the
//! sidecar (no spool, server, broker or cloud SDKs).

mod cache;
mod client;
mod event;

pub use async_trait::async_trait;
pub use cache::PresenceCache;
pub use client::{Client, ClientError};
pub use event::{Dispatch, EventHandler, GatewayEvent};
pub use event_pusher_event::{Event, EventBody, PresenceStatus};
pub use event_pusher_gateway_protocol as protocol;
pub use event_pusher_gateway_protocol::compress::Compression;

/// Intent bits (the event classes): OR them to subscribe.
pub mod intents {
    pub const PRESENCE: u64 = 1 << 0;
    pub const CHAT: u64 = 1 << 1;
    pub const GROUPCHAT: u64 = 1 << 2;
    pub const HEADLINE: u64 = 1 << 3;
    pub const NORMAL: u64 = 1 << 4;
    pub const UNACKED: u64 = 1 << 5;
    pub const OPERATIONAL: u64 = 1 << 6;
    pub const ALL: u64 = super::protocol::ALL_INTENTS;
}
