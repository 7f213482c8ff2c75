//! Delivery backends, one folder each: its config struct, how it builds
//! requests, how it publishes, and its tests. The only thing about a backend
//! outside its folder is its `mod` line here and its one line in the
//! `backend_kinds!` list of `registry.rs` (which declares
//! [`BackendsConfig`] and its `build`).

pub mod common;
pub mod egress;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod http;
pub mod log;
#[cfg(feature = "push")]
pub mod push;
#[cfg(feature = "rabbit")]
pub mod rabbit;
#[cfg(feature = "sns")]
pub mod sns;
pub mod transport;
pub mod webhook;

mod registry;

pub use common::{BuiltBackend, Endpoint};
pub use registry::BackendsConfig;
