//! The `rabbit` backend against a real RabbitMQ (127.0.0.1:5672, guest/guest,
//! or `EVENT_PUSHER_TEST_AMQP_URL`).
//!
//! Each test uses its own exchanges and queues (a random suffix), so they
//! can run in parallel, and reads what was published back with a plain
//! lapin client. `serial_broker_restart_loses_nothing` stops and starts the
//! broker: under nextest it belongs in a serial group; under `cargo test`
//! it takes `GATE` exclusively while the others share it.

#![cfg(feature = "rabbit")]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_pusher_backends::rabbit::{self, RabbitBackend, RabbitConfig};
use event_pusher_core::{Backend, Delivery, Event, HookTranslator, MetaValue};
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{json, Value};

/// Shared by ordinary tests, exclusive for the one that restarts the broker.
static GATE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn amqp_url() -> String {
    std::env::var("EVENT_PUSHER_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A suffix that makes names unique per test run.
fn uid() -> String {
    Event::new_id().to_lowercase()
}

fn backend(toml_text: &str) -> RabbitBackend {
    let text = format!("url = \"{}\"\n{toml_text}", amqp_url());
    let cfg: RabbitConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("config: {e}\n{text}"));
    RabbitBackend::new("test", &cfg).expect("backend")
}

fn event(call: Value) -> Event {
    HookTranslator.translate(&call).expect("hook call")
}

fn delivery(event: Event) -> Delivery {
    Delivery {
        json: event.to_json().into(),
        event,
        attempt: 1,
        seq: 0,
        target: None,
    }
}

/// Every test is bounded: a hang fails instead of blocking the run.
async fn bounded<T>(secs: u64, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test took over {secs}s"))
}

/// The test's own client, to set up queues and read back what was published.
struct Peer {
    _conn: Connection,
    ch: Channel,
}

impl Peer {
    async fn connect() -> Peer {
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("cannot reach RabbitMQ at 127.0.0.1:5672; start it with `rabbitmq-server -detached`");
        let ch = conn.create_channel().await.expect("channel");
        Peer { _conn: conn, ch }
    }

    /// A server-named exclusive queue bound to `exchange` with `key`.
    async fn queue(&self, exchange: &str, key: &str) -> String {
        let q = self
            .ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue declare");
        let name = q.name().as_str().to_owned();
        self.bind(&name, exchange, key).await;
        name
    }

    async fn bind(&self, queue: &str, exchange: &str, key: &str) {
        self.ch
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("queue bind");
    }

    /// Up to `n` messages, waiting at most `within` for them.
    async fn take(&self, queue: &str, n: usize, within: Duration) -> Vec<AmqpDelivery> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            match self
                .ch
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get")
            {
                Some(m) => out.push(m.delivery),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        out
    }

    /// Exactly `n` messages, and nothing after them.
    async fn take_exactly(&self, queue: &str, n: usize) -> Vec<AmqpDelivery> {
        let got = self.take(queue, n, Duration::from_secs(10)).await;
        assert_eq!(got.len(), n, "messages in {queue}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let extra = self.take(queue, 1, Duration::from_millis(100)).await;
        assert!(
            extra.is_empty(),
            "unexpected extra message in {queue}: {:?}",
            extra.first().map(body)
        );
        got
    }

    /// Everything in the queue. Only for after every publish was confirmed:
    /// a confirmed message is already enqueued, so empty means done.
    async fn drain(&self, queue: &str) -> Vec<AmqpDelivery> {
        let mut out = Vec::new();
        while let Some(m) = self
            .ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            out.push(m.delivery);
        }
        out
    }

    async fn delete_exchange(&self, name: &str) {
        let _ = self
            .ch
            .exchange_delete(name.into(), ExchangeDeleteOptions::default())
            .await;
    }
}

fn body(d: &AmqpDelivery) -> Value {
    serde_json::from_slice(&d.data).expect("JSON body")
}

fn message_id(d: &AmqpDelivery) -> String {
    d.properties
        .message_id()
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default()
}

/// Exchange, routing key, body and every property we promise.
fn check(d: &AmqpDelivery, sent: &Event, exchange: &str, routing_key: &str, expected_body: Value, class: &str) {
    assert_eq!(d.exchange.as_str(), exchange);
    assert_eq!(d.routing_key.as_str(), routing_key);
    assert_eq!(body(d), expected_body);
    let p = &d.properties;
    assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(message_id(d), sent.id);
    assert_eq!(*p.timestamp(), Some(sent.timestamp.unix_timestamp() as u64));
    assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some(class));
}

