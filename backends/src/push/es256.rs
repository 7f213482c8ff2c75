//! ES256 keys and JSON Web Tokens, for the providers that sign their own
//! credentials: APNs provider tokens and Web Push VAPID tokens are both
//! compact JWS signed with ECDSA P-256 / SHA-256 (RFC 7518 §3.4).
//!
//! Signatures are randomized (RFC 6979 nonces with added OS entropy), so
//! signing the same claims twice gives two different tokens: a re-signed
//! credential is visibly fresh even within the same second.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use event_pusher_core::BackendError;
use p256::ecdsa::signature::RandomizedSigner;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use p256::SecretKey;
use rand_core::OsRng;

/// A P-256 private key that signs ES256 JWTs.
pub struct Es256Key {
    signing: SigningKey,
}

impl std::fmt::Debug for Es256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Es256Key(..)")
    }
}

/// Why a PEM text is not a P-256 private key; says what was found instead.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("not a P-256 private key in PKCS#8 PEM ({0})")]
    Pkcs8(#[source] p256::pkcs8::Error),
    #[error("not a P-256 private key in SEC1 PEM ({0})")]
    Sec1(#[source] p256::elliptic_curve::Error),
    #[error("expected a P-256 private key (\"PRIVATE KEY\" or \"EC PRIVATE KEY\" PEM block, unencrypted), found {0}")]
    OtherBlock(String),
    #[error("no PEM block: expected -----BEGIN PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----")]
    NoBlock,
}

impl Es256Key {
    /// Read a P-256 private key from a PEM file: PKCS#8 (`PRIVATE KEY`,
    /// Apple's `.p8`) or SEC1 (`EC PRIVATE KEY`, what `openssl ecparam`
    /// writes). `key` is the config key, named in errors with the path.
    pub fn from_pem_file(path: &Path, key: &str) -> Result<Self, BackendError> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| BackendError::with_source(format!("{key} {}: cannot read: {e}", path.display()), e))?;
        Self::from_pem(&pem)
            .map_err(|problem| BackendError::with_source(format!("{key} {}: {problem}", path.display()), problem))
    }

    /// Parse a PEM private key (see [`Es256Key::from_pem_file`]); the error
    /// says what was found instead.
    pub fn from_pem(pem: &str) -> Result<Self, PemError> {
        let label = pem.lines().map(str::trim).find(|l| l.starts_with("-----BEGIN "));
        let secret = match label {
            Some("-----BEGIN PRIVATE KEY-----") => SecretKey::from_pkcs8_pem(pem).map_err(PemError::Pkcs8)?,
            Some("-----BEGIN EC PRIVATE KEY-----") => SecretKey::from_sec1_pem(pem).map_err(PemError::Sec1)?,
            Some(other) => return Err(PemError::OtherBlock(other.to_owned())),
            None => return Err(PemError::NoBlock),
        };
        Ok(Es256Key {
            signing: SigningKey::from(secret),
        })
    }

    /// The public key as an uncompressed SEC1 point (65 bytes, `0x04 || X || Y`).
    pub fn public_key_uncompressed(&self) -> Vec<u8> {
        self.signing.verifying_key().to_encoded_point(false).as_bytes().to_vec()
    }

    /// The public key, uncompressed, in unpadded base64url: VAPID's `k=`
    /// and a browser's `applicationServerKey`.
    pub fn public_key_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public_key_uncompressed())
    }

    /// `header.claims.signature`, each part base64url-encoded JSON (the
    /// signature is the 64-byte `r || s` JWS form, not DER).
    pub fn sign_jwt(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature: Signature = self.signing.sign_with_rng(&mut OsRng, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// Seconds since the Unix epoch (JWT `iat` / `exp`).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::VerifyingKey;

    const SEC1: &str = include_str!("../../tests/fixtures/push/vapid_test_sec1.pem");
    const PKCS8: &str = include_str!("../../tests/fixtures/push/vapid_test_pkcs8.pem");
    const PUBLIC: &str = include_str!("../../tests/fixtures/push/vapid_test_public_key.b64url");

    #[test]
    fn reads_sec1_and_pkcs8_forms_of_the_same_key() {
        let sec1 = Es256Key::from_pem(SEC1).unwrap();
        let pkcs8 = Es256Key::from_pem(PKCS8).unwrap();
        assert_eq!(sec1.public_key_base64url(), PUBLIC.trim());
        assert_eq!(pkcs8.public_key_base64url(), PUBLIC.trim());
    }

    #[test]
    fn refuses_what_is_not_a_p256_private_key() {
        let public = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(Es256Key::from_pem(public)
            .unwrap_err()
            .to_string()
            .contains("found -----BEGIN PUBLIC KEY-----"));
        assert!(Es256Key::from_pem("hello")
            .unwrap_err()
            .to_string()
            .contains("no PEM block"));
        let garbage = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(Es256Key::from_pem(garbage).unwrap_err().to_string().contains("PKCS#8"));
    }

    #[test]
    fn signs_verifiable_and_fresh_tokens() {
        let key = Es256Key::from_pem(SEC1).unwrap();
        let header = serde_json::json!({"alg": "ES256"});
        let claims = serde_json::json!({"iat": 1});
        let a = key.sign_jwt(&header, &claims);
        let b = key.sign_jwt(&header, &claims);
        assert_ne!(a, b, "re-signing the same claims gives a new token");
        let (input, sig) = a.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        let public = URL_SAFE_NO_PAD.decode(PUBLIC.trim()).unwrap();
        let vk = VerifyingKey::from_sec1_bytes(&public).unwrap();
        vk.verify(input.as_bytes(), &sig).unwrap();
    }
}
