//! A browser's push subscription (`PushSubscription.toJSON()`): the push
//! service endpoint to POST to, and the keys to encrypt for. Checked once
//! here, so that the registry can refuse a bad one at registration with
//! the field named, and a send never builds a request from a bad one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::PublicKey;

/// A subscription whose endpoint and keys are well-formed.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub endpoint: url::Url,
    /// `scheme://host[:port]` of the endpoint: the VAPID token's audience.
    pub origin: String,
    /// `keys.p256dh`: the browser's P-256 public key.
    pub ua_public: PublicKey,
    /// `keys.auth`: the 16-byte authentication secret.
    pub auth: [u8; 16],
}

/// What is wrong with a subscription: the message is `FIELD: problem`,
/// FIELD being `endpoint`, `keys.p256dh` or `keys.auth` (the registry
/// prefixes `subscription.`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("endpoint: \"{endpoint}\" is not an http(s) URL")]
    NotHttpUrl { endpoint: String },
    #[error("endpoint: \"{endpoint}\" must be https:// (push services are HTTPS; http:// only with [egress] allow_private = true or the host in allow_hosts)")]
    NotHttps { endpoint: url::Url },
    /// The `[egress]` guard refused the endpoint's host.
    #[error("endpoint: {0}")]
    Egress(#[source] crate::egress::EgressError),
    #[error("keys.p256dh: not base64url ({0})")]
    P256dhNotBase64(#[source] base64::DecodeError),
    #[error("keys.p256dh: not a P-256 public key (65-byte uncompressed point)")]
    P256dhNotAKey(#[source] p256::elliptic_curve::Error),
    #[error("keys.auth: not base64url ({0})")]
    AuthNotBase64(#[source] base64::DecodeError),
    #[error("keys.auth: must be 16 bytes, not {0}")]
    AuthLength(usize),
}

impl Subscription {
    /// Check the three strings of a subscription.
    ///
    /// `http://` endpoints are accepted (local test push services); real
    /// push services are all `https://`.
    pub fn parse(endpoint: &str, p256dh: &str, auth: &str) -> Result<Self, SubscriptionError> {
        let endpoint = url::Url::parse(endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
            .ok_or_else(|| SubscriptionError::NotHttpUrl {
                endpoint: endpoint.to_owned(),
            })?;
        let point = decode(p256dh).map_err(SubscriptionError::P256dhNotBase64)?;
        let ua_public = PublicKey::from_sec1_bytes(&point).map_err(SubscriptionError::P256dhNotAKey)?;
        let secret = decode(auth).map_err(SubscriptionError::AuthNotBase64)?;
        let auth: [u8; 16] = secret
            .try_into()
            .map_err(|v: Vec<u8>| SubscriptionError::AuthLength(v.len()))?;
        Ok(Subscription {
            origin: endpoint.origin().ascii_serialization(),
            endpoint,
            ua_public,
            auth,
        })
    }
}

/// The `[egress]` check of an endpoint given through the API (the
/// registry calls it at registration; sends re-check the address connected
/// to): `https://` unless private addresses or this host are allowed, and
/// no private address in any spelling.
pub fn check_egress(endpoint: &url::Url) -> Result<(), SubscriptionError> {
    let policy = crate::egress::current();
    let open = policy.allows_private() || policy.url_listed(endpoint);
    if endpoint.scheme() != "https" && !open {
        return Err(SubscriptionError::NotHttps {
            endpoint: endpoint.clone(),
        });
    }
    policy
        .check_literal(endpoint)
        .map(|_| ())
        .map_err(SubscriptionError::Egress)
}

/// base64url, with or without `=` padding (browsers omit it, some
/// libraries add it).
fn decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDPOINT: &str = "https://fcm.googleapis.com/fcm/send/abc:def";
    const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    #[test]
    fn reads_a_browser_subscription() {
        let s = Subscription::parse(ENDPOINT, P256DH, AUTH).unwrap();
        assert_eq!(s.origin, "https://fcm.googleapis.com");
        assert!(Subscription::parse("http://127.0.0.1:9000/p", P256DH, "BTBZMqHH6r4Tts7J_aSIgg==").is_ok());
    }

    #[test]
    fn names_the_bad_field() {
        let err = |e: &str, p: &str, a: &str| Subscription::parse(e, p, a).unwrap_err().to_string();
        assert!(err("not a url", P256DH, AUTH).starts_with("endpoint"));
        assert!(err("ftp://x/y", P256DH, AUTH).starts_with("endpoint"));
        assert!(err(ENDPOINT, "BCVx", AUTH).starts_with("keys.p256dh"));
        assert!(err(ENDPOINT, "!!", AUTH).starts_with("keys.p256dh"));
        assert!(err(ENDPOINT, P256DH, "BTBZ").starts_with("keys.auth: must be 16 bytes"));
    }
}
