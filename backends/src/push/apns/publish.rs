//! Sending one notification to APNs and reading its answer.
//!
//! APNs answers `200`, or a status with `{"reason": "..."}`:
//! `410 Unregistered` and `400 BadDeviceToken` mean the device is gone;
//! `403 ExpiredProviderToken` / `InvalidProviderToken` refuse our token
//! (re-signed and retried once); anything else by the transport's status
//! policy (`408`, `429`, `5xx` retried; a bad topic, a too-large payload
//! permanent).

use async_trait::async_trait;
use bytes::Bytes;
use event_pusher_core::{BackendError, DeliveryError};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

use super::config::ApnsConfig;
use super::payload::{self, apns_id, device_url, endpoint_for, is_device_token};
use super::token::ProviderToken;
use crate::push::es256::Es256Key;
use crate::push::provider::{collapse_id, Address, Device, Notification, Priority, Provider, PublishOptions, Sent};
use crate::push::transport::{self, Attempt, CredentialHealth};
use crate::push::truncate::render_within;
use crate::transport::status::{self, Refusal};

pub struct ApnsProvider {
    client: reqwest::Client,
    token: ProviderToken,
    topic: String,
    endpoint_url: Option<url::Url>,
    health: CredentialHealth,
}

impl ApnsProvider {
    /// Read the `.p8` key and build the HTTP/2 client; errors name the file
    /// and what is wrong with it.
    pub fn new(config: &ApnsConfig) -> Result<Self, BackendError> {
        let key = Es256Key::from_pem_file(&config.key_file, "apns key_file")?;
        let client = transport::client(config.ca_file.as_deref(), "apns ca_file")?;
        Ok(ApnsProvider {
            client,
            token: ProviderToken::new(key, config.key_id.clone(), config.team_id.clone()),
            topic: config.topic.clone(),
            endpoint_url: config.endpoint_url.clone(),
            health: CredentialHealth::default(),
        })
    }

    /// One POST with `jwt`, classified.
    async fn attempt(
        &self,
        url: &str,
        jwt: &str,
        note: &Notification,
        options: &PublishOptions,
        body: Bytes,
    ) -> Result<Attempt, DeliveryError> {
        let priority = payload::apns_priority(options.priority.unwrap_or(Priority::High), note.silent);
        let topic = options.topic.as_deref().unwrap_or(&self.topic);
        let mut request = self
            .client
            .post(url)
            .header(AUTHORIZATION, format!("bearer {jwt}"))
            .header("apns-topic", topic)
            .header("apns-push-type", payload::push_type(note.silent))
            .header("apns-priority", priority)
            .header("apns-id", apns_id(&note.event_id));
        if let Some(key) = &note.collapse_key {
            request = request.header("apns-collapse-id", collapse_id(key));
        }
        if let Some(ttl) = options.time_to_live_s {
            request = request.header("apns-expiration", payload::apns_expiration(ttl));
        }
        let request = request.header(CONTENT_TYPE, "application/json").body(body);
        Ok(match status::send(request).await? {
            Ok(()) => Attempt::Sent(Sent::Delivered),
            Err(refusal) => classify(refusal),
        })
    }
}

/// Map an APNs refusal to an outcome by its status and `reason`.
fn classify(refusal: Refusal) -> Attempt {
    let reason = reason(&refusal.body);
    match (refusal.status, reason.as_str()) {
        (410, _) | (400, "BadDeviceToken") => Attempt::Sent(Sent::Invalid { reason }),
        (403, "ExpiredProviderToken" | "InvalidProviderToken") => Attempt::CredentialRejected {
            status: refusal.status,
            reason,
        },
        (status, _) => Attempt::Failed(refusal.into_error(format!("APNs answered {status}: {reason}"))),
    }
}

/// The `reason` of an APNs error body, or the body itself if it has none.
fn reason(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

#[async_trait]
impl Provider for ApnsProvider {
    fn name(&self) -> &'static str {
        "apns"
    }

    fn not_ready_for(&self) -> Option<std::time::Duration> {
        self.health.not_ready_for()
    }

    async fn send(&self, device: &Device, note: &Notification) -> Result<Sent, DeliveryError> {
        let Address::Apns { token, mode } = &device.address else {
            return Err(DeliveryError::permanent("not an APNs device"));
        };
        if !is_device_token(token) {
            return Ok(Sent::Invalid {
                reason: "BadDeviceToken (not a hex token)".into(),
            });
        }
        let url = device_url(&endpoint_for(*mode, self.endpoint_url.as_ref()), token);
        let body = render_within(note, payload::MAX_PAYLOAD, |n| {
            payload::body(n, &device.options).to_string().into_bytes()
        })
        .map_err(|e| DeliveryError::permanent(format!("notification: {e}")))?;
        let body = Bytes::from(body);
        let first = self.token.current();
        self.health
            .send_with_fresh_retry("apns", |fresh| {
                let jwt = if fresh {
                    self.token.refresh(&first)
                } else {
                    first.clone()
                };
                let (url, body) = (url.as_str(), body.clone());
                let options = &device.options;
                async move { self.attempt(url, &jwt, note, options, body).await }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16, body: &str) -> Refusal {
        Refusal {
            status,
            retry_after: None,
            body: body.into(),
        }
    }

    #[test]
    fn classifies_apns_answers() {
        assert!(matches!(
            classify(refusal(410, r#"{"reason":"Unregistered","timestamp":1}"#)),
            Attempt::Sent(Sent::Invalid { reason }) if reason == "Unregistered"
        ));
        assert!(matches!(
            classify(refusal(400, r#"{"reason":"BadDeviceToken"}"#)),
            Attempt::Sent(Sent::Invalid { .. })
        ));
        assert!(matches!(
            classify(refusal(403, r#"{"reason":"ExpiredProviderToken"}"#)),
            Attempt::CredentialRejected { .. }
        ));
        let Attempt::Failed(e) = classify(refusal(400, r#"{"reason":"BadTopic"}"#)) else {
            panic!("BadTopic is a failure");
        };
        assert!(!e.retryable && e.message.contains("BadTopic"), "{e}");
        for status in [408, 429, 500, 503] {
            let Attempt::Failed(e) = classify(refusal(status, "")) else {
                panic!("{status} is a failure");
            };
            assert!(e.retryable, "{status}");
        }
    }
}
