//! Sending one notification to a browser's push service and reading its
//! answer.
//!
//! `201` (or any 2xx) means accepted; `404` / `410`: the subscription is
//! gone; `401` / `403`: the VAPID token was refused (re-signed and retried
//! once); anything else by the transport's status policy (`408`, `429`,
//! `5xx` retried; `413` too large, `400` malformed permanent).

use async_trait::async_trait;
use bytes::Bytes;
use event_pusher_core::{BackendError, DeliveryError};
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::{Map, Value};

use super::config::WebPushConfig;
use super::encrypt::{encrypt, MAX_PLAINTEXT};
use super::subscription::Subscription;
use super::vapid::Vapid;
use crate::push::es256::Es256Key;
use crate::push::provider::{web_push_topic, Address, Device, Notification, Priority, Provider, PublishOptions, Sent};
use crate::push::transport::{self, Attempt, CredentialHealth};
use crate::push::truncate::render_within;
use crate::transport::status::{self, Refusal};

pub struct WebPushProvider {
    client: reqwest::Client,
    vapid: Vapid,
    ttl: String,
    health: CredentialHealth,
}

impl WebPushProvider {
    /// Read the VAPID key; errors name the file and what is wrong with it.
    pub fn new(config: &WebPushConfig) -> Result<Self, BackendError> {
        let key = Es256Key::from_pem_file(&config.vapid_private_key_file, "webpush vapid_private_key_file")?;
        Ok(WebPushProvider {
            client: transport::guarded_client()?,
            vapid: Vapid::new(key, config.subject.clone()),
            ttl: config.ttl_s.to_string(),
            health: CredentialHealth::default(),
        })
    }

    /// The VAPID public key, uncompressed, base64url: what the web app
    /// passes as `applicationServerKey` to `pushManager.subscribe`.
    pub fn public_key_base64url(&self) -> &str {
        self.vapid.public_key()
    }

    async fn attempt(
        &self,
        url: &url::Url,
        authorization: &str,
        headers: &Headers,
        body: Bytes,
    ) -> Result<Attempt, DeliveryError> {
        let mut request = self
            .client
            .post(url.clone())
            .header(AUTHORIZATION, authorization)
            .header(CONTENT_ENCODING, "aes128gcm")
            .header(CONTENT_TYPE, "application/octet-stream")
            .header("ttl", headers.ttl.as_deref().unwrap_or(&self.ttl))
            .header("urgency", headers.urgency);
        if let Some(topic) = &headers.topic {
            request = request.header("topic", topic);
        }
        Ok(match status::send(request.body(body)).await? {
            Ok(()) => Attempt::Sent(Sent::Delivered),
            Err(refusal) => classify(refusal),
        })
    }
}

/// The RFC 8030 headers a device's options and the conversation choose.
struct Headers {
    /// `TTL`: the device's `time_to_live_s`, else the configured `ttl_s`.
    ttl: Option<String>,
    /// `Urgency`: `high`, or `normal` for a device that asked for it.
    urgency: &'static str,
    /// `Topic`: the conversation, so a newer notification replaces an
    /// undelivered older one.
    topic: Option<String>,
}

impl Headers {
    fn new(note: &Notification, options: &PublishOptions) -> Headers {
        Headers {
            ttl: options.time_to_live_s.map(|t| t.to_string()),
            urgency: options.priority.unwrap_or(Priority::High).as_str(),
            topic: note.collapse_key.as_deref().map(web_push_topic),
        }
    }
}

fn classify(refusal: Refusal) -> Attempt {
    let what = refusal.describe();
    match refusal.status {
        404 | 410 => Attempt::Sent(Sent::Invalid { reason: what }),
        401 | 403 => Attempt::CredentialRejected {
            status: refusal.status,
            reason: what,
        },
        status => Attempt::Failed(refusal.into_error(format!("Web Push answered {status}: {what}"))),
    }
}

/// The plaintext: `{"title", "body", ...data}`; a silent device gets the
/// data only. Data keys named `title` or `body` cannot replace the real ones.
fn plaintext(note: &Notification) -> Value {
    let mut top: Map<String, Value> = note
        .data
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    if !note.silent {
        for (key, value) in [("title", &note.title), ("body", &note.body)] {
            match value {
                Some(v) => top.insert(key.into(), v.as_str().into()),
                None => top.remove(key),
            };
        }
    }
    Value::Object(top)
}

#[async_trait]
impl Provider for WebPushProvider {
    fn name(&self) -> &'static str {
        "webpush"
    }

    fn not_ready_for(&self) -> Option<std::time::Duration> {
        self.health.not_ready_for()
    }

    async fn send(&self, device: &Device, note: &Notification) -> Result<Sent, DeliveryError> {
        let Address::WebPush { endpoint, p256dh, auth } = &device.address else {
            return Err(DeliveryError::permanent("not a Web Push device"));
        };
        let subscription = Subscription::parse(endpoint, p256dh, auth)
            .map_err(|e| DeliveryError::permanent(format!("subscription.{e}")))?;
        // A host written as an address is connected to without a lookup
        // (the resolver never sees it): checked here, on the policy of now.
        crate::egress::current()
            .check_literal(&subscription.endpoint)
            .map_err(|e| DeliveryError::retryable(format!("refused by the egress guard: {e}")))?;
        let refused = |e: &dyn std::error::Error| DeliveryError::permanent(format!("notification: {e}"));
        let plain =
            render_within(note, MAX_PLAINTEXT, |n| plaintext(n).to_string().into_bytes()).map_err(|e| refused(&e))?;
        let body = encrypt(&plain, &subscription.ua_public, &subscription.auth).map_err(|e| refused(&e))?;
        let body = Bytes::from(body);
        let headers = Headers::new(note, &device.options);
        let first = self.vapid.authorization(&subscription.origin);
        self.health
            .send_with_fresh_retry("webpush", |fresh| {
                let authorization = if fresh {
                    self.vapid.refresh(&subscription.origin, &first)
                } else {
                    first.clone()
                };
                let (url, body, headers) = (&subscription.endpoint, body.clone(), &headers);
                async move { self.attempt(url, &authorization, headers, body).await }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn refusal(status: u16) -> Refusal {
        Refusal {
            status,
            retry_after: None,
            body: String::new(),
        }
    }

    #[test]
    fn classifies_push_service_answers() {
        for status in [404, 410] {
            assert!(
                matches!(classify(refusal(status)), Attempt::Sent(Sent::Invalid { .. })),
                "{status}"
            );
        }
        for status in [401, 403] {
            assert!(
                matches!(classify(refusal(status)), Attempt::CredentialRejected { .. }),
                "{status}"
            );
        }
        for (status, retryable) in [
            (408, true),
            (429, true),
            (500, true),
            (503, true),
            (413, false),
            (400, false),
        ] {
            let Attempt::Failed(e) = classify(refusal(status)) else {
                panic!("{status} is a failure");
            };
            assert_eq!(e.retryable, retryable, "{status}");
        }
    }

    #[test]
    fn plaintext_for_shown_and_silent_devices() {
        let mut note = Notification {
            event_id: "e1".into(),
            title: Some("New message".into()),
            body: None,
            badge: 1,
            data: BTreeMap::from([
                ("from".into(), "alice@localhost".into()),
                ("body".into(), "leak".into()),
            ]),
            silent: false,
            collapse_key: None,
            last_sender: None,
        };
        assert_eq!(
            plaintext(&note),
            json!({"title": "New message", "from": "alice@localhost"})
        );
        note.silent = true;
        assert_eq!(plaintext(&note), json!({"from": "alice@localhost", "body": "leak"}));
    }
}
