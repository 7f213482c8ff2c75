//! The push backend's FCM HTTP v1 provider end to end: a local token
//! endpoint that verifies the service account's RS256 grant with the
//! fixture public key (tests/fixtures/push), and a local FCM endpoint
//! answering 200, 404 UNREGISTERED (prune), 429 with Retry-After, 503, and
//! 401 (fresh token, then holding when the fresh one is refused too).

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const WAIT: Duration = Duration::from_secs(10);

async fn sidecar(fake: &FakePush, max_attempts: u32) -> Sidecar {
    let dir = tempfile::tempdir().expect("tempdir");
    let account = service_account_file(dir.path(), fake);
    // The file must outlive the test's sidecar; keep the directory.
    std::mem::forget(dir);
    let body = format!(
        "[backends.push.mobile]\n[backends.push.mobile.retry]\nmax_attempts = {max_attempts}\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n\
         [backends.push.mobile.fcm]\nservice_account_file = \"{account}\"\nendpoint_url = \"{}\"\n",
        fake.url()
    );
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    sc
}

async fn register(sc: &Sidecar, device_id: &str, token: &str) {
    let (s, v) = put_device(
        sc,
        "bob@localhost",
        device_id,
        &json!({"provider": "fcm", "token": token}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(!v.to_string().contains(token), "the token is not echoed: {v}");
    let (_, listed) = sc.get("/v1/push/devices/bob%40localhost").await;
    assert!(!listed.to_string().contains(token), "nor listed: {listed}");
    assert!(!sc.stderr().contains(token), "nor logged");
}

async fn metric_eventually(sc: &Sidecar, name: &str, labels: &[&str], want: f64) -> Option<f64> {
    let mut got = None;
    for _ in 0..100 {
        let (_, text) = sc.get_text("/metrics").await;
        got = metric(&text, name, labels);
        if got == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}

#[tokio::test]
async fn fcm_gets_the_v1_body_with_a_verified_token_and_prunes_unregistered() {
    let fake = FakePush::start().await;
    fake.set_default(
        "tok-gone",
        Answer::status(404).with_body(
            r#"{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#,
        ),
    );
    let sc = sidecar(&fake, 3).await;
    assert_eq!(fake.tokens_issued(), 1, "a first token at start");
    assert_eq!(fake.bad_grants(), 0, "the grant verified");
    register(&sc, "phone", "tok-ok").await;
    register(&sc, "old", "tok-gone").await;
    let silent = json!({"provider": "fcm", "token": "tok-silent", "silent": true});
    assert_eq!(put_device(&sc, "bob@localhost", "watch", &silent).await.0, 201);

    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "hi")).await;
    let got = fake.wait_delivered("tok-ok", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let m = &got[0].body["message"];
    assert_eq!(
        got[0].authorization.as_deref(),
        Some("Bearer ya29.token-1"),
        "cached token reused"
    );
    assert_eq!(m["token"], "tok-ok");
    assert_eq!(m["notification"]["title"], "alice@localhost");
    assert_eq!(m["notification"]["body"], "hi");
    assert_eq!(m["android"]["priority"], "high");
    assert_eq!(m["apns"]["payload"]["aps"]["badge"], 1);
    assert_eq!(m["data"]["message_count"], "1");
    assert!(m["data"].as_object().unwrap().values().all(|v| v.is_string()), "{m}");
    let watch = fake.wait_delivered("tok-silent", 1, WAIT).await;
    assert!(
        watch[0].body["message"].get("notification").is_none(),
        "silent: data only"
    );

    let pruned = metric_eventually(
        &sc,
        "event_pusher_push_devices_pruned_total",
        &["provider=\"fcm\""],
        1.0,
    )
    .await;
    assert_eq!(pruned, Some(1.0));
    let mut left = device_ids(&sc, "bob@localhost").await;
    left.sort();
    assert_eq!(left, vec!["phone", "watch"]);
    let sent = metric_eventually(&sc, "event_pusher_push_sent_total", &["provider=\"fcm\""], 2.0).await;
    assert_eq!(sent, Some(2.0));
    let (_, v) = sc.get("/v1/dead-letters?backend=push.mobile").await;
    assert_eq!(
        v.as_array().map(Vec::len),
        Some(0),
        "a pruned device is no failure: {v}"
    );
}

#[tokio::test]
async fn throttling_and_outages_are_retried_and_retry_after_is_honoured() {
    let fake = FakePush::start().await;
    fake.script("tok-slow", [Answer::status(429).with_header("retry-after", "1")]);
    fake.script("tok-flaky", [Answer::status(503), Answer::status(503)]);
    let sc = sidecar(&fake, 5).await;
    register(&sc, "slow", "tok-slow").await;
    register(&sc, "flaky", "tok-flaky").await;
    let sent_at = Instant::now();
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "hi")).await;
    assert_eq!(fake.wait_delivered("tok-flaky", 1, WAIT).await.len(), 1, "503 retried");
    let slow = fake.wait_delivered("tok-slow", 1, WAIT).await;
    assert_eq!(slow.len(), 1, "429 retried");
    assert!(
        slow[0].at.duration_since(sent_at) >= Duration::from_millis(950),
        "Retry-After: 1 honoured ({:?})",
        slow[0].at.duration_since(sent_at)
    );
    let attempts = |t: &str| fake.pushed().iter().filter(|p| p.device == t).count();
    assert_eq!((attempts("tok-slow"), attempts("tok-flaky")), (2, 3));
    let failed = metric_eventually(&sc, "event_pusher_push_failed_total", &["provider=\"fcm\""], 3.0).await;
    assert_eq!(failed, Some(3.0));
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once_then_the_backend_holds() {
    let fake = FakePush::start().await;
    let sc = sidecar(&fake, 8).await;
    register(&sc, "phone", "tok-ok").await;

    // One 401: a fresh token, sent again at once.
    fake.reject_next(1);
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "one")).await;
    let got = fake.wait_delivered("tok-ok", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].authorization.as_deref(), Some("Bearer ya29.token-2"));
    assert_eq!(fake.tokens_issued(), 2);

    // Two 401s: the fresh token is refused too; not ready, the event held.
    fake.reject_next(2);
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "two")).await;
    let held = async {
        for _ in 0..100 {
            let (s, _) = sc.get("/ready").await;
            if s == 503 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
    .await;
    assert!(held, "not ready after a fresh credential was refused");
    assert_eq!(fake.tokens_issued(), 3);
    let row = sc.backend("mobile").await;
    assert_eq!(row["queued"], 1, "held, not dead-lettered: {row}");
    assert_eq!(fake.delivered_to("tok-ok").len(), 1);
}

#[tokio::test]
async fn a_refused_credential_holds_its_provider_alone() {
    let fake = FakePush::start().await;
    let config = push_backend("mobile", &fake.url(), "") + &fcm_provider("mobile", &fake);
    let sc = Sidecar::start(Options {
        body: config,
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    register(&sc, "phone", "tok-iso").await;
    let (s, v) = put_device(
        &sc,
        "bob@localhost",
        "tablet",
        &json!({"provider": "mongoosepush", "service": "apns"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");

    // FCM refuses the token and the fresh one: FCM is not ready, alone.
    fake.reject_next(2);
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "one")).await;
    assert_eq!(fake.wait_delivered("tablet", 1, WAIT).await.len(), 1);
    let row = wait_backend(&sc, "mobile", WAIT, |r| r["providers"]["fcm"]["ready"] == false).await;
    assert_eq!(row["providers"]["fcm"]["ready"], false, "{row}");
    assert_eq!(row["providers"]["mongoosepush"]["ready"], true, "{row}");
    let (s, _) = sc.get("/ready").await;
    assert_eq!(s, 200, "one provider still delivers");

    // MongoosePush devices keep being pushed while FCM is held.
    let sent = Instant::now();
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "two")).await;
    assert_eq!(fake.wait_delivered("tablet", 2, WAIT).await.len(), 2);
    assert!(sent.elapsed() < Duration::from_secs(5), "{:?}", sent.elapsed());
    assert!(fake.delivered_to("tok-iso").is_empty());

    // The hold ends; FCM's held notifications go out, none dead-lettered
    // (holding spent no attempts: max_attempts is 3, the hold 10 s).
    let got = fake.wait_delivered("tok-iso", 2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2, "{:?}", fake.pushed());
    let row = wait_backend(&sc, "mobile", WAIT, |r| r["providers"]["fcm"]["ready"] == true).await;
    assert_eq!(
        (row["dead_letters"].as_u64(), row["queued"].as_u64()),
        (Some(0), Some(0)),
        "{row}"
    );
}
