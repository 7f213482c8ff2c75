//! One webhook subscription: what is stored in the spool, and the checks of
//! the attach (`POST /v1/webhooks`) and change (`PATCH`) bodies.
//!
//! Bodies are read key by key rather than through one derived struct, so a
//! bad value is reported with its field's name (`url: ...`), not as a byte
//! offset into the body.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use event_pusher_config::RetryConfig;
use event_pusher_core::{EventClass, EventClasses};
use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::field_error::{FieldError, FieldProblem};
use crate::http::WebhookSecret;

/// A subscription as stored (JSON in the spool's `subscriptions` table).
/// The secrets are stored (the sidecar signs with them) but never shown
/// after the attach answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub url: String,
    /// Event class names; all of them when the attach named none.
    pub events: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// As given (`{"max_attempts": 8}`), checked as the config's `retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Value>,
    /// `whsec_` + base64.
    pub secret: String,
    /// The secret a rotation replaced, still signing until
    /// `rotated_at` + [`ROTATION_OVERLAP`](super::ROTATION_OVERLAP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// What a full queue does (`dead_letter` unless the attach said).
    #[serde(
        default = "super::limits::default_overflow",
        skip_serializing_if = "super::limits::is_default_overflow"
    )]
    pub overflow: event_pusher_core::spool::Overflow,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_s: Option<f64>,
    /// Set by auto-disable, cleared by restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<super::limits::Disabled>,
}

impl Subscription {
    /// The event classes it receives.
    pub fn classes(&self) -> EventClasses {
        self.events.iter().filter_map(|n| EventClass::from_name(n)).collect()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// `POST /v1/webhooks`, checked.
#[derive(Debug)]
pub struct AttachRequest {
    pub id: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    pub headers: BTreeMap<String, String>,
    pub retry: Option<Value>,
    pub secret: Option<String>,
    pub overflow: Option<event_pusher_core::spool::Overflow>,
    pub rate_limit_per_s: Option<f64>,
}

impl AttachRequest {
    pub fn parse(body: &Value) -> Result<Self, FieldError> {
        let map = object(body)?;
        only(
            map,
            &[
                "id",
                "url",
                "events",
                "secret",
                "headers",
                "format",
                "retry",
                "overflow",
                "rate_limit_per_s",
            ],
            &[],
        )?;
        let id = map.get("id").map(id).transpose()?;
        let url = url(map
            .get("url")
            .ok_or_else(|| FieldError::new("url", FieldProblem::Required))?)?;
        let events = match map.get("events") {
            None => EventClass::ALL.iter().map(|c| c.name().to_owned()).collect(),
            Some(v) => events(v)?,
        };
        let headers = map.get("headers").map(headers).transpose()?.unwrap_or_default();
        let retry = map.get("retry").map(retry).transpose()?;
        let secret = map.get("secret").map(secret).transpose()?;
        if let Some(f) = map.get("format") {
            if f.as_str() != Some("json") {
                return Err(FieldError::new("format", FieldProblem::NotJsonFormat));
            }
        }
        Ok(AttachRequest {
            id,
            url,
            events,
            headers,
            retry,
            secret,
            overflow: map.get("overflow").map(super::limits::overflow).transpose()?,
            rate_limit_per_s: map
                .get("rate_limit_per_s")
                .map(super::limits::rate)
                .transpose()?
                .flatten(),
        })
    }

    /// The subscription it makes, with `id` and `secret` chosen when the
    /// request left them out.
    pub fn into_subscription(self, now: OffsetDateTime) -> Subscription {
        Subscription {
            id: self.id.unwrap_or_else(generate_id),
            url: self.url,
            events: self.events,
            headers: self.headers,
            retry: self.retry,
            secret: self.secret.unwrap_or_else(generate_secret),
            previous_secret: None,
            rotated_at: None,
            created_at: rfc3339(now),
            overflow: self.overflow.unwrap_or_else(super::limits::default_overflow),
            rate_limit_per_s: self.rate_limit_per_s,
            disabled: None,
        }
    }
}

/// `PATCH /v1/webhooks/{id}`, checked: what to change.
#[derive(Debug, Default)]
pub struct PatchRequest {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub retry: Option<Value>,
    pub rotate_secret: bool,
    pub overflow: Option<event_pusher_core::spool::Overflow>,
    /// `Some(None)`: remove the limit.
    pub rate_limit_per_s: Option<Option<f64>>,
}

impl PatchRequest {
    pub fn parse(body: &Value) -> Result<Self, FieldError> {
        let map = object(body)?;
        only(
            map,
            &[
                "url",
                "events",
                "headers",
                "retry",
                "rotate_secret",
                "overflow",
                "rate_limit_per_s",
            ],
            &["id", "secret", "format"],
        )?;
        let rotate_secret = match map.get("rotate_secret") {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| FieldError::new("rotate_secret", FieldProblem::NotABool))?,
        };
        Ok(PatchRequest {
            url: map.get("url").map(url).transpose()?,
            events: map.get("events").map(events).transpose()?,
            headers: map.get("headers").map(headers).transpose()?,
            retry: map.get("retry").map(retry).transpose()?,
            rotate_secret,
            overflow: map.get("overflow").map(super::limits::overflow).transpose()?,
            rate_limit_per_s: map.get("rate_limit_per_s").map(super::limits::rate).transpose()?,
        })
    }

    /// `sub` with the changes applied (a rotation keeps the old secret
    /// signing for a while).
    pub fn apply(self, sub: &Subscription, now: OffsetDateTime) -> Subscription {
        let mut next = sub.clone();
        if let Some(url) = self.url {
            next.url = url;
        }
        if let Some(events) = self.events {
            next.events = events;
        }
        if let Some(headers) = self.headers {
            next.headers = headers;
        }
        if let Some(retry) = self.retry {
            next.retry = Some(retry);
        }
        if let Some(overflow) = self.overflow {
            next.overflow = overflow;
        }
        if let Some(rate) = self.rate_limit_per_s {
            next.rate_limit_per_s = rate;
        }
        if self.rotate_secret {
            next.previous_secret = Some(std::mem::replace(&mut next.secret, generate_secret()));
            next.rotated_at = Some(rfc3339(now));
        }
        next
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Shortest and longest secret key taken (Standard Webhooks: 24 to 64 bytes).
const MIN_SECRET: usize = 24;
const MAX_SECRET: usize = 64;

/// `wh_` and a ULID: unique, and sorted by creation.
pub fn generate_id() -> String {
    format!("wh_{}", ulid::Ulid::generate().to_string().to_lowercase())
}

/// `whsec_` + base64 of 24 random bytes.
pub fn generate_secret() -> String {
    let key: [u8; 24] = rand::random();
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))
}

fn object(body: &Value) -> Result<&Map<String, Value>, FieldError> {
    body.as_object()
        .ok_or_else(|| FieldError::new("body", FieldProblem::NotAnObject))
}

/// Refuse unknown keys, and keys that exist but cannot be set here.
fn only(map: &Map<String, Value>, allowed: &[&str], fixed: &[&str]) -> Result<(), FieldError> {
    for key in map.keys() {
        if fixed.contains(&key.as_str()) {
            return Err(FieldError::new(key, FieldProblem::Fixed));
        }
        if !allowed.contains(&key.as_str()) {
            return Err(FieldError::new(
                key,
                FieldProblem::Unknown {
                    expected: allowed.join(", "),
                },
            ));
        }
    }
    Ok(())
}

fn string<'a>(field: &str, v: &'a Value) -> Result<&'a str, FieldError> {
    v.as_str()
        .ok_or_else(|| FieldError::new(field, FieldProblem::NotAString))
}

