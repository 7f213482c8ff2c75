//! The cluster store against a real PostgreSQL: schema migration, the
//! outbox relay's exactly-once ordered apply, admin writes, the change feed
//! between sidecars, merge at first start, status and metrics.

mod support;

use event_pusher_cluster::{
    relay, Applied, Change, ClusterError, ClusterStore, CreateOutcome, Device, PutOutcome, Snapshot, Subscription,
    UserPresence, SCHEMA_VERSION,
};
use serde_json::json;
use support::*;

fn user_presence<'a>(snap: &'a Snapshot, user: &str) -> Option<&'a UserPresence> {
    snap.presence.iter().find(|p| p.user == user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_starting_together_on_an_empty_database_migrate_once() {
    let db = TestDb::create().await;
    let connects: Vec<_> = (0..4)
        .map(|i| {
            let config = db.config(&format!("n{i}"));
            tokio::spawn(async move { ClusterStore::connect(&config, 8088).await })
        })
        .collect();
    let mut stores = Vec::new();
    for c in connects {
        stores.push(c.await.unwrap().expect("every sidecar connects"));
    }
    let client = db.client().await;
    let versions: Vec<i32> = client
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    // Connecting again applies nothing and keeps the data.
    stores[0]
        .put_device("push.mobile", "bob@localhost", "d1", &json!({"token": "t"}))
        .await
        .unwrap();
    let again = db.store("n9").await;
    assert_eq!(again.load().await.unwrap().devices.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_entry_applies_once_and_presence_resets_the_count() {
    let db = TestDb::create().await;
    let store = db.store("a").await;
    let bob = "bob@localhost";

    let first = store.apply("spool-a", 1, &[count(bob), count(bob)]).await.unwrap();
    assert_eq!(
        first,
        Applied {
            entries: 1,
            skipped: 0,
            cursor: Some(1)
        }
    );
    // The same entry relayed again (e.g. killed before removing it).
    let again = store.apply("spool-a", 1, &[count(bob), count(bob)]).await.unwrap();
    assert_eq!(
        again,
        Applied {
            entries: 0,
            skipped: 1,
            cursor: Some(1)
        }
    );
    let snap = store.load().await.unwrap();
    assert_eq!(user_presence(&snap, bob).unwrap().message_count, 2, "not doubled");

    // A batch overlapping the cursor applies only the new entries; another
    // origin has a cursor of its own.
    let batch = vec![(1, vec![count(bob)]), (2, vec![count(bob)]), (3, vec![count(bob)])];
    let r = store.apply_batch("spool-a", &batch).await.unwrap();
    assert_eq!((r.entries, r.skipped, r.cursor), (2, 1, Some(3)));
    store.apply("spool-b", 1, &[count(bob)]).await.unwrap();
    let snap = store.load().await.unwrap();
    assert_eq!(user_presence(&snap, bob).unwrap().message_count, 5);

    // Online adds a resource and resets the count; offline removes one;
    // offline with no resource removes them all.
    store
        .apply(
            "spool-a",
            4,
            &[presence(bob, "phone", true), presence(bob, "laptop", true), count(bob)],
        )
        .await
        .unwrap();
    let snap = store.load().await.unwrap();
    let p = user_presence(&snap, bob).unwrap();
    assert_eq!(
        (p.resources.clone(), p.message_count),
        (vec!["laptop".to_owned(), "phone".to_owned()], 1)
    );
    store
        .apply("spool-a", 5, &[presence(bob, "laptop", false)])
        .await
        .unwrap();
    let snap = store.load().await.unwrap();
    assert_eq!(user_presence(&snap, bob).unwrap().resources, vec!["phone".to_owned()]);
    store
        .apply("spool-a", 6, &[presence(bob, "tablet", true), presence(bob, "", false)])
        .await
        .unwrap();
    let snap = store.load().await.unwrap();
    assert!(
        user_presence(&snap, bob).is_none(),
        "offline everywhere, count 0: not listed"
    );

    // Devices: put, replace, remove (absent: no effect).
    store
        .apply(
            "spool-a",
            7,
            &[
                device_put(bob, "d1", json!({"v": 1})),
                device_put(bob, "d1", json!({"v": 2})),
                device_put(bob, "d2", json!({"v": 1})),
                device_remove(bob, "d2"),
                device_remove(bob, "d3"),
            ],
        )
        .await
        .unwrap();
    let snap = store.load().await.unwrap();
    assert_eq!(
        snap.devices,
        vec![Device {
            scope: "push.mobile".into(),
            user: bob.into(),
            device_id: "d1".into(),
            record: json!({"v": 2}),
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_changes_nothing() {
    let db = TestDb::create().await;
    let store = db.store("a").await;
    // PostgreSQL text cannot hold NUL: the whole batch is refused, the
    // first entry's count included, and the cursor does not move.
    let batch = vec![(1, vec![count("bob@localhost")]), (2, vec![count("bad\0@localhost")])];
    let err = store.apply_batch("spool-a", &batch).await.unwrap_err();
    assert!(!err.is_unavailable(), "{err}");
    assert_eq!(store.load().await.unwrap(), Snapshot::default());
    let r = store.apply("spool-a", 1, &[count("bob@localhost")]).await.unwrap();
    assert_eq!(r.entries, 1, "cursor did not move");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_keeps_the_order_they_were_accepted_in() {
    let db = TestDb::create().await;
    let store = db.store("a").await;
    let outbox = MemOutbox::default();
    let bob = "bob@localhost";
    // More entries than one relay batch, some pushed while it runs.
    for v in 0..300 {
        outbox.push(vec![device_put(bob, "d1", json!({ "v": v })), count(bob)]);
    }
    let relay = tokio::spawn(relay(store.clone(), "spool-a".into(), outbox.clone()));
    for v in 300..400 {
        outbox.push(vec![device_put(bob, "d1", json!({ "v": v })), count(bob)]);
    }
    outbox.push(vec![
        presence(bob, "phone", true),
        presence(bob, "phone", false),
        presence(bob, "web", true),
    ]);
    outbox.push(vec![count(bob)]);
    outbox.drained().await;
    relay.abort();
    let snap = store.load().await.unwrap();
    assert_eq!(snap.devices[0].record, json!({"v": 399}), "the last put wins");
    let p = user_presence(&snap, bob).unwrap();
    assert_eq!((p.resources.clone(), p.message_count), (vec!["web".to_owned()], 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_the_store_refuses_does_not_block_the_ones_after_it() {
    let db = TestDb::create().await;
    let store = db.store("a").await;
    let outbox = MemOutbox::default();
    outbox.push(vec![count("bob@localhost")]);
    outbox.push(vec![count("bad\0@localhost"), count("bob@localhost")]);
    outbox.push(vec![count("bob@localhost")]);
    let relay = tokio::spawn(relay(store.clone(), "spool-a".into(), outbox.clone()));
    outbox.drained().await;
    relay.abort();
    let snap = store.load().await.unwrap();
    assert_eq!(snap.presence.len(), 1);
    assert_eq!(snap.presence[0].message_count, 2, "the refused entry is dropped whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_relaying_the_same_users_at_once_lose_nothing() {
    let db = TestDb::create().await;
    let a = db.store("a").await;
    let b = db.store("b").await;
    let users: Vec<String> = (0..20).map(|i| format!("u{i}@localhost")).collect();
    let (out_a, out_b) = (MemOutbox::default(), MemOutbox::default());
    for round in 0..50 {
        // Opposite orders: a naive lock order would deadlock.
        let forward: Vec<_> = users.iter().map(|u| count(u)).collect();
        let backward: Vec<_> = users.iter().rev().map(|u| count(u)).collect();
        out_a.push(forward);
        out_b.push(backward);
        if round == 49 {
            out_a.push(vec![presence(&users[0], "a", true)]);
            out_b.push(vec![presence(&users[0], "b", true)]);
        }
    }
    let ra = tokio::spawn(relay(a.clone(), "spool-a".into(), out_a.clone()));
    let rb = tokio::spawn(relay(b.clone(), "spool-b".into(), out_b.clone()));
    out_a.drained().await;
    out_b.drained().await;
    ra.abort();
    rb.abort();
    let snap = a.load().await.unwrap();
    for p in &snap.presence[1..] {
        assert_eq!(p.message_count, 100, "{p:?}");
    }
    let u0 = user_presence(&snap, &users[0]).unwrap();
    assert_eq!(u0.resources, vec!["a".to_owned(), "b".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_answer_what_they_did() {
    let db = TestDb::create().await;
    let store = db.store("a").await;
    let (scope, bob) = ("push.mobile", "bob@localhost");
    let rec = json!({"token": "abc"});
    assert_eq!(
        store.put_device(scope, bob, "d1", &rec).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        store.put_device(scope, bob, "d1", &rec).await.unwrap(),
        PutOutcome::Replaced
    );
    assert!(store.remove_device(scope, bob, "d1").await.unwrap());
    assert!(!store.remove_device(scope, bob, "d1").await.unwrap());

    let sub = json!({"url": "http://h/", "secret": "whsec_x", "headers": {"X-A": "1"}});
    assert_eq!(
        store.create_subscription("s1", &sub, false).await.unwrap(),
        CreateOutcome::Created
    );
    let other = json!({"url": "http://other/"});
    assert_eq!(
        store.create_subscription("s1", &other, true).await.unwrap(),
        CreateOutcome::AlreadyExists
    );
    assert!(!store.update_subscription("nope", &other, true).await.unwrap());
    assert!(store.update_subscription("s1", &sub, true).await.unwrap());
    assert_eq!(
        store.load().await.unwrap().subscriptions,
        vec![Subscription {
            id: "s1".into(),
            record: sub.clone(),
            paused: true
        }]
    );
    assert!(store.delete_subscription("s1").await.unwrap());
    assert!(!store.delete_subscription("s1").await.unwrap());
    assert!(!store.update_subscription("s1", &sub, false).await.unwrap(), "detached");
    assert!(store.load().await.unwrap().subscriptions.is_empty());
    let secrets: Option<serde_json::Value> = db
        .client()
        .await
        .query_one("SELECT record FROM subscriptions WHERE id = 's1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(secrets, None, "a detached subscription keeps no secret");
    // The id can be attached again.
    assert_eq!(
        store.create_subscription("s1", &other, false).await.unwrap(),
        CreateOutcome::Created
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_converge_through_the_feed() {
    let db = TestDb::create().await;
    let a = db.store("a").await;
    let b = db.store("b").await;
    let mut feed = b.subscribe();
    let bob = "bob@localhost";

    a.put_device("push.mobile", bob, "d1", &json!({"token": "t1"}))
        .await
        .unwrap();
    let got = wait_for(&mut feed, "device put", |c| matches!(c, Change::Device { .. })).await;
    assert_eq!(
        got,
        Change::Device {
            scope: "push.mobile".into(),
            user: bob.into(),
            device_id: "d1".into(),
            record: Some(json!({"token": "t1"})),
        }
    );

    // Presence from two sidecars: each notice carries the user's whole
    // state, so B ends with both resources.
    a.apply("spool-a", 1, &[presence(bob, "phone", true)]).await.unwrap();
    b.apply("spool-b", 1, &[presence(bob, "web", true), count(bob)])
        .await
        .unwrap();
    let got = wait_for(
        &mut feed,
        "both resources",
        |c| matches!(c, Change::Presence { resources, .. } if resources.len() == 2),
    )
    .await;
    assert_eq!(
        got,
        Change::Presence {
            scope: "push.mobile".into(),
            user: bob.into(),
            resources: vec!["phone".into(), "web".into()],
            message_count: 1,
        }
    );

    a.create_subscription("s1", &json!({"url": "http://h/"}), false)
        .await
        .unwrap();
    wait_for(
        &mut feed,
        "attach",
        |c| matches!(c, Change::Subscription { id, record: Some(_), paused: false } if id == "s1"),
    )
    .await;
    a.update_subscription("s1", &json!({"url": "http://h/"}), true)
        .await
        .unwrap();
    wait_for(&mut feed, "pause", |c| {
        matches!(c, Change::Subscription { paused: true, .. })
    })
    .await;
    a.delete_subscription("s1").await.unwrap();
    wait_for(&mut feed, "detach", |c| {
        matches!(c, Change::Subscription { record: None, .. })
    })
    .await;
    a.remove_device("push.mobile", bob, "d1").await.unwrap();
    wait_for(&mut feed, "device removed", |c| {
        matches!(c, Change::Device { record: None, .. })
    })
    .await;

    assert_eq!(a.load().await.unwrap(), b.load().await.unwrap());
    let mut metrics = String::new();
    b.render_metrics(&mut metrics);
    assert!(
        metrics.contains("event_pusher_cluster_changes_total{node=\"b\",kind=\"subscription\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("event_pusher_cluster_apply_lag_seconds_count{node=\"b\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("event_pusher_cluster_store_up{node=\"b\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_states_travel_by_key() {
    let db = TestDb::create().await;
    let a = db.store("a").await;
    let b = db.store("b").await;
    let mut feed = b.subscribe();
    let big = json!({"token": "x".repeat(20_000)});
    a.put_device("push.mobile", "bob@localhost", "d1", &big).await.unwrap();
    let got = wait_for(&mut feed, "big device", |c| matches!(c, Change::Device { .. })).await;
    assert!(matches!(got, Change::Device { record: Some(r), .. } if r == big));
    let resources: Vec<_> = (0..400)
        .map(|i| presence("bob@localhost", &format!("resource-{i:04}"), true))
        .collect();
    a.apply("spool-a", 1, &resources).await.unwrap();
    let got = wait_for(&mut feed, "many resources", |c| matches!(c, Change::Presence { .. })).await;
    assert!(matches!(got, Change::Presence { resources, .. } if resources.len() == 400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merging_a_spool_keeps_what_the_store_has() {
    let db = TestDb::create().await;
    let a = db.store("a").await;
    let b = db.store("b").await;
    let bob = "bob@localhost";
    a.put_device("push.mobile", bob, "d1", &json!({"from": "store"}))
        .await
        .unwrap();
    a.create_subscription("s1", &json!({"from": "store"}), false)
        .await
        .unwrap();
    a.create_subscription("gone", &json!({"from": "store"}), false)
        .await
        .unwrap();
    a.delete_subscription("gone").await.unwrap();
    a.apply("spool-a", 1, &[presence(bob, "phone", true), count(bob)])
        .await
        .unwrap();

    let mut feed = a.subscribe();
    let local = Snapshot {
        devices: vec![
            Device {
                scope: "push.mobile".into(),
                user: bob.into(),
                device_id: "d1".into(),
                record: json!({"from": "spool"}),
            },
            Device {
                scope: "push.mobile".into(),
                user: bob.into(),
                device_id: "d2".into(),
                record: json!({"from": "spool"}),
            },
        ],
        presence: vec![UserPresence {
            scope: "push.mobile".into(),
            user: bob.into(),
            resources: vec!["web".into()],
            message_count: 9,
        }],
        subscriptions: vec![
            Subscription {
                id: "s1".into(),
                record: json!({"from": "spool"}),
                paused: true,
            },
            Subscription {
                id: "s2".into(),
                record: json!({"from": "spool"}),
                paused: false,
            },
            Subscription {
                id: "gone".into(),
                record: json!({"from": "spool"}),
                paused: false,
            },
        ],
    };
    let merged = b.merge_local(&local).await.unwrap();
    assert_eq!((merged.devices, merged.presence, merged.subscriptions), (1, 1, 1));
    let Change::Reloaded(snap) = wait_for(&mut feed, "reload after merge", |c| matches!(c, Change::Reloaded(_))).await
    else {
        unreachable!()
    };
    assert_eq!(*snap, a.load().await.unwrap());
    let records: Vec<_> = snap
        .devices
        .iter()
        .map(|d| (d.device_id.as_str(), d.record["from"].as_str().unwrap()))
        .collect();
    assert_eq!(records, [("d1", "store"), ("d2", "spool")]);
    let subs: Vec<_> = snap.subscriptions.iter().map(|s| (s.id.as_str(), s.paused)).collect();
    assert_eq!(
        subs,
        [("s1", false), ("s2", false)],
        "the store's s1 kept, the detached one not revived"
    );
    let p = user_presence(&snap, bob).unwrap();
    assert_eq!(
        (p.resources.clone(), p.message_count),
        (vec!["phone".to_owned(), "web".to_owned()], 1)
    );
    // Merging again adds nothing.
    assert_eq!(b.merge_local(&local).await.unwrap(), Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_the_nodes_and_sums_their_counters() {
    let db = TestDb::create().await;
    let config = event_pusher_cluster::ClusterConfig {
        postgres: format!("postgres://postgres:hunter2@127.0.0.1:5432/{}", db.name),
        pool_size: 2,
        node: None,
    };
    let a = ClusterStore::connect(&config, 9001).await.unwrap();
    let b = db.store("b").await;
    assert_eq!(a.node(), event_pusher_cluster::default_node_name(9001));
    assert!(a.node().ends_with(":9001"), "{}", a.node());

    let status = a.status();
    let json = serde_json::to_string(&status).unwrap();
    assert!(!json.contains("hunter2"), "{json}");
    assert!(json.contains("postgres:***@127.0.0.1"), "{json}");
    assert!(status.store.up && status.store.last_error.is_none(), "{json}");

    a.report_stats(json!({"subscriptions": {"s1": {"queued": 1, "delivered": 10, "failed": 2, "dead_letters": 0}}}));
    b.report_stats(json!({"subscriptions": {
        "s1": {"queued": 2, "delivered": 5, "failed": 0, "dead_letters": 1},
        "s2": {"delivered": 7}
    }}));
    let totals = eventually("both nodes' counters summed", || {
        let totals = a.subscription_totals();
        async move { (totals.get("s1").map(|c| c.delivered) == Some(15) && totals.contains_key("s2")).then_some(totals) }
    })
    .await;
    let s1 = totals["s1"];
    assert_eq!((s1.queued, s1.delivered, s1.failed, s1.dead_letters), (3, 15, 2, 1));
    assert_eq!(totals["s2"].delivered, 7);
    let names: Vec<String> = a.status().nodes.into_iter().map(|n| n.name).collect();
    let mut want = vec![a.node().to_owned(), "b".to_owned()];
    want.sort();
    assert_eq!(names, want);
}

#[tokio::test]
async fn a_bad_connection_string_is_a_config_error() {
    let config = event_pusher_cluster::ClusterConfig {
        postgres: "postgres://h/db?sslmode=sideways".into(),
        pool_size: 1,
        node: None,
    };
    let err = ClusterStore::connect(&config, 1).await.expect_err("refused");
    assert!(matches!(err, ClusterError::Config(_)), "{err}");
    assert!(err.to_string().starts_with("cluster.postgres: "), "{err}");
}

/// A batch is folded per user before it is written: whatever the mix of
/// online, offline, offline-everywhere and counts, the store ends where
/// applying each change in order ends (the sidecar's own in-memory rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folded_batch_ends_where_its_changes_applied_in_order_end() {
    use std::collections::BTreeMap;

    let db = TestDb::create().await;
    let store = db.store("a").await;
    let users = ["u0@x", "u1@x", "u2@x", "u3@x", "u4@x"];
    let resources = ["", "phone", "laptop", "tablet"];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let mut expected: BTreeMap<&str, event_pusher_core::state_change::UserPresence> = BTreeMap::new();
    let mut seq = 0;
    for _batch in 0..6 {
        let mut batch = Vec::new();
        for _entry in 0..20 {
            let mut changes = Vec::new();
            for _ in 0..1 + next(4) {
                let user = users[next(users.len())];
                let change = match next(3) {
                    0 => count(user),
                    1 => presence(user, resources[1 + next(3)], true),
                    _ => presence(user, resources[next(resources.len())], false),
                };
                expected.entry(user).or_default().apply(&change);
                changes.push(change);
            }
            seq += 1;
            batch.push((seq, changes));
        }
        store.apply_batch("spool-a", &batch).await.unwrap();
        let snap = store.load().await.unwrap();
        for user in users {
            let want = expected.get(user).cloned().unwrap_or_default();
            let got = user_presence(&snap, user)
                .map(|p| (p.resources.clone(), p.message_count))
                .unwrap_or_default();
            assert_eq!(
                got,
                (want.resources.into_iter().collect::<Vec<_>>(), want.message_count),
                "{user} after entry {seq}"
            );
        }
    }
}
