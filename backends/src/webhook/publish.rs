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
use crate::transport::HttpClient;

/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// Per-request timeout of subscription deliveries.
const TIMEOUT_MS: u64 = 5000;
/// Idle connections kept per endpoint host (the shared pool).
const IDLE_PER_HOST: usize = 32;

/// One subscription's backend: an [`HttpBackend`] (json body, Standard
/// Webhooks headers, `webhook-id` = event id) reported as kind `webhook`.
pub struct WebhookBackend {
    http: HttpBackend,
    url: url::Url,
}

/// One HTTP client for every subscription: a client per subscription would
/// hold a connection pool and a TLS setup each, thousands of them.
fn shared_client() -> Result<reqwest::Client, BackendError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    // The egress guard's resolver: the addresses a subscription's name
    // resolves to at each connection are checked again (DNS rebinding).
    let client = HttpClient::new()
        .connect_timeout(Duration::from_millis(TIMEOUT_MS))
        .idle_per_host(IDLE_PER_HOST)
        .egress_guard()
        .build()?;
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
        let config: HttpConfig = serde_json::from_value(raw)
            .map_err(|e| BackendError::with_source(format!("webhook {}: {e}", sub.id), e))?;
        let mut backend = HttpBackend::with_client(shared_client()?, &config);
        if let (Some(old), Some(at)) = (&sub.previous_secret, &sub.rotated_at) {
            let until = OffsetDateTime::parse(at, &Rfc3339)
                .map(|t| SystemTime::from(t) + ROTATION_OVERLAP)
                .map_err(|e| BackendError::with_source(format!("webhook {}: rotated_at: {e}", sub.id), e))?;
            let old = WebhookSecret::parse(old)
                .map_err(|e| BackendError::with_source(format!("webhook {}: previous secret: {e}", sub.id), e))?;
            backend = backend.with_retiring_secret(old, until);
        }
        Ok((
            WebhookBackend {
                http: backend,
                url: config.url.clone(),
            },
            config.common().options(),
        ))
    }
}

#[async_trait]
impl Backend for WebhookBackend {
    const KIND: &'static str = "webhook";

    fn wants(&self, event: &Event) -> bool {
        self.http.wants(event)
    }

    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        // A host written as an address is connected to without a lookup,
        // so the resolver never sees it: check it here, against the policy
        // of now (a subscription stored under an older `[egress]`).
        if let Err(e) = crate::egress::current().check_literal(&self.url) {
            let why = format!("refused by the egress guard: {e}");
            return batch
                .iter()
                .map(|_| Err(DeliveryError::retryable(why.clone())))
                .collect();
        }
        self.http.deliver(batch).await
    }
}
