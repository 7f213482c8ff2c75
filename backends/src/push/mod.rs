//! The `push` backend: a device registry, presence awareness, and
//! notifications through FCM v1, APNs, Web Push and MongoosePush
//! (contract: `docs/backends/push.md`).
//!
//! In the chain the backend follows presence (`observe`, whatever its
//! `events` mask) and claims a message once per device of an offline
//! recipient (`targets`): each device is its own queue item with its own
//! retries and dead letter. Registry and presence live in memory and in
//! the spool (`store`), loaded when the sidecar attaches the spool.

pub mod apns;
pub mod config;
pub mod devices;
pub mod es256;
mod fcm;
mod fcm_auth;
pub mod metrics;
mod mongoosepush;
mod notification;
mod presence;
pub mod provider;
mod publish;
pub mod registration;
mod store;
mod transport;
mod truncate;
pub mod webpush;

use std::time::Duration;

use event_pusher_core::BackendError;

pub use config::PushConfig;
pub use publish::{PushBackend, RegistryError};

const USER_AGENT: &str = concat!("event-pusher/", env!("CARGO_PKG_VERSION"));

/// The HTTP client a provider sends with: bounded waits, no redirects (a
/// redirected POST would turn into a GET).
pub(crate) fn http_client() -> Result<reqwest::Client, BackendError> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| BackendError::with_source(format!("cannot build HTTP client: {e}"), e))
}

/// Send `req` with `body` as JSON; a transport failure is a retryable
/// delivery error.
pub(crate) async fn send_json(
    req: reqwest::RequestBuilder,
    body: &serde_json::Value,
) -> Result<reqwest::Response, event_pusher_core::DeliveryError> {
    req.header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(crate::http::publish::transport_error)
}