#[tokio::test]
async fn every_kind_lands_with_exchange_key_body_and_properties() {
    let _gate = GATE.read().await;
    bounded(60, async {
        let id = uid();
        let (px, cx, gx) = (format!("ep-test-presence-{id}"), format!("ep-test-chat-{id}"), format!("ep-test-gc-{id}"));
        let b = backend(&format!(
            "[presence_exchange]\nname = \"{px}\"\n[chat_msg_exchange]\nname = \"{cx}\"\n\
             [groupchat_msg_exchange]\nname = \"{gx}\"\nsent_topic = \"gc_out\"\n"
        ));
        b.start().await.expect("start");
        assert!(b.is_ready());
        let peer = Peer::connect().await;
        let (qp, qc, qg) = (peer.queue(&px, "#").await, peer.queue(&cx, "#").await, peer.queue(&gx, "#").await);

        let online = event(json!({"hook":"user_available","jid":"Alice@LocalHost/Phone"}));
        let offline = event(json!({"hook":"unset_presence","jid":"bob@localhost/tab"}));
        let chat_in = event(
            json!({"hook":"user_send_message","from":"Alice@Localhost/Phone","to":"Bob@Localhost","type":"chat","body":"Hi Bob"}),
        );
        let chat_out = event(
            json!({"hook":"filter_local_packet","from":"alice@localhost/phone","to":"Bob@Localhost/Tab","type":"chat","body":"hi"}),
        );
        let gc_in = event(
            json!({"hook":"user_send_message","from":"alice@localhost/phone","to":"room@muc.localhost","type":"groupchat","body":"all"}),
        );
        let gc_out = event(
            json!({"hook":"filter_local_packet","from":"room@muc.localhost/alice","to":"bob@localhost/tab","type":"groupchat","body":"all"}),
        );
        for e in [&online, &offline, &chat_in, &chat_out, &gc_in, &gc_out] {
            assert!(b.wants(e), "{e:?}");
            b.publish(&delivery(e.clone())).await.unwrap_or_else(|err| panic!("deliver {e:?}: {err}"));
        }

        let got = peer.take_exactly(&qp, 2).await;
        check(&got[0], &online, &px, "alice@localhost", json!({"user_id":"alice@localhost/phone","present":true}), "presence");
        check(&got[1], &offline, &px, "bob@localhost", json!({"user_id":"bob@localhost/tab","present":false}), "presence");

        let got = peer.take_exactly(&qc, 2).await;
        check(
            &got[0],
            &chat_in,
            &cx,
            "alice@localhost.chat_msg_sent",
            json!({"from_user_id":"alice@localhost/phone","to_user_id":"bob@localhost","message":"Hi Bob"}),
            "chat",
        );
        check(
            &got[1],
            &chat_out,
            &cx,
            "bob@localhost.chat_msg_recv",
            json!({"from_user_id":"alice@localhost/phone","to_user_id":"bob@localhost/tab","message":"hi"}),
            "chat",
        );

        let got = peer.take_exactly(&qg, 2).await;
        check(
            &got[0],
            &gc_in,
            &gx,
            "alice@localhost.gc_out",
            json!({"from_user_id":"alice@localhost/phone","to_user_id":"room@muc.localhost","message":"all"}),
            "groupchat",
        );
        check(
            &got[1],
            &gc_out,
            &gx,
            "bob@localhost.groupchat_msg_recv",
            json!({"from_user_id":"room@muc.localhost/alice","to_user_id":"bob@localhost/tab","message":"all"}),
            "groupchat",
        );

        for x in [&px, &cx, &gx] {
            peer.delete_exchange(x).await;
        }
    })
    .await;
}

