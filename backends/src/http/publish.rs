//! Sending one event and classifying the answer.
//!
//! Any non-2xx is a failure. 408, 429 and 5xx (and transport errors) are
//! worth retrying; 400, 401, 403, 404, 410 and 422 will not get better, so
//! they go to dead letters at once. `Retry-After` (seconds or an HTTP date)
//! is passed on to the delivery engine.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use event_pusher_core::{one_by_one, Backend, BackendError, Delivery, DeliveryError, Event};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use super::config::{Format, HttpConfig, WebhookSecret};
use super::request::{form_body, sign};
use super::response::{drain_success, error_excerpt};

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

const USER_AGENT: &str = concat!("event-pusher/", env!("CARGO_PKG_VERSION"));
impl HttpBackend {
    pub fn new(_name: &str, config: &HttpConfig) -> Result<Self, BackendError> {
        let client = Self::client(config.timeout_ms, config.concurrency)?;
        Ok(Self::with_client(client, config))
    }

    /// An HTTP client as a backend uses it; several backends may share one
    /// (webhook subscriptions do: one connection pool, one TLS setup).
    pub fn client(timeout_ms: u64, max_idle_per_host: usize) -> Result<reqwest::Client, BackendError> {
        Self::client_builder(timeout_ms, max_idle_per_host)
            .build()
            .map_err(|e| BackendError::with_source(format!("cannot build HTTP client: {e}"), e))
    }

    /// The settings of [`client`](Self::client), to add to (webhook
    /// subscriptions add the egress guard's resolver).
    pub fn client_builder(timeout_ms: u64, max_idle_per_host: usize) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_millis(timeout_ms.min(10_000)))
            .pool_max_idle_per_host(max_idle_per_host)
            // A redirected POST would silently turn into a GET; report it.
            .redirect(reqwest::redirect::Policy::none())
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
        let mut req = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, content_type)
            .header("webhook-id", id.as_str());
        if let Some(secret) = &self.secret {
            let ts = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            req = req
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", self.signature(secret, id, ts, &body));
        }
        let resp = req.body(body).send().await.map_err(transport_error)?;
        let status = resp.status();
        if status.is_success() {
            drain_success(resp).await;
            return Ok(());
        }
        Err(failure(resp).await)
    }
}

/// The `Retry-After` of an answer, if it has a readable one.
pub(crate) fn retry_after_of(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// The delivery error for a non-2xx answer (its body excerpt read).
pub(crate) async fn failure(resp: reqwest::Response) -> DeliveryError {
    let (status, retry_after) = (resp.status(), retry_after_of(&resp));
    classify(status, retry_after, error_excerpt(resp).await)
}

/// Turn a non-2xx answer into a delivery error.
pub(crate) fn classify(status: StatusCode, retry_after: Option<Duration>, excerpt: String) -> DeliveryError {
    let message = if excerpt.trim().is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", excerpt.trim())
    };
    let permanent = matches!(status.as_u16(), 400 | 401 | 403 | 404 | 410 | 422);
    let mut err = if permanent {
        DeliveryError::permanent(message)
    } else {
        DeliveryError::retryable(message)
    };
    err = err.with_status(status.as_u16());
    if let Some(wait) = retry_after {
        err = err.with_retry_after(wait);
    }
    err
}

pub(crate) fn transport_error(e: reqwest::Error) -> DeliveryError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's Display hides the cause (e.g. "connection refused").
    let mut msg = format!("{what}: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    DeliveryError::retryable(msg)
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        for s in [400, 401, 403, 404, 410, 422] {
            assert!(
                !classify(StatusCode::from_u16(s).unwrap(), None, String::new()).retryable,
                "{s}"
            );
        }
        for s in [408, 429, 500, 502, 503, 504, 409] {
            assert!(
                classify(StatusCode::from_u16(s).unwrap(), None, String::new()).retryable,
                "{s}"
            );
        }
        let e = classify(StatusCode::INTERNAL_SERVER_ERROR, None, "boom".into());
        assert_eq!(e.status, Some(500));
        assert!(e.message.contains("boom"));
    }

    #[test]
    fn parses_retry_after() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let d = parse_retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30), "{d:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }
}
