//! The error of a webhook API request: which field is missing, malformed
//! or not allowed, and why (the API answers it as `{"error", "field"}`).

/// A request field that is missing, malformed or not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}
