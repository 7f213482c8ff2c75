//! The `rabbit` backend through the real binary and the real broker: what a
//! MongooseIM consumer sees, and nothing lost while the broker restarts.
//!
//! Runs in the nextest `serial` group (see .config/nextest.toml): one test
//! stops and starts the shared broker.

#![cfg(feature = "rabbit")]

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ExchangeKind};
use serde_json::{json, Value};
use support::{Options, Sidecar, AMQP};

async fn channel() -> (Connection, Channel) {
    support::rabbit_channel().await
}

/// A durable queue bound to `exchange` with `#` (everything).
async fn queue(ch: &Channel, name: &str, exchange: &str) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("queue declare");
    ch.queue_bind(
        name.into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("queue bind");
}

async fn take_all(ch: &Channel, queue: &str, want: usize, within: Duration) -> Vec<lapin::message::Delivery> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        match ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await {
            Ok(Some(m)) => out.push(m.delivery),
            Ok(None) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    out
}

fn message_id(d: &lapin::message::Delivery) -> String {
    d.properties
        .message_id()
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default()
}

fn uid() -> String {
    event_pusher_core::Event::new_id().to_lowercase()
}

fn rabbit_config(id: &str, retry: &str) -> String {
    format!(
        r#"
[[filters]]
name = "tag"
priority = 10
match = {{ event = ["chat", "presence"] }}
metadata = {{ source = "sidecar", tier = 2 }}

[backends.rabbit.bus]
url = "{AMQP}"
{retry}
[backends.rabbit.bus.presence_exchange]
name = "presence-{id}"
[backends.rabbit.bus.chat_msg_exchange]
name = "chat-{id}"
[backends.rabbit.bus.groupchat_msg_exchange]
name = "group-{id}"
"#
    )
}

