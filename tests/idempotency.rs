//! `Idempotency-Key` on `POST /v1/events`, end to end: a retry gets the
//! first answer (same ids, `Idempotent-Replayed: true`) and the receiver
//! gets the events once; other content under the key gets 422; and the
//! key survives kill -9, because it is committed with the events.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::chat;
use support::{http_backend, Options, Receiver, Sidecar};

struct Answer {
    status: u16,
    body: Value,
    replayed: Option<String>,
}

async fn post_keyed(sc: &Sidecar, key: &str, body: &Value) -> Answer {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/events", sc.url))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("post");
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Answer {
        status: r.status().as_u16(),
        body: r.json().await.unwrap_or(Value::Null),
        replayed,
    }
}

async fn start(rx: &Receiver) -> Sidecar {
    let sc = Sidecar::start(Options {
        body: http_backend("notify", &rx.url("/hook"), ""),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    sc
}

#[tokio::test]
async fn a_retry_with_the_key_gets_the_same_ids_and_one_delivery() {
    let rx = Receiver::start().await;
    let sc = start(&rx).await;
    let body = json!([chat("alice@localhost", "hi"), chat("bob@localhost", "yo")]);

    let first = post_keyed(&sc, "req-1", &body).await;
    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(first.replayed, None);
    let again = post_keyed(&sc, "req-1", &body).await;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(again.body, first.body, "the first answer, same ids");
    assert_eq!(again.replayed.as_deref(), Some("true"));

    // Other content under the same key: refused, naming the key.
    let other = post_keyed(&sc, "req-1", &json!(chat("carol@localhost", "hm"))).await;
    assert_eq!(other.status, 422, "{}", other.body);
    assert!(
        other.body["error"].as_str().unwrap_or_default().contains("req-1"),
        "{}",
        other.body
    );

    // A bad key is a 400 naming the header.
    let bad = post_keyed(&sc, &"k".repeat(300), &body).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body["error"]
        .as_str()
        .unwrap_or_default()
        .contains("Idempotency-Key"));

    rx.wait_for(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.received().len(), 2, "each event delivered once");
}

#[tokio::test]
async fn the_key_survives_kill_9() {
    let rx = Receiver::start().await;
    // Hold deliveries back, so the restart has the events still queued.
    rx.set_default(support::Answer::status(503));
    let mut sc = start(&rx).await;
    let body = json!(chat("alice@localhost", "once"));
    let first = post_keyed(&sc, "crash-1", &body).await;
    assert_eq!(first.status, 202, "{}", first.body);

    sc.kill9();
    sc.spawn().await;
    let again = post_keyed(&sc, "crash-1", &body).await;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(again.body, first.body);
    assert_eq!(again.replayed.as_deref(), Some("true"));
    let row = sc.backend("notify").await;
    assert!(row["queued"].as_u64().unwrap_or(0) <= 1, "stored once: {row}");
}
