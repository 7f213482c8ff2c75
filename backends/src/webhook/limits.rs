//! The operations keys of a subscription (`overflow`, `rate_limit_per_s`)
//! and its auto-disable mark, read from request bodies with the field
//! named in errors.

use event_pusher_core::spool::Overflow;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::field_error::{FieldError, FieldProblem};

/// Why and since when a subscription stopped delivering on its own
/// (`[webhooks] disable_after_s`); cleared by `restart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    pub reason: String,
    /// RFC 3339.
    pub at: String,
}

/// Runtime subscriptions dead-letter what does not fit: one endpoint that
/// is down must not make ingest answer 503 for everybody.
pub fn default_overflow() -> Overflow {
    Overflow::DeadLetter
}

pub(crate) fn is_default_overflow(o: &Overflow) -> bool {
    *o == default_overflow()
}

/// `overflow`: `"refuse"` or `"dead_letter"`.
pub(crate) fn overflow(v: &Value) -> Result<Overflow, FieldError> {
    match v.as_str() {
        Some("refuse") => Ok(Overflow::Refuse),
        Some("dead_letter") => Ok(Overflow::DeadLetter),
        _ => Err(FieldError::new(
            "overflow",
            FieldProblem::Overflow { value: v.to_string() },
        )),
    }
}

/// `rate_limit_per_s`: a number above 0, or `null` for no limit.
pub(crate) fn rate(v: &Value) -> Result<Option<f64>, FieldError> {
    if v.is_null() {
        return Ok(None);
    }
    match v.as_f64() {
        Some(r) if r.is_finite() && r > 0.0 => Ok(Some(r)),
        _ => Err(FieldError::new(
            "rate_limit_per_s",
            FieldProblem::Rate { value: v.to_string() },
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bad_values_name_their_field() {
        assert_eq!(overflow(&json!("drop")).unwrap_err().field, "overflow");
        assert_eq!(overflow(&json!("refuse")).unwrap(), Overflow::Refuse);
        assert_eq!(rate(&json!(0)).unwrap_err().field, "rate_limit_per_s");
        assert_eq!(rate(&json!("5")).unwrap_err().field, "rate_limit_per_s");
        assert_eq!(rate(&json!(2.5)).unwrap(), Some(2.5));
        assert_eq!(rate(&Value::Null).unwrap(), None);
    }
}
