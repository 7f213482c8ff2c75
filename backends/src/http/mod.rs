//! The `http` backend: POST each event to a webhook.
//!
//! - `config.rs`: the `[backends.http.NAME]` keys.
//! - `request.rs`: the body (canonical JSON or MongooseIM's form) and the
//!   Standard Webhooks signature.
//! - `publish.rs`: sending, and turning the answer into delivered /
//!   retry / dead letter (by the transport's status policy).

pub(crate) mod config;
mod publish;
mod request;

pub use config::{Format, HttpConfig, SecretError, WebhookSecret};
pub use publish::HttpBackend;
pub use request::{form_body, sign};
