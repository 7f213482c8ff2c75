//! What the push providers share on top of the backends' transport
//! (`crate::transport`): their client settings, and the "credential
//! rejected: sign a fresh one, retry once, else not ready" flow of the
//! [`Provider`](super::provider::Provider) contract.

use std::future::Future;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use event_pusher_core::{BackendError, DeliveryError};

use super::provider::Sent;
use crate::transport::HttpClient;

/// One request to a provider must not hold a worker longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// An HTTP client for one provider. `ca_file` (PEM, one or more
/// certificates) is trusted in addition to the system roots; `key` names
/// it in errors.
///
/// Over TLS the HTTP version is negotiated by ALPN, which gives HTTP/2 with
/// APNs (it offers nothing else). No HTTP/2 prior knowledge: a plain
/// `http://` test endpoint then speaks HTTP/1.1, what simple mocks serve.
pub fn client(ca_file: Option<&Path>, key: &str) -> Result<reqwest::Client, BackendError> {
    Ok(HttpClient::new()
        .timeout(REQUEST_TIMEOUT)
        .ca_file(ca_file, key)
        .build()?)
}

/// A provider's client for API-chosen endpoints (Web Push): as
/// [`client`], resolving names through the `[egress]` guard, which checks
/// the addresses a push service's name resolves to at each connection.
pub fn guarded_client() -> Result<reqwest::Client, BackendError> {
    Ok(HttpClient::new().timeout(REQUEST_TIMEOUT).egress_guard().build()?)
}

/// What one attempt with a given credential came to.
pub enum Attempt {
    /// Delivered, or the device is gone: the credential was accepted.
    Sent(Sent),
    /// The provider refused the credential itself (its status and reason).
    CredentialRejected { status: u16, reason: String },
    /// Anything else: a retryable or permanent delivery error.
    Failed(DeliveryError),
}

/// How long a provider reports not ready after a freshly signed credential
/// was refused too. The delivery queue sends nothing while a backend is not
/// ready, so readiness must come back by itself: after the hold the next
/// send tries again (and signs afresh if refused again).
pub const REJECTED_HOLD: Duration = Duration::from_secs(10);

/// Whether the provider's credential is believed good: not for
/// [`REJECTED_HOLD`] after a freshly signed credential was refused too.
#[derive(Debug)]
pub struct CredentialHealth {
    hold: Duration,
    rejected_until: Mutex<Option<Instant>>,
}

impl Default for CredentialHealth {
    fn default() -> Self {
        CredentialHealth::with_hold(REJECTED_HOLD)
    }
}

impl CredentialHealth {
    pub fn with_hold(hold: Duration) -> Self {
        CredentialHealth {
            hold,
            rejected_until: Mutex::new(None),
        }
    }

    #[cfg(test)]
    pub fn is_ready(&self) -> bool {
        self.not_ready_for().is_none()
    }

    /// How long the hold still lasts; `None` when ready.
    pub fn not_ready_for(&self) -> Option<Duration> {
        self.until()
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    fn until(&self) -> Option<Instant> {
        *self.rejected_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_until(&self, until: Option<Instant>) {
        *self.rejected_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }

    /// Run `attempt` with the current credential (`fresh = false`); if the
    /// credential is refused, once more with a freshly signed one (`fresh =
    /// true`). Refused twice: not ready for the hold, and a retryable error
    /// so the event waits rather than dies.
    pub async fn send_with_fresh_retry<F, Fut>(&self, provider: &str, attempt: F) -> Result<Sent, DeliveryError>
    where
        F: Fn(bool) -> Fut,
        Fut: Future<Output = Result<Attempt, DeliveryError>>,
    {
        let reason = match attempt(false).await? {
            Attempt::CredentialRejected { reason, .. } => reason,
            other => return self.settle(other),
        };
        tracing::info!(provider, %reason, "credential rejected; retrying once with a freshly signed one");
        match attempt(true).await? {
            Attempt::CredentialRejected { status, reason: again } => {
                self.set_until(Some(Instant::now() + self.hold));
                tracing::warn!(
                    provider, reason = %again, hold = ?self.hold,
                    "freshly signed credential rejected too: not ready"
                );
                Err(DeliveryError::retryable(format!(
                    "{provider} rejected a freshly signed credential: {again} (first: {reason})"
                ))
                .with_status(status))
            }
            other => self.settle(other),
        }
    }

    fn settle(&self, attempt: Attempt) -> Result<Sent, DeliveryError> {
        match attempt {
            Attempt::Sent(sent) => {
                self.set_until(None);
                Ok(sent)
            }
            Attempt::Failed(e) => Err(e),
            // Handled by the caller; kept total for the compiler.
            Attempt::CredentialRejected { status, reason } => Err(DeliveryError::retryable(reason).with_status(status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected() -> Result<Attempt, DeliveryError> {
        Ok(Attempt::CredentialRejected {
            status: 403,
            reason: "ExpiredProviderToken".into(),
        })
    }

    #[tokio::test]
    async fn readiness_comes_back_after_the_hold() {
        let health = CredentialHealth::with_hold(Duration::from_millis(100));
        let err = health
            .send_with_fresh_retry("test", |_| async { rejected() })
            .await
            .unwrap_err();
        assert!(err.retryable && err.status == Some(403), "{err}");
        assert!(!health.is_ready());
        // The delivery queue sends nothing meanwhile; readiness must return
        // by itself, or the backend would hold its queue for ever.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(health.is_ready());
    }

    #[tokio::test]
    async fn the_retry_uses_a_fresh_credential_once() {
        let health = CredentialHealth::default();
        let tries = std::sync::atomic::AtomicUsize::new(0);
        let sent = health
            .send_with_fresh_retry("test", |fresh| {
                tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move {
                    if fresh {
                        Ok(Attempt::Sent(Sent::Delivered))
                    } else {
                        rejected()
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(sent, Sent::Delivered);
        assert_eq!(tries.into_inner(), 2);
        assert!(health.is_ready());
    }
}
