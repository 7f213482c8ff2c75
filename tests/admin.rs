//! The operator's view: `GET /v1/backends`, pause/resume, `/metrics`,
//! `event-pusher status`, and the token on all of them.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{chat, cli, fast_retry, metric, post_ok, wait_backend};
use support::{http_backend, Answer, Options, Receiver, Sidecar};

#[tokio::test]
async fn backends_table_pause_resume_and_status_cli() {
    let rx = Receiver::start().await;
    let body = format!(
        "{}{}[backends.log.audit]\npath = \"/dev/null\"\nevents = [\"presence\"]\n",
        http_backend("notify", &rx.url("/hook"), ""),
        fast_retry("notify", 5)
    );
    let sc = Sidecar::start(Options {
        body,
        server: "auth_token = \"tok\"".into(),
        token: Some("tok".into()),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;

    // The token is required on the admin API.
    let r = reqwest::get(format!("{}/v1/backends", sc.url)).await.unwrap();
    assert_eq!(r.status(), 401);

    let (status, all) = sc.get("/v1/backends").await;
    assert_eq!(status, 200);
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 2, "{all:?}");
    for row in &all {
        for k in [
            "name",
            "kind",
            "paused",
            "ready",
            "queued",
            "in_flight",
            "delivered",
            "failed",
            "retries",
            "dead_letters",
        ] {
            assert!(row.get(k).is_some(), "{k} missing in {row}");
        }
    }
    assert_eq!(all[0]["name"], "notify");
    assert_eq!(all[0]["kind"], "http");
    assert_eq!(all[1]["kind"], "log");

    // Pause: events are accepted and queued, nothing is sent.
    let (status, row) = sc.admin_post("/v1/backends/notify/pause", &json!({})).await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["paused"], true);
    for i in 0..4 {
        post_ok(&sc, &chat("alice@localhost", &format!("p{i}"))).await;
    }
    let row = wait_backend(&sc, "notify", Duration::from_secs(5), |r| r["queued"] == 4).await;
    assert_eq!(row["queued"], 4, "{row}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.attempts().is_empty(), "a paused backend sent something");

    let (code, out, err) = cli(&["status", "--url", &sc.url], &[("EVENT_PUSHER_TOKEN", "tok")]).await;
    assert_eq!(code, 0, "{out}{err}");
    eprintln!("event-pusher status (paused):\n{out}");
    // KIND.NAME: names are unique per kind only.
    let line = out.lines().find(|l| l.starts_with("http.notify")).expect("notify row");
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[..4], ["http.notify", "http", "paused", "4"], "{out}");
    assert!(out.lines().next().unwrap().contains("DEAD LETTERS"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("log.audit")), "{out}");

    // Without the token: a clear error, exit 1.
    let (code, _, err) = cli(&["status", "--url", &sc.url], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");

    let (status, row) = sc.admin_post("/v1/backends/notify/resume", &json!({})).await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["paused"], false);
    let got = rx.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 4);
    let row = wait_backend(&sc, "notify", Duration::from_secs(5), |r| r["queued"] == 0).await;
    assert_eq!(row["delivered"], 4, "{row}");

    let (code, out, _) = cli(&["status", "--url", &sc.url, "--token", "tok"], &[]).await;
    assert_eq!(code, 0);
    eprintln!("event-pusher status (resumed):\n{out}");
    let line = out.lines().find(|l| l.starts_with("http.notify")).expect("notify row");
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[..6], ["http.notify", "http", "ready", "0", "0", "4"], "{out}");

    let (status, _) = sc.admin_post("/v1/backends/nope/pause", &json!({})).await;
    assert_eq!(status, 404);

    // Status of a sidecar that is not there.
    let (code, _, err) = cli(
        &["status", "--url", &format!("http://127.0.0.1:{}", support::free_port())],
        &[],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach"), "{err}");
}

