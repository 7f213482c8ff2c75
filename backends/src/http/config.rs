//! `[backends.http.NAME]`

use std::collections::BTreeMap;

use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer};

use crate::common::backend_config;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The canonical event record, `application/json`.
    #[default]
    Json,
    /// MongooseIM's `author=&server=&receiver=&message=`, chat messages only.
    Form,
}

backend_config! {
pub struct HttpConfig {
    #[serde(deserialize_with = "http_url")]
    pub url: url::Url,
    #[serde(default)]
    pub format: Format,
    #[serde(
        default = "default_timeout_ms",
        deserialize_with = "event_pusher_config::types::positive_ms"
    )]
    pub timeout_ms: u64,
    #[serde(default, deserialize_with = "headers")]
    pub headers: BTreeMap<String, String>,
    /// `whsec_` + base64: sign requests the Standard Webhooks way.
    #[serde(default)]
    pub secret: Option<WebhookSecret>,
}
}

fn default_timeout_ms() -> u64 {
    5000
}

pub(crate) fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<url::Url, D::Error> {
    let s = String::deserialize(d)?;
    let url = url::Url::parse(&s).map_err(|e| serde::de::Error::custom(format!("invalid URL \"{s}\": {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(serde::de::Error::custom(format!(
            "URL \"{s}\" must be http:// or https://, not {}://",
            url.scheme()
        )));
    }
    Ok(url)
}

fn headers<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    for (k, v) in &map {
        HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| serde::de::Error::custom(format!("invalid header name \"{k}\"")))?;
        if crate::egress::reserved_header(k) {
            return Err(serde::de::Error::custom(format!(
                "header \"{k}\" is reserved (Host, Content-Length, Content-Type, Transfer-Encoding, Connection and webhook-* are set by the sender)"
            )));
        }
        HeaderValue::from_str(v).map_err(|_| serde::de::Error::custom(format!("invalid value for header \"{k}\"")))?;
    }
    Ok(map)
}

/// A Standard Webhooks signing secret: `whsec_` followed by base64 key bytes.
#[derive(Clone, PartialEq)]
pub struct WebhookSecret(pub Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

/// Why a string is not a signing secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret must start with `whsec_` followed by base64")]
    NoPrefix,
    #[error("secret after `whsec_` is not valid base64: {0}")]
    NotBase64(#[source] base64::DecodeError),
    #[error("secret is empty after `whsec_`")]
    Empty,
}

impl WebhookSecret {
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        use base64::Engine;
        let b64 = s.strip_prefix("whsec_").ok_or(SecretError::NoPrefix)?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(SecretError::NotBase64)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(WebhookSecret(key))
    }
}

impl<'de> Deserialize<'de> for WebhookSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WebhookSecret::parse(&s).map_err(serde::de::Error::custom)
    }
}
