//! event-pusher: a durable event-pushing sidecar for chat servers, and the
//! library to build your own with custom filters.
//!
//! ```no_run
//! use event_pusher::{Event, Sidecar, Verdict};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! Sidecar::from_file("sidecar.toml".as_ref())?
//!     .with_filter("no-bots", 5, |e: &mut Event| {
//!         if e.user().starts_with("bot-") { Verdict::Stop } else { Verdict::Continue }
//!     })
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The pieces live in their own crates, re-exported here: [`core`] (event
//! record, chain, spool, delivery), [`config`], [`filters`], [`backends`].

mod chain_plan;
pub mod cluster;
pub mod commands;
pub mod config;
/// The gateway consumer SDK (the `event-pusher-gateway-sdk` crate, which
/// SDK users can depend on alone), kept under its old path.
#[cfg(feature = "gateway")]
pub use event_pusher_gateway_sdk as gateway;
mod ingest_metrics;
mod memory;
pub mod operations;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod sources;
pub mod state;
pub mod webhooks;

/// For `impl Backend` (its delivery methods are async).
pub use async_trait::async_trait;
pub use event_pusher_backends as backends;
pub use event_pusher_config as config_crate;
pub use event_pusher_core as core;
pub use event_pusher_core::{
    one_by_one, Backend, BackendError, Delivery, DeliveryError, Event, Filter, MetaValue, Verdict,
};
pub use event_pusher_filters as filters;
pub use runtime::{RunError, Sidecar};
