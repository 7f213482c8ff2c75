//! `ordering` per backend: `per_user` (the default) sends one event of a
//! user at a time, in order; `none` lets one user's backlog go out at full
//! concurrency. The receiver holds every answer for a while, so whether
//! requests overlapped is read off arrival times, not guessed from speed.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{chat, http_backend, post_ok, Answer, Options, Receiver, Sidecar};

const HOLD: Duration = Duration::from_millis(400);
const EVENTS: usize = 6;

async fn arrivals(ordering: &str) -> (Vec<Duration>, Vec<String>) {
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(200).with_delay(HOLD));
    let extra = format!("concurrency = 8\nordering = \"{ordering}\"\n");
    let sc = Sidecar::start(Options {
        body: http_backend("hot", &rx.url("/hook"), &extra),
        ..Default::default()
    })
    .await;
    let calls: Vec<Value> = (0..EVENTS).map(|i| chat("hot@localhost", &format!("m{i}"))).collect();
    post_ok(&sc, &Value::Array(calls)).await;
    let got = rx.wait_for(EVENTS, Duration::from_secs(15)).await;
    assert_eq!(got.len(), EVENTS, "every event arrives");
    let first = got[0].at;
    let gaps = got.iter().map(|r| r.at - first).collect();
    let bodies = got
        .iter()
        .map(|r| r.json()["body"].as_str().unwrap_or("").to_owned())
        .collect();
    (gaps, bodies)
}

#[tokio::test]
async fn per_user_sends_one_event_of_a_user_at_a_time_in_order() {
    let (gaps, bodies) = arrivals("per_user").await;
    let want: Vec<String> = (0..EVENTS).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, want);
    // Each request waits for the answer to the one before.
    for pair in gaps.windows(2) {
        assert!(pair[1] - pair[0] >= HOLD - Duration::from_millis(20), "{gaps:?}");
    }
}

#[tokio::test]
async fn none_sends_a_users_backlog_at_full_concurrency() {
    let (gaps, _) = arrivals("none").await;
    // All six arrive before the first answer is given.
    assert!(gaps.iter().all(|g| *g < HOLD), "{gaps:?}");
}

#[tokio::test]
async fn an_unknown_ordering_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidecar.toml");
    std::fs::write(
        &file,
        http_backend("hot", "http://127.0.0.1:9/x", "ordering = \"random\"\n"),
    )
    .unwrap();
    let out = support::run_cli(&["check-config", file.to_str().unwrap()], &[]);
    assert_ne!(out.code, Some(0));
    let err = out.stderr;
    assert!(
        err.contains("sidecar.toml:3:") && err.contains("ordering") && err.contains("per_user"),
        "{err}"
    );
}
