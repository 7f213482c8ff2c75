//! Recovery, retention, erasure, rate limits and spool inspection, end to
//! end through the binary: replaying only what died in a time window (API
//! and `dlq replay --since/--until`), dead letters expiring after
//! `spool.dead_letter_retention_s`, `DELETE /v1/users/{jid}` and
//! `erase-user` (idempotent, logged without content), `rate_limit_per_s`
//! keeping order while deliveries wait, and `spool check` on a stopped
//! sidecar's spool.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

async fn dead_ids(sc: &Sidecar, backend: &str) -> Vec<String> {
    let (_, v) = sc.get(&format!("/v1/dead-letters?backend={backend}&limit=1000")).await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn wait_dead(sc: &Sidecar, backend: &str, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let ids = dead_ids(sc, backend).await;
        if ids.len() >= n || std::time::Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn replay_takes_only_what_died_in_the_window() {
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(400));
    let sc = Sidecar::start(Options {
        body: format!("{}{}", http_backend("crm", &rx.url("/x"), ""), fast_retry("crm", 1)),
        ..Default::default()
    })
    .await;
    let a = post_ok(&sc, &chat("alice@localhost", "a")).await;
    assert_eq!(wait_dead(&sc, "crm", 1).await, a);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t1 = now_rfc3339();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = post_ok(&sc, &chat("alice@localhost", "b")).await;
    assert_eq!(wait_dead(&sc, "crm", 2).await.len(), 2);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t2 = now_rfc3339();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let c = post_ok(&sc, &chat("alice@localhost", "c")).await;
    assert_eq!(wait_dead(&sc, "crm", 3).await.len(), 3);
    rx.set_default(Answer::status(200));

    // A bad time is refused naming the field, and moves nothing.
    let (status, v) = sc
        .admin_post(
            "/v1/dead-letters/replay",
            &json!({"backend": "crm", "since": "yesterday"}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("since:"), "{v}");
    assert_eq!(dead_ids(&sc, "crm").await.len(), 3);

    // The window [t1, t2]: b only.
    let (status, v) = sc
        .admin_post(
            "/v1/dead-letters/replay",
            &json!({"backend": "crm", "since": t1, "until": t2}),
        )
        .await;
    assert_eq!((status, v["replayed"].clone()), (200, json!(1)), "{v}");
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(id_of(&got[0]), b[0]);

    // The CLI: since t2 (open end) takes c; a stays dead.
    let (code, out, err) = cli(
        &["dlq", "replay", "--url", &sc.url, "--backend", "crm", "--since", &t2],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 1"), "{out}");
    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(id_of(&got[1]), c[0]);
    assert_eq!(dead_ids(&sc, "crm").await, a);
    let (code, _, err) = cli(&["dlq", "replay", "--url", &sc.url, "--until", "soon"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("until"), "{err}");
}

#[tokio::test]
async fn dead_letters_expire_after_the_retention() {
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(400));
    let sc = Sidecar::start(Options {
        spool: "dead_letter_retention_s = 1".into(),
        body: format!("{}{}", http_backend("crm", &rx.url("/x"), ""), fast_retry("crm", 1)),
        ..Default::default()
    })
    .await;
    for i in 0..3 {
        post_ok(&sc, &chat("alice@localhost", &format!("m{i}"))).await;
    }
    assert_eq!(wait_dead(&sc, "crm", 3).await.len(), 3);
    let row = wait_backend(&sc, "crm", WAIT, |b| b["dead_letters"] == 0).await;
    assert_eq!(row["dead_letters"], 0, "{row}");
    assert!(dead_ids(&sc, "crm").await.is_empty());
    let (_, metrics) = sc.get_text("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "event_pusher_dead_letters_expired_total",
            &["backend=\"crm\""]
        ),
        Some(3.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn erasing_a_user_removes_their_events_everywhere_and_is_idempotent() {
    let rx = Receiver::start().await;
    let bad = Receiver::start().await;
    bad.set_default(Answer::status(400));
    let body = format!(
        "{}{}{}",
        http_backend("held", &rx.url("/x"), ""),
        http_backend("bad", &bad.url("/x"), ""),
        fast_retry("bad", 1)
    ) + "\n[egress]\nallow_private = true\n";
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    let (status, _) = sc.admin_post("/v1/backends/held/pause", &json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = sc
        .admin(
            Method::POST,
            "/v1/webhooks",
            Some(&json!({"id": "w", "url": bad.url("/w"), "events": ["presence"]})),
        )
        .await;
    assert_eq!(status, 201);
    post_ok(&sc, &chat("alice@localhost", "secret-from-alice")).await;
    post_ok(&sc, &chat("bob@localhost", "from-bob")).await;
    post_ok(&sc, &json!({"hook": "user_send_message", "from": "bob@localhost/r", "to": "Alice@localhost/phone", "type": "chat", "body": "to-alice"})).await;
    post_ok(&sc, &json!({"hook": "user_available", "jid": "alice@localhost/phone"})).await;
    // held: 3 chats + presence queued; bad: 4 dead letters; w: presence dead.
    assert_eq!(wait_dead(&sc, "bad", 4).await.len(), 4);
    assert_eq!(wait_dead(&sc, "webhook.w", 1).await.len(), 1);

    let (status, v) = sc.admin(Method::DELETE, "/v1/users/alice%40localhost", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"queued": 3, "dead_letters": 4, "devices": 0}));
    let (status, v) = sc.admin(Method::DELETE, "/v1/users/alice%40localhost", None).await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({"queued": 0, "dead_letters": 0, "devices": 0}), "idempotent");
    assert_eq!(sc.backend("held").await["queued"], 1, "bob's own message stays");
    let (_, dl) = sc.get("/v1/dead-letters?limit=1000").await;
    let left: Vec<&Value> = dl.as_array().unwrap().iter().collect();
    assert_eq!(left.len(), 1, "{dl}");
    assert_eq!(left[0]["event"]["body"], "from-bob");
    // Logged at WARN with counts, never content.
    let log = sc.stderr();
    assert!(log.contains("user data erased"), "{log}");
    assert!(!log
        .lines()
        .any(|l| l.contains("user data erased") && l.contains("secret-from-alice")));

    let (status, v) = sc
        .admin(Method::DELETE, "/v1/users/alice%40localhost%2Fphone", None)
        .await;
    assert_eq!(status, 400, "a full JID is refused: {v}");
    let (code, out, err) = cli(&["erase-user", "bob@localhost", "--url", &sc.url], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 queued events, 1 dead letters, 0 devices"), "{out}");
    assert_eq!(sc.backend("held").await["queued"], 0);
}

#[tokio::test]
async fn a_rate_limit_makes_deliveries_wait_in_order() {
    let rx = Receiver::start().await;
    let sc = Sidecar::start(Options {
        body: http_backend("slow", &rx.url("/x"), "rate_limit_per_s = 10"),
        ..Default::default()
    })
    .await;
    // One request: more events than the bucket holds (a second's worth).
    let calls: Vec<Value> = (0..40).map(|i| chat("alice@localhost", &format!("m{i}"))).collect();
    let sent = post_ok(&sc, &Value::Array(calls)).await;
    let got = rx.wait_for(40, WAIT).await;
    let order: Vec<String> = got.iter().map(id_of).collect();
    assert_eq!(order, sent, "all delivered, in order");
    let (_, metrics) = sc.get_text("/metrics").await;
    let waited = metric(&metrics, "event_pusher_throttled_seconds_total", &["backend=\"slow\""]);
    assert!(waited.is_some_and(|s| s > 0.0), "{metrics}");
    assert_eq!(sc.backend("slow").await["dead_letters"], 0);
}

#[tokio::test]
async fn spool_check_counts_a_stopped_spool_and_names_what_is_broken() {
    let rx = Receiver::start().await;
    let mut sc = Sidecar::start(Options {
        body: http_backend("held", &rx.url("/x"), ""),
        ..Default::default()
    })
    .await;
    let (status, _) = sc.admin_post("/v1/backends/held/pause", &json!({})).await;
    assert_eq!(status, 200);
    for i in 0..4 {
        post_ok(&sc, &chat("alice@localhost", &format!("m{i}"))).await;
    }
    // A running sidecar holds the spool: the check says so.
    let config = path_str(&sc.config);
    let (code, _, err) = cli(&["spool", "check", "--config", &config], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("another process"), "{err}");
    assert_eq!(sc.sigterm(), Some(0));

    let (code, out, err) = cli(&["spool", "check", "--config", &config], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("integrity: ok"), "{out}");
    assert!(out.contains("http.held: 4 queued, 0 dead letters"), "{out}");
    let dir = path_str(&sc.spool_dir());
    let (code, out, _) = cli(&["spool", "check", "--dir", &dir, "--json"], &[]).await;
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["queued"], json!([["http.held", 4]]));
    assert!(report["bytes"].as_u64() > Some(0));

    // Garbage over the middle of the file: exit 1, naming the spool.
    let file = sc.spool_dir().join("spool.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..] {
        *b = 0xAB;
    }
    std::fs::write(&file, bytes).unwrap();
    let (code, _, err) = cli(&["spool", "check", "--dir", &dir], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("spool"), "{err}");
    let (code, _, err) = cli(&["spool", "check"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("--config") && err.contains("--dir"), "{err}");
}

/// Erasure reaches the push backend: the user's devices are removed (and
/// counted), their presence and badge count forgotten, across a restart.
#[tokio::test]
async fn erasing_a_user_removes_their_push_devices_and_presence() {
    let fake = FakePush::start().await;
    let mut sc = Sidecar::start(Options {
        body: push_backend("mobile", &fake.url(), ""),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    let device = json!({"provider": "mongoosepush", "service": "fcm", "mode": "prod"});
    for (jid, id) in [
        ("alice@localhost", "a1"),
        ("alice@localhost", "a2"),
        ("bob@localhost", "b1"),
    ] {
        let (status, v) = put_device(&sc, jid, id, &device).await;
        assert!(status == 200 || status == 201, "{v}");
    }
    post_ok(&sc, &json!({"hook": "user_available", "jid": "alice@localhost/phone"})).await;
    let (status, v) = sc.admin(Method::DELETE, "/v1/users/alice%40localhost", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["devices"], 2, "{v}");
    assert!(device_ids(&sc, "alice@localhost").await.is_empty());
    assert_eq!(device_ids(&sc, "bob@localhost").await, ["b1"]);
    let (_, v) = sc.admin(Method::DELETE, "/v1/users/alice%40localhost", None).await;
    assert_eq!(v["devices"], 0, "idempotent: {v}");

    // Stored too: nothing of alice comes back after a restart.
    assert_eq!(sc.sigterm(), Some(0));
    sc.spawn().await;
    sc.wait_ready().await;
    assert!(device_ids(&sc, "alice@localhost").await.is_empty());
    assert_eq!(device_ids(&sc, "bob@localhost").await, ["b1"]);
    let (code, out, err) = cli(&["spool", "check", "--dir", &path_str(&sc.spool_dir())], &[]).await;
    assert_eq!(code, 1, "the running sidecar holds the spool: {out}");
    assert!(err.contains("another process"), "{err}");
}