#[tokio::test]
async fn metadata_from_the_hook_and_a_filter_is_in_the_body() {
    let _gate = GATE.read().await;
    bounded(60, async {
        let cx = format!("ep-test-meta-{}", uid());
        let b = backend(&format!("[chat_msg_exchange]\nname = \"{cx}\"\n"));
        b.start().await.expect("start");
        let peer = Peer::connect().await;
        let q = peer.queue(&cx, "alice@localhost.*").await;

        let mut e = event(json!({
            "hook":"user_send_message","from":"alice@localhost/phone","to":"bob@localhost","type":"chat","body":"hi",
            "metadata": {"source":"sidecar"}
        }));
        // What a filter does: add metadata to the record in the chain.
        e.metadata.insert("tier".into(), MetaValue::Int(2));
        e.metadata.insert("vip".into(), MetaValue::Bool(true));
        e.metadata.insert("score".into(), MetaValue::Float(0.5));
        b.publish(&delivery(e.clone())).await.expect("deliver");

        let got = peer.take_exactly(&q, 1).await;
        assert_eq!(
            body(&got[0]),
            json!({
                "from_user_id":"alice@localhost/phone","to_user_id":"bob@localhost","message":"hi",
                "source":"sidecar","tier":2,"vip":true,"score":0.5
            })
        );
        peer.delete_exchange(&cx).await;
    })
    .await;
}

#[tokio::test]
async fn skipped_kinds_are_not_claimed() {
    // No broker needed: claiming is decided from config alone.
    let b = backend("[chat_msg_exchange]\n");
    let claimed = event(json!({"hook":"user_send_message","from":"a@x/r","to":"b@x","type":"chat","body":"x"}));
    assert!(b.wants(&claimed));
    for call in [
        json!({"hook":"user_available","jid":"a@x/r"}),
        json!({"hook":"user_send_message","from":"a@x","to":"b@x","type":"groupchat","body":"x"}),
        json!({"hook":"user_send_message","from":"a@x","to":"b@x","type":"headline","body":"x"}),
        json!({"hook":"user_send_message","from":"a@x","to":"b@x","type":"normal","body":"x"}),
        json!({"hook":"user_send_message","from":"a@x","to":"b@x","body":"no type means normal"}),
        json!({"hook":"user_send_message","from":"a@x","to":"b@x","type":"chat"}),
        json!({"hook":"filter_local_packet","from":"a@x","to":"b@x","type":"chat","body":""}),
        json!({"hook":"unacknowledged_message","to":"b@x/r","body":"x"}),
    ] {
        let e = event(call.clone());
        assert!(!b.wants(&e), "claimed {call}");
        // Handed one anyway, it says why instead of panicking.
        let err = b.publish(&delivery(e)).await.expect_err("not publishable");
        assert!(!err.retryable, "{err}");
    }
}

