//! The first thing a newcomer does: post a hook call, see it at a webhook.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{http_backend, Options, Receiver, Sidecar};

#[tokio::test]
async fn a_posted_event_reaches_the_webhook() {
    let rx = Receiver::start().await;
    let sc = Sidecar::start(Options {
        body: http_backend("notify", &rx.url("/hook"), ""),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    let (status, body) = sc
        .post(&json!({"hook":"user_send_message","from":"alice@localhost/phone","to":"bob@localhost","type":"chat","body":"hi","id":"m-1"}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1);
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let ev = got[0].json();
    assert_eq!(ev["id"], body["ids"][0]);
    assert_eq!(ev["event"], "chat");
    assert_eq!(ev["direction"], "in");
    assert_eq!(ev["message_id"], "m-1");
    assert_eq!(got[0].header("webhook-id").as_deref(), ev["id"].as_str());
}
