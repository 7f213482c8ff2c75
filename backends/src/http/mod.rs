//! The `http` backend: POST each event to a webhook.
//!
//! - `config.rs`: the `[backends.http.NAME]` keys.
//! - `request.rs`: the body (canonical JSON or MongooseIM's form) and the
//!   Standard Webhooks signature.
//! - `publish.rs`: sending, and turning the answer into delivered /
//!   retry / dead letter.
//! - `response.rs`: reading the answer's body with a bound.

mod config;
mod publish;
mod request;
mod response;

pub use config::{Format, HttpConfig, WebhookSecret};
pub use publish::HttpBackend;
pub use request::{form_body, sign};
// What the push providers share with this backend: the same URL check for
// their `endpoint_url`, the same answer reading and `Retry-After` handling.
#[cfg(feature = "push")]
pub(crate) use config::http_url;
#[cfg(feature = "push")]
pub(crate) use publish::{parse_retry_after, transport_error};
#[cfg(feature = "push")]
pub(crate) use response::{drain_success, error_excerpt};
