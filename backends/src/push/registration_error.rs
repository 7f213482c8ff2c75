//! Why a device registration was refused: which field, and what is wrong
//! with it. The message is `FIELD: problem`; the admin API answers it as
//! `{"error", "field"}` and the ingest API as the call's 400.

use super::webpush::SubscriptionError;

/// A registration (body, device id or JID) that cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("body: must be a JSON object")]
    NotAnObject,
    #[error("{field}: unknown field")]
    UnknownField { field: String },
    #[error("{field}: required")]
    Required { field: String },
    /// Needed by the provider the registration names.
    #[error("{field}: required for provider \"{provider}\"")]
    RequiredFor {
        field: &'static str,
        provider: &'static str,
    },
    #[error("{field}: must be a string")]
    NotAString { field: String },
    #[error("{field}: must be true or false")]
    NotABool { field: &'static str },
    #[error("{field}: must not be empty")]
    Empty { field: String },
    #[error("{field}: longer than {max} bytes")]
    TooLong { field: String, max: usize },
    #[error("{field}: contains control characters")]
    ControlCharacters { field: String },
    /// Not one of the values the field takes (`allowed` lists them).
    #[error("{field}: must be {allowed}, not \"{value}\"")]
    NotOneOf {
        field: &'static str,
        allowed: &'static str,
        value: String,
    },
    #[error("token: an APNs device token is hexadecimal, at most 200 characters")]
    ApnsToken,
    #[error("time_to_live_s: must be a whole number of seconds from 0 to {max}")]
    TtlOutOfRange { max: u64 },
    #[error("time_to_live_s: must be a number of seconds")]
    TtlNotANumber,
    #[error("topic: must be printable ASCII without spaces (an app bundle id)")]
    TopicNotPrintable,
    #[error("subscription: must be an object")]
    SubscriptionNotAnObject,
    #[error("subscription.keys: required (an object with p256dh and auth)")]
    SubscriptionKeys,
    /// The Web Push subscription's endpoint or keys.
    #[error("subscription.{0}")]
    Subscription(#[source] SubscriptionError),
    /// `.` or `..`: a path segment of its own would climb the provider's
    /// URL path.
    #[error("device_id: \"{0}\" is not a device id")]
    DotDeviceId(String),
    #[error("jid: {0}")]
    InvalidJid(#[source] event_pusher_core::jid::JidError),
    /// The registration names a provider its push backend does not have.
    #[error("provider: \"{provider}\" is not configured on push backend \"{backend}\"")]
    ProviderNotConfigured { provider: &'static str, backend: String },
}

impl RegistrationError {
    /// The same problem, for the field `key` of `parent`
    /// (`subscription.keys.auth` instead of `auth`).
    pub(crate) fn within(self, parent: &str) -> Self {
        let nest = |field: String| format!("{parent}.{field}");
        match self {
            RegistrationError::UnknownField { field } => RegistrationError::UnknownField { field: nest(field) },
            RegistrationError::Required { field } => RegistrationError::Required { field: nest(field) },
            RegistrationError::NotAString { field } => RegistrationError::NotAString { field: nest(field) },
            RegistrationError::Empty { field } => RegistrationError::Empty { field: nest(field) },
            RegistrationError::TooLong { field, max } => RegistrationError::TooLong {
                field: nest(field),
                max,
            },
            RegistrationError::ControlCharacters { field } => {
                RegistrationError::ControlCharacters { field: nest(field) }
            }
            other => other,
        }
    }
}
