//! The Web Push provider against a local push service, with the test
//! playing the browser: it makes the subscription's key pair and auth
//! secret, and an independent decryptor (Python `http_ece`, installed by
//! `scripts/setup.sh`) decrypts what arrived and checks the VAPID token's
//! signature with `cryptography`.

#![cfg(feature = "push")]

mod push_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use event_pusher_backends::push::provider::{Address, Device, Provider, Sent};
use event_pusher_backends::push::webpush::{WebPushConfig, WebPushProvider};
use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::SecretKey;
use push_support::*;
use serde_json::{json, Value};

const SUBJECT: &str = "mailto:ops@example.com";

/// The browser's side of a subscription.
struct Browser {
    key: SecretKey,
    auth: [u8; 16],
}

impl Browser {
    fn new() -> Browser {
        let mut auth = [0u8; 16];
        OsRng.fill_bytes(&mut auth);
        Browser {
            key: SecretKey::random(&mut OsRng),
            auth,
        }
    }

    /// What `PushSubscription.toJSON()` would give for `endpoint`.
    fn device(&self, endpoint: String, silent: bool) -> Device {
        Device {
            jid: "bob@localhost".into(),
            device_id: "browser".into(),
            address: Address::WebPush {
                endpoint,
                p256dh: URL_SAFE_NO_PAD.encode(self.key.public_key().to_encoded_point(false).as_bytes()),
                auth: URL_SAFE_NO_PAD.encode(self.auth),
            },
            silent,
            options: Default::default(),
        }
    }

    /// Decrypt a received push and check its VAPID token, in Python.
    async fn open(&self, req: &Recorded) -> Opened {
        let input = json!({
            "body": URL_SAFE_NO_PAD.encode(&req.body),
            "private_key": URL_SAFE_NO_PAD.encode(self.key.to_bytes()),
            "auth": URL_SAFE_NO_PAD.encode(self.auth),
            "authorization": req.header("authorization"),
        });
        let mut child = tokio::process::Command::new("python3")
            .arg(fixture("webpush_browser.py"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 (run scripts/setup.sh for http_ece)");
        let mut stdin = child.stdin.take().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stdin, input.to_string().as_bytes())
            .await
            .unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "the browser could not open the push (http_ece missing? run scripts/setup.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        Opened {
            plaintext: serde_json::from_str(v["plaintext"].as_str().unwrap()).unwrap(),
            jwt_header: v["jwt_header"].clone(),
            jwt_claims: v["jwt_claims"].clone(),
            k: v["k"].as_str().unwrap().to_string(),
        }
    }
}

struct Opened {
    plaintext: Value,
    jwt_header: Value,
    jwt_claims: Value,
    k: String,
}

