//! The `webhook` backend: webhook subscriptions added, changed and removed
//! at runtime through the admin API (`/v1/webhooks`), not in the config.
//!
//! - `subscription.rs`: the stored record of one subscription and the
//!   checks of the API's request bodies (each error names its field).
//! - `publish.rs`: [`WebhookBackend`], the `http` backend's delivery
//!   (Standard Webhooks signatures, retries, dead letters) under the kind
//!   `webhook`, with both secrets signing for a day after a rotation.
//! - `limits.rs`: `overflow`, `rate_limit_per_s` and the auto-disable mark.

mod field_error;
mod limits;
mod publish;
mod subscription;

pub use field_error::{FieldError, FieldProblem};
pub use limits::Disabled;

pub use publish::{WebhookBackend, ROTATION_OVERLAP};
pub use subscription::{
    check_egress, generate_id, generate_secret, shown_url, AttachRequest, PatchRequest, Subscription,
};
