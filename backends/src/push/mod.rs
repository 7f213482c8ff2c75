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
mod coalesce;
pub mod commands;
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
mod registration_error;
mod store;
mod transport;
mod truncate;
pub mod webpush;

use event_pusher_core::{BackendError, DeliveryError};

pub use commands::PushCommands;
pub use config::PushConfig;
pub use publish::{PushBackend, RegistryError};

use crate::transport::status::{self, Refusal};

/// The HTTP client a provider without a `ca_file` sends with.
pub(crate) fn http_client() -> Result<reqwest::Client, BackendError> {
    transport::client(None, "")
}

/// Send `req` with `body` as JSON: `Ok(Ok(()))` on 2xx, the refusal
/// otherwise, a retryable delivery error when there was no answer.
pub(crate) async fn send_json(
    req: reqwest::RequestBuilder,
    body: &serde_json::Value,
) -> Result<Result<(), Refusal>, DeliveryError> {
    status::send(
        req.header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string()),
    )
    .await
}