fn provider(key_file: &str, extra: &str) -> WebPushProvider {
    let config: WebPushConfig = toml::from_str(&format!(
        "vapid_private_key_file = \"{}\"\nsubject = \"{SUBJECT}\"\n{extra}",
        fixture(key_file)
    ))
    .unwrap();
    WebPushProvider::new(&config).unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The public key openssl derived from the VAPID fixture.
fn vapid_public_key() -> String {
    std::fs::read_to_string(fixture("vapid_test_public_key.b64url"))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test]
async fn the_browser_decrypts_the_notification_and_verifies_vapid() {
    bounded(async {
        let service = Peer::http().await;
        service.answer(201, "");
        let provider = provider("vapid_test_sec1.pem", "ttl_s = 3600");
        assert_eq!(provider.public_key_base64url(), vapid_public_key());
        let browser = Browser::new();
        let endpoint = format!("http://127.0.0.1:{}/push/v2/sub-1?x=1", service.addr.port());
        let note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3B1", false);
        let sent = provider.send(&browser.device(endpoint, false), &note).await.unwrap();
        assert_eq!(sent, Sent::Delivered);

        let reqs = service.requests();
        assert_eq!(reqs.len(), 1);
        let req = &reqs[0];
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/push/v2/sub-1?x=1");
        assert_eq!(req.header("content-encoding"), "aes128gcm");
        assert_eq!(req.header("ttl"), "3600");
        assert_eq!(req.header("urgency"), "high");
        let opened = browser.open(req).await;
        assert_eq!(
            opened.plaintext,
            json!({
                "title": "alice@localhost", "body": "hi Bob ✓",
                "event_id": note.event_id, "message_id": "m-1", "from": "alice@localhost",
                "type": "chat", "message_count": "2"
            })
        );
        assert_eq!(opened.k, vapid_public_key(), "k= is the VAPID public key");
        assert_eq!(opened.jwt_header["alg"], "ES256");
        assert_eq!(
            opened.jwt_claims["aud"],
            format!("http://127.0.0.1:{}", service.addr.port()),
            "aud is the endpoint's origin"
        );
        assert_eq!(opened.jwt_claims["sub"], SUBJECT);
        let exp = opened.jwt_claims["exp"].as_u64().unwrap();
        assert!(exp > now() && exp <= now() + 24 * 3600, "exp {exp} within 24 h");
    })
    .await
}

#[tokio::test]
async fn a_silent_device_gets_data_only_and_a_pkcs8_key_works() {
    bounded(async {
        let service = Peer::http().await;
        let provider = provider("vapid_test_pkcs8.pem", "");
        let browser = Browser::new();
        let endpoint = format!("http://127.0.0.1:{}/sub-2", service.addr.port());
        let note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3B2", true);
        assert_eq!(
            provider.send(&browser.device(endpoint, true), &note).await.unwrap(),
            Sent::Delivered
        );
        let req = &service.requests()[0];
        assert_eq!(req.header("ttl"), "86400", "ttl_s defaults to a day");
        let opened = browser.open(req).await;
        assert_eq!(
            opened.plaintext,
            json!({
                "event_id": note.event_id, "message_id": "m-1", "from": "alice@localhost",
                "type": "chat", "message_count": "2"
            })
        );
        assert_eq!(opened.k, vapid_public_key());
    })
    .await
}

#[tokio::test]
async fn gone_subscriptions_are_invalid_devices() {
    bounded(async {
        let service = Peer::http().await;
        service.answer(410, "push subscription has unsubscribed or expired.");
        service.answer(404, "");
        let provider = provider("vapid_test_sec1.pem", "");
        let device = Browser::new().device(format!("http://127.0.0.1:{}/sub-3", service.addr.port()), false);
        let note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3B3", false);
        for status in ["410", "404"] {
            let Sent::Invalid { reason } = provider.send(&device, &note).await.unwrap() else {
                panic!("{status} means the subscription is gone");
            };
            assert!(reason.contains(status), "{reason}");
        }
        assert!(provider.is_ready());
    })
    .await
}

#[tokio::test]
async fn a_refused_vapid_token_is_re_signed_once() {
    bounded(async {
        let service = Peer::http().await;
        service.answer(401, "");
        service.answer(201, "");
        let provider = provider("vapid_test_sec1.pem", "");
        let browser = Browser::new();
        let device = browser.device(format!("http://127.0.0.1:{}/sub-4", service.addr.port()), false);
        let note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3B4", false);
        assert_eq!(provider.send(&device, &note).await.unwrap(), Sent::Delivered);
        let reqs = service.requests();
        assert_eq!(reqs.len(), 2, "one retry");
        assert_ne!(
            reqs[0].header("authorization"),
            reqs[1].header("authorization"),
            "the retry carries a freshly signed token"
        );
        // Both the first and the retried message open, with valid tokens.
        for req in &reqs {
            browser.open(req).await;
        }
        assert!(provider.is_ready());
    })
    .await
}

#[tokio::test]
async fn a_vapid_token_refused_twice_makes_the_provider_not_ready_for_a_while() {
    bounded(async {
        let service = Peer::http().await;
        service.answer(403, "invalid JWT");
        service.answer(403, "invalid JWT");
        let provider = provider("vapid_test_sec1.pem", "");
        let device = Browser::new().device(format!("http://127.0.0.1:{}/sub-5", service.addr.port()), false);
        let note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3B5", false);
        let err = provider.send(&device, &note).await.unwrap_err();
        assert!(err.retryable, "the queue holds: {err}");
        assert_eq!(err.status, Some(403));
        assert_eq!(service.requests().len(), 2, "retried once, not more");
        assert!(!provider.is_ready());
        assert_eq!(provider.send(&device, &note).await.unwrap(), Sent::Delivered);
        assert!(provider.is_ready());
    })
    .await
}

#[tokio::test]
async fn throttling_is_retried_and_too_large_is_permanent() {
    bounded(async {
        let service = Peer::http().await;
        service.answer_with(429, &[("retry-after", "9")], "slow down");
        service.answer(502, "");
        service.answer(413, "payload too large");
        let provider = provider("vapid_test_sec1.pem", "");
        let device = Browser::new().device(format!("http://127.0.0.1:{}/sub-6", service.addr.port()), false);
        let note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3B6", false);
        let throttled = provider.send(&device, &note).await.unwrap_err();
        assert!(throttled.retryable);
        assert_eq!(throttled.retry_after, Some(Duration::from_secs(9)));
        let bad_gateway = provider.send(&device, &note).await.unwrap_err();
        assert!(
            bad_gateway.retryable && bad_gateway.status == Some(502),
            "{bad_gateway}"
        );
        let too_large = provider.send(&device, &note).await.unwrap_err();
        assert!(!too_large.retryable && too_large.status == Some(413), "{too_large}");
        assert_eq!(service.requests().len(), 3);
    })
    .await
}

#[tokio::test]
async fn bad_subscriptions_are_refused_without_a_request() {
    bounded(async {
        let service = Peer::http().await;
        let provider = provider("vapid_test_sec1.pem", "");
        let note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3B7", false);
        let mut device = Browser::new().device(format!("http://127.0.0.1:{}/sub-7", service.addr.port()), false);
        if let Address::WebPush { auth, .. } = &mut device.address {
            *auth = "c2hvcnQ".into();
        }
        let err = provider.send(&device, &note).await.unwrap_err();
        assert!(
            !err.retryable && err.message.contains("subscription.keys.auth: must be 16 bytes"),
            "{err}"
        );
        if let Address::WebPush { endpoint, .. } = &mut device.address {
            *endpoint = "not a url".into();
        }
        let err = provider.send(&device, &note).await.unwrap_err();
        assert!(
            !err.retryable && err.message.contains("subscription.endpoint:"),
            "{err}"
        );
        assert!(service.requests().is_empty());
    })
    .await
}

#[test]
fn vapid_key_errors_name_the_file_and_the_problem() {
    let config = |path: &str| -> WebPushConfig {
        toml::from_str(&format!(
            "vapid_private_key_file = \"{path}\"\nsubject = \"https://example.com/contact\""
        ))
        .unwrap()
    };
    let missing = WebPushProvider::new(&config("/nonexistent/vapid.pem")).err().unwrap();
    assert!(
        missing
            .message()
            .contains("webpush vapid_private_key_file /nonexistent/vapid.pem: cannot read"),
        "{missing}"
    );
    let public = fixture("apns_test_AuthKey.pub.pem");
    let wrong = WebPushProvider::new(&config(&public)).err().unwrap();
    assert!(
        wrong.message().contains(&public) && wrong.message().contains("PUBLIC KEY"),
        "{wrong}"
    );
}

#[tokio::test]
async fn a_long_message_is_cut_to_fit_one_web_push_message() {
    bounded(async {
        let service = Peer::http().await;
        let provider = provider("vapid_test_sec1.pem", "");
        let browser = Browser::new();
        let device = browser.device(format!("http://127.0.0.1:{}/sub-8", service.addr.port()), false);
        let mut note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3B8", false);
        let long = "\"quoted\" Grüße ✓\n".repeat(500);
        note.body = Some(long.clone());
        assert_eq!(provider.send(&device, &note).await.unwrap(), Sent::Delivered);
        let req = &service.requests()[0];
        assert!(req.body.len() <= 4096, "{} bytes", req.body.len());
        let opened = browser.open(req).await;
        let shown = opened.plaintext["body"].as_str().unwrap();
        assert!(
            shown.ends_with('…') && long.starts_with(shown.trim_end_matches('…')),
            "{shown}"
        );
        assert_eq!(opened.plaintext["message_id"], "m-1", "data is kept whole");
    })
    .await
}
