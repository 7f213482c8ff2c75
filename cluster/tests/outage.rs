//! Store outages, simulated with a TCP proxy in front of PostgreSQL that the
//! test cuts and restores (the machine's PostgreSQL keeps running): admin
//! writes fail as unavailable and change nothing, the relay holds its
//! changes and delivers them in order afterwards, and the change feed
//! reconnects and reloads.

mod support;

use event_pusher_cluster::{relay, Change, ClusterError, ClusterStore, PutOutcome};
use serde_json::json;
use support::*;

async fn store_via(db: &TestDb, proxy: &Proxy, node: &str) -> ClusterStore {
    ClusterStore::connect(&db.config_via(&proxy.addr(), node), 8088)
        .await
        .expect("connect through the proxy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_during_an_outage_are_unavailable_and_change_nothing() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(PG).await;
    let store = store_via(&db, &proxy, "a").await;
    let direct = db.store("observer").await;
    let (scope, bob) = ("push.mobile", "bob@localhost");

    proxy.cut();
    let rec = json!({"token": "t"});
    let sub = json!({"url": "http://h/"});
    let results: Vec<ClusterError> = vec![
        store.put_device(scope, bob, "d1", &rec).await.unwrap_err(),
        store.remove_device(scope, bob, "d1").await.unwrap_err(),
        store.create_subscription("s1", &sub, false).await.unwrap_err(),
        store.update_subscription("s1", &sub, true).await.unwrap_err(),
        store.delete_subscription("s1").await.unwrap_err(),
        store.apply("spool-a", 1, &[count(bob)]).await.unwrap_err(),
        store.load().await.unwrap_err(),
    ];
    for e in &results {
        assert!(e.is_unavailable(), "{e}");
        assert!(e.to_string().starts_with("cluster store unavailable"), "{e}");
    }
    assert_eq!(direct.load().await.unwrap(), Default::default(), "nothing changed");
    let status = store.status();
    assert!(!status.store.up, "{status:?}");
    assert!(status.store.last_error.is_some(), "{status:?}");
    let mut metrics = String::new();
    store.render_metrics(&mut metrics);
    assert!(
        metrics.contains("event_pusher_cluster_store_up{node=\"a\"} 0"),
        "{metrics}"
    );

    proxy.restore();
    let outcome = eventually("admin writes work again", || async {
        store.put_device(scope, bob, "d1", &rec).await.ok()
    })
    .await;
    assert_eq!(outcome, PutOutcome::Created);
    eventually("status says up again", || async {
        store.status().store.up.then_some(())
    })
    .await;
    assert_eq!(direct.load().await.unwrap().devices.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_accepted_during_an_outage_are_relayed_in_order_after_it() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(PG).await;
    let store = store_via(&db, &proxy, "a").await;
    let direct = db.store("observer").await;
    let outbox = MemOutbox::default();
    let relay = tokio::spawn(relay(store.clone(), "spool-a".into(), outbox.clone()));
    let bob = "bob@localhost";

    outbox.push(vec![presence(bob, "phone", true)]);
    outbox.drained().await;

    proxy.cut();
    // Accepted meanwhile: order matters for every one of them.
    outbox.push(vec![presence(bob, "phone", false)]);
    outbox.push(vec![device_put(bob, "d1", json!({"v": 1})), count(bob)]);
    outbox.push(vec![presence(bob, "web", true)]);
    outbox.push(vec![device_put(bob, "d1", json!({"v": 2})), count(bob), count(bob)]);
    outbox.push(vec![device_remove(bob, "d2"), device_put(bob, "d2", json!({"v": 1}))]);
    // The relay keeps failing while the store is away: nothing is lost,
    // nothing reaches the store.
    eventually("the relay noticed the outage", || async {
        (!store.is_up()).then_some(())
    })
    .await;
    assert_eq!(outbox.len(), 5);
    let before = direct.load().await.unwrap();
    assert_eq!(before.presence[0].resources, vec!["phone".to_owned()]);
    assert!(before.devices.is_empty());

    proxy.restore();
    outbox.drained().await;
    relay.abort();
    let after = direct.load().await.unwrap();
    let p = &after.presence[0];
    assert_eq!((p.resources.clone(), p.message_count), (vec!["web".to_owned()], 2));
    let devices: Vec<_> = after
        .devices
        .iter()
        .map(|d| (d.device_id.as_str(), d.record.clone()))
        .collect();
    assert_eq!(devices, [("d1", json!({"v": 2})), ("d2", json!({"v": 1}))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_reconnects_and_reloads_what_it_missed() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(PG).await;
    let b = store_via(&db, &proxy, "b").await;
    let a = db.store("a").await;
    let mut feed = b.subscribe();
    let bob = "bob@localhost";

    a.put_device("push.mobile", bob, "d1", &json!({"v": 1})).await.unwrap();
    wait_for(&mut feed, "before the outage", |c| matches!(c, Change::Device { .. })).await;

    proxy.cut();
    eventually("b noticed the outage", || async { (!b.is_up()).then_some(()) }).await;
    // Committed while b cannot hear it.
    a.put_device("push.mobile", bob, "d1", &json!({"v": 2})).await.unwrap();
    a.create_subscription("s1", &json!({"url": "http://h/"}), false)
        .await
        .unwrap();

    proxy.restore();
    let Change::Reloaded(snap) = wait_for(&mut feed, "reload after reconnecting", |c| {
        matches!(c, Change::Reloaded(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(snap.devices[0].record, json!({"v": 2}));
    assert_eq!(snap.subscriptions.len(), 1);
    // And it hears new changes again.
    a.remove_device("push.mobile", bob, "d1").await.unwrap();
    wait_for(&mut feed, "after the outage", |c| {
        matches!(c, Change::Device { record: None, .. })
    })
    .await;
    eventually("status says up again", || async { b.status().store.up.then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_unreachable_at_start_is_unavailable() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(PG).await;
    proxy.cut();
    let err = ClusterStore::connect(&db.config_via(&proxy.addr(), "a"), 8088)
        .await
        .expect_err("cannot connect");
    assert!(err.is_unavailable(), "{err}");

    // Retrying: waits while unavailable, connects once the store is back.
    let config = db.config_via(&proxy.addr(), "a");
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel();
    let connecting = tokio::spawn(async move {
        ClusterStore::connect_retrying(&config, 8088, |e| {
            let _ = failed_tx.send(e.is_unavailable());
        })
        .await
    });
    assert_eq!(failed_rx.recv().await, Some(true), "reported while unavailable");
    proxy.restore();
    let store = connecting.await.unwrap().expect("connected once the store is back");
    store.load().await.unwrap();
}

#[tokio::test]
async fn waiting_does_not_fix_a_missing_role() {
    let db = TestDb::create().await;
    let mut config = db.config("a");
    config.postgres = format!("postgres://no_such_role@{PG}/{}", db.name);
    let err = ClusterStore::connect_retrying(&config, 8088, |e| panic!("retried: {e}"))
        .await
        .expect_err("refused");
    assert!(!err.is_unavailable(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_listening_connection_is_noticed_and_replaced() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(PG).await;
    let b = store_via(&db, &proxy, "b").await;
    let a = db.store("a").await;
    let mut feed = b.subscribe();

    // Every connection b has goes silent without closing; new ones work.
    proxy.stall();
    a.put_device("push.mobile", "bob@localhost", "d1", &json!({"v": 1}))
        .await
        .unwrap();
    // b's idle check finds its listening connection dead, opens another
    // and re-reads what it could not hear.
    let Change::Reloaded(snap) = wait_for(&mut feed, "reload after the idle check", |c| {
        matches!(c, Change::Reloaded(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(snap.devices.len(), 1);
    a.remove_device("push.mobile", "bob@localhost", "d1").await.unwrap();
    wait_for(&mut feed, "after the new connection", |c| {
        matches!(c, Change::Device { record: None, .. })
    })
    .await;
    // A write on a stalled pooled connection times out as unavailable;
    // later ones get fresh connections.
    eventually("writes work again", || async {
        b.put_device("push.mobile", "bob@localhost", "d2", &json!({"v": 1}))
            .await
            .ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_not_heard_from_for_30_s_are_not_listed_nor_summed() {
    let db = TestDb::create().await;
    let client = db.client().await;
    let a = db.store("a").await;
    client
        .execute(
            "INSERT INTO nodes (name, last_seen, stats) VALUES
                 ('gone', now() - interval '31 seconds', '{\"subscriptions\": {\"s1\": {\"delivered\": 100}}}'),
                 ('alive', now() + interval '1 hour', '{\"subscriptions\": {\"s1\": {\"delivered\": 5}}}')",
            &[],
        )
        .await
        .unwrap();
    a.report_stats(json!({"subscriptions": {"s1": {"delivered": 1}}}));
    let totals = eventually("a and alive summed", || {
        let totals = a.subscription_totals();
        async move { (totals.get("s1").map(|c| c.delivered) == Some(6)).then_some(totals) }
    })
    .await;
    assert_eq!(totals.len(), 1);
    let names: Vec<String> = a.status().nodes.into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["a", "alive"]);
}
