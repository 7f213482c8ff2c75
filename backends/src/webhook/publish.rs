//! Delivering to one subscription: the `http` backend's machinery under
//! the kind `webhook`.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use event_pusher_core::delivery::DeliveryOptions;
use event_pusher_core::{Backend, BackendError, Delivery, DeliveryError, Event};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::subscription::Subscription;
use crate::common::BackendConfig;
use crate::http::{HttpBackend, HttpConfig, WebhookSecret};

/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// Per-request timeout of subscription deliveries.
const TIMEOUT_MS: u64 = 5000;
/// Idle connections kept per endpoint host (the shared pool).
const IDLE_PER_HOST: usize = 32;

/// One subscription's backend: an [`HttpBackend`] (json body, Standard
/// Webhooks headers, `webhook-id` = event id) reported as kind `webhook`.
pub struct WebhookBackend(HttpBackend);

/// One HTTP client for every subscription: a client per subscription would
/// hold a connection pool and a TLS setup each, thousands of them.
fn shared_client() -> Result<reqwest::Client, BackendError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    let client = HttpBackend::client(TIMEOUT_MS, IDLE_PER_HOST)?;
    Ok(CLIENT.get_or_init(|| client).clone())
}

impl WebhookBackend {
    /// The backend and its delivery options (from `retry`). Which classes
    /// it gets is the subscription index's business, not the backend's.
    pub fn new(sub: &Subscription) -> Result<(Self, DeliveryOptions), BackendError> {
        // Through the `http` backend's own config struct: the same checks
        // and defaults as a `[backends.http.NAME]` table.
        let mut raw = json!({
            "url": sub.url,
            "headers": sub.headers,
            "secret": sub.secret,
            "events": sub.events,
            "timeout_ms": TIMEOUT_MS,
        });
        if let Some(retry) = &sub.retry {
            raw["retry"] = retry.clone();
        }
        raw["overflow"] = json!(sub.overflow);
        if let Some(rate) = sub.rate_limit_per_s {
            raw["rate_limit_per_s"] = json!(rate);
        }
        let config: HttpConfig =
            serde_json::from_value(raw).map_err(|e| BackendError::new(format!("webhook {}: {e}", sub.id)))?;
        let mut backend = HttpBackend::with_client(shared_client()?, &config);
        if let (Some(old), Some(at)) = (&sub.previous_secret, &sub.rotated_at) {
            let until = OffsetDateTime::parse(at, &Rfc3339)
                .map(|t| SystemTime::from(t) + ROTATION_OVERLAP)
                .map_err(|e| BackendError::new(format!("webhook {}: rotated_at: {e}", sub.id)))?;
            let old = WebhookSecret::parse(old)
                .map_err(|e| BackendError::new(format!("webhook {}: previous secret: {e}", sub.id)))?;
            backend = backend.with_retiring_secret(old, until);
        }
        Ok((WebhookBackend(backend), config.common().options()))
    }
}

#[async_trait]
impl Backend for WebhookBackend {
    const KIND: &'static str = "webhook";

    fn wants(&self, event: &Event) -> bool {
        self.0.wants(event)
    }

    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        self.0.deliver(batch).await
    }
}
