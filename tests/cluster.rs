//! Cluster state on PostgreSQL through the binary: two and three sidecars
//! against one store (each test has a database of its own), the push
//! registry, presence and webhook subscriptions seen the same everywhere;
//! outages through a TCP proxy the test cuts (never the shared server);
//! kill -9 with changes not yet relayed; sidecars starting at once on an
//! empty database.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// The contract's bound for a change to reach every sidecar.
const CONVERGE: Duration = Duration::from_millis(1000);

/// A sidecar with a push backend (to `fake`) and `[cluster]` at `pg`.
async fn node(name: &str, pg: &str, fake: &FakePush, extra: &str) -> Sidecar {
    Sidecar::start(Options {
        body: format!(
            "[cluster]\npostgres = \"{pg}\"\npool_size = 2\nnode = \"{name}\"\n\n{}\n{extra}",
            push_backend("mobile", &fake.url(), "")
        ),
        ..Default::default()
    })
    .await
}

fn mongoose() -> Value {
    json!({"provider": "mongoosepush", "service": "fcm", "mode": "prod"})
}

/// Poll `check` (async) until true.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

/// The online resources of `user` in the store.
async fn stored_resources(db: &TestDb, user: &str) -> Vec<String> {
    let client = db.client().await;
    client
        .query(
            "SELECT resource FROM presence WHERE user_jid = $1 ORDER BY resource",
            &[&user],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

async fn stored_devices(db: &TestDb, user: &str) -> Vec<String> {
    let client = db.client().await;
    client
        .query(
            "SELECT device_id FROM devices WHERE user_jid = $1 ORDER BY device_id",
            &[&user],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn devices_and_presence_are_the_same_on_every_sidecar() {
    let db = TestDb::create().await;
    let fake = FakePush::start().await;
    let a = node("a", &db.url(), &fake, "").await;
    let b = node("b", &db.url(), &fake, "").await;
    a.wait_ready().await;
    b.wait_ready().await;

    // Registered through A: B knows the device.
    assert_eq!(put_device(&a, "bob@localhost", "d1", &mongoose()).await.0, 201);
    until("B lists A's device", || async {
        device_ids(&b, "bob@localhost").await == ["d1"]
    })
    .await;
    // Through a hook call on B: A knows it too.
    let mut enable = mongoose();
    enable["hook"] = json!("push_enable");
    enable["jid"] = json!("carol@localhost");
    enable["device_id"] = json!("c1");
    post_ok(&b, &enable).await;
    until("A lists B's device", || async {
        device_ids(&a, "carol@localhost").await == ["c1"]
    })
    .await;

    // Bob comes online through A: a message delivered through B is not pushed.
    post_ok(&a, &json!({"hook": "user_available", "jid": "bob@localhost/phone"})).await;
    until("the store has bob online", || async {
        stored_resources(&db, "bob@localhost").await == ["phone"]
    })
    .await;
    tokio::time::sleep(CONVERGE).await;
    post_ok(&b, &chat_to("alice@localhost/a", "bob@localhost", "while-online")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(fake.delivered_to("d1").is_empty(), "{:?}", fake.pushed());

    // Offline on A: B pushes again.
    post_ok(&a, &json!({"hook": "unset_presence", "jid": "bob@localhost/phone"})).await;
    until("the store has bob offline", || async {
        stored_resources(&db, "bob@localhost").await.is_empty()
    })
    .await;
    tokio::time::sleep(CONVERGE).await;
    post_ok(&b, &chat_to("alice@localhost/a", "bob@localhost", "offline")).await;
    let got = fake.wait_delivered("d1", 1, WAIT).await;
    assert_eq!(got[0].body["alert"]["body"], "offline");

    // Removed on B: gone on A.
    assert_eq!(delete_device(&b, "bob@localhost", "d1").await, 204);
    until("A forgot the device", || async {
        device_ids(&a, "bob@localhost").await.is_empty()
    })
    .await;

    let (s, v) = a.get("/v1/cluster").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["node"], "a");
    assert_eq!(v["store"]["up"], true, "{v}");
    let (_, v) = a.get("/v1/cluster").await;
    let nodes: Vec<&str> = v["nodes"]
        .as_array()
        .map(|n| n.iter().filter_map(|n| n["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(nodes.contains(&"a") && nodes.contains(&"b"), "{v}");
    let metrics = a.get_text("/metrics").await.1;
    assert!(
        metrics.contains("event_pusher_cluster_store_up{node=\"a\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("event_pusher_cluster_changes_total"), "{metrics}");
    assert!(metrics.contains("event_pusher_cluster_apply_lag_seconds"), "{metrics}");
}

#[tokio::test]
async fn subscriptions_attached_anywhere_deliver_everywhere() {
    let db = TestDb::create().await;
    let fake = FakePush::start().await;
    let rx = Receiver::start().await;
    let a = node("a", &db.url(), &fake, &allow_private()).await;
    let b = node("b", &db.url(), &fake, &allow_private()).await;
    let c = node("c", &db.url(), &fake, &allow_private()).await;
    for s in [&a, &b, &c] {
        s.wait_ready().await;
    }
    let (s, v) = a
        .admin_post(
            "/v1/webhooks",
            &json!({"id": "crm", "url": rx.url("/hook"), "events": ["chat"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = b
        .admin_post("/v1/webhooks", &json!({"id": "crm", "url": rx.url("/other")}))
        .await;
    assert_eq!(s, 409, "the id is taken cluster-wide: {v}");
    for s in [&b, &c] {
        until("the subscription is listed everywhere", || async {
            s.get("/v1/webhooks").await.1.as_array().is_some_and(|l| l.len() == 1)
        })
        .await;
    }
    // Accepted by B and C: delivered to the subscription attached on A.
    post_ok(&b, &chat_to("alice@localhost/a", "bob@localhost", "via-b")).await;
    post_ok(&c, &chat_to("alice@localhost/a", "bob@localhost", "via-c")).await;
    let got = rx.wait_for(2, WAIT).await;
    let bodies: Vec<String> = got
        .iter()
        .filter_map(|r| r.json()["body"].as_str().map(str::to_owned))
        .collect();
    assert!(
        bodies.contains(&"via-b".into()) && bodies.contains(&"via-c".into()),
        "{bodies:?}"
    );

    // Paused on B: paused on A and C.
    let (s, v) = b.admin_post("/v1/webhooks/crm/pause", &json!({})).await;
    assert_eq!(s, 200, "{v}");
    for s in [&a, &c] {
        until("paused everywhere", || async {
            s.get("/v1/webhooks/crm").await.1["state"] == "paused"
        })
        .await;
    }
    // The cluster's counters are summed over the sidecars.
    until("cluster counters", || async {
        a.get("/v1/webhooks/crm").await.1["cluster"]["delivered"].as_u64() >= Some(2)
            || a.get("/v1/webhooks").await.1[0]["cluster"]["delivered"].as_u64() >= Some(2)
    })
    .await;
    // Detached on C: gone everywhere.
    let (s, v) = c.admin(reqwest::Method::DELETE, "/v1/webhooks/crm", None).await;
    assert_eq!(s, 200, "{v}");
    for s in [&a, &b] {
        until("detached everywhere", || async {
            s.get("/v1/webhooks").await.1.as_array().is_some_and(|l| l.is_empty())
        })
        .await;
    }
}

/// What a test config needs to attach subscriptions to a local receiver.
fn allow_private() -> String {
    "[egress]\nallow_private = true\n".to_owned()
}

#[tokio::test]
async fn a_store_outage_keeps_ingest_refuses_admin_writes_and_relays_in_order_afterwards() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(event_pusher_testkit::postgres::PG).await;
    let fake = FakePush::start().await;
    let rx = Receiver::start().await;
    let a = node("a", &db.url_via(&proxy.addr()), &fake, &allow_private()).await;
    let b = node("b", &db.url(), &fake, "").await;
    a.wait_ready().await;
    b.wait_ready().await;

    proxy.cut();
    // Ingest goes on; changes wait in A's outbox.
    post_ok(&a, &json!({"hook": "user_available", "jid": "dave@localhost/phone"})).await;
    let mut enable = mongoose();
    enable["hook"] = json!("push_enable");
    enable["jid"] = json!("dave@localhost");
    enable["device_id"] = json!("d9");
    post_ok(&a, &enable).await;
    post_ok(&a, &json!({"hook": "unset_presence", "jid": "dave@localhost/phone"})).await;
    post_ok(&a, &json!({"hook": "user_available", "jid": "dave@localhost/desk"})).await;
    // Admin writes are refused whole.
    let (s, v) = put_device(&a, "dave@localhost", "d7", &mongoose()).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (503, Some("cluster store unavailable")),
        "{v}"
    );
    let (s, v) = a
        .admin_post("/v1/webhooks", &json!({"id": "w1", "url": rx.url("/hook")}))
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (503, Some("cluster store unavailable")),
        "{v}"
    );
    let (_, v) = a.get("/v1/cluster").await;
    until("A sees the store down", || async {
        a.get("/v1/cluster").await.1["store"]["up"] == false
    })
    .await;
    let _ = v;
    assert!(a.get("/v1/webhooks").await.1.as_array().is_some_and(|l| l.is_empty()));

    proxy.restore();
    until("the outbox reached the store, in order", || async {
        stored_resources(&db, "dave@localhost").await == ["desk"]
            && stored_devices(&db, "dave@localhost").await == ["d9"]
    })
    .await;
    until("B learned of it", || async {
        device_ids(&b, "dave@localhost").await == ["d9"]
    })
    .await;
    assert_eq!(
        device_ids(&a, "dave@localhost").await,
        vec!["d9"],
        "the refused PUT changed nothing"
    );
    assert!(b.get("/v1/webhooks").await.1.as_array().is_some_and(|l| l.is_empty()));
}

#[tokio::test]
async fn kill_9_with_changes_not_yet_relayed_relays_them_after_restart() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(event_pusher_testkit::postgres::PG).await;
    let fake = FakePush::start().await;
    let mut a = node("a", &db.url_via(&proxy.addr()), &fake, "").await;
    a.wait_ready().await;
    proxy.cut();
    post_ok(&a, &json!({"hook": "user_available", "jid": "erin@localhost/phone"})).await;
    a.kill9();
    proxy.restore();
    a.spawn().await;
    a.wait_ready().await;
    until("relayed after the restart", || async {
        stored_resources(&db, "erin@localhost").await == ["phone"]
    })
    .await;
}

#[tokio::test]
async fn a_store_unreachable_at_start_keeps_the_sidecar_not_ready_until_loaded() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(event_pusher_testkit::postgres::PG).await;
    proxy.cut();
    let fake = FakePush::start().await;
    let a = node("a", &db.url_via(&proxy.addr()), &fake, "").await;
    until("/ready names the store", || async {
        let (s, v) = a.get("/ready").await;
        s == 503 && v["error"].as_str().unwrap_or("").contains("cluster store")
    })
    .await;
    let (s, _) = put_device(&a, "bob@localhost", "d1", &mongoose()).await;
    assert_eq!(s, 503);
    proxy.restore();
    a.wait_ready().await;
    assert_eq!(put_device(&a, "bob@localhost", "d1", &mongoose()).await.0, 201);
}

#[tokio::test]
async fn sidecars_starting_at_once_on_an_empty_database_all_migrate_and_merge() {
    let db = TestDb::create().await;
    let fake = FakePush::start().await;
    // B has state in its spool from before [cluster]: merged at its first start.
    let mut b = Sidecar::start(Options {
        body: push_backend("mobile", &fake.url(), ""),
        ..Default::default()
    })
    .await;
    b.wait_ready().await;
    assert_eq!(put_device(&b, "frank@localhost", "f1", &mongoose()).await.0, 201);
    b.sigterm();
    let config = std::fs::read_to_string(b.dir.path().join("sidecar.toml")).expect("config");
    std::fs::write(
        b.dir.path().join("sidecar.toml"),
        format!("{config}\n[cluster]\npostgres = \"{}\"\nnode = \"b\"\n", db.url()),
    )
    .expect("config");
    let url = db.url();
    let (a, ()) = tokio::join!(node("a", &url, &fake, ""), b.spawn());
    a.wait_ready().await;
    b.wait_ready().await;
    until("A sees what B had before the cluster", || async {
        device_ids(&a, "frank@localhost").await == ["f1"]
    })
    .await;
}

/// Two sidecars sharing eight partitions of the scale-out exchange, devices
/// registered through A's admin API only: a chat to each of 16 users lands
/// on whichever sidecar owns the user's partition, and every user gets
/// exactly one push (before the cluster store, B pushed nobody's).
#[tokio::test]
async fn serial_amqp_partitions_push_every_user_exactly_once_whichever_sidecar_takes_the_chat() {
    const USERS: usize = 16;
    const PARTITIONS: usize = 8;
    let db = TestDb::create().await;
    let fake = FakePush::start().await;
    let exchange = format!("t-{}", event_pusher_core::Event::new_id().to_lowercase());
    let source =
        format!("[sources.amqp.main]\nurl = \"{AMQP}\"\nexchange = \"{exchange}\"\npartitions = {PARTITIONS}\n");
    let a = node("a", &db.url(), &fake, &source).await;
    let b = node("b", &db.url(), &fake, &source).await;
    a.wait_ready().await;
    b.wait_ready().await;
    wait_balanced(&[&a, &b], PARTITIONS).await;

    for u in 0..USERS {
        let (s, v) = put_device(&a, &format!("u{u}@localhost"), &format!("d{u}"), &mongoose()).await;
        assert_eq!(s, 201, "{v}");
    }
    until("B sees every device registered on A", || async {
        device_ids(&b, &format!("u{}@localhost", USERS - 1)).await == [format!("d{}", USERS - 1)]
    })
    .await;

    let (_conn, ch) = rabbit_channel().await;
    confirm_select(&ch).await;
    for u in 0..USERS {
        let user = format!("u{u}@localhost");
        let call = chat_to("alice@localhost/a", &user, &format!("to u{u}"));
        publish_confirmed(&ch, &exchange, &user, &call).await;
    }
    for u in 0..USERS {
        let got = fake.wait_delivered(&format!("d{u}"), 1, WAIT).await;
        assert_eq!(got.len(), 1, "u{u}: {:?}", fake.pushed());
        assert_eq!(got[0].body["alert"]["body"], format!("to u{u}"));
    }
    // Both sidecars took chats (the test is about the one without the
    // admin calls), and nobody got a second push.
    let mut accepted = Vec::new();
    for sc in [&a, &b] {
        let (_, text) = sc.get_text("/metrics").await;
        accepted.push(
            metric(
                &text,
                "event_pusher_source_messages_total",
                &["source=\"main\"", "outcome=\"acked\""],
            )
            .unwrap_or(0.0),
        );
    }
    assert!(accepted.iter().all(|n| *n > 0.0), "acked per sidecar {accepted:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.pushed().len(), USERS, "{:?}", fake.pushed());

    delete_topology(&ch, &exchange, PARTITIONS).await;
}
