//! The APNs provider: token-based auth (ES256 JWT), HTTP/2 over TLS.
//!
//! - `config.rs`: the `[backends.push.NAME.apns]` keys.
//! - `token.rs`: the provider token, reused for up to 50 minutes.
//! - `payload.rs`: the URL (production or sandbox by the device's mode),
//!   the `apns-*` headers' values and the JSON body.
//! - `publish.rs`: sending, and mapping APNs' answers to outcomes.

mod config;
mod payload;
mod publish;
mod token;

pub use config::ApnsConfig;
pub use payload::{
    apns_expiration, apns_id, apns_priority, device_url, endpoint_for, is_device_token, MAX_PAYLOAD, PRODUCTION_URL,
    SANDBOX_URL,
};
pub use publish::ApnsProvider;
