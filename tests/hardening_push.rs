//! Device ids in provider URL paths, through the binary against a local
//! MongoosePush: `.`, `..` and empty ids are refused naming `device_id`, and
//! every id is sent as one percent-encoded path segment (`a b` is `a%20b`,
//! not `a+b`, another device).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn enable(device_id: &str) -> Value {
    json!({"hook": "push_enable", "jid": "bob@localhost", "device_id": device_id,
        "provider": "mongoosepush", "service": "fcm"})
}

#[tokio::test]
async fn device_ids_stay_inside_their_path_segment() {
    let fake = FakePush::start().await;
    let sc = Sidecar::start(Options {
        body: push_backend("mobile", &fake.url(), ""),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;

    for bad in [".", "..", ""] {
        let (status, v) = sc.post(&enable(bad)).await;
        assert_eq!(status, 400, "{bad:?}: {v}");
        assert!(
            v["error"].as_str().unwrap_or_default().starts_with("device_id:"),
            "{bad:?}: {v}"
        );
    }
    assert!(device_ids(&sc, "bob@localhost").await.is_empty());

    for id in ["a b", "x/../y?z#w"] {
        let (status, v) = sc.post(&enable(id)).await;
        assert_eq!(status, 202, "{id}: {v}");
    }
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "hi")).await;
    let wait = Duration::from_secs(10);
    assert_eq!(fake.wait_delivered("a%20b", 1, wait).await.len(), 1, "a b as a%20b");
    assert_eq!(
        fake.wait_delivered("x%2F..%2Fy%3Fz%23w", 1, wait).await.len(),
        1,
        "/, ? and # stay in the segment"
    );
    let paths: Vec<String> = fake.pushed().into_iter().map(|p| p.device).collect();
    assert!(!paths.iter().any(|d| d.contains('+')), "{paths:?}");
}
