//! The APNs provider against a local HTTP/2-only TLS server that checks
//! what APNs checks: the `:path`, the `apns-*` headers, and the provider
//! token's ES256 signature against the public key openssl derived from the
//! `.p8` fixture (not against our own key loading).

#![cfg(feature = "push")]

mod push_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use event_pusher_backends::push::apns::{apns_id, ApnsConfig, ApnsProvider};
use event_pusher_backends::push::provider::{Address, Device, Mode, Provider, Sent};
use hyper::Version;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use push_support::*;
use serde_json::{json, Value};

const TOKEN: &str = "8d1a4c5f3b2e0a9d7c6b5a4f3e2d1c0b8d1a4c5f3b2e0a9d7c6b5a4f3e2d1c0b";
const KEY_ID: &str = "ABC123DEFG";
const TEAM_ID: &str = "DEF123GHIJ";
const TOPIC: &str = "com.example.chat";

/// A provider pointed at a fresh peer; the CA file lives as long as the test.
struct Setup {
    provider: ApnsProvider,
    peer: Peer,
    _ca_file: tempfile::NamedTempFile,
}

async fn setup() -> Setup {
    let ca = test_ca();
    let peer = Peer::h2_tls(&ca).await;
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &ca.ca_pem).unwrap();
    let config: ApnsConfig = toml::from_str(&format!(
        r#"
        key_file = "{}"
        key_id = "{KEY_ID}"
        team_id = "{TEAM_ID}"
        topic = "{TOPIC}"
        endpoint_url = "https://localhost:{}"
        ca_file = "{}"
        "#,
        fixture("apns_test_AuthKey.p8"),
        peer.addr.port(),
        ca_file.path().display()
    ))
    .unwrap();
    Setup {
        provider: ApnsProvider::new(&config).unwrap(),
        peer,
        _ca_file: ca_file,
    }
}

fn device(mode: Mode, silent: bool) -> Device {
    Device {
        jid: "bob@localhost".into(),
        device_id: "phone".into(),
        address: Address::Apns {
            token: TOKEN.into(),
            mode,
        },
        silent,
        options: Default::default(),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Check the provider token as APNs does: ES256 over `header.claims` with
/// the team's key, `kid`, `iss`, a recent `iat`. Returns the JWT.
fn check_provider_token(req: &Recorded) -> String {
    let jwt = req
        .header("authorization")
        .strip_prefix("bearer ")
        .expect("authorization: bearer <jwt>")
        .to_string();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let decode = |p: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap() };
    let header = decode(parts[0]);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], KEY_ID);
    let claims = decode(parts[1]);
    assert_eq!(claims["iss"], TEAM_ID);
    let iat = claims["iat"].as_u64().expect("iat is a number");
    assert!(iat.abs_diff(now()) < 60, "iat {iat} is not now");
    let pem = std::fs::read_to_string(fixture("apns_test_AuthKey.pub.pem")).unwrap();
    let team_key = VerifyingKey::from_public_key_pem(&pem).unwrap();
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).expect("64-byte r||s signature");
    team_key
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the provider token verifies with the team key");
    jwt
}

#[tokio::test]
async fn delivers_an_alert_over_http2_with_a_signed_token() {
    bounded(async {
        let s = setup().await;
        let note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3A4", false);
        let sent = s.provider.send(&device(Mode::Dev, false), &note).await.unwrap();
        assert_eq!(sent, Sent::Delivered);
        let reqs = s.peer.requests();
        assert_eq!(reqs.len(), 1);
        let req = &reqs[0];
        assert_eq!(req.version, Version::HTTP_2, "APNs speaks HTTP/2 only");
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, format!("/3/device/{TOKEN}"));
        assert_eq!(req.header("apns-topic"), TOPIC);
        assert_eq!(req.header("apns-push-type"), "alert");
        assert_eq!(req.header("apns-priority"), "10");
        let id = req.header("apns-id");
        assert_eq!(id, apns_id(&note.event_id));
        assert_eq!(
            id.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{id}"
        );
        check_provider_token(req);
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            json!({
                "aps": {"alert": {"title": "alice@localhost", "body": "hi Bob ✓"}, "badge": 2, "sound": "default"},
                "event_id": note.event_id, "message_id": "m-1", "from": "alice@localhost",
                "type": "chat", "message_count": "2"
            })
        );
        assert!(s.provider.is_ready());
    })
    .await
}

