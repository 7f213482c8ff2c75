//! What the providers that speak HTTP share: the client (with an optional
//! extra trusted root), reading a refusal, and the "credential rejected:
//! sign a fresh one, retry once, else not ready" flow of the
//! [`Provider`](super::provider::Provider) contract.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
    let builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        // A redirected POST would silently turn into a GET.
        .redirect(reqwest::redirect::Policy::none());
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

fn build(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, BackendError> {
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

/// Whether the provider's credential was last accepted: false after a
/// freshly signed credential was refused too, until a send gets through.
#[derive(Debug)]
pub struct CredentialHealth(AtomicBool);

impl Default for CredentialHealth {
    fn default() -> Self {
        CredentialHealth(AtomicBool::new(true))
    }
}

impl CredentialHealth {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Run `attempt` with the current credential (`fresh = false`); if the
    /// credential is refused, once more with a freshly signed one (`fresh =
    /// true`). Refused twice: not ready, and a retryable error so the queue
    /// holds until the credential is fixed (a new key file needs a restart
    /// anyway).
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
                self.0.store(false, Ordering::Relaxed);
                tracing::warn!(provider, reason = %again, "freshly signed credential rejected too: not ready");
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
                self.0.store(true, Ordering::Relaxed);
                Ok(sent)
            }
            Attempt::Failed(e) => Err(e),
            // Handled by the caller; kept total for the compiler.
            Attempt::CredentialRejected { status, reason } => Err(DeliveryError::retryable(reason).with_status(status)),
        }
    }
}
