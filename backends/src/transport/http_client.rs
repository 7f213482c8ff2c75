//! The one HTTP client builder: every backend that sends over HTTP (the
//! `http` backend, webhook subscriptions, each push provider, the FCM token
//! fetch) and the admin commands build their `reqwest::Client` here, so
//! they share one user agent, the same bounded waits, no redirects and the
//! same way of trusting an extra CA.

use std::path::{Path, PathBuf};
use std::time::Duration;

use event_pusher_core::BackendError;

/// What every request says it is.
pub const USER_AGENT: &str = concat!("event-pusher/", env!("CARGO_PKG_VERSION"));

/// Connecting (TCP + TLS) never waits longer than this, whatever the
/// request timeout: a peer that does not accept is down, not slow.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a client could not be built. The CA file errors name the config key
/// and the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{key} {}: cannot read: {source}", path.display())]
    CaFileUnreadable {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key} {}: not PEM certificates: {source}", path.display())]
    CaFileNotPem {
        key: String,
        path: PathBuf,
        source: reqwest::Error,
    },
    #[error("{key} {}: no -----BEGIN CERTIFICATE----- block", path.display())]
    CaFileEmpty { key: String, path: PathBuf },
    #[error("cannot build HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

impl From<ClientError> for BackendError {
    fn from(e: ClientError) -> Self {
        BackendError::with_source(e.to_string(), e)
    }
}

/// A client under construction. Defaults: the user agent, a connect
/// timeout of [`MAX_CONNECT_TIMEOUT`], no whole-request timeout (set one
/// here or per request), reqwest's idle pool, no redirects (a redirected
/// POST would silently turn into a GET), HTTP/2 only when negotiated by
/// ALPN over TLS.
#[derive(Debug, Clone)]
#[must_use]
pub struct HttpClient {
    timeout: Option<Duration>,
    connect_timeout: Duration,
    idle_per_host: Option<usize>,
    ca_file: Option<(String, PathBuf)>,
    http2_prior_knowledge: bool,
    egress_guard: bool,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient {
            timeout: None,
            connect_timeout: MAX_CONNECT_TIMEOUT,
            idle_per_host: None,
            ca_file: None,
            http2_prior_knowledge: false,
            egress_guard: false,
        }
    }
}

impl HttpClient {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bound every request (connect, send, answer) to `timeout`; the
    /// connect part also to at most [`MAX_CONNECT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self.connect_timeout = timeout.min(MAX_CONNECT_TIMEOUT);
        self
    }

    /// Bound connecting only (requests set their own timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.min(MAX_CONNECT_TIMEOUT);
        self
    }

    /// Idle connections kept per host (the pool a backend's concurrency uses).
    pub fn idle_per_host(mut self, n: usize) -> Self {
        self.idle_per_host = Some(n);
        self
    }

    /// Trust the PEM certificates in `path` besides the system roots;
    /// `key` is the config key that named the file, for errors.
    pub fn ca_file(mut self, path: Option<&Path>, key: &str) -> Self {
        self.ca_file = path.map(|p| (key.to_owned(), p.to_owned()));
        self
    }

    /// Speak HTTP/2 from the first byte, also over plain `http://` (for a
    /// peer known to speak nothing else). Over TLS, ALPN negotiates HTTP/2
    /// anyway where the peer offers it (APNs does), so this is rarely needed.
    pub fn http2_prior_knowledge(mut self) -> Self {
        self.http2_prior_knowledge = true;
        self
    }

    /// Resolve names through the `[egress]` guard: for clients that send
    /// to URLs chosen through the API (webhook subscriptions, Web Push
    /// endpoints), so a name that resolves to a private address at
    /// connect time is refused even if it was public when checked.
    pub fn egress_guard(mut self) -> Self {
        self.egress_guard = true;
        self
    }

    pub fn build(self) -> Result<reqwest::Client, ClientError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(self.connect_timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(n) = self.idle_per_host {
            builder = builder.pool_max_idle_per_host(n);
        }
        if self.http2_prior_knowledge {
            builder = builder.http2_prior_knowledge();
        }
        if self.egress_guard {
            builder = crate::egress::guard(builder);
        }
        if let Some((key, path)) = self.ca_file {
            builder = builder.tls_certs_merge(read_ca_file(key, path)?);
        }
        builder.build().map_err(ClientError::Build)
    }
}

fn read_ca_file(key: String, path: PathBuf) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(source) => return Err(ClientError::CaFileUnreadable { key, path, source }),
    };
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if certs.is_empty() => Err(ClientError::CaFileEmpty { key, path }),
        Ok(certs) => Ok(certs),
        Err(source) => Err(ClientError::CaFileNotPem { key, path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = HttpClient::new()
            .ca_file(Some(&missing), "apns ca_file")
            .build()
            .unwrap_err();
        assert!(matches!(e, ClientError::CaFileUnreadable { .. }), "{e}");
        assert!(
            e.to_string().starts_with("apns ca_file ") && e.to_string().contains("missing.pem"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let e = HttpClient::new().ca_file(Some(&empty), "ca_file").build().unwrap_err();
        assert!(e.to_string().contains("BEGIN CERTIFICATE"), "{e}");
        assert!(HttpClient::new().ca_file(None, "ca_file").build().is_ok());
    }
}
