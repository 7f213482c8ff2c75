//! Operating many endpoints, end to end through the binary: one webhook
//! subscription whose endpoint is down under steady ingest. Ingest never
//! answers 503 because of it, what does not fit its queue is in its dead
//! letters ("queue full"), it gets disabled, and an operator backend that
//! names the `operational` class receives `backend.failing` then
//! `webhook.disabled` (never about itself); `restart` enables it again and
//! its backlog goes out first. Also `overflow = "refuse"` (the default of
//! config backends) still answers 503, and bad `overflow` /
//! `rate_limit_per_s` values are refused naming the field.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn operational_types(rx: &Receiver) -> Vec<(String, String)> {
    rx.received()
        .iter()
        .map(Received::json)
        .filter(|v| v["event"] == "operational")
        .map(|v| {
            (
                v["type"].as_str().unwrap_or_default().to_owned(),
                v["backend"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_dead_subscription_never_makes_ingest_refuse_and_gets_disabled() {
    let good = Receiver::start().await;
    let ops = Receiver::start().await;
    let dead = Receiver::start().await;
    dead.set_default(Answer::status(503));
    let body = format!(
        "{}{}\n{}[webhooks]\ndisable_after_s = 2\n\n[egress]\nallow_private = true\n",
        http_backend("good", &good.url("/good"), ""),
        http_backend("ops", &ops.url("/ops"), "events = [\"operational\"]"),
        fast_retry("ops", 5),
    );
    let sc = Sidecar::start(Options {
        spool: "max_queue = 10".into(),
        body,
        ..Default::default()
    })
    .await;
    let (status, v) = sc
        .admin(
            Method::POST,
            "/v1/webhooks",
            Some(&json!({
                "id": "crm", "url": dead.url("/hook"), "events": ["chat", "operational"],
                "retry": {"max_attempts": 1000, "initial_backoff_ms": 20, "max_backoff_ms": 100},
            })),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["overflow"], "dead_letter", "the default of subscriptions");

    // Steady ingest, one request at a time: every one is accepted.
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.extend(post_ok(&sc, &chat("alice@localhost", &format!("m{i}"))).await);
    }
    // The good backend got everything.
    assert_eq!(good.wait_for(40, WAIT).await.len(), 40);

    // The subscription's overflow is in its dead letters, as "queue full".
    let (_, dl) = sc.get("/v1/dead-letters?backend=webhook.crm&limit=1000").await;
    let full: Vec<&Value> = dl
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["last_error"]["message"] == "queue full")
        .collect();
    assert!(!full.is_empty(), "overflow dead letters: {dl}");
    assert!(full.iter().all(|d| d["attempts"] == 0 && d["event"]["event"] == "chat"));
    let (_, metrics) = sc.get_text("/metrics").await;
    let overflowed = metric(
        &metrics,
        "event_pusher_overflow_dead_lettered_total",
        &["backend=\"crm\"", "kind=\"webhook\""],
    );
    assert!(overflowed.is_some_and(|n| n >= full.len() as f64), "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "event_pusher_overflow_dead_lettered_total",
            &["backend=\"good\""]
        ),
        Some(0.0)
    );

    // Failing without a success for disable_after_s: disabled.
    let view = wait_webhook(&sc, "crm", |v| v["state"] == "disabled").await;
    assert_eq!(view["state"], "disabled", "never disabled: {view}");
    assert!(
        view["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("without a success")),
        "{view}"
    );
    assert!(view["disabled_at"].is_string(), "{view}");
    // Shown by the CLI too.
    let (code, out, err) = cli(&["webhooks", "list", "--url", &sc.url], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("disabled"), "{out}");

    // Disabled: new events go straight to its dead letters; ingest goes on.
    let before = sc.backend("crm").await["dead_letters"].as_u64().unwrap();
    post_ok(&sc, &chat("bob@localhost", "after")).await;
    let row = wait_backend(&sc, "crm", WAIT, |b| b["dead_letters"].as_u64() > Some(before)).await;
    assert!(row["dead_letters"].as_u64() > Some(before), "{row}");

    // The operator backend heard about it: failing, then disabled.
    let heard = eventually(WAIT, || {
        operational_types(&ops)
            .iter()
            .any(|(t, b)| t == "webhook.disabled" && b == "webhook.crm")
    })
    .await;
    let types = operational_types(&ops);
    assert!(heard, "{types:?}");
    let failing = types
        .iter()
        .position(|(t, b)| t == "backend.failing" && b == "webhook.crm");
    let disabled_at = types.iter().position(|(t, _)| t == "webhook.disabled");
    assert!(failing.is_some() && failing < disabled_at, "{types:?}");
    assert!(
        types
            .iter()
            .any(|(t, b)| t == "delivery.dead_lettered" && b == "webhook.crm"),
        "{types:?}"
    );
    let counted = ops
        .received()
        .iter()
        .map(Received::json)
        .find(|v| v["type"] == "delivery.dead_lettered")
        .unwrap();
    assert!(counted["detail"]["count"].as_u64() >= Some(1), "{counted}");
    assert!(counted["id"].is_string() && counted["timestamp"].is_string() && counted["metadata"].is_object());

    // Never about itself: the subscription names `operational` too, but
    // nothing about webhook.crm was queued for it.
    let (_, dl) = sc.get("/v1/dead-letters?backend=webhook.crm&limit=10000").await;
    assert!(
        !dl.as_array()
            .unwrap()
            .iter()
            .any(|d| d["event"]["event"] == "operational" && d["event"]["backend"] == "webhook.crm"),
        "{dl}"
    );

    // Restart enables it again; its backlog is delivered, in order.
    dead.set_default(Answer::status(200));
    let (status, v) = sc.admin(Method::POST, "/v1/webhooks/crm/restart", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "started", "{v}");
    let got = dead.wait_for(10, WAIT).await;
    assert!(got.len() >= 10, "backlog delivered: {}", got.len());
    let bodies: Vec<String> = got
        .iter()
        .map(Received::json)
        .filter(|v| v["event"] == "chat")
        .map(|v| v["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    let first: Vec<String> = (0..bodies.len().min(5)).map(|i| format!("m{i}")).collect();
    assert_eq!(&bodies[..first.len()], first.as_slice(), "backlog first, in order");
    let recovered = eventually(WAIT, || {
        operational_types(&ops)
            .iter()
            .any(|(t, b)| t == "backend.recovered" && b == "webhook.crm")
    })
    .await;
    assert!(recovered, "{:?}", operational_types(&ops));
    // Queueing again after the restart.
    post_ok(&sc, &chat("carol@localhost", "again")).await;
    let again = eventually(WAIT, || dead.received().iter().any(|r| r.json()["body"] == "again")).await;
    assert!(again);
}

/// Poll `GET /v1/webhooks/{id}` until `f` holds (or time is up).
async fn wait_webhook(sc: &Sidecar, id: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, v) = sc.get(&format!("/v1/webhooks/{id}")).await;
        if f(&v) || std::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn refuse_answers_503_and_bad_values_name_their_field() {
    let down = Receiver::start().await;
    down.set_default(Answer::status(503));
    let ops = Receiver::start().await;
    let body = format!(
        "{}{}{}",
        http_backend("crm", &down.url("/x"), "overflow = \"refuse\"\nevents = [\"chat\"]"),
        fast_retry("crm", 1000),
        http_backend("ops", &ops.url("/ops"), "events = [\"operational\"]"),
    ) + "\n[egress]\nallow_private = true\n";
    let sc = Sidecar::start(Options {
        spool: "max_queue = 3".into(),
        body,
        ..Default::default()
    })
    .await;
    let mut refused = false;
    for i in 0..10 {
        let (status, _, _) = post(&sc, &chat("alice@localhost", &format!("m{i}"))).await;
        if status == 503 {
            refused = true;
            break;
        }
        assert_eq!(status, 202);
    }
    assert!(refused, "a full queue with overflow = \"refuse\" answers 503");
    let row = sc.backend("crm").await;
    assert_eq!(row["dead_letters"], 0, "refused events are nowhere: {row}");
    // The operator hears that ingest refuses, and when it takes events again.
    let refusing = eventually(WAIT, || {
        operational_types(&ops).iter().any(|(t, _)| t == "spool.refusing")
    })
    .await;
    assert!(refusing, "{:?}", operational_types(&ops));
    down.set_default(Answer::status(200));
    assert!(down.wait_for(3, WAIT).await.len() >= 3);
    let _ = wait_backend(&sc, "crm", WAIT, |b| b["queued"] == 0).await;
    post_ok(&sc, &chat("alice@localhost", "taken again")).await;
    let accepting = eventually(WAIT, || {
        operational_types(&ops).iter().any(|(t, _)| t == "spool.accepting")
    })
    .await;
    let types = operational_types(&ops);
    assert!(accepting, "{types:?}");
    assert_eq!(
        types.iter().filter(|(t, _)| t.starts_with("spool.")).count(),
        2,
        "each change once: {types:?}"
    );
    down.set_default(Answer::status(503));

    for (body, field) in [
        (json!({"url": down.url("/h"), "overflow": "drop"}), "overflow"),
        (
            json!({"url": down.url("/h"), "rate_limit_per_s": 0}),
            "rate_limit_per_s",
        ),
        (json!({"url": down.url("/h"), "events": ["nope"]}), "events"),
    ] {
        let (status, v) = sc.admin(Method::POST, "/v1/webhooks", Some(&body)).await;
        assert_eq!(status, 400, "{v}");
        assert!(v["error"].as_str().unwrap().starts_with(field), "{v}");
    }
    // PATCH takes them too.
    let (status, _) = sc
        .admin(
            Method::POST,
            "/v1/webhooks",
            Some(&json!({"id": "w", "url": down.url("/h")})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, v) = sc
        .admin(
            Method::PATCH,
            "/v1/webhooks/w",
            Some(&json!({"overflow": "refuse", "rate_limit_per_s": 5})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["overflow"].clone(), v["rate_limit_per_s"].clone()),
        (json!("refuse"), json!(5.0))
    );

    // A config file with a bad value names file, line and key.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[backends.http.a]\nurl = \"http://x\"\nrate_limit_per_s = -1\n").unwrap();
    let out = run_cli(&["check-config", &path_str(&file)], &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("rate_limit_per_s") && out.stderr.contains(":3:"),
        "{}",
        out.stderr
    );
    std::fs::write(
        &file,
        "[backends.http.a]\nurl = \"http://x\"\noverflow = \"sometimes\"\n",
    )
    .unwrap();
    let out = run_cli(&["check-config", &path_str(&file)], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("overflow"), "{}", out.stderr);
}
