//! The push backend end to end through the binary, against a local
//! MongoosePush (v3): the device registry API, the push_enable/disable
//! hooks, presence (offline pushes, online does not, unacked always),
//! message_count, content settings, silent devices, restart and kill -9,
//! per-device fan-out with dead letters and replay, pruning on 410, and
//! the transport's status policy (a 408 is retried, by every provider).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

async fn sidecar(body: String) -> Sidecar {
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    sc
}

fn mongoose(service: &str) -> Value {
    json!({"provider": "mongoosepush", "service": service, "mode": "prod"})
}

/// Nothing more arrives for `device` for a while: its count stays `n`.
async fn stays(fake: &FakePush, device: &str, n: usize) {
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fake.delivered_to(device).len(), n, "{:?}", fake.pushed());
}

#[tokio::test]
async fn the_registry_api_answers_as_the_contract_says() {
    let fake = FakePush::start().await;
    let sc = sidecar(push_backend("mobile", &fake.url(), "")).await;

    // A full JID is reduced to the bare JID.
    let (s, v) = put_device(&sc, "bob@localhost/phone", "d1", &mongoose("fcm")).await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = put_device(&sc, "bob@localhost", "d1", &mongoose("apns")).await;
    assert_eq!(s, 200, "a second PUT replaces");
    let (s, v) = sc.get("/v1/push/devices/bob%40localhost").await;
    assert_eq!(s, 200);
    let d = &v["devices"][0];
    assert_eq!(
        (d["device_id"].as_str(), d["provider"].as_str()),
        (Some("d1"), Some("mongoosepush"))
    );
    assert_eq!((d["mode"].as_str(), d["silent"].as_bool()), (Some("prod"), Some(false)));
    assert!(d["registered_at"].is_string() && d.get("last_push_at").is_some(), "{d}");

    // Bad input names the field; an unconfigured provider is refused.
    let (s, v) = put_device(&sc, "bob@localhost", "d2", &json!({"provider": "mongoosepush"})).await;
    assert_eq!(
        (s, v["error"].as_str().unwrap_or("").starts_with("service:")),
        (400, true),
        "{v}"
    );
    let (s, v) = put_device(
        &sc,
        "bob@localhost",
        "d2",
        &json!({"provider": "fcm", "token": "secret-token-1"}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not configured"), "{v}");
    let (s, v) = put_device(&sc, "bob@localhost", "d2", &json!({"provider": "carrier-pigeon"})).await;
    assert_eq!(
        (s, v["error"].as_str().unwrap_or("").starts_with("provider:")),
        (400, true),
        "{v}"
    );
    assert_eq!(
        device_ids(&sc, "bob@localhost").await,
        vec!["d1"],
        "nothing half-stored"
    );

    assert_eq!(delete_device(&sc, "bob@localhost", "d1").await, 204);
    assert_eq!(delete_device(&sc, "bob@localhost", "d1").await, 404);
    assert!(device_ids(&sc, "bob@localhost").await.is_empty());
}

#[tokio::test]
async fn offline_pushes_online_does_not_unacked_always_and_the_count_resets() {
    let fake = FakePush::start().await;
    let sc = sidecar(push_backend("mobile", &fake.url(), "")).await;
    assert_eq!(put_device(&sc, "bob@localhost", "d1", &mongoose("fcm")).await.0, 201);

    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "one")).await;
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost/phone", "two")).await;
    let got = fake.wait_delivered("d1", 2, WAIT).await;
    assert_eq!(got.len(), 2, "offline: pushed");
    let last = &got[1].body;
    assert_eq!(last["service"], "fcm");
    assert_eq!(last["priority"], "high");
    assert_eq!(last["alert"]["title"], "alice@localhost");
    assert_eq!(last["alert"]["body"], "two");
    assert_eq!(last["alert"]["badge"], 2);
    assert_eq!(last["data"]["message_count"], "2");
    assert_eq!(last["data"]["message_id"], "m-two");
    assert_eq!(last["data"]["from"], "alice@localhost");
    assert_eq!(last["data"]["type"], "chat");
    assert!(last["data"]["event_id"].is_string());

    // Online: chat is not pushed; an unacked message is, counted from 0.
    post_ok(&sc, &json!({"hook": "user_available", "jid": "bob@localhost/phone"})).await;
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "three")).await;
    stays(&fake, "d1", 2).await;
    post_ok(
        &sc,
        &json!({"hook": "unacknowledged_message", "to": "bob@localhost/phone"}),
    )
    .await;
    let got = fake.wait_delivered("d1", 3, WAIT).await;
    assert_eq!(got[2].body["alert"]["badge"], 1, "reset when bob came online");

    // Offline again: pushed.
    post_ok(&sc, &json!({"hook": "unset_presence", "jid": "bob@localhost/phone"})).await;
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "four")).await;
    assert_eq!(fake.wait_delivered("d1", 4, WAIT).await.len(), 4);
    // Direction in (bob sending) never pushes to bob.
    post_ok(&sc, &json!({"hook": "user_send_message", "from": "bob@localhost/phone", "to": "alice@localhost", "type": "chat", "body": "x"})).await;
    stays(&fake, "d1", 4).await;
}

