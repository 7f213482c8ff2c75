//! The HTTP backend on the wire: form format, Standard Webhooks signatures,
//! extra headers, retries with a stable id, `Retry-After`.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use support::{http_backend, Answer, Options, Received, Receiver, Sidecar};

const WAIT: Duration = Duration::from_secs(15);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

async fn start(body: String, env: Vec<(String, String)>) -> Sidecar {
    let sc = Sidecar::start(Options {
        body,
        env,
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    sc
}

fn retry(name: &str, max_attempts: u32) -> String {
    format!(
        "[backends.http.{name}.retry]\nmax_attempts = {max_attempts}\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n"
    )
}

async fn post_one(sc: &Sidecar, call: Value) -> String {
    let (status, answer) = sc.post(&call).await;
    assert_eq!(status, 202, "{answer}");
    answer["ids"][0].as_str().expect("an id").to_owned()
}

/// Check a Standard Webhooks signature the way a receiver would, from the
/// spec alone: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
fn verify_signature(r: &Received, key: &[u8]) -> (String, i64) {
    let id = r.header("webhook-id").expect("webhook-id header");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp header");
    let sig = r.header("webhook-signature").expect("webhook-signature header");
    let ts_num: i64 = ts
        .parse()
        .unwrap_or_else(|_| panic!("webhook-timestamp is not integer seconds: {ts}"));
    let mut signed = Vec::new();
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(ts.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(&r.body);
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(&signed);
    let expected = B64.encode(mac.finalize().into_bytes());
    // The header may carry several space-separated signatures.
    let ok = sig.split(' ').any(|s| s.strip_prefix("v1,") == Some(expected.as_str()));
    assert!(ok, "webhook-signature {sig:?} does not verify (expected v1,{expected})");
    (id, ts_num)
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn form_format_posts_mongooseim_bodies_for_chat_only() {
    let rx = Receiver::start().await;
    let body = http_backend("form", &rx.url("/form"), "format = \"form\"") + &retry("form", 20);
    let sc = start(body, vec![]).await;

    let sent = post_one(
        &sc,
        json!({"hook":"user_send_message","from":"alice@localhost/phone","to":"bob@example.com/tablet","type":"chat",
               "body":"hi & bye=1 ü/ok?","id":"m-1"}),
    )
    .await;
    let delivered = post_one(
        &sc,
        json!({"hook":"filter_local_packet","from":"carol@muc.example.com","to":"dave@localhost","body":"plain"}),
    )
    .await;
    // Not sent in form mode: presence, unacked, a chat without a body.
    for call in [
        json!({"hook":"user_available","jid":"alice@localhost/phone"}),
        json!({"hook":"unset_presence","jid":"alice@localhost/phone"}),
        json!({"hook":"unacknowledged_message","to":"bob@localhost/phone"}),
        json!({"hook":"user_send_message","from":"alice@localhost","to":"bob@localhost"}),
    ] {
        let (status, answer) = sc.post(&call).await;
        assert_eq!(status, 202, "{answer}");
    }

    let got = rx.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = if rx.received().len() > got.len() {
        rx.received()
    } else {
        got
    };
    assert_eq!(got.len(), 2, "only the two chat messages with bodies: {got:#?}");
    assert!(
        rx.attempts().len() == 2,
        "nothing else was even tried: {:#?}",
        rx.attempts()
    );
    let find = |id: &str| {
        got.iter()
            .find(|r| r.header("webhook-id").as_deref() == Some(id))
            .cloned()
    };
    let a = find(&sent).expect("user_send_message delivered");
    let b = find(&delivered).expect("filter_local_packet delivered");
    for r in [&a, &b] {
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(r.path, "/form");
    }
    assert_eq!(
        std::str::from_utf8(&a.body).unwrap(),
        "author=alice&server=localhost&receiver=bob&message=hi+%26+bye%3D1+%C3%BC%2Fok%3F"
    );
    assert_eq!(
        std::str::from_utf8(&b.body).unwrap(),
        "author=carol&server=muc.example.com&receiver=dave&message=plain"
    );
}

#[tokio::test]
async fn standard_webhooks_signature_verifies_on_the_receiver() {
    let rx = Receiver::start().await;
    let key = b"an event-pusher test signing key".to_vec();
    let secret = format!("whsec_{}", B64.encode(&key));
    let body = http_backend("signed", &rx.url("/json"), &format!("secret = \"{secret}\""))
        + &retry("signed", 20)
        + &http_backend(
            "signed_form",
            &rx.url("/form"),
            &format!("secret = \"{secret}\"\nformat = \"form\""),
        )
        + &retry("signed_form", 20);
    let sc = start(body, vec![]).await;

    let before = now_secs();
    let id = post_one(
        &sc,
        json!({"hook":"user_send_message","from":"alice@localhost/phone","to":"bob@localhost","type":"chat","body":"sign me"}),
    )
    .await;
    let presence = post_one(&sc, json!({"hook":"user_available","jid":"alice@localhost/phone"})).await;
    let got = rx.wait_for(3, WAIT).await;
    assert_eq!(got.len(), 3, "{got:#?}");
    for r in &got {
        let (wid, ts) = verify_signature(r, &key);
        assert!(
            ts >= before - 5 && ts <= now_secs() + 5,
            "webhook-timestamp {ts} is not now"
        );
        if r.path == "/json" {
            assert_eq!(
                r.json()["id"].as_str(),
                Some(wid.as_str()),
                "webhook-id equals the event id"
            );
        } else {
            assert_eq!(wid, id, "the form request carries the event id too");
        }
    }
    let json_ids: Vec<String> = got
        .iter()
        .filter(|r| r.path == "/json")
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert!(json_ids.contains(&id) && json_ids.contains(&presence), "{json_ids:?}");

    // A receiver with the wrong key must not verify.
    let r = &got[0];
    let sig = r.header("webhook-signature").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"another key").unwrap();
    mac.update(
        format!(
            "{}.{}.",
            r.header("webhook-id").unwrap(),
            r.header("webhook-timestamp").unwrap()
        )
        .as_bytes(),
    );
    mac.update(&r.body);
    assert_ne!(sig, format!("v1,{}", B64.encode(mac.finalize().into_bytes())));
}

#[tokio::test]
async fn extra_headers_arrive() {
    let rx = Receiver::start().await;
    let body = http_backend(
        "notify",
        &rx.url("/hook"),
        "headers = { \"X-Api-Key\" = \"${EP_TEST_API_KEY}\", \"X-Tenant\" = \"acme\" }",
    ) + &retry("notify", 20);
    let sc = start(body, vec![("EP_TEST_API_KEY".into(), "k-123".into())]).await;
    let id = post_one(&sc, json!({"hook":"user_available","jid":"a@localhost"})).await;
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.header("x-api-key").as_deref(), Some("k-123"));
    assert_eq!(r.header("x-tenant").as_deref(), Some("acme"));
    assert_eq!(r.header("webhook-id").as_deref(), Some(id.as_str()));
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(r.header("webhook-signature"), None, "no secret, no signature");
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_event_on_the_third_try() {
    let rx = Receiver::start().await;
    rx.script([Answer::status(500).with_body("boom"), Answer::status(500)]);
    let key = b"retry key".to_vec();
    let body = http_backend(
        "notify",
        &rx.url("/hook"),
        &format!("secret = \"whsec_{}\"", B64.encode(&key)),
    ) + &retry("notify", 5);
    let sc = start(body, vec![]).await;
    let id = post_one(
        &sc,
        json!({"hook":"user_send_message","from":"a@localhost","to":"b@localhost","type":"chat","body":"again","id":"m-7"}),
    )
    .await;
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "delivered once it answered 200");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let attempts = rx.attempts();
    assert_eq!(attempts.len(), 3, "500, 500, 200 and then nothing more: {attempts:#?}");
    assert_eq!(rx.received().len(), 1);
    for a in &attempts {
        assert_eq!(
            a.json()["id"].as_str(),
            Some(id.as_str()),
            "the same event id on every attempt"
        );
        assert_eq!(
            a.header("webhook-id").as_deref(),
            Some(id.as_str()),
            "the same webhook-id on every attempt"
        );
        assert_eq!(a.body, attempts[0].body, "the same body on every attempt");
        verify_signature(a, &key);
    }
    assert!(attempts[1].at > attempts[0].at && attempts[2].at > attempts[1].at);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let rx = Receiver::start().await;
    rx.script([Answer::status(429).with_header("Retry-After", "1")]);
    let sc = start(
        http_backend("notify", &rx.url("/hook"), "") + &retry("notify", 5),
        vec![],
    )
    .await;
    let id = post_one(&sc, json!({"hook":"user_available","jid":"a@localhost"})).await;
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    let attempts = rx.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let waited = attempts[1].at - attempts[0].at;
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}, not after Retry-After: 1"
    );
    assert_eq!(attempts[1].header("webhook-id").as_deref(), Some(id.as_str()));
}