#[tokio::test]
async fn metrics_follow_prometheus_conventions() {
    let rx = Receiver::start().await;
    rx.script([Answer::status(503), Answer::status(410)]);
    let body = format!(
        "{}{}",
        http_backend("notify", &rx.url("/hook"), ""),
        fast_retry("notify", 5)
    );
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    // First: 503 then 200 (one retry); second: 410 (dead letter); third: 200.
    post_ok(&sc, &chat("a@localhost", "1")).await;
    rx.wait_for(1, Duration::from_secs(10)).await;
    post_ok(&sc, &chat("a@localhost", "2")).await;
    wait_backend(&sc, "notify", Duration::from_secs(10), |r| r["dead_letters"] == 1).await;
    post_ok(&sc, &chat("a@localhost", "3")).await;
    rx.wait_for(2, Duration::from_secs(10)).await;
    let (status, _, _) = sc.post_raw("application/json", b"{\"hook\":\"nope\"}".to_vec()).await;
    assert_eq!(status, 400);
    wait_backend(&sc, "notify", Duration::from_secs(5), |r| r["queued"] == 0).await;

    let r = reqwest::get(format!("{}/metrics", sc.url)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    let l = "backend=\"notify\"";
    assert_eq!(
        metric(&text, "event_pusher_delivered_total", &[l, "kind=\"http\""]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "event_pusher_delivery_failures_total", &[l]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(metric(&text, "event_pusher_retries_total", &[l]), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "event_pusher_dead_lettered_total", &[l]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(&text, "event_pusher_dead_letters", &[l]), Some(1.0), "{text}");
    assert_eq!(metric(&text, "event_pusher_queue_depth", &[l]), Some(0.0), "{text}");
    assert_eq!(metric(&text, "event_pusher_in_flight", &[l]), Some(0.0), "{text}");
    assert_eq!(metric(&text, "event_pusher_paused", &[l]), Some(0.0), "{text}");
    assert_eq!(
        metric(&text, "event_pusher_delivery_latency_seconds_count", &[l]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "event_pusher_delivery_latency_seconds_bucket",
            &[l, "le=\"+Inf\""]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "event_pusher_publish_duration_seconds_count", &[l]),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "event_pusher_ingest_requests_total", &["status=\"202\""]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "event_pusher_ingest_requests_total", &["status=\"400\""]),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "event_pusher_spool_bytes", &[]).is_some_and(|b| b > 0.0),
        "{text}"
    );
    assert_eq!(metric(&text, "event_pusher_spool_writable", &[]), Some(1.0), "{text}");
    assert_eq!(metric(&text, "event_pusher_circuit_open", &[l]), Some(0.0), "{text}");

    // Every sample belongs to a declared family; counters end in _total;
    // histogram buckets are cumulative.
    let mut families = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(name.to_owned(), kind.to_owned());
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name}");
            }
            assert!(name.starts_with("event_pusher_"), "{name}");
        }
    }
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let series = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                series
                    .strip_suffix(s)
                    .filter(|f| families.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(series);
        assert!(families.contains_key(family), "undeclared series {series}");
    }
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("event_pusher_delivery_latency_seconds_bucket{") && l.contains(l_notify()))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
}

fn l_notify() -> &'static str {
    "backend=\"notify\""
}

/// docs/configuration.md's own example names `rabbit.main` and `sns.main`: a name may
/// repeat across kinds, and the admin API then takes `KIND.NAME`.
#[tokio::test]
async fn a_name_shared_by_two_kinds_is_addressed_as_kind_dot_name() {
    let rx = Receiver::start().await;
    let body = format!(
        "{}[backends.log.main]\npath = \"/dev/null\"\n",
        http_backend("main", &rx.url("/hook"), "")
    );
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    let (status, answer) = sc.admin_post("/v1/backends/main/pause", &json!({})).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("http.main"), "{answer}");
    let (status, answer) = sc.admin_post("/v1/backends/http.main/pause", &json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["kind"], "http");
    assert_eq!(answer["paused"], true);
    let (_, all) = sc.get("/v1/backends").await;
    let paused: Vec<(&str, bool)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["kind"].as_str().unwrap(), b["paused"].as_bool().unwrap()))
        .collect();
    assert_eq!(paused, vec![("http", true), ("log", false)]);
    let (status, _) = sc.admin_post("/v1/backends/nope/pause", &json!({})).await;
    assert_eq!(status, 404);
}
