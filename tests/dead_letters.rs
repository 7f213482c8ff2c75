//! Dead letters end to end: what exhausts its retries (or fails for good)
//! lands in the dead-letter store with its attempts and last error, and an
//! operator can list and replay it through the admin API or the CLI, with
//! the sidecar running or not.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{chat, cli, fast_retry, post_ok, received_ids, wait_all, wait_backend};
use support::{http_backend, Answer, Options, Receiver, Sidecar};

const NOTIFY: &str = "notify";

async fn sidecar(rx: &Receiver, max_attempts: u32, token: Option<&str>) -> Sidecar {
    let body = format!(
        "{}{}",
        http_backend(NOTIFY, &rx.url("/hook"), ""),
        fast_retry(NOTIFY, max_attempts)
    );
    let server = token.map(|t| format!("auth_token = \"{t}\"")).unwrap_or_default();
    let sc = Sidecar::start(Options {
        body,
        server,
        token: token.map(str::to_owned),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    sc
}

async fn dead_letters(sc: &Sidecar) -> Vec<Value> {
    let (status, v) = sc.get(&format!("/v1/dead-letters?backend={NOTIFY}")).await;
    assert_eq!(status, 200, "{v}");
    v.as_array().cloned().unwrap_or_default()
}

/// Post `n` events from three users; their ids.
async fn post_events(sc: &Sidecar, n: usize) -> Vec<String> {
    let calls: Vec<Value> = (0..n)
        .map(|i| chat(&format!("user{}@localhost", i % 3), &format!("m{i}")))
        .collect();
    post_ok(sc, &Value::Array(calls)).await
}

#[tokio::test]
async fn endpoint_failing_forever_dead_letters_then_replay_delivers() {
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(500).with_body("boom: database down"));
    let sc = sidecar(&rx, 3, None).await;
    let t0 = Instant::now();
    let ids = post_events(&sc, 12).await;

    let row = wait_backend(&sc, NOTIFY, Duration::from_secs(30), |r| r["dead_letters"] == 12).await;
    assert_eq!(row["dead_letters"], 12, "{row}");
    assert_eq!(row["queued"], 0, "{row}");
    eprintln!(
        "500 forever: 12 events dead-lettered after {:?}; receiver hit {} times (max_attempts 3)",
        t0.elapsed(),
        rx.attempts().len()
    );
    // Never more than max_attempts per event; the breaker may spare some.
    assert!(rx.attempts().len() <= 12 * 3, "{} hits", rx.attempts().len());

    let dead = dead_letters(&sc).await;
    assert_eq!(dead.len(), 12);
    let dead_ids: HashSet<String> = dead.iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(dead_ids, ids.iter().cloned().collect::<HashSet<_>>());
    for d in &dead {
        assert_eq!(d["backend"], NOTIFY);
        assert_eq!(d["attempts"], 3, "{d}");
        assert_eq!(d["last_error"]["status"], 500, "{d}");
        assert!(
            d["last_error"]["message"]
                .as_str()
                .unwrap()
                .contains("boom: database down"),
            "{d}"
        );
        assert_eq!(d["event"]["id"], d["id"]);
        assert_eq!(d["event"]["event"], "chat");
        for k in ["first_attempt_at", "last_attempt_at", "dead_at"] {
            assert!(d[k].as_str().is_some_and(|s| s.ends_with('Z')), "{k} in {d}");
        }
    }
    // Metrics agree.
    let (_, text) = sc.get_text("/metrics").await;
    let lab = format!("backend=\"{NOTIFY}\"");
    assert_eq!(
        support::metric(&text, "event_pusher_dead_letters", &[&lab]),
        Some(12.0),
        "{text}"
    );
    assert_eq!(
        support::metric(&text, "event_pusher_dead_lettered_total", &[&lab]),
        Some(12.0)
    );

    // The receiver is fixed; replay everything through the API.
    rx.set_default(Answer::status(200));
    let t1 = Instant::now();
    let (status, v) = sc
        .admin_post("/v1/dead-letters/replay", &json!({"backend": NOTIFY}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["replayed"], 12);
    let want: HashSet<String> = ids.iter().cloned().collect();
    assert!(
        wait_all(&rx, &want, Duration::from_secs(20)).await,
        "replayed events not delivered"
    );
    eprintln!("replay of 12 dead letters delivered in {:?}", t1.elapsed());
    assert!(dead_letters(&sc).await.is_empty());
    let row = wait_backend(&sc, NOTIFY, Duration::from_secs(5), |r| r["queued"] == 0).await;
    assert_eq!(row["dead_letters"], 0, "{row}");
    assert_eq!(row["queued"], 0, "{row}");
    assert_eq!(row["delivered"], 12, "{row}");
}

#[tokio::test]
async fn replay_of_chosen_ids_and_unknown_backend() {
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(503));
    let sc = sidecar(&rx, 2, None).await;
    let ids = post_events(&sc, 4).await;
    wait_backend(&sc, NOTIFY, Duration::from_secs(20), |r| r["dead_letters"] == 4).await;
    rx.set_default(Answer::status(200));

    let (status, v) = sc
        .admin_post(
            "/v1/dead-letters/replay",
            &json!({"backend": NOTIFY, "ids": [ids[1], ids[3]]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["replayed"], 2);
    let want: HashSet<String> = [ids[1].clone(), ids[3].clone()].into();
    assert!(wait_all(&rx, &want, Duration::from_secs(10)).await);
    let left: HashSet<String> = dead_letters(&sc)
        .await
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, [ids[0].clone(), ids[2].clone()].into());

    let (status, _) = sc
        .admin_post("/v1/dead-letters/replay", &json!({"backend": "nope"}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = sc.get("/v1/dead-letters?backend=nope").await;
    assert_eq!(status, 404);
    let (status, _) = sc
        .admin_post("/v1/dead-letters/replay", &json!({"backend": NOTIFY, "bogus": 1}))
        .await;
    assert_eq!(status, 400);

    // No body at all: replay everything.
    let (status, v) = sc.admin_post("/v1/dead-letters/replay", &Value::Null).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["replayed"], 2);
    let want: HashSet<String> = ids.iter().cloned().collect();
    assert!(wait_all(&rx, &want, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn gone_is_dead_lettered_without_retries() {
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(410).with_body("endpoint removed"));
    let sc = sidecar(&rx, 8, None).await;
    let ids = post_events(&sc, 3).await;
    wait_backend(&sc, NOTIFY, Duration::from_secs(10), |r| r["dead_letters"] == 3).await;
    // Give a wrongly scheduled retry time to show up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(rx.attempts().len(), 3, "410 must not be retried");
    let dead = dead_letters(&sc).await;
    assert_eq!(dead.len(), 3);
    for d in &dead {
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["last_error"]["status"], 410, "{d}");
        assert!(d["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("endpoint removed"));
    }
    let row = sc.backend(NOTIFY).await;
    assert_eq!(row["retries"], 0, "{row}");
    assert!(received_ids(&rx).is_empty());
    let _ = ids;
}

#[tokio::test]
async fn other_permanent_statuses_are_not_retried_but_408_and_5xx_are() {
    let rx = Receiver::start().await;
    // One permanent answer each, then the retryable ones that end in 200.
    rx.script([400, 401, 403, 404, 422].map(Answer::status));
    let sc = sidecar(&rx, 8, None).await;
    // One user: one attempt at a time, so the script is used in order.
    for i in 0..5 {
        post_ok(&sc, &chat("solo@localhost", &format!("p{i}"))).await;
    }
    wait_backend(&sc, NOTIFY, Duration::from_secs(10), |r| r["dead_letters"] == 5).await;
    assert_eq!(rx.attempts().len(), 5);

    rx.script([408, 429, 500, 502, 503, 504].map(Answer::status));
    let ids = post_ok(&sc, &chat("solo@localhost", "retried")).await;
    let got = rx.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(support::id_of(&got[0]), ids[0]);
    assert_eq!(rx.attempts().len(), 5 + 7, "six retryable failures, then the success");
    let row = sc.backend(NOTIFY).await;
    assert_eq!(row["dead_letters"], 5, "{row}");
}

#[tokio::test]
async fn too_many_requests_with_retry_after_waits() {
    let rx = Receiver::start().await;
    rx.script([Answer::status(429).with_header("Retry-After", "2")]);
    let sc = sidecar(&rx, 8, None).await;
    let ids = post_ok(&sc, &chat("alice@localhost", "throttled")).await;
    let got = rx.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(support::id_of(&got[0]), ids[0]);
    let attempts = rx.attempts();
    assert_eq!(attempts.len(), 2);
    let waited = attempts[1].at - attempts[0].at;
    eprintln!("429 Retry-After: 2 -> next attempt after {waited:?}");
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    assert!(waited < Duration::from_secs(5), "retried after {waited:?}");
}

#[tokio::test]
async fn dlq_cli_lists_and_replays_through_the_running_sidecar() {
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(500).with_body("nope"));
    let sc = sidecar(&rx, 2, Some("s3cret")).await;
    let ids = post_events(&sc, 3).await;
    wait_backend(&sc, NOTIFY, Duration::from_secs(20), |r| r["dead_letters"] == 3).await;
    let config = sc.config.display().to_string();

    let (code, out, err) = cli(&["dlq", "list", "--config", &config], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    for id in &ids {
        assert!(out.contains(id.as_str()), "{id} missing in:\n{out}");
    }
    assert!(out.contains("[500]"), "{out}");
    assert!(out.contains("3 dead letters"), "{out}");

    let (code, out, err) = cli(
        &["dlq", "list", "--config", &config, "--backend", NOTIFY, "--json"],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[0]["attempts"], 2);

    let (code, _, err) = cli(&["dlq", "list", "--config", &config, "--backend", "nope"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("nope"), "{err}");

    rx.set_default(Answer::status(200));
    let (code, out, err) = cli(
        &[
            "dlq",
            "replay",
            "--config",
            &config,
            "--backend",
            NOTIFY,
            "--id",
            &ids[0],
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed 1"), "{out}");
    assert!(wait_all(&rx, &[ids[0].clone()].into(), Duration::from_secs(10)).await);

    let (code, out, err) = cli(&["dlq", "replay", "--config", &config], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed 2"), "{out}");
    let want: HashSet<String> = ids.iter().cloned().collect();
    assert!(wait_all(&rx, &want, Duration::from_secs(10)).await);
    let (code, out, _) = cli(&["dlq", "list", "--config", &config], &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains("0 dead letters"), "{out}");
}

#[tokio::test]
async fn dlq_cli_works_offline_and_replayed_events_go_out_at_start() {
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(500).with_body("nope"));
    let mut sc = sidecar(&rx, 2, None).await;
    let ids = post_events(&sc, 5).await;
    wait_backend(&sc, NOTIFY, Duration::from_secs(20), |r| r["dead_letters"] == 5).await;
    assert_eq!(sc.sigterm(), Some(0));
    let config = sc.config.display().to_string();

    let (code, out, err) = cli(&["dlq", "list", "--config", &config, "--json"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    let listed: HashSet<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ids.iter().cloned().collect::<HashSet<_>>());

    let (code, out, err) = cli(&["dlq", "replay", "--config", &config, "--id", &ids[2]], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed 1"), "{out}");
    let (code, out, err) = cli(&["dlq", "list", "--config", &config], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 dead letters"), "{out}");

    // Back up, receiver fixed: the replayed one goes out by itself.
    rx.set_default(Answer::status(200));
    sc.spawn().await;
    sc.wait_ready().await;
    assert!(wait_all(&rx, &[ids[2].clone()].into(), Duration::from_secs(10)).await);
    assert_eq!(sc.backend(NOTIFY).await["dead_letters"], 4);

    // And the rest, offline again.
    assert_eq!(sc.sigterm(), Some(0));
    let (code, out, err) = cli(&["dlq", "replay", "--config", &config], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed 4"), "{out}");
    sc.spawn().await;
    let want: HashSet<String> = ids.iter().cloned().collect();
    assert!(wait_all(&rx, &want, Duration::from_secs(10)).await);
    let row = wait_backend(&sc, NOTIFY, Duration::from_secs(5), |r| r["queued"] == 0).await;
    assert_eq!(row["dead_letters"], 0, "{row}");
    assert!(dead_letters(&sc).await.is_empty());
    assert_eq!(support::duplicates(&rx), 0);
}