#[tokio::test]
async fn offline_only_false_pushes_to_online_users() {
    let fake = FakePush::start().await;
    let sc = sidecar(push_backend("mobile", &fake.url(), "offline_only = false")).await;
    put_device(&sc, "bob@localhost", "d1", &mongoose("apns")).await;
    post_ok(&sc, &json!({"hook": "user_available", "jid": "bob@localhost/phone"})).await;
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "hi")).await;
    assert_eq!(fake.wait_delivered("d1", 1, WAIT).await.len(), 1);
}

#[tokio::test]
async fn content_settings_and_silent_devices_shape_what_is_shown() {
    let fake = FakePush::start().await;
    let body = [
        push_backend("full", &fake.url(), "content = \"full\""),
        push_backend("sender", &fake.url(), "content = \"sender\""),
        push_backend("none", &fake.url(), "content = \"none\""),
    ]
    .join("\n");
    let sc = sidecar(body).await;
    for name in ["full", "sender", "none"] {
        let mut reg = mongoose("fcm");
        reg["backend"] = json!(name);
        assert_eq!(
            put_device(&sc, "bob@localhost", &format!("d-{name}"), &reg).await.0,
            201
        );
    }
    let silent = json!({"provider": "mongoosepush", "service": "fcm", "silent": true, "backend": "full"});
    assert_eq!(put_device(&sc, "bob@localhost", "d-silent", &silent).await.0, 201);
    // Without "backend" and with several push backends: refused, naming it.
    let (s, v) = put_device(&sc, "bob@localhost", "d-x", &mongoose("fcm")).await;
    assert_eq!(
        (s, v["error"].as_str().unwrap_or("").starts_with("backend:")),
        (400, true),
        "{v}"
    );

    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "secret plans")).await;
    let alert = |d: &str| {
        fake.delivered_to(d)
            .first()
            .map(|p| p.body.clone())
            .unwrap_or(Value::Null)
    };
    for d in ["d-full", "d-sender", "d-none", "d-silent"] {
        assert_eq!(fake.wait_delivered(d, 1, WAIT).await.len(), 1, "{d}");
    }
    assert_eq!(alert("d-full")["alert"]["title"], "alice@localhost");
    assert_eq!(alert("d-full")["alert"]["body"], "secret plans");
    assert_eq!(alert("d-sender")["alert"]["title"], "alice@localhost");
    assert_eq!(alert("d-sender")["alert"]["body"], "New message");
    assert_eq!(alert("d-none")["alert"]["title"], "New message");
    assert!(alert("d-none")["alert"].get("body").is_none(), "{}", alert("d-none"));
    let silent = alert("d-silent");
    assert!(silent.get("alert").is_none(), "silent: data only: {silent}");
    assert_eq!(silent["data"]["message_count"], "1");
}