#[tokio::test]
async fn conflicting_exchange_gives_a_readable_error() {
    let _gate = GATE.read().await;
    bounded(60, async {
        let id = uid();
        let (by_type, by_durability) = (
            format!("ep-test-conflict-type-{id}"),
            format!("ep-test-conflict-durable-{id}"),
        );
        let peer = Peer::connect().await;
        let declare = |name: String, kind: ExchangeKind, durable: bool| {
            let ch = peer.ch.clone();
            async move {
                ch.exchange_declare(
                    name.as_str().into(),
                    kind,
                    ExchangeDeclareOptions {
                        durable,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("pre-declare");
            }
        };
        declare(by_type.clone(), ExchangeKind::Fanout, true).await;
        declare(by_durability.clone(), ExchangeKind::Topic, false).await;

        let b = backend(&format!("[presence_exchange]\nname = \"{by_type}\"\n"));
        let err = b.start().await.expect_err("declare must fail").to_string();
        println!("type conflict: {err}");
        assert!(err.contains(&format!("exchange \"{by_type}\" already exists")), "{err}");
        assert!(err.contains("type = fanout") && err.contains("type = topic"), "{err}");
        assert!(err.contains("[backends.rabbit.test.presence_exchange]"), "{err}");
        assert!(err.contains("PRECONDITION_FAILED"), "{err}");
        assert!(!b.is_ready());
        let e = event(json!({"hook":"user_available","jid":"a@x"}));
        let d = b.publish(&delivery(e)).await.expect_err("not connected");
        assert!(d.retryable, "{d}");
        // The engine calls start again; it fails the same way, still without panicking.
        assert!(b.start().await.is_err());

        let b = backend(&format!("[chat_msg_exchange]\nname = \"{by_durability}\"\n"));
        let err = b.start().await.expect_err("declare must fail").to_string();
        println!("durability conflict: {err}");
        assert!(err.contains(&format!("exchange \"{by_durability}\"")), "{err}");
        assert!(
            err.contains("durable = false") && err.contains("durable = true"),
            "{err}"
        );
        assert!(err.contains("[backends.rabbit.test.chat_msg_exchange]"), "{err}");
        assert!(!b.is_ready());

        peer.delete_exchange(&by_type).await;
        peer.delete_exchange(&by_durability).await;
    })
    .await;
}

#[tokio::test]
async fn unroutable_with_mandatory_is_a_permanent_failure() {
    let _gate = GATE.read().await;
    bounded(60, async {
        let cx = format!("ep-test-mandatory-{}", uid());
        let e = event(json!({"hook":"user_send_message","from":"a@x/r","to":"b@x","type":"chat","body":"x"}));

        let b = backend(&format!("mandatory = true\n[chat_msg_exchange]\nname = \"{cx}\"\n"));
        b.start().await.expect("start");
        let err = b.publish(&delivery(e.clone())).await.expect_err("no queue is bound");
        println!("returned: {err}");
        assert!(!err.retryable, "{err}");
        assert!(
            err.message.contains("NO_ROUTE") && err.message.contains("a@x.chat_msg_sent"),
            "{err}"
        );
        assert_eq!(err.status, Some(312));
        // The channel survives a returned message.
        assert!(b.is_ready());

        // Without mandatory the broker drops it and acks, as in MongooseIM.
        let b = backend(&format!("[chat_msg_exchange]\nname = \"{cx}\"\n"));
        b.start().await.expect("start");
        b.publish(&delivery(e)).await.expect("acked");
        Peer::connect().await.delete_exchange(&cx).await;
    })
    .await;
}

#[tokio::test]
async fn lost_channel_is_reopened_and_the_exchange_declared_again() {
    let _gate = GATE.read().await;
    bounded(60, async {
        let cx = format!("ep-test-redeclare-{}", uid());
        let b = backend(&format!("pool_size = 1\n[chat_msg_exchange]\nname = \"{cx}\"\n"));
        b.start().await.expect("start");
        let peer = Peer::connect().await;
        let q = peer.queue(&cx, "#").await;
        let mk = |n: usize| {
            event(json!({"hook":"user_send_message","from":"a@x/r","to":"b@x","type":"chat","body":format!("m{n}")}))
        };
        b.publish(&delivery(mk(1))).await.expect("first");

        // Someone deletes the exchange: the next publish kills the channel
        // (404 NOT_FOUND), which must be retryable, not a crash.
        peer.ch
            .exchange_delete(cx.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .expect("delete");
        let err = b.publish(&delivery(mk(2))).await.expect_err("exchange is gone");
        println!("after delete: {err}");
        assert!(err.retryable, "{err}");

        // Retried until the lane is back, with the exchange declared again.
        let started = Instant::now();
        let mut attempts = 1;
        while let Err(e) = b.publish(&delivery(mk(3))).await {
            assert!(e.retryable, "{e}");
            assert!(started.elapsed() < Duration::from_secs(20), "not reconnected: {e}");
            attempts += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("reconnected after {attempts} attempts, {:?}", started.elapsed());
        assert!(b.is_ready());
        peer.ch
            .exchange_declare(
                cx.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the backend declared the exchange again");
        peer.bind(&q, &cx, "#").await;
        b.publish(&delivery(mk(4))).await.expect("after rebind");
        let got = peer.take(&q, 10, Duration::from_secs(2)).await;
        let bodies: Vec<Value> = got.iter().map(|d| body(d)["message"].clone()).collect();
        assert_eq!(bodies, vec![json!("m1"), json!("m4")]);
        peer.delete_exchange(&cx).await;
    })
    .await;
}

#[tokio::test]
async fn unreachable_broker_fails_start_and_delivery_retryably() {
    let cfg: RabbitConfig =
        toml::from_str("url = \"amqp://guest:hunter2@127.0.0.1:1/%2f\"\n[presence_exchange]\n").expect("config");
    let b = RabbitBackend::new("down", &cfg).expect("backend");
    let err = bounded(30, b.start())
        .await
        .expect_err("nothing listens on port 1")
        .to_string();
    println!("{err}");
    assert!(err.contains("127.0.0.1:1") && !err.contains("hunter2"), "{err}");
    assert!(!b.is_ready());
    let d = b
        .publish(&delivery(event(json!({"hook":"user_available","jid":"a@x"}))))
        .await
        .expect_err("down");
    assert!(d.retryable && !d.message.contains("hunter2"), "{d}");
}

#[tokio::test]
async fn confirms_overlap_on_one_channel() {
    let _gate = GATE.read().await;
    bounded(120, async {
        let cx = format!("ep-test-pipeline-{}", uid());
        let b = backend(&format!(
            "pool_size = 1\nmax_in_flight = 64\n[chat_msg_exchange]\nname = \"{cx}\"\n"
        ));
        b.start().await.expect("start");
        let peer = Peer::connect().await;
        let q = peer.queue(&cx, "#").await;
        let mk = |i: usize| {
            delivery(event(json!({
                "hook":"user_send_message","from":format!("u{i}@x/r"),"to":"b@x","type":"chat","body":format!("m{i}")
            })))
        };

        let serial_n = 200;
        let t = Instant::now();
        for i in 0..serial_n {
            b.publish(&mk(i)).await.expect("serial");
        }
        let serial = t.elapsed().as_secs_f64() / serial_n as f64;

        // What the engine does with concurrency = 64: many deliver() calls at
        // once, all on the one channel.
        let n = 3000;
        let batch: Vec<Delivery> = (serial_n..serial_n + n).map(mk).collect();
        let t = Instant::now();
        let results = futures::future::join_all(batch.iter().map(|d| b.publish(d))).await;
        let piped = t.elapsed().as_secs_f64() / n as f64;
        assert!(
            results.iter().all(Result::is_ok),
            "{:?}",
            results.iter().find(|r| r.is_err())
        );
        println!(
            "one at a time: {:.0} events/s; 64 in flight on one channel: {:.0} events/s ({:.1}x)",
            1.0 / serial,
            1.0 / piped,
            serial / piped
        );
        assert!(serial / piped > 1.5, "confirms do not overlap: {:.2}x", serial / piped);
        let got = peer.take(&q, serial_n + n, Duration::from_secs(30)).await;
        assert_eq!(got.len(), serial_n + n);
        peer.delete_exchange(&cx).await;
    })
    .await;
}

/// Starts the broker again if a test that stopped it fails half-way.
struct BrokerGuard {
    stopped: Arc<AtomicBool>,
}

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        if self.stopped.load(Ordering::SeqCst) {
            let _ = std::process::Command::new("rabbitmqctl").arg("start_app").status();
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["await_startup", "--timeout", "60"])
                .status();
        }
    }
}

async fn rabbitmqctl(args: &[&str]) {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Thousands of events flow while the broker is stopped and started; each
/// delivery is retried until the broker confirms it, the way the engine
/// retries from the spool. Every event must then be in the queue; copies
/// (a publish the broker took but whose confirm died with the connection)
/// are counted and printed.
#[tokio::test]
async fn serial_broker_restart_loses_nothing() {
    let _gate = GATE.write().await;
    let stopped = Arc::new(AtomicBool::new(false));
    let _guard = BrokerGuard {
        stopped: stopped.clone(),
    };
    bounded(240, async {
        let id = uid();
        let (cx, queue) = (format!("ep-test-restart-{id}"), format!("ep-test-restart-{id}"));
        let b = Arc::new(backend(&format!("confirm_timeout_ms = 3000\n[chat_msg_exchange]\nname = \"{cx}\"\n")));
        b.start().await.expect("start");
        {
            // Durable queue and persistent messages: they survive the restart.
            let peer = Peer::connect().await;
            peer.ch
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions { durable: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .expect("queue");
            peer.bind(&queue, &cx, "#").await;
        }

        let n = 3000;
        let events: Vec<Event> = (0..n)
            .map(|i| {
                event(json!({
                    "hook":"user_send_message","from":format!("user{}@localhost/r", i % 64),"to":"bob@localhost",
                    "type":"chat","body":format!("event {i}")
                }))
            })
            .collect();
        let delivered = Arc::new(AtomicUsize::new(0));
        let failed_attempts = Arc::new(AtomicUsize::new(0));
        let errors: Arc<std::sync::Mutex<HashMap<String, usize>>> = Arc::default();
        // The engine's concurrency.
        let slots = Arc::new(tokio::sync::Semaphore::new(32));

        let disruptor = {
            let (delivered, stopped) = (delivered.clone(), stopped.clone());
            tokio::spawn(async move {
                while delivered.load(Ordering::SeqCst) < n / 5 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let at = delivered.load(Ordering::SeqCst);
                stopped.store(true, Ordering::SeqCst);
                rabbitmqctl(&["stop_app"]).await;
                let down_at = delivered.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(2)).await;
                rabbitmqctl(&["start_app"]).await;
                rabbitmqctl(&["await_startup", "--timeout", "60"]).await;
                stopped.store(false, Ordering::SeqCst);
                (at, down_at)
            })
        };

        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for e in events.iter().cloned() {
            // Events arrive over time (~250/s) so the restart lands mid-stream.
            tokio::time::sleep(Duration::from_millis(4)).await;
            let (b, slots, delivered, failed_attempts, errors) =
                (b.clone(), slots.clone(), delivered.clone(), failed_attempts.clone(), errors.clone());
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await.expect("semaphore");
                let d = delivery(e);
                loop {
                    match b.publish(&d).await {
                        Ok(()) => break,
                        Err(err) => {
                            assert!(err.retryable, "permanent failure: {err}");
                            failed_attempts.fetch_add(1, Ordering::Relaxed);
                            let kind: String = err.message.chars().take(60).collect();
                            *errors.lock().unwrap_or_else(|p| p.into_inner()).entry(kind).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                delivered.fetch_add(1, Ordering::SeqCst);
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("delivery task");
        }
        let took = started.elapsed();
        let (stop_at, down_at) = disruptor.await.expect("disruptor");
        println!(
            "all {n} deliveries confirmed in {took:?}; broker stopped after {stop_at} (stop_app returned after {down_at}); \
             {} failed attempts retried",
            failed_attempts.load(Ordering::Relaxed)
        );
        for (kind, count) in errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            println!("  {count:>6} x {kind}");
        }
        assert!(down_at < n, "the restart did not happen mid-stream");
        assert!(failed_attempts.load(Ordering::Relaxed) > 0, "no delivery noticed the restart");

        let peer = Peer::connect().await;
        let got = peer.drain(&queue).await;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for d in &got {
            *seen.entry(message_id(d)).or_default() += 1;
        }
        let missing: Vec<&str> = events.iter().map(|e| e.id.as_str()).filter(|id| !seen.contains_key(*id)).collect();
        let duplicates: Vec<(&String, &usize)> = seen.iter().filter(|(_, c)| **c > 1).collect();
        println!(
            "received {} messages: {} distinct events, {} missing, {} duplicated ({} extra copies)",
            got.len(),
            seen.len(),
            missing.len(),
            duplicates.len(),
            got.len() - seen.len()
        );
        for (id, count) in &duplicates {
            println!("  duplicate: {id} x {count}");
        }
        assert!(missing.is_empty(), "lost {} events, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
        assert_eq!(seen.len(), n);

        let _ = peer.ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
        peer.delete_exchange(&cx).await;
    })
    .await;
}

/// Not a timed test: events/s through `RabbitBackend::publish` beside a raw
/// lapin publisher with the same body size and confirm window. Run with
/// `--ignored bench_ --nocapture`.
#[tokio::test]
#[ignore]
async fn bench_backend_vs_raw_lapin() {
    let _gate = GATE.read().await;
    let n = 20_000;
    let window = 64;
    let cx = format!("ep-test-bench-{}", uid());
    let peer = Peer::connect().await;
    let text = format!(
        "url = \"{}\"\npool_size = 1\nmax_in_flight = {window}\n[chat_msg_exchange]\nname = \"{cx}\"\n",
        amqp_url()
    );
    let cfg: RabbitConfig = toml::from_str(&text).expect("config");
    let b = RabbitBackend::new("bench", &cfg).expect("backend");
    b.start().await.expect("start");
    let q = peer.queue(&cx, "#").await;
    let batch: Vec<Delivery> = (0..n)
        .map(|i| {
            delivery(event(json!({
                "hook":"user_send_message","from":format!("u{i}@x/r"),"to":"b@x","type":"chat","body":format!("m{i:08}")
            })))
        })
        .collect();
    // The raw publisher sends what the backend would: same body, same properties.
    let sample = rabbit::outgoing(&rabbit::Exchanges::from_config(&cfg), &batch[0].event).expect("published");
    let props = rabbit::properties(&batch[0].event, sample.class).expect("properties");

    use futures::StreamExt;
    let t = Instant::now();
    let ok = futures::stream::iter(batch.iter())
        .map(|d| b.publish(d))
        .buffer_unordered(window)
        .filter(|r| futures::future::ready(r.is_ok()))
        .count()
        .await;
    let backend_rate = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(ok, n);

    // The same messages, published raw with the same confirm window.
    let ch = peer._conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let t = Instant::now();
    let ok = futures::stream::iter(0..n)
        .map(|_| {
            let (ch, sample, props) = (ch.clone(), &sample, props.clone());
            async move {
                ch.basic_publish(
                    sample.exchange.as_str().into(),
                    sample.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &sample.body,
                    props,
                )
                .await?
                .await
            }
        })
        .buffer_unordered(window)
        .filter(|r| futures::future::ready(matches!(r, Ok(c) if c.is_ack())))
        .count()
        .await;
    let raw_rate = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(ok, n);
    println!(
        "RabbitBackend::publish: {backend_rate:.0} events/s; raw lapin: {raw_rate:.0} msgs/s; ratio {:.2}",
        backend_rate / raw_rate
    );
    let _ = peer
        .ch
        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await;
    peer.delete_exchange(&cx).await;
}
