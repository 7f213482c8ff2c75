//! How backends talk to their peers, in one place: the HTTP client every
//! HTTP-speaking backend sends with (`http_client`), what an HTTP answer
//! comes to (`status`: which codes are retried, which are permanent, how
//! `Retry-After` is read), reading an answer's body with a bound
//! (`response`), and the one way to open an AMQP connection (`amqp`).
//!
//! Backends differ in what they send and in their own special answers (a
//! gone device, a rejected credential); everything else about the transport
//! is decided here, so a 408 means the same for a webhook, a push provider
//! and SNS.

#[cfg(feature = "rabbit")]
pub mod amqp;
pub mod http_client;
pub(crate) mod response;
pub mod status;

pub use http_client::{ClientError, HttpClient, USER_AGENT};
pub use status::{Outcome, Refusal};
