//! What the providers that speak HTTP share: the client (with an optional
//! extra trusted root), reading a refusal, and the "credential rejected:
//! sign a fresh one, retry once, else not ready" flow of the
//! [`Provider`](super::provider::Provider) contract.

use std::future::Future;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use event_pusher_core::{BackendError, DeliveryError};
use reqwest::header::RETRY_AFTER;

use super::provider::Sent;
use crate::http::publish::{parse_retry_after, transport_error};
use crate::http::response::{drain_success, error_excerpt};

/// One request to a provider must not hold a worker longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const USER_AGENT: &str = concat!("event-pusher/", env!("CARGO_PKG_VERSION"));

/// An HTTP client for one provider. `ca_file` (PEM, one or more
/// certificates) is trusted in addition to the system roots; `key` names
/// it in errors.
///
/// Over TLS the HTTP version is negotiated by ALPN, which gives HTTP/2 with
/// APNs (it offers nothing else). No HTTP/2 prior knowledge: a plain
/// `http://` test endpoint then speaks HTTP/1.1, what simple mocks serve.
pub fn client(ca_file: Option<&Path>, key: &str) -> Result<reqwest::Client, BackendError> {
    let builder = builder();
    let Some(path) = ca_file else {
        return build(builder);
    };
    let pem = std::fs::read(path)
        .map_err(|e| BackendError::with_source(format!("{key} {}: cannot read: {e}", path.display()), e))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| BackendError::with_source(format!("{key} {}: not PEM certificates: {e}", path.display()), e))?;
    if certs.is_empty() {
        return Err(BackendError::new(format!(
            "{key} {}: no -----BEGIN CERTIFICATE----- block",
            path.display()
        )));
    }
    build(builder.tls_certs_merge(certs))
}

/// The settings every provider's client has (Web Push adds the egress
/// guard's resolver).
pub fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        // A redirected POST would silently turn into a GET.
        .redirect(reqwest::redirect::Policy::none())
}

pub fn build(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, BackendError> {
    builder
        .build()
        .map_err(|e| BackendError::with_source(format!("cannot build HTTP client: {e}"), e))
}

/// A provider's non-2xx answer, read with a bound.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// The start of the body (providers explain refusals in JSON).
    pub body: String,
}

impl Refusal {
    /// `429` and `5xx`: worth retrying, after `Retry-After` if given.
    pub fn is_transient(&self) -> bool {
        self.status == 429 || self.status >= 500
    }

    /// A delivery error carrying the status and `Retry-After`;
    /// retryable when [`Refusal::is_transient`].
    pub fn into_error(self, provider: &str, why: &str) -> DeliveryError {
        let message = format!("{provider} answered {}: {why}", self.status);
        let mut err = if self.is_transient() {
            DeliveryError::retryable(message)
        } else {
            DeliveryError::permanent(message)
        };
        err = err.with_status(self.status);
        if let Some(wait) = self.retry_after {
            err = err.with_retry_after(wait);
        }
        err
    }
}

/// Send a request: `Ok(Ok(()))` on 2xx (body drained so the connection is
/// reused), `Ok(Err(refusal))` on any other status, a retryable error when
/// the request did not get an answer.
pub async fn send(request: reqwest::RequestBuilder) -> Result<Result<(), Refusal>, DeliveryError> {
    let resp = request.send().await.map_err(transport_error)?;
    let status = resp.status();
    if status.is_success() {
        drain_success(resp).await;
        return Ok(Ok(()));
    }
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    Ok(Err(Refusal {
        status: status.as_u16(),
        retry_after,
        body: error_excerpt(resp).await,
    }))
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

    pub fn is_ready(&self) -> bool {
        self.until().is_none_or(|t| Instant::now() >= t)
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