#[tokio::test]
async fn consumers_see_mongooseim_messages_with_filter_metadata() {
    let id = uid();
    let sc = Sidecar::start(Options {
        body: rabbit_config(&id, ""),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    let (_conn, ch) = channel().await;
    for (q, x) in [("p", "presence"), ("c", "chat"), ("g", "group")] {
        queue(&ch, &format!("{q}-{id}"), &format!("{x}-{id}")).await;
    }
    let (status, body) = sc
        .post(&json!([
            {"hook":"user_available","jid":"Alice@Localhost/Phone"},
            {"hook":"user_send_message","from":"alice@localhost/phone","to":"bob@localhost","type":"chat","body":"hi"},
            {"hook":"filter_local_packet","from":"alice@localhost/phone","to":"bob@localhost/pc","type":"chat","body":"hi"},
            {"hook":"user_send_message","from":"alice@localhost/phone","to":"room@muc.localhost","type":"groupchat","body":"all"},
            {"hook":"user_send_message","from":"alice@localhost/phone","to":"bob@localhost","type":"headline","body":"skipped"},
            {"hook":"unset_presence","jid":"alice@localhost/phone"}
        ]))
        .await;
    assert_eq!(status, 202, "{body}");
    let ids: Vec<String> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();

    let presence = take_all(&ch, &format!("p-{id}"), 2, Duration::from_secs(15)).await;
    assert_eq!(presence.len(), 2);
    let p0: Value = serde_json::from_slice(&presence[0].data).unwrap();
    assert_eq!(
        p0,
        json!({"user_id": "alice@localhost/phone", "present": true, "source": "sidecar", "tier": 2})
    );
    assert_eq!(presence[0].routing_key.as_str(), "alice@localhost");
    let props = &presence[0].properties;
    assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some(ids[0].as_str()));
    assert_eq!(
        props.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(*props.delivery_mode(), Some(2));
    let p1: Value = serde_json::from_slice(&presence[1].data).unwrap();
    assert_eq!(p1["present"], false);

    let chat = take_all(&ch, &format!("c-{id}"), 2, Duration::from_secs(15)).await;
    assert_eq!(chat.len(), 2);
    let keys: HashSet<&str> = chat.iter().map(|d| d.routing_key.as_str()).collect();
    assert_eq!(
        keys,
        HashSet::from(["alice@localhost.chat_msg_sent", "bob@localhost.chat_msg_recv"])
    );
    let c0: Value = serde_json::from_slice(&chat[0].data).unwrap();
    assert_eq!(c0["from_user_id"], "alice@localhost/phone");
    assert_eq!(c0["message"], "hi");
    assert_eq!(c0["tier"], 2);

    let group = take_all(&ch, &format!("g-{id}"), 1, Duration::from_secs(15)).await;
    assert_eq!(group.len(), 1);
    assert_eq!(group[0].routing_key.as_str(), "alice@localhost.groupchat_msg_sent");
    // Nothing else: the headline went nowhere.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(take_all(&ch, &format!("c-{id}"), 1, Duration::from_millis(200))
        .await
        .is_empty());
}

/// Thousands of events posted while the broker is stopped and started:
/// every accepted id arrives (at least once); duplicates are counted.
#[tokio::test]
async fn serial_broker_restart_mid_stream_loses_nothing() {
    let id = uid();
    let retry = "[backends.rabbit.bus.retry]\nmax_attempts = 100\ninitial_backoff_ms = 100\nmax_backoff_ms = 2000\n";
    let body = rabbit_config(&id, "confirm_timeout_ms = 3000\n").replace(
        "[backends.rabbit.bus.presence_exchange]",
        &format!("{retry}[backends.rabbit.bus.presence_exchange]"),
    );
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    let qname = format!("c-{id}");
    {
        let (_conn, ch) = channel().await;
        queue(&ch, &qname, &format!("chat-{id}")).await;
    }

    let total_batches = 60;
    let url = sc.url.clone();
    let poster = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut accepted = Vec::new();
        for b in 0..total_batches {
            let batch: Vec<Value> = (0..50)
                .map(|i| json!({"hook":"user_send_message","from":format!("u{}@localhost/r", i % 20),"to":"bob@localhost","type":"chat","body":format!("m{b}-{i}")}))
                .collect();
            loop {
                let r = client
                    .post(format!("{url}/v1/events"))
                    .json(&batch)
                    .send()
                    .await
                    .expect("post");
                if r.status().as_u16() == 202 {
                    let v: Value = r.json().await.expect("json");
                    accepted.extend(
                        v["ids"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|x| x.as_str().unwrap().to_owned()),
                    );
                    break;
                }
                assert_eq!(r.status().as_u16(), 503, "only backpressure may refuse");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        accepted
    });

    tokio::time::sleep(Duration::from_millis(700)).await;
    support::broker_stop().await;
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    support::broker_start().await;
    let outage = stopped_at.elapsed();

    let accepted = poster.await.expect("poster");
    let started = Instant::now();
    let (_conn, ch) = channel().await;
    let got = take_all(&ch, &qname, accepted.len(), Duration::from_secs(120)).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for d in &got {
        *seen.entry(message_id(d)).or_default() += 1;
    }
    // Give stragglers (redeliveries) a moment, then count duplicates.
    let extra = take_all(&ch, &qname, usize::MAX, Duration::from_millis(500)).await;
    for d in &extra {
        *seen.entry(message_id(d)).or_default() += 1;
    }
    let missing: Vec<&String> = accepted.iter().filter(|id| !seen.contains_key(*id)).collect();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "rabbit restart: accepted {}, received {} messages, missing {}, duplicates {duplicates}, broker outage {outage:?}, drain after posting {:?}",
        accepted.len(),
        got.len() + extra.len(),
        missing.len(),
        started.elapsed()
    );
    assert!(
        missing.is_empty(),
        "{} accepted events never arrived, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// `import-mongooseim` on a MongooseIM rabbit config: the imported backend
/// declares the exchange transient, as MongooseIM does by default (so an
/// exchange MongooseIM already declared is accepted), and publishes with
/// MongooseIM's routing keys.
#[tokio::test]
async fn an_imported_mongooseim_rabbit_config_publishes_to_its_transient_exchange() {
    let id = uid();
    let exchange = format!("mim-chat-{id}");
    let (sc, imported) = support::start_imported_mongooseim(&format!(
        "[outgoing_pools.rabbit.event_pusher]\n  workers = 4\n\
             [outgoing_pools.rabbit.event_pusher.connection]\n  host = \"127.0.0.1\"\n  port = 5672\n  \
             username = \"guest\"\n  password = \"guest\"\n  confirms_enabled = true\n\
             [modules.mod_event_pusher.rabbit]\n  chat_msg_exchange.name = \"{exchange}\"\n"
    ))
    .await;

    let (conn, _) = channel().await;
    // Wait until the sidecar has declared it (a failed passive declare
    // closes its channel, so each try gets a new one).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ch = conn.create_channel().await.expect("channel");
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = ch
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                passive,
                FieldTable::default(),
            )
            .await;
        if declared.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the sidecar never declared {exchange}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // RabbitMQ refuses this re-declare unless the exchange is transient.
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("the imported exchange is transient, as MongooseIM declares it");
    queue(&ch, &format!("mim-q-{id}"), &exchange).await;

    let (status, body) = sc
        .post(&json!({"hook":"user_send_message","from":"Alice@localhost/phone","to":"bob@localhost","type":"chat","body":"hi"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let got = take_all(&ch, &format!("mim-q-{id}"), 1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1, "config was:\n{imported}");
    assert_eq!(got[0].routing_key.as_str(), "alice@localhost.chat_msg_sent");
    let msg: Value = serde_json::from_slice(&got[0].data).expect("json body");
    assert_eq!(msg["message"], "hi");
}