#[tokio::test]
async fn hooks_register_and_devices_and_presence_survive_restart_and_kill_9() {
    let fake = FakePush::start().await;
    let mut sc = sidecar(push_backend("mobile", &fake.url(), "")).await;
    let enable = json!({"hook": "push_enable", "jid": "bob@localhost/phone", "device_id": "d1",
        "provider": "mongoosepush", "service": "fcm", "mode": "dev"});
    let (s, v) = sc
        .post(&json!([enable, {"hook": "user_available", "jid": "bob@localhost/phone"}]))
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["accepted"], 1, "one event; the command is reported apart: {v}");
    assert_eq!(v["push"][0]["result"], "created", "{v}");
    assert_eq!(v["push"][0]["index"], 0);
    // A bad command refuses the whole request, naming its index.
    let (s, v) = sc
        .post(&json!([{"hook": "user_available", "jid": "carol@localhost/x"},
            {"hook": "push_enable", "jid": "carol@localhost", "device_id": "c1", "provider": "mongoosepush"}]))
        .await;
    assert_eq!((s, v["index"].as_i64()), (400, Some(1)), "{v}");
    assert!(device_ids(&sc, "carol@localhost").await.is_empty());

    sc.kill9();
    sc.spawn().await;
    sc.wait_ready().await;
    assert_eq!(
        device_ids(&sc, "bob@localhost").await,
        vec!["d1"],
        "device kept across kill -9"
    );
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "while online")).await;
    stays(&fake, "d1", 0).await;

    post_ok(&sc, &json!({"hook": "unset_presence", "jid": "bob@localhost/phone"})).await;
    sc.sigterm();
    sc.spawn().await;
    sc.wait_ready().await;
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "offline now")).await;
    let got = fake.wait_delivered("d1", 1, WAIT).await;
    assert_eq!(got.len(), 1, "offline kept across restart");
    assert_eq!(got[0].body["mode"], "dev");

    let (s, v) = sc
        .post(&json!({"hook": "push_disable", "jid": "bob@localhost", "device_id": "d1"}))
        .await;
    assert_eq!((s, v["push"][0]["result"].as_str()), (202, Some("removed")), "{v}");
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "after disable")).await;
    stays(&fake, "d1", 1).await;
}

#[tokio::test]
async fn a_failing_device_neither_blocks_nor_duplicates_the_others_and_replays_alone() {
    let fake = FakePush::start().await;
    fake.set_default("d-bad", Answer::status(503));
    let sc = sidecar(push_backend("mobile", &fake.url(), "")).await;
    put_device(&sc, "bob@localhost", "d-ok", &mongoose("fcm")).await;
    put_device(&sc, "bob@localhost", "d-bad", &mongoose("apns")).await;

    let ids = post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "hello")).await;
    assert_eq!(fake.wait_delivered("d-ok", 1, WAIT).await.len(), 1);
    // d-bad: 3 attempts, then a dead letter for that device only.
    let dead = async {
        for _ in 0..200 {
            let (_, v) = sc.get("/v1/dead-letters?backend=push.mobile").await;
            if v.as_array().is_some_and(|a| !a.is_empty()) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Value::Null
    }
    .await;
    let dead = dead.as_array().cloned().unwrap_or_default();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["target"], "d-bad");
    assert_eq!(dead[0]["id"], ids[0].as_str());
    assert_eq!(fake.pushed().iter().filter(|p| p.device == "d-bad").count(), 3);
    assert_eq!(fake.delivered_to("d-ok").len(), 1, "no duplicate for the good device");

    fake.set_default("d-bad", Answer::status(200));
    let (s, v) = sc
        .admin_post("/v1/dead-letters/replay", &json!({"backend": "push.mobile"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(fake.wait_delivered("d-bad", 1, WAIT).await.len(), 1);
    stays(&fake, "d-ok", 1).await;
}

#[tokio::test]
async fn a_gone_device_is_pruned_and_counted_not_dead_lettered() {
    let fake = FakePush::start().await;
    fake.set_default("d-gone", Answer::status(410).with_body("{\"reason\":\"unregistered\"}"));
    let sc = sidecar(push_backend("mobile", &fake.url(), "")).await;
    put_device(&sc, "bob@localhost", "d-gone", &mongoose("fcm")).await;
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "hello")).await;
    assert!(
        eventually(WAIT, || fake.pushed().iter().any(|p| p.device == "d-gone")).await,
        "sent once"
    );
    let mut pruned = None;
    for _ in 0..100 {
        let (_, text) = sc.get_text("/metrics").await;
        pruned = metric(
            &text,
            "event_pusher_push_devices_pruned_total",
            &["provider=\"mongoosepush\""],
        );
        if pruned == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pruned, Some(1.0));
    assert!(
        device_ids(&sc, "bob@localhost").await.is_empty(),
        "pruned from the registry"
    );
    let (_, v) = sc.get("/v1/dead-letters?backend=push.mobile").await;
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v}");
    let row = sc.backend("mobile").await;
    assert_eq!(row["kind"], "push", "{row}");
}

