//! FCM HTTP v1: `POST {endpoint_url}/v1/projects/{project_id}/messages:send`
//! with an OAuth2 bearer token from the service account (`fcm_auth`).
//!
//! Answers: 2xx delivered; 404 `UNREGISTERED` (or 400 `INVALID_ARGUMENT`
//! about the token) means the token is gone ([`Sent::Invalid`]); 401 means
//! the access token was rejected: fetch a fresh one and send once more,
//! and if that is rejected too, report not ready for a while (its devices
//! wait, the other providers' go on) and fail retryably. Anything else by
//! the transport's status policy (408, 429, 5xx retried, `Retry-After`
//! honoured).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use event_pusher_core::{BackendError, DeliveryError};
use reqwest::header::AUTHORIZATION;
use serde_json::{json, Value};

use super::apns::{apns_expiration, apns_priority};
use super::config::{base, FcmConfig};
use super::fcm_auth::TokenSource;
use super::provider::{collapse_id, Address, Device, Notification, Priority, Provider, PublishOptions, Sent};

/// How long the provider reports not ready after its credential was
/// rejected twice in a row; then the next send tries a fresh one.
pub const REJECTED_HOLD: Duration = Duration::from_secs(10);

pub struct FcmProvider {
    client: reqwest::Client,
    endpoint: String,
    tokens: TokenSource,
    /// Set when a fresh token was rejected too: not ready until then.
    rejected_until: Mutex<Option<Instant>>,
}

impl FcmProvider {
    pub fn new(config: &FcmConfig) -> Result<Self, BackendError> {
        let client = super::http_client()?;
        Ok(FcmProvider {
            endpoint: base(&config.endpoint_url),
            tokens: TokenSource::new(config.service_account_file.clone(), client.clone()),
            client,
            rejected_until: Mutex::new(None),
        })
    }

    fn set_rejected(&self, until: Option<Instant>) {
        *self
            .rejected_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = until;
    }

    /// One POST with `token`.
    async fn post(&self, project: &str, token: &str, body: &Value) -> Result<Answer, DeliveryError> {
        let url = format!("{}/v1/projects/{project}/messages:send", self.endpoint);
        let req = self.client.post(url).header(AUTHORIZATION, format!("Bearer {token}"));
        match super::send_json(req, body).await? {
            Ok(()) => Ok(Answer::Delivered),
            Err(refusal) if refusal.status == 401 => Ok(Answer::CredentialRejected(refusal.body)),
            Err(refusal) if token_gone(refusal.status, &refusal.body) => Ok(Answer::Invalid(format!(
                "FCM {}: {}",
                refusal.status,
                error_code(&refusal.body)
            ))),
            Err(refusal) => {
                let message = refusal.describe();
                Err(refusal.into_error(message))
            }
        }
    }
}

enum Answer {
    Delivered,
    Invalid(String),
    CredentialRejected(String),
}

/// FCM's way of saying the registration token is no longer valid.
fn token_gone(status: u16, body: &str) -> bool {
    match status {
        404 => true,
        400 => body.contains("INVALID_ARGUMENT") && body.to_ascii_lowercase().contains("token"),
        _ => false,
    }
}

/// `UNREGISTERED`, `INVALID_ARGUMENT`, ...: the FCM error code of an answer.
fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let detail = v["error"]["details"]
        .as_array()
        .and_then(|d| d.iter().find_map(|x| x["errorCode"].as_str()));
    detail
        .or_else(|| v["error"]["status"].as_str())
        .unwrap_or("token not registered")
        .to_owned()
}

