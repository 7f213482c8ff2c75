//! The Web Push provider: RFC 8030 delivery to a browser's push service,
//! the payload encrypted for the browser (RFC 8291 `aes128gcm`), the
//! sender identified by a VAPID token (RFC 8292).
//!
//! - `config.rs`: the `[backends.push.NAME.webpush]` keys.
//! - `subscription.rs`: a browser's subscription (endpoint, keys), checked.
//! - `encrypt.rs`: RFC 8291 encryption for those keys.
//! - `vapid.rs`: the VAPID key and its tokens, one per push service origin.
//! - `publish.rs`: sending, and mapping the push service's answers.
//!
//! A VAPID key is made with
//! `openssl ecparam -genkey -name prime256v1 -noout -out vapid.pem`;
//! the browser's `applicationServerKey` is its public key, uncompressed,
//! base64url: `openssl ec -in vapid.pem -pubout -conv_form uncompressed
//! -outform DER | tail -c 65 | basenc --base64url | tr -d '=\n'`, or
//! [`WebPushProvider::public_key_base64url`].

mod config;
mod encrypt;
mod publish;
mod subscription;
mod vapid;

pub use config::WebPushConfig;
pub use encrypt::{encrypt, MAX_PLAINTEXT};
pub use publish::WebPushProvider;
pub use subscription::{check_egress, Subscription, SubscriptionError};