#[tokio::test]
async fn a_408_from_a_push_provider_is_retried_like_the_http_backends() {
    let fake = FakePush::start().await;
    // Each device's provider first answers 408 Request Timeout, then 200.
    for device in ["m-408", "w-408"] {
        fake.script(device, [Answer::status(408)]);
    }
    // The Web Push stand-in is a local http:// endpoint.
    let config =
        push_backend("mobile", &fake.url(), "") + &webpush_provider("mobile") + "\n[egress]\nallow_private = true\n";
    let sc = sidecar(config).await;
    let (s, v) = put_device(&sc, "bob@localhost", "m-408", &mongoose("fcm")).await;
    assert!(s < 300, "{v}");
    let (s, v) = put_device(&sc, "bob@localhost", "w-408", &webpush_device(&fake, "w-408")).await;
    assert!(s < 300, "{v}");

    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "hello")).await;
    for device in ["m-408", "w-408"] {
        assert_eq!(
            fake.wait_delivered(device, 1, WAIT).await.len(),
            1,
            "{:?}",
            fake.pushed()
        );
        let answers: Vec<u16> = fake
            .pushed()
            .iter()
            .filter(|p| p.device == device)
            .map(|p| p.status)
            .collect();
        assert_eq!(answers, [408, 200], "{device}");
    }
    let (_, dead) = sc.get("/v1/dead-letters?backend=push.mobile").await;
    assert_eq!(dead, json!([]), "a 408 is not a dead letter");
}

/// The one notification `device` got.
async fn only(fake: &FakePush, device: &str) -> Pushed {
    let got = fake.wait_delivered(device, 1, WAIT).await;
    assert_eq!(got.len(), 1, "{device}: {:?}", fake.pushed());
    got[0].clone()
}

