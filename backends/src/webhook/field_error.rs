//! The error of a webhook API request: which field is missing, malformed
//! or not allowed, and why (the API answers it as `{"error", "field"}`).

use std::sync::Arc;

use crate::egress::EgressError;
use crate::http::SecretError;

/// A request field that is missing, malformed or not allowed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    pub field: String,
    #[source]
    pub problem: FieldProblem,
}

impl FieldError {
    pub fn new(field: &str, problem: FieldProblem) -> Self {
        FieldError {
            field: field.to_owned(),
            problem,
        }
    }
}

/// What is wrong with the field (the message after `FIELD: `).
#[derive(Debug, Clone, thiserror::Error)]
pub enum FieldProblem {
    #[error("is required")]
    Required,
    #[error("must be a string")]
    NotAString,
    #[error("must be true or false")]
    NotABool,
    #[error("must be a JSON object")]
    NotAnObject,
    /// Set at attach, fixed since.
    #[error("cannot be changed (detach and attach again)")]
    Fixed,
    #[error("unknown field (expected one of {expected})")]
    Unknown { expected: String },
    #[error("must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -")]
    BadId,
    #[error("must be \"json\" (the only format of webhooks)")]
    NotJsonFormat,
    #[error("invalid URL \"{url}\": {source}")]
    InvalidUrl { url: String, source: url::ParseError },
    /// A stored URL that no longer parses (checked again at attach).
    #[error("invalid URL: {0}")]
    Unparsable(#[source] url::ParseError),
    #[error("\"{url}\" must be http:// or https://, not {scheme}://")]
    NotHttp { url: String, scheme: String },
    /// Not echoed: the point is not to show credentials.
    #[error("must not carry credentials (user:pass@); send them with headers, e.g. Authorization")]
    Credentials,
    /// The `[egress]` guard refused the URL's host.
    #[error("{0}")]
    Egress(#[source] EgressError),
    #[error("must be a list of event classes")]
    EventsNotAList,
    #[error("is empty: the subscription would receive nothing")]
    NoEvents,
    /// `item` is the JSON given, as given.
    #[error(
        "unknown event class {item} (expected presence, chat, groupchat, headline, normal, unacked or operational)"
    )]
    UnknownEventClass { item: String },
    #[error("must be an object of header name to value")]
    HeadersNotAnObject,
    #[error("invalid header name \"{name}\"")]
    InvalidHeaderName { name: String },
    #[error("\"{name}\" is reserved (Host, Content-Length, Content-Type, Transfer-Encoding, Connection and webhook-* are set by the sender)")]
    ReservedHeader { name: String },
    #[error("value of \"{name}\" must be a string")]
    HeaderValueNotAString { name: String },
    #[error("invalid value for header \"{name}\"")]
    InvalidHeaderValue { name: String },
    /// Not a `[retry]` table; shared so that the error stays `Clone`.
    #[error("{0}")]
    Retry(#[source] Arc<serde_json::Error>),
    #[error("{0}")]
    Secret(#[source] SecretError),
    #[error("must be `whsec_` + base64 of {min} to {max} bytes (Standard Webhooks), not {len}")]
    SecretLength { min: usize, max: usize, len: usize },
    /// `value` is the JSON given.
    #[error("must be \"refuse\" or \"dead_letter\", not {value}")]
    Overflow { value: String },
    #[error("must be a number above 0 (or null for no limit), not {value}")]
    Rate { value: String },
}
