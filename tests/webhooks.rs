//! Webhook subscriptions at runtime, end to end through the binary: attach
//! and its refusals, deliveries verified with the Standard Webhooks
//! reference library (Python `standardwebhooks`), pause that keeps queueing
//! across a kill -9, detach and drain, secret rotation, and a few hundred
//! subscriptions at once.

mod support;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use support::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The receivers are on 127.0.0.1: private addresses allowed.
async fn start() -> Sidecar {
    Sidecar::start(Options {
        body: "[egress]\nallow_private = true\n".into(),
        ..Default::default()
    })
    .await
}

/// Attach and insist on 201; the answer.
async fn attach(sc: &Sidecar, body: Value) -> Value {
    let (status, v) = sc.admin(Method::POST, "/v1/webhooks", Some(&body)).await;
    assert_eq!(status, 201, "attach: {v}");
    v
}

fn fast(url: &str, id: &str, events: &[&str]) -> Value {
    json!({
        "id": id, "url": url, "events": events, "secret": SECRET,
        "retry": {"max_attempts": 3, "initial_backoff_ms": 50, "max_backoff_ms": 200},
    })
}

fn presence(user: &str) -> Value {
    json!({"hook": "user_available", "jid": format!("{user}/r")})
}

/// Verify one delivery with the Python reference library; the error text
/// when it does not verify.
fn verify(secret: &str, r: &Received) -> Result<(), String> {
    let headers: serde_json::Map<String, Value> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .iter()
        .map(|h| (h.to_string(), Value::from(r.header(h).unwrap_or_default())))
        .collect();
    let input = json!({"secret": secret, "headers": headers, "body": String::from_utf8_lossy(&r.body)});
    let script = "import json,sys\nfrom standardwebhooks.webhooks import Webhook\n\
                  d=json.load(sys.stdin)\nWebhook(d['secret']).verify(d['body'], d['headers'])\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (run scripts/setup.sh for standardwebhooks)");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write to python");
    let out = child.wait_with_output().expect("python3");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn wait_sub(sc: &Sidecar, id: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = sc.get(&format!("/v1/webhooks/{id}")).await;
        if f(&v) || std::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn attach_refusals_and_signed_deliveries_of_matching_classes() {
    let rx = Receiver::start().await;
    let sc = start().await;
    let v = attach(&sc, fast(&rx.url("/crm"), "crm", &["chat"])).await;
    assert_eq!(v["id"], "crm");
    assert_eq!(v["state"], "started");
    assert_eq!(v["secret"], SECRET, "the secret is shown once, at creation");
    assert!(v["created_at"].as_str().is_some_and(|s| s.contains('T')), "{v}");

    // 409 for a taken id; 400s name the field; nothing half-made.
    let (status, v) = sc
        .admin(
            Method::POST,
            "/v1/webhooks",
            Some(&fast(&rx.url("/x"), "crm", &["chat"])),
        )
        .await;
    assert_eq!((status, v["error"].as_str()), (409, Some("already_exists")), "{v}");
    for (body, field) in [
        (json!({"url": "ftp://example.com/h"}), "url"),
        (json!({"url": rx.url("/x"), "events": ["chat", "telepathy"]}), "events"),
        (json!({"url": rx.url("/x"), "secret": "not-a-secret"}), "secret"),
        (json!({"url": rx.url("/x"), "retry": {"max_attempts": 0}}), "retry"),
        (json!({"url": rx.url("/x"), "id": "no spaces"}), "id"),
        (json!({"url": rx.url("/x"), "colour": "red"}), "colour"),
    ] {
        let (status, v) = sc.admin(Method::POST, "/v1/webhooks", Some(&body)).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["field"], field, "{v}");
        assert!(v["error"].as_str().unwrap_or_default().starts_with(field), "{v}");
    }
    let (_, list) = sc.get("/v1/webhooks").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // A generated id and secret when left out.
    let gen = attach(&sc, json!({"url": rx.url("/gen"), "events": ["groupchat"]})).await;
    assert!(gen["id"].as_str().is_some_and(|s| s.starts_with("wh_")), "{gen}");
    assert!(gen["secret"].as_str().is_some_and(|s| s.starts_with("whsec_")), "{gen}");
    let (_, one) = sc.get(&format!("/v1/webhooks/{}", gen["id"].as_str().unwrap())).await;
    assert!(one.get("secret").is_none(), "secret shown after creation: {one}");

    // Chat matches `crm`; presence matches nothing.
    let ids = post_ok(&sc, &json!([chat("alice@localhost", "hi"), presence("bob@localhost")])).await;
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/crm");
    assert_eq!(got[0].header("webhook-id").as_deref(), Some(ids[0].as_str()));
    verify(SECRET, &got[0]).expect("signature verifies with the standardwebhooks library");
    verify("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &got[0]).expect_err("a wrong secret must not verify");
    let row = wait_sub(&sc, "crm", |v| v["delivered"] == 1).await;
    assert_eq!(
        (row["delivered"].as_u64(), row["queued"].as_u64()),
        (Some(1), Some(0)),
        "{row}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received().len(), 1, "presence went to a chat-only subscription");

    // Seen as backends of kind `webhook`, in status and metrics.
    let b = sc.backend("crm").await;
    assert_eq!(
        (b["kind"].as_str(), b["delivered"].as_u64()),
        (Some("webhook"), Some(1)),
        "{b}"
    );
    let (_, metrics) = sc.get_text("/metrics").await;
    assert!(
        metrics.contains("event_pusher_delivered_total{backend=\"crm\",kind=\"webhook\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn pause_keeps_queueing_through_kill9_and_restart_delivers_in_order() {
    let rx = Receiver::start().await;
    let mut sc = start().await;
    attach(&sc, fast(&rx.url("/p"), "p", &["chat"])).await;
    let (status, v) = sc.admin(Method::POST, "/v1/webhooks/p/pause", None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("paused")), "{v}");
    let calls: Vec<Value> = (0..5).map(|i| chat("alice@localhost", &format!("m{i}"))).collect();
    let ids = post_ok(&sc, &json!(calls)).await;
    let row = wait_sub(&sc, "p", |v| v["queued"] == 5).await;
    assert_eq!(row["queued"], 5, "{row}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.attempts().is_empty(), "a paused subscription sent");

    sc.kill9();
    sc.spawn().await;
    let row = wait_sub(&sc, "p", |v| v["queued"] == 5).await;
    assert_eq!(
        (row["state"].as_str(), row["queued"].as_u64()),
        (Some("paused"), Some(5)),
        "{row}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.attempts().is_empty(), "paused state lost on restart");

    let (status, v) = sc.admin(Method::POST, "/v1/webhooks/p/restart", None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("started")), "{v}");
    let got = rx.wait_for(5, Duration::from_secs(10)).await;
    let got_ids: Vec<String> = got.iter().map(id_of).collect();
    assert_eq!(got_ids, ids, "backlog delivered in order");
}

#[tokio::test]
async fn detach_discards_its_queue_and_drain_waits_for_it() {
    let rx = Receiver::start().await;
    let sc = start().await;
    attach(&sc, fast(&rx.url("/gone"), "gone", &["chat"])).await;
    sc.admin(Method::POST, "/v1/webhooks/gone/pause", None).await;
    post_ok(
        &sc,
        &json!([
            chat("a@localhost", "1"),
            chat("a@localhost", "2"),
            chat("a@localhost", "3")
        ]),
    )
    .await;
    wait_sub(&sc, "gone", |v| v["queued"] == 3).await;
    let (status, v) = sc.admin(Method::DELETE, "/v1/webhooks/gone", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["discarded"], 3, "{v}");
    let (status, _) = sc.get("/v1/webhooks/gone").await;
    assert_eq!(status, 404);
    post_ok(&sc, &json!(chat("a@localhost", "after"))).await;

    // Drain: the receiver is slow at first (retried 503s), the detach
    // answers only once everything is delivered.
    rx.script([Answer::status(503), Answer::status(503)]);
    attach(&sc, fast(&rx.url("/drained"), "drained", &["chat"])).await;
    let ids = post_ok(&sc, &json!([chat("b@localhost", "x"), chat("b@localhost", "y")])).await;
    let (status, v) = sc
        .admin(Method::DELETE, "/v1/webhooks/drained?drain=true&timeout_s=20", None)
        .await;
    assert_eq!((status, v["discarded"].as_u64()), (200, Some(0)), "{v}");
    let got: HashSet<String> = rx.received().iter().map(id_of).collect();
    assert_eq!(got, ids.into_iter().collect(), "drain returned before delivery");
    assert!(
        rx.attempts().iter().all(|r| r.path == "/drained"),
        "the detached subscription still got events"
    );
    // The same id can be attached again (a new slot, an empty queue).
    let v = attach(&sc, fast(&rx.url("/gone"), "gone", &["chat"])).await;
    assert_eq!(v["queued"], 0, "{v}");
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_and_changes_apply() {
    let rx = Receiver::start().await;
    let sc = start().await;
    attach(&sc, fast(&rx.url("/old"), "rot", &["chat"])).await;
    let (status, v) = sc
        .admin(
            Method::PATCH,
            "/v1/webhooks/rot",
            Some(&json!({"rotate_secret": true, "url": rx.url("/new"), "events": ["chat", "presence"]})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let new_secret = v["secret"].as_str().expect("the new secret is shown").to_owned();
    assert_ne!(new_secret, SECRET);
    assert_eq!(v["events"], json!(["chat", "presence"]));
    let (status, v) = sc
        .admin(Method::PATCH, "/v1/webhooks/rot", Some(&json!({"url": "gopher://x"})))
        .await;
    assert_eq!((status, v["field"].as_str()), (400, Some("url")), "{v}");

    post_ok(
        &sc,
        &json!([chat("c@localhost", "signed twice"), presence("c@localhost")]),
    )
    .await;
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2);
    for r in &got {
        assert_eq!(r.path, "/new");
        let sigs = r.header("webhook-signature").unwrap_or_default();
        assert_eq!(sigs.split(' ').count(), 2, "{sigs}");
        verify(SECRET, r).expect("old secret verifies during the overlap");
        verify(&new_secret, r).expect("new secret verifies");
    }
}

#[tokio::test]
async fn hundreds_of_subscriptions_match_by_class_and_survive_a_restart() {
    let rx = Receiver::start().await;
    let mut sc = start().await;
    const N: usize = 300;
    // Attached 16 at a time: their commits group.
    use futures::StreamExt;
    let url = rx.url("/many");
    let sc_ref = &sc;
    let attaches = (0..N).map(|i| {
        let events = if i == 7 { ["chat"] } else { ["presence"] };
        let body = json!({"id": format!("s{i}"), "url": url, "events": events});
        async move { sc_ref.admin(Method::POST, "/v1/webhooks", Some(&body)).await.0 }
    });
    let statuses: Vec<u16> = futures::stream::iter(attaches).buffer_unordered(16).collect().await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");

    post_ok(&sc, &json!(chat("d@localhost", "only s7"))).await;
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received().len(), 1, "a chat event went to presence subscriptions");

    sc.kill9();
    sc.spawn().await;
    let (_, list) = sc.get("/v1/webhooks").await;
    assert_eq!(list.as_array().map(Vec::len), Some(N));
    post_ok(&sc, &json!(presence("e@localhost"))).await;
    let got = rx.wait_for(1 + N - 1, Duration::from_secs(20)).await;
    assert_eq!(
        got.len(),
        N,
        "every presence subscription gets the event after a restart"
    );
}

#[tokio::test]
async fn cli_adds_lists_pauses_restarts_and_removes() {
    let rx = Receiver::start().await;
    let sc = start().await;
    let cli = |args: &[&str]| {
        let mut all = vec!["webhooks"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--url", &sc.url]);
        let out = run_cli(&all, &[]);
        assert_eq!(out.code, Some(0), "{all:?}: {}", out.stderr);
        out.stdout
    };
    let url = rx.url("/cli");
    let added: Value = serde_json::from_str(&cli(&[
        "add",
        &url,
        "--id",
        "cli",
        "--event",
        "chat",
        "--header",
        "X-Api-Key=k",
    ]))
    .expect("add prints JSON");
    assert!(
        added["secret"].as_str().is_some_and(|s| s.starts_with("whsec_")),
        "{added}"
    );
    let list = cli(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("cli ") && l.contains("started") && l.contains(&url)),
        "{list}"
    );
    cli(&["pause", "cli"]);
    assert!(cli(&["list"]).contains("paused"));
    post_ok(&sc, &json!(chat("f@localhost", "via cli"))).await;
    cli(&["restart", "cli"]);
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("x-api-key").as_deref(), Some("k"));
    let out = cli(&["remove", "cli", "--drain", "5"]);
    assert!(out.contains("removed cli; 0 queued events discarded"), "{out}");
    let out = run_cli(&["webhooks", "pause", "cli", "--url", &sc.url], &[]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("404"), "{}", out.stderr);
}

#[tokio::test]
async fn exhausted_retries_go_to_dead_letters_under_the_subscription_id() {
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(500));
    let mut sc = start().await;
    attach(&sc, fast(&rx.url("/down"), "down", &["chat"])).await;
    let ids = post_ok(&sc, &json!(chat("g@localhost", "never"))).await;
    let row = wait_sub(&sc, "down", |v| v["dead_letters"] == 1).await;
    assert_eq!(
        (row["dead_letters"].as_u64(), row["queued"].as_u64()),
        (Some(1), Some(0)),
        "{row}"
    );
    assert_eq!(rx.attempts().len(), 3, "max_attempts = 3");
    let (status, page) = sc.get("/v1/dead-letters?backend=down").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.to_string().contains(&ids[0]), "{page}");
    // Offline too: `dlq list --config` reads the spool of a stopped sidecar.
    sc.sigterm();
    let config = path_str(&sc.config);
    let out = run_cli(
        &[
            "dlq",
            "list",
            "--backend",
            "down",
            "--config",
            &config,
            "--url",
            "http://127.0.0.1:1",
        ],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains(&ids[0]), "{}", out.stdout);
    sc.spawn().await;
    // Replay once the endpoint is back: delivered.
    rx.set_default(Answer::status(200));
    let (status, v) = sc
        .admin_post("/v1/dead-letters/replay", &json!({"backend": "down"}))
        .await;
    assert_eq!((status, v["replayed"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(rx.wait_for(1, Duration::from_secs(10)).await.len(), 1);
}

/// PATCH while deliveries are in flight: the attempts in flight finish on
/// the old settings and are not sent again by the new ones (before, each
/// PATCH resent every in-flight event, counted as delivered twice).
#[tokio::test]
async fn patching_during_deliveries_sends_no_event_twice() {
    let sc = start().await;
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(200).with_delay(Duration::from_millis(200)));
    attach(&sc, fast(&rx.url("/a"), "crm", &["presence"])).await;
    let n = 30;
    for i in 0..n {
        let (status, v) = sc.post(&presence(&format!("u{i}@localhost/r"))).await;
        assert_eq!(status, 202, "{v}");
    }
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let (status, v) = sc
            .admin(
                Method::PATCH,
                "/v1/webhooks/crm",
                Some(&json!({"headers": {"X-Round": round.to_string()}})),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    let got = rx.wait_for(n, Duration::from_secs(30)).await;
    // Anything sent twice would arrive by now.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut ids: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(got.len() >= n);
    ids.sort();
    let total = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "distinct events");
    assert_eq!(total, n, "{} sent twice", total - n);
}