#[tokio::test]
async fn collapse_keys_and_publish_options_reach_every_provider() {
    let fake = FakePush::start().await;
    let config = push_backend("mobile", &fake.url(), "")
        + &webpush_provider("mobile")
        + &apns_provider("mobile", &fake)
        + &fcm_provider("mobile", &fake)
        + "[egress]\nallow_private = true\n";
    let sc = sidecar(config).await;
    let apns = |token: &str| json!({"provider": "apns", "token": token});
    let fcm = |token: &str| json!({"provider": "fcm", "token": token});
    // Bob: no options, the providers' defaults.
    for (id, body) in [
        ("mp-bob", mongoose("fcm")),
        ("ab0b", apns("ab0b")),
        ("wp-bob", webpush_device(&fake, "wp-bob")),
        ("tok-bob", fcm("tok-bob")),
    ] {
        assert_eq!(put_device(&sc, "bob@localhost", id, &body).await.0, 201, "{id}");
    }
    // Carol: every option, by PUT and by the push_enable hook.
    let options = json!({"priority": "normal", "sound": "ping.caf", "mutable_content": true,
        "time_to_live_s": 600, "topic": "com.example.voip", "click_action": "OPEN_CHAT"});
    let with = |mut body: Value| {
        for (k, v) in options.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (id, body) in [
        ("ca201", apns("ca201")),
        ("wp-carol", webpush_device(&fake, "wp-carol")),
        ("tok-carol", fcm("tok-carol")),
    ] {
        let (s, v) = put_device(&sc, "carol@localhost", id, &with(body)).await;
        assert_eq!(s, 201, "{id}: {v}");
    }
    let mut hook = with(mongoose("apns"));
    hook["hook"] = json!("push_enable");
    hook["jid"] = json!("carol@localhost/phone");
    hook["device_id"] = json!("mp-carol");
    let (s, v) = sc.post(&hook).await;
    assert_eq!(s, 202, "{v}");

    // Bad values are refused naming the field, by both ways in.
    for (k, bad) in [
        ("priority", json!("urgent")),
        ("time_to_live_s", json!(-5)),
        ("mutable_content", json!("yes")),
        ("topic", json!("com example")),
        ("sound", json!(7)),
    ] {
        let mut body = fcm("tok-x");
        body[k] = bad.clone();
        let (s, v) = put_device(&sc, "dave@localhost", "x", &body).await;
        assert_eq!(s, 400, "{k}: {v}");
        assert!(v["error"].as_str().unwrap_or("").starts_with(&format!("{k}:")), "{v}");
        body["hook"] = json!("push_enable");
        body["jid"] = json!("dave@localhost");
        body["device_id"] = json!("x");
        let (s, v) = sc.post(&body).await;
        assert_eq!(s, 400, "{k}: {v}");
        assert!(v["error"].as_str().unwrap_or("").contains(&format!("{k}:")), "{v}");
    }
    assert!(device_ids(&sc, "dave@localhost").await.is_empty());
    let (_, listed) = sc.get("/v1/push/devices/carol%40localhost").await;
    let mp = listed["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == "mp-carol")
        .cloned()
        .unwrap();
    assert_eq!(
        (mp["priority"].as_str(), mp["time_to_live_s"].as_u64()),
        (Some("normal"), Some(600)),
        "{mp}"
    );

    // A message without a body is not pushed (as MongooseIM).
    post_ok(
        &sc,
        &json!({"hook": "filter_local_packet", "from": "alice@localhost/a", "to": "bob@localhost", "type": "chat"}),
    )
    .await;
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "")).await;
    post_ok(&sc, &chat_to("alice@localhost/a", "bob@localhost", "hi")).await;
    post_ok(&sc, &chat_to("alice@localhost/a", "carol@localhost", "hey")).await;

    // Bob, defaults; the collapse key is recipient + peer.
    let key = "bob@localhost alice@localhost";
    let a = only(&fake, "ab0b").await;
    assert_eq!(a.header("apns-collapse-id"), Some(key), "{:?}", a.headers);
    assert_eq!(
        (
            a.header("apns-priority"),
            a.header("apns-topic"),
            a.header("apns-expiration")
        ),
        (Some("10"), Some("com.example.chat"), None)
    );
    assert_eq!(a.body["aps"]["sound"], "default");
    assert_eq!(a.body["aps"]["alert"]["body"], "hi", "the empty ones were not pushed");
    let f = only(&fake, "tok-bob").await;
    let m = &f.body["message"];
    assert_eq!(m["android"]["collapse_key"], key, "{m}");
    assert_eq!(m["apns"]["headers"]["apns-collapse-id"], key, "{m}");
    assert_eq!(m["android"]["priority"], "high");
    let w = only(&fake, "wp-bob").await;
    let topic = w.header("topic").unwrap_or_default().to_owned();
    assert!(
        topic.len() == 32
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{topic}"
    );
    assert_eq!((w.header("urgency"), w.header("ttl")), (Some("high"), Some("86400")));
    let p = only(&fake, "mp-bob").await;
    assert_eq!(p.body["alert"]["tag"], key, "{}", p.body);
    assert_eq!(p.body["priority"], "high");
    assert_eq!(p.body["data"]["message-count"], "1");
    assert_eq!(p.body["data"]["last-message-sender"], "alice@localhost");
    assert_eq!(p.body["data"]["last-message-body"], "hi");
    for k in ["time_to_live", "mutable_content", "topic"] {
        assert!(p.body.get(k).is_none(), "{k}: {}", p.body);
    }

    // Carol, every option, by provider.
    let a = only(&fake, "ca201").await;
    assert_eq!(
        (a.header("apns-priority"), a.header("apns-topic")),
        (Some("5"), Some("com.example.voip"))
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires: u64 = a.header("apns-expiration").unwrap_or("0").parse().unwrap();
    assert!(expires.abs_diff(now + 600) < 60, "{expires} vs {now}");
    let aps = &a.body["aps"];
    assert_eq!(
        (aps["sound"].as_str(), aps["mutable-content"].as_u64()),
        (Some("ping.caf"), Some(1))
    );
    assert_eq!(aps["category"], "OPEN_CHAT");
    let f = only(&fake, "tok-carol").await;
    let m = &f.body["message"];
    assert_eq!(m["android"]["priority"], "normal", "{m}");
    assert_eq!(m["android"]["ttl"], "600s");
    assert_eq!(m["android"]["notification"]["sound"], "ping.caf");
    assert_eq!(m["android"]["notification"]["click_action"], "OPEN_CHAT");
    assert_eq!(m["android"]["collapse_key"], "carol@localhost alice@localhost");
    let h = &m["apns"]["headers"];
    assert_eq!(
        (h["apns-priority"].as_str(), h["apns-topic"].as_str()),
        (Some("5"), Some("com.example.voip")),
        "{h}"
    );
    assert!(h["apns-expiration"].is_string(), "{h}");
    assert_eq!(m["apns"]["payload"]["aps"]["mutable-content"], 1);
    assert_eq!(m["apns"]["payload"]["aps"]["sound"], "ping.caf");
    let w = only(&fake, "wp-carol").await;
    assert_eq!((w.header("urgency"), w.header("ttl")), (Some("normal"), Some("600")));
    assert_ne!(w.header("topic"), Some(topic.as_str()), "another conversation");
    let p = only(&fake, "mp-carol").await;
    let b = &p.body;
    assert_eq!(
        (b["priority"].as_str(), b["time_to_live"].as_u64()),
        (Some("normal"), Some(600)),
        "{b}"
    );
    assert_eq!(
        (b["mutable_content"].as_bool(), b["topic"].as_str()),
        (Some(true), Some("com.example.voip"))
    );
    assert_eq!(
        (b["alert"]["sound"].as_str(), b["alert"]["click_action"].as_str()),
        (Some("ping.caf"), Some("OPEN_CHAT"))
    );

    // Groupchat: the room is the conversation, the full room JID the sender.
    post_ok(
        &sc,
        &json!({"hook": "filter_local_packet", "from": "room@muc.localhost/nick", "to": "bob@localhost",
            "type": "groupchat", "body": "in the room", "id": "g1"}),
    )
    .await;
    let got = fake.wait_delivered("mp-bob", 2, WAIT).await;
    let g = &got[1].body;
    assert_eq!(g["alert"]["tag"], "bob@localhost room@muc.localhost", "{g}");
    assert_eq!(g["data"]["last-message-sender"], "room@muc.localhost/nick");
    assert_eq!(g["data"]["message-count"], "2");
    let got = fake.wait_delivered("ab0b", 2, WAIT).await;
    assert_eq!(
        got[1].header("apns-collapse-id"),
        Some("bob@localhost room@muc.localhost")
    );

    // A key over 64 bytes is hashed: 64 hex characters for APNs, the
    // same for FCM; Web Push's Topic is always 32 characters.
    let long = format!("{}@localhost", "a".repeat(60));
    post_ok(&sc, &chat_to(&format!("{long}/r"), "bob@localhost", "long")).await;
    let got = fake.wait_delivered("ab0b", 3, WAIT).await;
    let id = got[2].header("apns-collapse-id").unwrap_or_default().to_owned();
    assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let got = fake.wait_delivered("tok-bob", 3, WAIT).await;
    assert_eq!(got[2].body["message"]["android"]["collapse_key"], id.as_str());
    let got = fake.wait_delivered("wp-bob", 3, WAIT).await;
    assert_eq!(got[2].header("topic").map(str::len), Some(32));
}

#[tokio::test]
async fn a_burst_costs_two_notifications_and_kill_9_in_the_window_loses_none() {
    let fake = FakePush::start().await;
    let mut sc = sidecar(push_backend("mobile", &fake.url(), "coalesce_ms = 1500")).await;
    assert_eq!(put_device(&sc, "bob@localhost", "d1", &mongoose("fcm")).await.0, 201);

    // 20 messages in a burst: the first at once, one trailing notification
    // with the latest body and the count.
    let burst: Vec<Value> = (1..=20)
        .map(|i| chat_to("alice@localhost/a", "bob@localhost", &format!("b{i}")))
        .collect();
    let posted = std::time::Instant::now();
    post_ok(&sc, &json!(burst)).await;
    let got = fake.wait_delivered("d1", 1, WAIT).await;
    assert!(
        got[0].at.duration_since(posted) < Duration::from_millis(1000),
        "the first is not delayed"
    );
    // Another conversation is not held by this one's window.
    post_ok(&sc, &chat_to("carol@localhost/c", "bob@localhost", "other")).await;
    let got = fake.wait_delivered("d1", 3, WAIT).await;
    assert_eq!(got.len(), 3, "{:?}", fake.pushed());
    let trailing = got
        .iter()
        .find(|p| p.body["data"]["coalesced"].is_string())
        .expect("a trailing notification")
        .clone();
    assert_eq!(trailing.body["alert"]["body"], "b20", "{}", trailing.body);
    assert_eq!(trailing.body["data"]["coalesced"], "19");
    assert!(trailing.at.duration_since(got[0].at) >= Duration::from_millis(1400));
    stays(&fake, "d1", 3).await;
    let row = wait_backend(&sc, "mobile", WAIT, |r| r["queued"] == 0).await;
    assert_eq!(
        (row["queued"].as_u64(), row["dead_letters"].as_u64()),
        (Some(0), Some(0)),
        "{row}"
    );

    // kill -9 inside a window: the covered messages are still queued, and
    // go out once after the restart; never twice, never not at all.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let burst: Vec<Value> = (1..=5)
        .map(|i| chat_to("alice@localhost/a", "bob@localhost", &format!("k{i}")))
        .collect();
    post_ok(&sc, &json!(burst)).await;
    fake.wait_delivered("d1", 4, WAIT).await;
    // Inside the 1.5 s window, once the spool has had its group commit.
    tokio::time::sleep(Duration::from_millis(400)).await;
    sc.kill9();
    assert_eq!(fake.delivered_to("d1").len(), 4, "the trailing one was not sent yet");
    sc.spawn().await;
    sc.wait_ready().await;
    let got = fake.wait_delivered("d1", 5, WAIT).await;
    assert_eq!(got.len(), 5, "{:?}", fake.pushed());
    assert_eq!(got[4].body["alert"]["body"], "k5", "{}", got[4].body);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(fake.delivered_to("d1").len(), 5, "at most once more");
    let row = wait_backend(&sc, "mobile", WAIT, |r| r["queued"] == 0).await;
    assert_eq!(row["queued"], 0, "{row}");
}