#[tokio::test]
async fn silent_devices_get_a_background_push_and_the_token_is_reused() {
    bounded(async {
        let s = setup().await;
        let note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3A5", true);
        for _ in 0..2 {
            assert_eq!(
                s.provider.send(&device(Mode::Prod, true), &note).await.unwrap(),
                Sent::Delivered
            );
        }
        let reqs = s.peer.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].header("apns-push-type"), "background");
        assert_eq!(reqs[0].header("apns-priority"), "5");
        let body: Value = serde_json::from_slice(&reqs[0].body).unwrap();
        assert_eq!(body["aps"], json!({"content-available": 1}));
        assert_eq!(body["from"], "alice@localhost");
        assert_eq!(
            check_provider_token(&reqs[0]),
            check_provider_token(&reqs[1]),
            "one token is reused, not signed per request"
        );
    })
    .await
}

#[tokio::test]
async fn unregistered_and_bad_tokens_are_invalid_devices() {
    bounded(async {
        let s = setup().await;
        let note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3A6", false);
        s.peer
            .answer(410, r#"{"reason":"Unregistered","timestamp":1700000000000}"#);
        s.peer.answer(400, r#"{"reason":"BadDeviceToken"}"#);
        for reason in ["Unregistered", "BadDeviceToken"] {
            assert_eq!(
                s.provider.send(&device(Mode::Prod, false), &note).await.unwrap(),
                Sent::Invalid { reason: reason.into() }
            );
        }
        assert!(s.provider.is_ready());
    })
    .await
}

#[tokio::test]
async fn an_expired_provider_token_is_re_signed_and_retried_once() {
    bounded(async {
        let s = setup().await;
        let note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3A7", false);
        s.peer.answer(403, r#"{"reason":"ExpiredProviderToken"}"#);
        assert_eq!(
            s.provider.send(&device(Mode::Prod, false), &note).await.unwrap(),
            Sent::Delivered
        );
        let reqs = s.peer.requests();
        assert_eq!(reqs.len(), 2, "one retry");
        let (first, retry) = (check_provider_token(&reqs[0]), check_provider_token(&reqs[1]));
        assert_ne!(first, retry, "the retry carries a freshly signed token");
        assert!(s.provider.is_ready());
        // The fresh token is the one reused afterwards.
        s.provider.send(&device(Mode::Prod, false), &note).await.unwrap();
        assert_eq!(check_provider_token(&s.peer.requests()[2]), retry);
    })
    .await
}

#[tokio::test]
async fn a_token_refused_twice_makes_the_provider_not_ready_for_a_while() {
    bounded(async {
        let s = setup().await;
        let note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3A8", false);
        s.peer.answer(403, r#"{"reason":"InvalidProviderToken"}"#);
        s.peer.answer(403, r#"{"reason":"InvalidProviderToken"}"#);
        let err = s.provider.send(&device(Mode::Prod, false), &note).await.unwrap_err();
        assert!(err.retryable, "the queue holds: {err}");
        assert_eq!(err.status, Some(403));
        assert!(err.message.contains("InvalidProviderToken"), "{err}");
        assert_eq!(s.peer.requests().len(), 2, "retried once, not more");
        assert!(!s.provider.is_ready());
        assert_eq!(
            s.provider.send(&device(Mode::Prod, false), &note).await.unwrap(),
            Sent::Delivered
        );
        assert!(s.provider.is_ready());
    })
    .await
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_other_refusals_are_not() {
    bounded(async {
        let s = setup().await;
        let note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3A9", false);
        s.peer
            .answer_with(429, &[("retry-after", "7")], r#"{"reason":"TooManyRequests"}"#);
        s.peer.answer(503, r#"{"reason":"ServiceUnavailable"}"#);
        s.peer.answer(400, r#"{"reason":"BadTopic"}"#);
        let d = device(Mode::Prod, false);
        let throttled = s.provider.send(&d, &note).await.unwrap_err();
        assert!(throttled.retryable);
        assert_eq!(throttled.retry_after, Some(Duration::from_secs(7)));
        assert!(throttled.message.contains("TooManyRequests"), "{throttled}");
        let unavailable = s.provider.send(&d, &note).await.unwrap_err();
        assert!(
            unavailable.retryable && unavailable.status == Some(503),
            "{unavailable}"
        );
        let bad_topic = s.provider.send(&d, &note).await.unwrap_err();
        assert!(!bad_topic.retryable, "{bad_topic}");
        assert!(bad_topic.message.contains("BadTopic"), "{bad_topic}");
        assert_eq!(s.peer.requests().len(), 3, "no retries inside send");
    })
    .await
}

#[tokio::test]
async fn an_unreachable_apns_is_a_retryable_error() {
    bounded(async {
        // A port nothing listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let config: ApnsConfig = toml::from_str(&format!(
            "key_file = \"{}\"\nkey_id = \"K\"\nteam_id = \"T\"\ntopic = \"t\"\nendpoint_url = \"https://127.0.0.1:{}\"",
            fixture("apns_test_AuthKey.p8"),
            closed.port()
        ))
        .unwrap();
        let provider = ApnsProvider::new(&config).unwrap();
        let err = provider
            .send(&device(Mode::Prod, false), &notification("e", false))
            .await
            .unwrap_err();
        assert!(err.retryable, "{err}");
    })
    .await
}

#[test]
fn key_file_errors_name_the_file_and_the_problem() {
    let config = |key_file: &str| -> ApnsConfig {
        toml::from_str(&format!(
            "key_file = \"{key_file}\"\nkey_id = \"K\"\nteam_id = \"T\"\ntopic = \"t\""
        ))
        .unwrap()
    };
    let missing = ApnsProvider::new(&config("/nonexistent/AuthKey_X.p8")).err().unwrap();
    assert!(
        missing
            .message()
            .contains("apns key_file /nonexistent/AuthKey_X.p8: cannot read"),
        "{missing}"
    );
    let public = fixture("apns_test_AuthKey.pub.pem");
    let wrong = ApnsProvider::new(&config(&public)).err().unwrap();
    assert!(wrong.message().contains(&public), "{wrong}");
    assert!(wrong.message().contains("found -----BEGIN PUBLIC KEY-----"), "{wrong}");
}

#[tokio::test]
async fn a_long_message_is_cut_to_fit_apns_4096_bytes() {
    bounded(async {
        let s = setup().await;
        let mut note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3AB", false);
        let long = "Grüße ✓ ".repeat(1000);
        note.body = Some(long.clone());
        assert_eq!(
            s.provider.send(&device(Mode::Prod, false), &note).await.unwrap(),
            Sent::Delivered
        );
        let req = &s.peer.requests()[0];
        assert!(req.body.len() <= 4096, "{} bytes", req.body.len());
        assert!(
            req.body.len() > 4000,
            "cut no more than needed: {} bytes",
            req.body.len()
        );
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let shown = body["aps"]["alert"]["body"].as_str().unwrap();
        assert!(
            shown.ends_with('…') && long.starts_with(shown.trim_end_matches('…')),
            "{shown}"
        );
        assert_eq!(body["message_id"], "m-1", "data is kept whole");
    })
    .await
}

#[tokio::test]
async fn a_plain_http_endpoint_speaks_http1_for_simple_mocks() {
    bounded(async {
        let mock = Peer::http().await;
        let config: ApnsConfig = toml::from_str(&format!(
            "key_file = \"{}\"\nkey_id = \"{KEY_ID}\"\nteam_id = \"{TEAM_ID}\"\ntopic = \"{TOPIC}\"\nendpoint_url = \"http://127.0.0.1:{}\"",
            fixture("apns_test_AuthKey.p8"),
            mock.addr.port()
        ))
        .unwrap();
        let provider = ApnsProvider::new(&config).unwrap();
        let note = notification("01JC3ZQ5R6S7T8V9W0X1Y2Z3AC", false);
        assert_eq!(provider.send(&device(Mode::Dev, false), &note).await.unwrap(), Sent::Delivered);
        let req = &mock.requests()[0];
        assert_eq!(req.path, format!("/3/device/{TOKEN}"));
        check_provider_token(req);
    })
    .await
}

#[test]
fn a_ca_file_that_is_not_pem_is_named() {
    let not_pem = fixture("README.md");
    let config: ApnsConfig = toml::from_str(&format!(
        "key_file = \"{}\"\nkey_id = \"K\"\nteam_id = \"T\"\ntopic = \"t\"\nca_file = \"{not_pem}\"",
        fixture("apns_test_AuthKey.p8")
    ))
    .unwrap();
    let err = ApnsProvider::new(&config).err().unwrap();
    assert!(
        err.message().contains("apns ca_file") && err.message().contains(&not_pem),
        "{err}"
    );
}
