//! RFC 8291 message encryption for Web Push (`Content-Encoding: aes128gcm`,
//! RFC 8188), one record, as push services require.
//!
//! A fresh sender key pair and salt per message; the content key comes from
//! ECDH with the browser's `p256dh` key, mixed with its `auth` secret.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use hkdf::Hkdf;
use p256::ecdh::diffie_hellman;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;

/// The record size announced in the header: the 4096 bytes every push
/// service must accept (RFC 8030 §7.2).
const RECORD_SIZE: u32 = 4096;
/// salt (16) + record size (4) + key id length (1) + sender key (65).
const HEADER_LEN: usize = 16 + 4 + 1 + 65;
/// AES-GCM tag.
const TAG_LEN: usize = 16;
/// The largest plaintext that fits one 4096-byte message: the header, the
/// padding delimiter and the tag take the rest.
pub const MAX_PLAINTEXT: usize = RECORD_SIZE as usize - HEADER_LEN - 1 - TAG_LEN;

/// Why a message could not be encrypted.
#[derive(Debug, thiserror::Error)]
pub enum EncryptError {
    #[error("{size} bytes to encrypt; one Web Push message holds at most {MAX_PLAINTEXT}")]
    TooLarge { size: usize },
    /// (`hkdf`'s error implements no `std::error::Error` to chain.)
    #[error("key derivation: {0}")]
    KeyDerivation(hkdf::InvalidLength),
    #[error("content key: {0}")]
    ContentKey(#[source] aes_gcm::aes::cipher::InvalidLength),
    /// (`aead`'s error implements no `std::error::Error` to chain.)
    #[error("encryption failed: {0}")]
    Seal(aes_gcm::Error),
}

/// Encrypt `plaintext` for the browser holding `ua_public` and `auth`:
/// the whole `aes128gcm` body (header and one record).
pub fn encrypt(plaintext: &[u8], ua_public: &PublicKey, auth: &[u8; 16]) -> Result<Vec<u8>, EncryptError> {
    let sender = SecretKey::random(&mut OsRng);
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    encrypt_with(plaintext, ua_public, auth, &sender, salt)
}

/// [`encrypt`] with a given sender key and salt (RFC 8291 §5 test vector).
fn encrypt_with(
    plaintext: &[u8],
    ua_public: &PublicKey,
    auth: &[u8; 16],
    sender: &SecretKey,
    salt: [u8; 16],
) -> Result<Vec<u8>, EncryptError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EncryptError::TooLarge { size: plaintext.len() });
    }
    let as_public = sender.public_key().to_encoded_point(false);
    let ua_point = ua_public.to_encoded_point(false);
    let shared = diffie_hellman(sender.to_nonzero_scalar(), ua_public.as_affine());

    // IKM = HKDF(auth, ecdh, "WebPush: info" || 0 || ua_public || as_public, 32)
    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_point.as_bytes());
    key_info.extend_from_slice(as_public.as_bytes());
    let mut ikm = [0u8; 32];
    expand(auth, shared.raw_secret_bytes(), &key_info, &mut ikm)?;

    // CEK and nonce from the per-message salt (RFC 8188 §2.2, §2.3).
    let mut cek = [0u8; 16];
    expand(&salt, &ikm, b"Content-Encoding: aes128gcm\0", &mut cek)?;
    let mut nonce = [0u8; 12];
    expand(&salt, &ikm, b"Content-Encoding: nonce\0", &mut nonce)?;

    // One record: plaintext, the last-record delimiter 0x02, no padding.
    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(2);
    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(EncryptError::ContentKey)?;
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), record.as_slice())
        .map_err(EncryptError::Seal)?;

    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    out.push(as_public.as_bytes().len() as u8);
    out.extend_from_slice(as_public.as_bytes());
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// HKDF-SHA256 extract (`salt`, `ikm`) then expand (`info`) into `out`.
fn expand(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), EncryptError> {
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, out)
        .map_err(EncryptError::KeyDerivation)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::*;
    use crate::push::webpush::subscription::Subscription;

    /// The RFC 8291 example's browser keys.
    fn rfc_browser() -> (PublicKey, [u8; 16]) {
        let s = Subscription::parse(
            "https://push.example.net/push/JzLQ3raZJfFBR0aqvOMsLrt54w4rJUsV",
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg",
        )
        .unwrap();
        (s.ua_public, s.auth)
    }

    fn b64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    /// RFC 8291 §5 / Appendix A: the whole message must match byte for byte.
    #[test]
    fn matches_the_rfc_8291_example() {
        let plaintext = b64("V2hlbiBJIGdyb3cgdXAsIEkgd2FudCB0byBiZSBhIHdhdGVybWVsb24");
        let sender = SecretKey::from_slice(&b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).unwrap();
        let (ua_public, auth) = rfc_browser();
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let out = encrypt_with(&plaintext, &ua_public, &auth, &sender, salt).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(out),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn refuses_what_does_not_fit_one_message() {
        let (ua_public, auth) = rfc_browser();
        assert_eq!(encrypt(&[b'x'; MAX_PLAINTEXT], &ua_public, &auth).unwrap().len(), 4096);
        assert!(encrypt(&[b'x'; MAX_PLAINTEXT + 1], &ua_public, &auth).is_err());
    }
}
