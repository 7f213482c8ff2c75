//! One event wanted by thousands of webhook subscriptions, end to end
//! through the binary: it is stored once (not once per subscription),
//! other requests sent meanwhile are answered, every subscription gets it
//! exactly once, a kill -9 in the
//! middle loses and leaks nothing (`spool check`), and once all are
//! detached nothing of them is left in the spool or in `/metrics`.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use support::*;

/// Subscriptions wanting the one event.
const N: usize = 1100;

async fn spool_bytes(sc: &Sidecar) -> f64 {
    let (_, text) = sc.get_text("/metrics").await;
    metric(&text, "event_pusher_spool_bytes", &[]).unwrap_or(f64::NAN)
}

async fn run_all(sc: &Sidecar, calls: Vec<(Method, String, Option<Value>)>) -> Vec<u16> {
    futures::stream::iter(calls)
        .map(|(m, path, body)| async move { sc.admin(m, &path, body.as_ref()).await.0 })
        .buffer_unordered(16)
        .collect()
        .await
}

#[tokio::test]
async fn one_event_for_thousands_of_subscriptions_is_stored_once_and_delivered_once_each() {
    let subs = Receiver::start().await;
    // Refused at first: the rows stay queued while the store is looked at.
    subs.set_default(Answer::status(503));
    let sink = Receiver::start().await;
    let mut sc = Sidecar::start(Options {
        body: format!(
            "{}\n[egress]\nallow_private = true\n",
            http_backend("sink", &sink.url("/sink"), "")
        ),
        ..Default::default()
    })
    .await;
    let attaches = (0..N)
        .map(|i| {
            let body = json!({
                "id": format!("f{i}"), "url": subs.url(&format!("/f{i}")), "events": ["unacked"],
                "retry": {"max_attempts": 1000, "initial_backoff_ms": 2000, "max_backoff_ms": 2000},
            });
            (Method::POST, "/v1/webhooks".to_owned(), Some(body))
        })
        .collect();
    let statuses = run_all(&sc, attaches).await;
    assert!(statuses.iter().all(|s| *s == 201), "attach: {statuses:?}");

    // One event of 8 KiB for all N, with chat requests (for the `sink`
    // backend) sent while it is stored.
    let body = "x".repeat(8 << 10);
    let unacked = json!({"hook": "unacknowledged_message", "to": "bob@localhost/phone", "body": body});
    let fanout = post_ok(&sc, &unacked);
    let chats: Vec<Value> = (0..20).map(|i| chat("alice@localhost", &format!("m{i}"))).collect();
    let others = futures::future::join_all(chats.iter().map(|c| post(&sc, c)));
    let (fanout_ids, others) = tokio::join!(fanout, others);
    assert_eq!(fanout_ids.len(), 1);
    assert!(
        others.iter().all(|(status, _, _)| *status == 202),
        "requests during the fan-out: {:?}",
        others.iter().map(|o| o.0).collect::<Vec<_>>()
    );

    // Stored once: N copies would be N × 8 KiB.
    let stored = spool_bytes(&sc).await;
    assert!(
        stored < (4 * body.len() + N * 64) as f64,
        "{stored} bytes stored for one event of {} bytes and {N} subscriptions",
        body.len()
    );

    // kill -9 while all N wait for a retry: nothing lost, nothing leaked.
    sc.kill9();
    let dir = path_str(&sc.spool_dir());
    // The first check after a crash repairs the file and says so.
    cli(&["spool", "check", "--dir", &dir], &[]).await;
    let (code, out, err) = cli(&["spool", "check", "--dir", &dir, "--json"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).expect("check --json");
    assert_eq!(report["problems"], json!([]), "{report}");
    assert_eq!(report["shared_events"], 1, "{report}");
    assert_eq!(webhook_rows(&report), N as u64, "{report}");
    sc.spawn().await;

    // Every subscription gets it, once.
    subs.set_default(Answer::status(200));
    let got = subs.wait_for(N, Duration::from_secs(120)).await;
    assert_eq!(got.len(), N, "deliveries");
    let paths: HashSet<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths.len(), N, "one delivery per subscription");
    assert!(
        got.iter().all(|r| r.json()["body"].as_str() == Some(body.as_str())),
        "every delivery carries the whole event"
    );
    // Acks are committed: the shared copy is gone with the last one.
    let mut stored = spool_bytes(&sc).await;
    for _ in 0..200 {
        if stored == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stored = spool_bytes(&sc).await;
    }
    assert_eq!(stored, 0.0, "bytes left after every delivery was acked");
    assert_eq!(subs.received().len(), N, "a subscription got the event twice");

    // Detached, none of them is left anywhere.
    let detaches = (0..N)
        .map(|i| (Method::DELETE, format!("/v1/webhooks/f{i}"), None))
        .collect();
    let statuses = run_all(&sc, detaches).await;
    assert!(statuses.iter().all(|s| (200..300).contains(s)), "detach: {statuses:?}");
    let (_, text) = sc.get_text("/metrics").await;
    assert!(!text.contains("kind=\"webhook\""), "detached subscriptions in /metrics");
    assert_eq!(sc.sigterm(), Some(0));
    let (code, out, err) = cli(&["spool", "check", "--dir", &dir, "--json"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).expect("check --json");
    assert_eq!(
        (&report["problems"], &report["shared_events"], &report["subscriptions"]),
        (&json!([]), &json!(0), &json!(0)),
        "{report}"
    );
    assert_eq!(webhook_rows(&report), 0, "{report}");
}

/// Queued rows of webhook subscriptions in a `spool check --json` report.
fn webhook_rows(report: &Value) -> u64 {
    report["queued"]
        .as_array()
        .map(|q| {
            q.iter()
                .filter(|r| r[0].as_str().is_some_and(|n| n.starts_with("webhook.")))
                .map(|r| r[1].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}