fn id(v: &Value) -> Result<String, FieldError> {
    let s = string("id", v)?;
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(FieldError::new("id", FieldProblem::BadId));
    }
    Ok(s.to_owned())
}

fn url(v: &Value) -> Result<String, FieldError> {
    let s = string("url", v)?;
    let url = url::Url::parse(s).map_err(|source| {
        FieldError::new(
            "url",
            FieldProblem::InvalidUrl {
                url: s.to_owned(),
                source,
            },
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FieldError::new(
            "url",
            FieldProblem::NotHttp {
                url: s.to_owned(),
                scheme: url.scheme().to_owned(),
            },
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FieldError::new("url", FieldProblem::Credentials));
    }
    // The literal check here (no lookup); `check_egress` resolves names.
    crate::egress::current()
        .check_literal(&url)
        .map_err(|e| FieldError::new("url", FieldProblem::Egress(e)))?;
    Ok(s.to_owned())
}

/// The attach-time egress check of a subscription URL (`[egress]`): the
/// host in any spelling, and every address its name resolves to.
pub async fn check_egress(url: &str) -> Result<(), FieldError> {
    let url = url::Url::parse(url).map_err(|e| FieldError::new("url", FieldProblem::Unparsable(e)))?;
    crate::egress::current()
        .check_url(&url)
        .await
        .map_err(|e| FieldError::new("url", FieldProblem::Egress(e)))
}

/// `url` as listings show it: without `user:pass@` (refused now, but a
/// subscription stored before may carry them).
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

fn events(v: &Value) -> Result<Vec<String>, FieldError> {
    let list = v
        .as_array()
        .ok_or_else(|| FieldError::new("events", FieldProblem::EventsNotAList))?;
    if list.is_empty() {
        return Err(FieldError::new("events", FieldProblem::NoEvents));
    }
    let mut names: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        let name = item.as_str().unwrap_or_default();
        if EventClass::from_name(name).is_none() {
            return Err(FieldError::new(
                "events",
                FieldProblem::UnknownEventClass { item: item.to_string() },
            ));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn headers(v: &Value) -> Result<BTreeMap<String, String>, FieldError> {
    let map = v
        .as_object()
        .ok_or_else(|| FieldError::new("headers", FieldProblem::HeadersNotAnObject))?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| FieldError::new("headers", FieldProblem::InvalidHeaderName { name: k.clone() }))?;
        if crate::egress::reserved_header(k) {
            return Err(FieldError::new(
                "headers",
                FieldProblem::ReservedHeader { name: k.clone() },
            ));
        }
        let value = v
            .as_str()
            .ok_or_else(|| FieldError::new("headers", FieldProblem::HeaderValueNotAString { name: k.clone() }))?;
        HeaderValue::from_str(value)
            .map_err(|_| FieldError::new("headers", FieldProblem::InvalidHeaderValue { name: k.clone() }))?;
        out.insert(k.clone(), value.to_owned());
    }
    Ok(out)
}

fn retry(v: &Value) -> Result<Value, FieldError> {
    RetryConfig::deserialize(v).map_err(|e| FieldError::new("retry", FieldProblem::Retry(Arc::new(e))))?;
    Ok(v.clone())
}

fn secret(v: &Value) -> Result<String, FieldError> {
    let s = string("secret", v)?;
    let key = WebhookSecret::parse(s).map_err(|e| FieldError::new("secret", FieldProblem::Secret(e)))?;
    if !(MIN_SECRET..=MAX_SECRET).contains(&key.0.len()) {
        return Err(FieldError::new(
            "secret",
            FieldProblem::SecretLength {
                min: MIN_SECRET,
                max: MAX_SECRET,
                len: key.0.len(),
            },
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn err(body: Value) -> String {
        AttachRequest::parse(&body).unwrap_err().field
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(err(json!({"url": "ftp://x"})), "url");
        assert_eq!(err(json!({})), "url");
        assert_eq!(err(json!({"url": "http://x", "events": ["chat", "nope"]})), "events");
        assert_eq!(err(json!({"url": "http://x", "id": "a b"})), "id");
        assert_eq!(err(json!({"url": "http://x", "secret": "abc"})), "secret");
        assert_eq!(err(json!({"url": "http://x", "retry": {"max_attempts": 0}})), "retry");
        assert_eq!(err(json!({"url": "http://x", "headers": {"a b": "c"}})), "headers");
        assert_eq!(err(json!({"url": "http://x", "format": "form"})), "format");
        assert_eq!(err(json!({"url": "http://x", "colour": 1})), "colour");
        assert_eq!(err(json!({"url": "http://u:p@x/"})), "url");
        assert_eq!(
            err(json!({"url": "http://x", "headers": {"Content-Length": "5"}})),
            "headers"
        );
        assert_eq!(
            err(json!({"url": "http://x", "headers": {"webhook-id": "forged"}})),
            "headers"
        );
        assert_eq!(err(json!({"url": "http://x", "secret": "whsec_AA=="})), "secret");
    }

    #[test]
    fn attach_fills_in_id_secret_and_all_classes() {
        let sub = AttachRequest::parse(&json!({"url": "https://x/h"}))
            .unwrap()
            .into_subscription(OffsetDateTime::UNIX_EPOCH);
        assert!(sub.id.starts_with("wh_"));
        assert!(WebhookSecret::parse(&sub.secret).is_ok());
        assert_eq!(sub.classes(), EventClasses::ALL);
        let back = Subscription::from_json(&sub.to_json()).unwrap();
        assert_eq!(back, sub);
    }

    #[test]
    fn rotation_keeps_the_old_secret() {
        let sub = AttachRequest::parse(&json!({"url": "https://x/h", "events": ["chat"]}))
            .unwrap()
            .into_subscription(OffsetDateTime::UNIX_EPOCH);
        let patch = PatchRequest::parse(&json!({"rotate_secret": true, "events": ["presence"]})).unwrap();
        let next = patch.apply(&sub, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(next.previous_secret.as_deref(), Some(sub.secret.as_str()));
        assert_ne!(next.secret, sub.secret);
        assert_eq!(next.events, ["presence"]);
        assert_eq!(
            PatchRequest::parse(&json!({"secret": "whsec_AAAA"})).unwrap_err().field,
            "secret"
        );
    }
}
