//! FCM credentials: a Google service account's OAuth2 access token, got
//! with the JWT-bearer grant (RFC 7523: an RS256 JWT signed with the
//! account's private key, posted to its `token_uri`), cached until shortly
//! before it expires.
//!
//! One fetch at a time (a `tokio::sync::Mutex` around the cache), so a
//! burst of sends after expiry costs one token request, not one each.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use event_pusher_core::DeliveryError;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::transport::status::{transport_error, Refusal};

/// The OAuth2 scope FCM v1 sends need.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// How long before its expiry a token is replaced.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Lifetime asked for in the grant (Google's maximum).
const GRANT_LIFETIME_S: u64 = 3600;

/// The fields of a service-account JSON file that are used.
#[derive(Deserialize)]
struct ServiceAccountFile {
    project_id: String,
    client_email: String,
    private_key: String,
    token_uri: String,
    #[serde(default)]
    private_key_id: Option<String>,
}

/// Why the service-account file cannot be used: names the file and what
/// is wrong (never the key).
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not a service-account JSON file: {source}", path.display())]
    NotJson { path: PathBuf, source: serde_json::Error },
    #[error("{}: private_key is not an RSA private key in PEM: {source}", path.display())]
    PrivateKey {
        path: PathBuf,
        source: jsonwebtoken::errors::Error,
    },
    #[error("{}: token_uri: {source}", path.display())]
    TokenUri { path: PathBuf, source: url::ParseError },
}

/// The grant assertion could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the FCM grant: {0}")]
pub struct SignError(#[source] jsonwebtoken::errors::Error);

/// A loaded service account: the signing key and where to use it.
pub struct ServiceAccount {
    pub project_id: String,
    client_email: String,
    token_uri: String,
    key_id: Option<String>,
    key: EncodingKey,
}

impl ServiceAccount {
    /// Read and check the file; the error names the file and what is wrong
    /// (never the key).
    pub fn load(path: &Path) -> Result<Self, AccountError> {
        let path_buf = || path.to_path_buf();
        let text = std::fs::read(path).map_err(|source| AccountError::Read {
            path: path_buf(),
            source,
        })?;
        let file: ServiceAccountFile = serde_json::from_slice(&text).map_err(|source| AccountError::NotJson {
            path: path_buf(),
            source,
        })?;
        let key =
            EncodingKey::from_rsa_pem(file.private_key.as_bytes()).map_err(|source| AccountError::PrivateKey {
                path: path_buf(),
                source,
            })?;
        url::Url::parse(&file.token_uri).map_err(|source| AccountError::TokenUri {
            path: path_buf(),
            source,
        })?;
        Ok(ServiceAccount {
            project_id: file.project_id,
            client_email: file.client_email,
            token_uri: file.token_uri,
            key_id: file.private_key_id,
            key,
        })
    }

    /// The signed grant assertion.
    fn assertion(&self) -> Result<String, SignError> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat: now,
            exp: now + GRANT_LIFETIME_S,
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(SignError)
    }
}

struct Cached {
    token: String,
    refresh_at: Instant,
}

/// The service account (loaded on first use) and its cached token.
pub struct TokenSource {
    file: PathBuf,
    client: reqwest::Client,
    account: std::sync::OnceLock<ServiceAccount>,
    cached: Mutex<Option<Cached>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenSource {
    pub fn new(file: PathBuf, client: reqwest::Client) -> Self {
        TokenSource {
            file,
            client,
            account: std::sync::OnceLock::new(),
            cached: Mutex::new(None),
        }
    }

    /// The service account, read from its file the first time.
    pub fn account(&self) -> Result<&ServiceAccount, AccountError> {
        if let Some(a) = self.account.get() {
            return Ok(a);
        }
        let loaded = ServiceAccount::load(&self.file)?;
        Ok(self.account.get_or_init(|| loaded))
    }

    /// A valid access token: the cached one, or a fresh one when it is
    /// about to expire or `stale` is the token the provider just rejected.
    pub async fn token(&self, stale: Option<&str>) -> Result<String, DeliveryError> {
        let account = self.account().map_err(|e| DeliveryError::permanent(e.to_string()))?;
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let rejected = stale.is_some_and(|s| s == c.token);
            if !rejected && Instant::now() < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        let fresh = self.fetch(account).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    async fn fetch(&self, account: &ServiceAccount) -> Result<Cached, DeliveryError> {
        let assertion = account
            .assertion()
            .map_err(|e| DeliveryError::permanent(e.to_string()))?;
        let form: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let resp = self
            .client
            .post(&account.token_uri)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(transport_error)?;
        let status = resp.status();
        if !status.is_success() {
            let refusal = Refusal::read(resp).await;
            let message = format!("FCM token endpoint: {}", refusal.describe());
            let mut err = refusal.into_error(message);
            // A credential problem is not the event's fault: never dead-letter
            // it at once for that.
            err.retryable = true;
            return Err(err);
        }
        let body = resp.bytes().await.map_err(transport_error)?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| DeliveryError::retryable(format!("FCM token endpoint: unreadable answer: {e}")))?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(GRANT_LIFETIME_S));
        Ok(Cached {
            token: answer.access_token,
            refresh_at: Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN),
        })
    }
}
