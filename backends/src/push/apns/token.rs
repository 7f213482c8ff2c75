//! The APNs provider token: an ES256 JWT (`kid` = key id, `iss` = team id,
//! `iat`), shared by every request. Apple refuses tokens older than an hour
//! and throttles re-signing more often than every 20 minutes, so one token
//! is reused for 50 minutes, and re-signed early only when APNs says it is
//! expired or invalid.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::push::es256::{unix_now, Es256Key};

/// How long one token is used before a new one is signed.
pub(super) const REUSE_FOR: Duration = Duration::from_secs(50 * 60);

pub(super) struct ProviderToken {
    key: Es256Key,
    key_id: String,
    team_id: String,
    current: Mutex<Option<Signed>>,
}

struct Signed {
    jwt: Arc<str>,
    at: Instant,
}

impl ProviderToken {
    pub(super) fn new(key: Es256Key, key_id: String, team_id: String) -> Self {
        ProviderToken {
            key,
            key_id,
            team_id,
            current: Mutex::new(None),
        }
    }

    /// The token to send now: the cached one while younger than
    /// [`REUSE_FOR`], else a new one.
    pub(super) fn current(&self) -> Arc<str> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match &*current {
            Some(signed) if signed.at.elapsed() < REUSE_FOR => signed.jwt.clone(),
            _ => self.sign_into(&mut current),
        }
    }

    /// A new token after APNs refused `rejected`; if another request has
    /// already replaced it, that replacement (one re-signing per refusal,
    /// not one per request in flight).
    pub(super) fn refresh(&self, rejected: &str) -> Arc<str> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match &*current {
            Some(signed) if &*signed.jwt != rejected => signed.jwt.clone(),
            _ => self.sign_into(&mut current),
        }
    }

    fn sign_into(&self, slot: &mut Option<Signed>) -> Arc<str> {
        let jwt: Arc<str> = self
            .key
            .sign_jwt(
                &json!({"alg": "ES256", "kid": self.key_id}),
                &json!({"iss": self.team_id, "iat": unix_now()}),
            )
            .into();
        *slot = Some(Signed {
            jwt: jwt.clone(),
            at: Instant::now(),
        });
        jwt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> ProviderToken {
        let key = Es256Key::from_pem(include_str!("../../../tests/fixtures/push/apns_test_AuthKey.p8")).unwrap();
        ProviderToken::new(key, "KEYID".into(), "TEAM".into())
    }

    #[test]
    fn reuses_the_token_until_refused() {
        let t = token();
        let first = t.current();
        assert_eq!(t.current(), first);
        let fresh = t.refresh(&first);
        assert_ne!(fresh, first);
        assert_eq!(t.current(), fresh);
        // A late refusal of the old token does not re-sign again.
        assert_eq!(t.refresh(&first), fresh);
    }

    #[test]
    fn signs_a_new_token_after_fifty_minutes() {
        let t = token();
        let first = t.current();
        if let Some(signed) = t.current.lock().unwrap().as_mut() {
            match Instant::now().checked_sub(REUSE_FOR) {
                Some(then) => signed.at = then,
                None => return, // a clock this young cannot be aged; nothing to test
            }
        }
        assert_ne!(t.current(), first);
    }
}
