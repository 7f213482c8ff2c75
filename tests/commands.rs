//! Hook commands and backend state through the binary: what a request
//! changes besides the queues (presence, badge counts, the push registry)
//! is stored with the request and applied only once it is — so a refused
//! request changes nothing — and commands work from every source, the
//! RabbitMQ partitions included.

mod support;

use std::time::Duration;

use lapin::options::BasicGetOptions;
use serde_json::{json, Value};
use support::*;

const WAIT: Duration = Duration::from_secs(15);

fn mongoose() -> Value {
    json!({"provider": "mongoosepush", "service": "fcm", "mode": "prod"})
}

/// A request refused with 503 (a full queue) marks nobody online and
/// bumps no badge: the next chat to that user is pushed, counted from 1.
#[tokio::test]
async fn a_refused_request_changes_no_presence_and_no_badge() {
    let fake = FakePush::start().await;
    let rx = Receiver::start().await;
    let body = format!(
        "{}\n{}",
        push_backend("mobile", &fake.url(), ""),
        http_backend("sink", &rx.url("/hook"), "")
    );
    let sc = Sidecar::start(Options {
        body,
        spool: "max_queue = 1".into(),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    assert_eq!(put_device(&sc, "bob@localhost", "d1", &mongoose()).await.0, 201);

    // Hold the http queue full: one event in it, paused.
    let (s, v) = sc.admin_post("/v1/backends/http.sink/pause", &json!({})).await;
    assert_eq!(s, 200, "{v}");
    post_ok(&sc, &json!({"hook": "user_available", "jid": "carol@localhost/desk"})).await;

    // Refused whole: bob's presence and a chat to him.
    let (s, v) = sc
        .post(&json!({"hook": "user_available", "jid": "bob@localhost/phone"}))
        .await;
    assert_eq!(s, 503, "{v}");
    let (s, v) = sc.post(&chat_to("alice@localhost/a", "bob@localhost", "refused")).await;
    assert_eq!(s, 503, "{v}");
    assert!(fake.pushed().is_empty(), "a refused chat is not pushed");

    let (s, v) = sc.admin_post("/v1/backends/http.sink/resume", &json!({})).await;
    assert_eq!(s, 200, "{v}");
    rx.wait_for(1, WAIT).await;
    wait_backend(&sc, "sink", WAIT, |b| b["queued"] == 0).await;

    // Bob is still offline (pushed), and the refused chat was not counted.
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "accepted")).await;
    let got = fake.wait_delivered("d1", 1, WAIT).await;
    assert_eq!(got.len(), 1, "{:?}", fake.pushed());
    assert_eq!(got[0].body["alert"]["body"], "accepted");
    assert_eq!(got[0].body["alert"]["badge"], 1, "{}", got[0].body);
}

/// `push_enable` and a chat in one request: the chat reaches the device
/// the same request registered; `push_disable` after it in another request
/// removes it, and both are reported under `"push"`.
#[tokio::test]
async fn commands_and_events_of_one_request_apply_in_order() {
    let fake = FakePush::start().await;
    let sc = Sidecar::start(Options {
        body: push_backend("mobile", &fake.url(), ""),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    let mut enable = mongoose();
    enable["hook"] = json!("push_enable");
    enable["jid"] = json!("bob@localhost/phone");
    enable["device_id"] = json!("d1");
    let (s, v) = sc
        .post(&json!([enable, chat_to("alice@localhost/a", "bob@localhost", "first")]))
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["accepted"], 1, "commands are not events: {v}");
    assert_eq!(v["push"][0]["result"], "created", "{v}");
    assert_eq!(v["push"][0]["index"], 0, "{v}");
    assert_eq!(fake.wait_delivered("d1", 1, WAIT).await.len(), 1);

    // A bad command refuses the whole request: the event before it too.
    let (s, v) = sc
        .post(&json!([
            chat_to("alice@localhost/a", "bob@localhost", "not-stored"),
            {"hook": "push_enable", "jid": "bob@localhost", "device_id": "d2", "provider": "mongoosepush"}
        ]))
        .await;
    assert_eq!((s, v["index"].as_u64()), (400, Some(1)), "{v}");
    assert!(v["error"].as_str().unwrap_or("").starts_with("service:"), "{v}");

    let (s, v) = sc
        .post(&json!({"hook": "push_disable", "jid": "bob@localhost", "device_id": "d1"}))
        .await;
    assert_eq!((s, v["push"][0]["result"].as_str()), (202, Some("removed")), "{v}");
    assert!(device_ids(&sc, "bob@localhost").await.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.delivered_to("d1").len(), 1, "the refused chat was not pushed");
}

/// Through the scale-out exchange (serial: another test restarts the
/// broker): `push_enable` registers the device and
/// the next chat to that user is pushed; nothing is dead-lettered.
#[cfg(feature = "rabbit")]
#[tokio::test]
async fn serial_push_enable_through_the_amqp_partitions_registers_the_device() {
    let fake = FakePush::start().await;
    let exchange = format!("t-{}", event_pusher_core::Event::new_id().to_lowercase());
    let body = format!(
        "[sources.amqp.main]\nurl = \"{AMQP}\"\nexchange = \"{exchange}\"\npartitions = 2\n\n{}",
        push_backend("mobile", &fake.url(), "")
    );
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;

    let (_conn, ch) = rabbit_channel().await;
    confirm_select(&ch).await;
    let mut enable = mongoose();
    enable["hook"] = json!("push_enable");
    enable["jid"] = json!("bob@localhost");
    enable["device_id"] = json!("d1");
    for call in [enable, chat_to("alice@localhost/a", "bob@localhost", "via-amqp")] {
        publish_confirmed(&ch, &exchange, "bob@localhost", &call).await;
    }
    let got = fake.wait_delivered("d1", 1, WAIT).await;
    assert_eq!(got.len(), 1, "{:?}", fake.pushed());
    assert_eq!(got[0].body["alert"]["body"], "via-amqp");
    assert_eq!(device_ids(&sc, "bob@localhost").await, vec!["d1"]);
    let dead = ch
        .basic_get(
            format!("{exchange}.dead").as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic_get");
    assert!(dead.is_none(), "nothing dead-lettered");

    delete_topology(&ch, &exchange, 2).await;
}
