//! Sending one event and classifying the answer.
//!
//! Any non-2xx is a failure, classified by the transport's one status
//! policy (`transport::status`: 408, 409, 425, 429, 5xx and no answer are
//! retried, other refusals go to dead letters at once, `Retry-After` is
//! passed on to the delivery engine).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use event_pusher_core::{one_by_one, Backend, BackendError, Delivery, DeliveryError, Event};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

use super::config::{Format, HttpConfig, WebhookSecret};
use super::request::{form_body, sign};
use crate::transport::{status, HttpClient};

pub struct HttpBackend {
    client: reqwest::Client,
    url: url::Url,
    format: Format,
    /// The config's headers, sent with every request.
    headers: HeaderMap,
    timeout: Duration,
    secret: Option<WebhookSecret>,
    /// A replaced secret still signing (beside `secret`) until this time,
    /// so receivers can switch over (Standard Webhooks allows several
    /// space-separated signatures).
    retiring: Option<(WebhookSecret, SystemTime)>,
}

impl HttpBackend {
    pub fn new(_name: &str, config: &HttpConfig) -> Result<Self, BackendError> {
        let client = Self::client(config.timeout_ms, config.concurrency)?;
        Ok(Self::with_client(client, config))
    }

    /// An HTTP client as a backend uses it; several backends may share one
    /// (webhook subscriptions do: one connection pool, one TLS setup).
    pub fn client(timeout_ms: u64, max_idle_per_host: usize) -> Result<reqwest::Client, BackendError> {
        // The whole-request timeout is set per request (`timeout_ms`).
        Ok(HttpClient::new()
            .connect_timeout(Duration::from_millis(timeout_ms))
            .idle_per_host(max_idle_per_host)
            .build()?)
    }

    /// A backend sending through `client` (see [`client`](Self::client)).
    pub fn with_client(client: reqwest::Client, config: &HttpConfig) -> Self {
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            // Validated when the config was read; a reserved one (framing,
            // signatures) is never sent, even from a record stored before
            // they were refused: it would duplicate or override ours.
            if crate::egress::reserved_header(k) {
                continue;
            }
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                headers.insert(k, v);
            }
        }
        HttpBackend {
            client,
            url: config.url.clone(),
            format: config.format,
            headers,
            timeout: Duration::from_millis(config.timeout_ms),
            secret: config.secret.clone(),
            retiring: None,
        }
    }

    /// Also sign with `secret` (a replaced one) until `until`.
    pub fn with_retiring_secret(mut self, secret: WebhookSecret, until: SystemTime) -> Self {
        self.retiring = Some((secret, until));
        self
    }

    /// The `webhook-signature` value: one `v1,...` per live secret.
    fn signature(&self, secret: &WebhookSecret, id: &str, ts: i64, body: &[u8]) -> String {
        let mut sig = sign(&secret.0, id, ts, body);
        if let Some((old, until)) = &self.retiring {
            if SystemTime::now() < *until {
                sig.push(' ');
                sig.push_str(&sign(&old.0, id, ts, body));
            }
        }
        sig
    }

    fn body(&self, delivery: &Delivery) -> Option<(Bytes, &'static str)> {
        match self.format {
            Format::Json => Some((delivery.json.clone(), "application/json")),
            Format::Form => form_body(&delivery.event).map(|b| (Bytes::from(b), "application/x-www-form-urlencoded")),
        }
    }
}

#[async_trait]
impl Backend for HttpBackend {
    const KIND: &'static str = "http";

    fn wants(&self, event: &Event) -> bool {
        // The form format only exists for chat messages with a body, as in
        // MongooseIM; in JSON everything can be sent.
        match self.format {
            Format::Json => true,
            Format::Form => event.chat().is_some_and(|c| c.body.is_some()),
        }
    }

    /// One event at a time: there is no batch call to use.
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        one_by_one(batch, |d| self.publish(d)).await
    }
}

impl HttpBackend {
    /// POST one event and classify the answer.
    pub async fn publish(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let Some((body, content_type)) = self.body(delivery) else {
            return Err(DeliveryError::permanent(
                "event has no form encoding (not a chat message with a body)",
            ));
        };
        let id = &delivery.event.id;
        let mut req = self.client.post(self.url.clone()).timeout(self.timeout);
        if !self.headers.is_empty() {
            // Only when configured: an empty map still costs a copy and a
            // drop per request.
            req = req.headers(self.headers.clone());
        }
        req = req.header(CONTENT_TYPE, content_type).header("webhook-id", id.as_str());
        if let Some(secret) = &self.secret {
            let ts = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            req = req
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", self.signature(secret, id, ts, &body));
        }
        match status::send(req.body(body)).await? {
            Ok(()) => Ok(()),
            Err(refusal) => {
                let message = refusal.describe();
                Err(refusal.into_error(message))
            }
        }
    }
}
