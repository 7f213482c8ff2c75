//! VAPID (RFC 8292): the sender's identity, proven to each push service by
//! an ES256 JWT whose audience is that service's origin.
//!
//! One token per origin (a handful: FCM, Mozilla, Apple, Microsoft), valid
//! 12 hours and reused until 10 minutes before it expires, so a send
//! signs nothing in the common case.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::push::es256::{unix_now, Es256Key};

/// `exp` is this far ahead (RFC 8292 allows at most 24 hours).
const VALID_FOR_S: u64 = 12 * 3600;
/// A cached token is replaced this long before it expires.
const REFRESH_BEFORE_S: u64 = 10 * 60;
/// Origins come from registered subscriptions; past this many cached
/// tokens, the cache starts over rather than grow without bound.
const MAX_ORIGINS: usize = 1024;

pub(super) struct Vapid {
    key: Es256Key,
    subject: String,
    /// `k=`: the public key, uncompressed, base64url.
    public_key: String,
    by_origin: Mutex<HashMap<String, Signed>>,
}

struct Signed {
    /// The whole `Authorization` value: `vapid t=<jwt>, k=<key>`.
    authorization: Arc<str>,
    refresh_at: u64,
}

impl Vapid {
    pub(super) fn new(key: Es256Key, subject: String) -> Self {
        Vapid {
            public_key: key.public_key_base64url(),
            key,
            subject,
            by_origin: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The `Authorization` header for a push service at `origin`.
    pub(super) fn authorization(&self, origin: &str) -> Arc<str> {
        let mut cache = self.by_origin.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(origin) {
            Some(signed) if unix_now() < signed.refresh_at => signed.authorization.clone(),
            _ => self.sign_into(&mut cache, origin),
        }
    }

    /// A freshly signed header after `origin` refused `rejected` (or the
    /// one another request already replaced it with).
    pub(super) fn refresh(&self, origin: &str, rejected: &str) -> Arc<str> {
        let mut cache = self.by_origin.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(origin) {
            Some(signed) if &*signed.authorization != rejected => signed.authorization.clone(),
            _ => self.sign_into(&mut cache, origin),
        }
    }

    fn sign_into(&self, cache: &mut HashMap<String, Signed>, origin: &str) -> Arc<str> {
        let now = unix_now();
        let jwt = self.key.sign_jwt(
            &json!({"typ": "JWT", "alg": "ES256"}),
            &json!({"aud": origin, "exp": now + VALID_FOR_S, "sub": self.subject}),
        );
        let authorization: Arc<str> = format!("vapid t={jwt}, k={}", self.public_key).into();
        if cache.len() >= MAX_ORIGINS && !cache.contains_key(origin) {
            cache.clear();
        }
        cache.insert(
            origin.to_owned(),
            Signed {
                authorization: authorization.clone(),
                refresh_at: now + VALID_FOR_S - REFRESH_BEFORE_S,
            },
        );
        authorization
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::*;

    fn vapid() -> Vapid {
        let key = Es256Key::from_pem(include_str!("../../../tests/fixtures/push/vapid_test_sec1.pem")).unwrap();
        Vapid::new(key, "mailto:ops@example.com".into())
    }

    fn claims(authorization: &str) -> serde_json::Value {
        let jwt = authorization
            .strip_prefix("vapid t=")
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        let part = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn one_token_per_origin_reused_until_refused() {
        let v = vapid();
        let a = v.authorization("https://fcm.googleapis.com");
        assert_eq!(v.authorization("https://fcm.googleapis.com"), a);
        let b = v.authorization("https://updates.push.services.mozilla.com");
        assert_ne!(a, b);
        let c = claims(&a);
        assert_eq!(c["aud"], "https://fcm.googleapis.com");
        assert_eq!(c["sub"], "mailto:ops@example.com");
        let exp = c["exp"].as_u64().unwrap();
        assert!(exp > unix_now() && exp <= unix_now() + 24 * 3600);
        assert!(a.ends_with(&format!(", k={}", v.public_key())));
        let fresh = v.refresh("https://fcm.googleapis.com", &a);
        assert_ne!(fresh, a);
        assert_eq!(v.authorization("https://fcm.googleapis.com"), fresh);
        assert_eq!(v.refresh("https://fcm.googleapis.com", &a), fresh);
    }
}