/// The v1 message, with the device's publish options and the
/// conversation's collapse key (`android.collapse_key`, and
/// `apns-collapse-id` for iOS devices behind FCM).
pub fn message(token: &str, note: &Notification, options: &PublishOptions) -> Value {
    let mut android = json!({"priority": options.priority.unwrap_or(Priority::High).as_str()});
    let mut apns_headers = serde_json::Map::new();
    let mut aps = json!({"badge": note.badge});
    if let Some(key) = &note.collapse_key {
        let id = collapse_id(key);
        android["collapse_key"] = json!(id);
        apns_headers.insert("apns-collapse-id".into(), json!(id));
    }
    if let Some(p) = options.priority {
        apns_headers.insert("apns-priority".into(), json!(apns_priority(p, note.silent)));
    }
    if let Some(ttl) = options.time_to_live_s {
        android["ttl"] = json!(format!("{ttl}s"));
        apns_headers.insert("apns-expiration".into(), json!(apns_expiration(ttl)));
    }
    if let Some(topic) = &options.topic {
        apns_headers.insert("apns-topic".into(), json!(topic));
    }
    if !note.silent {
        let mut shown = serde_json::Map::new();
        if let Some(sound) = &options.sound {
            shown.insert("sound".into(), json!(sound));
            aps["sound"] = json!(sound);
        }
        if let Some(action) = &options.click_action {
            shown.insert("click_action".into(), json!(action));
            aps["category"] = json!(action);
        }
        if options.mutable_content {
            aps["mutable-content"] = json!(1);
        }
        if !shown.is_empty() {
            android["notification"] = Value::Object(shown);
        }
    }
    let mut apns = json!({"payload": {"aps": aps}});
    if !apns_headers.is_empty() {
        apns["headers"] = Value::Object(apns_headers);
    }
    let mut message = json!({
        "token": token,
        "data": note.data,
        "android": android,
        "apns": apns,
    });
    if !note.silent {
        let mut n = serde_json::Map::new();
        if let Some(t) = &note.title {
            n.insert("title".into(), json!(t));
        }
        if let Some(b) = &note.body {
            n.insert("body".into(), json!(b));
        }
        message["notification"] = Value::Object(n);
    }
    json!({ "message": message })
}

#[async_trait]
impl Provider for FcmProvider {
    fn name(&self) -> &'static str {
        "fcm"
    }

    /// Read the service account and get a first token.
    async fn start(&self) -> Result<(), BackendError> {
        self.tokens.account().map_err(BackendError::from_source)?;
        self.tokens
            .token(None)
            .await
            .map(|_| ())
            .map_err(|e| BackendError::with_source(format!("FCM: cannot get an access token: {e}"), e))
    }

    fn not_ready_for(&self) -> Option<Duration> {
        let until = *self
            .rejected_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        until
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    async fn send(&self, device: &Device, note: &Notification) -> Result<Sent, DeliveryError> {
        let Address::Fcm { token: device_token } = &device.address else {
            return Err(DeliveryError::permanent("not an FCM device"));
        };
        let project = self
            .tokens
            .account()
            .map_err(|e| DeliveryError::permanent(e.to_string()))?
            .project_id
            .clone();
        let body = message(device_token, note, &device.options);
        let mut access = self.tokens.token(None).await?;
        let mut refreshed = false;
        loop {
            match self.post(&project, &access, &body).await? {
                Answer::Delivered => {
                    self.set_rejected(None);
                    return Ok(Sent::Delivered);
                }
                Answer::Invalid(reason) => return Ok(Sent::Invalid { reason }),
                Answer::CredentialRejected(_) if !refreshed => {
                    tracing::info!("FCM rejected the access token; fetching a fresh one");
                    access = self.tokens.token(Some(&access)).await?;
                    refreshed = true;
                }
                Answer::CredentialRejected(excerpt) => {
                    tracing::error!(hold = ?REJECTED_HOLD, "FCM rejected a fresh access token too; holding its devices");
                    self.set_rejected(Some(Instant::now() + REJECTED_HOLD));
                    return Err(DeliveryError::retryable(format!(
                        "FCM rejected the credential twice: {}",
                        excerpt.trim()
                    ))
                    .with_status(401));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn silent_messages_have_no_notification_and_gone_tokens_are_recognised() {
        let note = Notification {
            event_id: "e".into(),
            title: Some("alice@x".into()),
            body: Some("hi".into()),
            badge: 2,
            data: BTreeMap::from([("type".into(), "chat".into())]),
            silent: false,
            collapse_key: Some("bob@x alice@x".into()),
            last_sender: None,
        };
        let none = PublishOptions::default();
        let m = message("tok", &note, &none);
        assert_eq!(m["message"]["android"]["collapse_key"], "bob@x alice@x");
        assert_eq!(m["message"]["apns"]["headers"]["apns-collapse-id"], "bob@x alice@x");
        assert_eq!(m["message"]["android"]["priority"], "high");
        assert_eq!(m["message"]["notification"]["title"], "alice@x");
        assert_eq!(m["message"]["apns"]["payload"]["aps"]["badge"], 2);
        let silent = message("tok", &Notification { silent: true, ..note }, &none);
        assert!(silent["message"].get("notification").is_none());
        let gone = r#"{"error":{"code":404,"status":"NOT_FOUND","details":[{"errorCode":"UNREGISTERED"}]}}"#;
        assert!(token_gone(404, gone));
        assert_eq!(error_code(gone), "UNREGISTERED");
        assert!(!token_gone(
            400,
            r#"{"error":{"status":"INVALID_ARGUMENT","message":"bad data"}}"#
        ));
    }
}
