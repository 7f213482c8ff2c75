//! The gateway backend end to end: the real binary, raw WebSocket frames
//! (tokio-tungstenite, no SDK), events posted through `/v1/events`.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn presence(user: &str) -> Value {
    json!({"hook": "user_available", "jid": format!("{user}@localhost/phone")})
}

fn message(kind: &str, body: &str) -> Value {
    json!({"hook": "user_send_message", "from": "alice@localhost/phone", "to": "bob@localhost",
           "type": kind, "body": body, "id": body})
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().map(|f| f["s"].as_u64().expect("s")).collect()
}

#[tokio::test]
async fn handshake_ready_and_dispatches_with_sequences() {
    let sc = start_gateway("heartbeat_interval_ms = 5000").await;
    let (mut gw, hello) = RawGateway::connect(&sc).await;
    assert_eq!(hello["d"]["heartbeat_interval"], 5000, "{hello}");
    gw.send(json!({"op": 1, "d": null})).await;
    assert_eq!(gw.frame().await["op"], 11, "heartbeat before identify is ACKed");
    gw.identify("full-token", 63).await;
    let ready = gw.frame().await;
    assert_eq!(
        (ready["op"].clone(), ready["s"].clone(), ready["t"].clone()),
        (json!(0), json!(1), json!("READY"))
    );
    assert!(
        is_ulid(ready["d"]["session_id"].as_str().unwrap_or_default()),
        "{ready}"
    );
    assert_eq!(
        ready["d"]["resume_gateway_url"],
        format!("ws://127.0.0.1:{}/v1/gateway", sc.port)
    );

    // One user (alice) throughout: the order kept is per user, and the
    // gateway's single writer keeps it the same for every session.
    let ids = post_ok(
        &sc,
        &json!([presence("alice"), message("chat", "m1"), message("groupchat", "m2"),
                message("headline", "m3"), message("normal", "m4"),
                {"hook": "unacknowledged_message", "to": "alice@localhost/phone"}]),
    )
    .await;
    let got = gw.dispatches(6).await;
    assert_eq!(seqs(&got), vec![2, 3, 4, 5, 6, 7]);
    let types: Vec<&str> = got.iter().map(|f| f["t"].as_str().unwrap_or_default()).collect();
    assert_eq!(
        types,
        [
            "PRESENCE_UPDATE",
            "DM_MESSAGE_CREATE",
            "MESSAGE_CREATE",
            "MESSAGE_CREATE",
            "MESSAGE_CREATE",
            "MESSAGE_UNACKED"
        ]
    );
    let got_ids: Vec<&str> = got.iter().map(|f| f["d"]["id"].as_str().unwrap_or_default()).collect();
    assert_eq!(
        got_ids,
        ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "d is the canonical record, in order"
    );
    assert_eq!(got[1]["d"]["body"], "m1");
    assert_eq!(got[0]["d"]["status"], "online");

    // op 3 is accepted and ignored; heartbeats are ACKed while live.
    gw.send(json!({"op": 3, "d": {"status": "online"}})).await;
    gw.send(json!({"op": 1, "d": 7})).await;
    assert_eq!(gw.frame().await["op"], 11);

    let (_, text) = sc.get_text("/metrics").await;
    assert_eq!(
        metric(&text, "event_pusher_gateway_sessions", &["client=\"full\""]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "event_pusher_gateway_dispatches_total", &["backend=\"live\""]),
        Some(6.0)
    );
}

#[tokio::test]
async fn each_session_gets_only_its_intents_with_its_own_sequence() {
    let sc = start_gateway("").await;
    let (mut chat_only, _) = RawGateway::identified(&sc, "full-token", 1 << 1 | 1 << 2).await;
    let (mut presence_only, _) = RawGateway::identified(&sc, "presence-token", 1).await;
    let (mut unacked_only, _) = RawGateway::identified(&sc, "full-token", 1 << 5).await;
    post_ok(
        &sc,
        &json!([presence("a"), message("chat", "c1"), presence("b"), message("headline", "h1"),
                message("groupchat", "g1"), {"hook": "unacknowledged_message", "to": "bob@localhost/phone"}]),
    )
    .await;
    let chats = chat_only.dispatches(2).await;
    assert_eq!(seqs(&chats), vec![2, 3]);
    assert_eq!(
        chats.iter().map(|f| f["d"]["body"].clone()).collect::<Vec<_>>(),
        vec![json!("c1"), json!("g1")]
    );
    let presences = presence_only.dispatches(2).await;
    assert_eq!(seqs(&presences), vec![2, 3]);
    assert_eq!(presences[1]["d"]["jid"], "b@localhost/phone");
    let unacked = unacked_only.dispatches(1).await;
    assert_eq!(
        (unacked[0]["s"].clone(), unacked[0]["t"].clone()),
        (json!(2), json!("MESSAGE_UNACKED"))
    );
    // Nothing else arrives for any of them.
    for gw in [&mut chat_only, &mut presence_only, &mut unacked_only] {
        assert_eq!(gw.next_within(Duration::from_millis(300)).await, None);
    }
}

/// Open a connection, do `steps`, expect the close `code`.
async fn expect_close(sc: &Sidecar, steps: &[Value], code: u16) {
    let (mut gw, _) = RawGateway::connect(sc).await;
    for s in steps {
        gw.send(s.clone()).await;
    }
    assert_eq!(gw.close_code().await, code, "after {steps:?}");
}

#[tokio::test]
async fn every_close_code() {
    let sc = start_gateway("heartbeat_interval_ms = 400").await;
    let identify = |token: &str, intents: i64| json!({"op": 2, "d": {"token": token, "intents": intents}});
    expect_close(&sc, &[json!({"op": 42, "d": null})], 4001).await;
    expect_close(&sc, &[json!({"op": 2, "d": {"token": 5}})], 4002).await;
    expect_close(&sc, &[json!({"op": 3, "d": {}})], 4003).await;
    expect_close(&sc, &[json!({"op": 11, "d": null})], 4003).await;
    expect_close(&sc, &[identify("full-token", 1), json!({"op": 42, "d": null})], 4001).await;
    expect_close(&sc, &[json!({"d": null})], 4002).await;
    expect_close(&sc, &[identify("wrong", 1)], 4004).await;
    expect_close(&sc, &[identify("full-token", 1), identify("full-token", 1)], 4005).await;
    expect_close(&sc, &[identify("full-token", 128)], 4013).await;
    expect_close(&sc, &[identify("full-token", -1)], 4013).await;
    expect_close(&sc, &[identify("presence-token", 3)], 4014).await;

    // Not JSON at all.
    let (mut gw, _) = RawGateway::connect(&sc).await;
    gw.send_text("{not json".to_owned()).await;
    assert_eq!(gw.close_code().await, 4002);

    // No Identify within one heartbeat interval.
    let (mut gw, _) = RawGateway::connect(&sc).await;
    assert_eq!(gw.close_code().await, 4003);

    // Identified, then silent: 4009 after 1.5 × the interval, not before.
    let (mut gw, ready) = RawGateway::identified(&sc, "full-token", 1).await;
    let started = std::time::Instant::now();
    assert_eq!(gw.close_code().await, 4009);
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    // 4009 is resumable; a seq beyond the last one sent is 4007.
    let session = ready["d"]["session_id"].as_str().unwrap_or_default().to_owned();
    let (mut gw, _) = RawGateway::connect(&sc).await;
    gw.resume("full-token", &session, 99).await;
    assert_eq!(gw.close_code().await, 4007);
    let (mut gw, _) = RawGateway::connect(&sc).await;
    gw.resume("full-token", &session, 1).await;
    assert_eq!(gw.frame().await["t"], "RESUMED");

    let (_, text) = sc.get_text("/metrics").await;
    for code in [4001, 4002, 4003, 4004, 4005, 4007, 4009, 4013, 4014] {
        let label = format!("code=\"{code}\"");
        assert!(
            metric(&text, "event_pusher_gateway_closes_total", &[&label]).is_some(),
            "{code}: {text}"
        );
    }
}

#[tokio::test]
async fn resume_replays_what_was_missed_in_order_then_goes_live() {
    let sc = start_gateway("heartbeat_interval_ms = 5000").await;
    let (mut gw, ready) = RawGateway::identified(&sc, "full-token", 63).await;
    let session = ready["d"]["session_id"].as_str().unwrap_or_default().to_owned();
    post_ok(
        &sc,
        &json!([message("chat", "a1"), message("chat", "a2"), message("chat", "a3")]),
    )
    .await;
    let seen = gw.dispatches(3).await;
    assert_eq!(seqs(&seen), vec![2, 3, 4]);
    gw.drop_tcp();

    // Events while nobody is connected: buffered for the session.
    let missed: Vec<Value> = (0..20).map(|i| message("chat", &format!("b{i}"))).collect();
    post_ok(&sc, &Value::Array(missed)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (mut gw, _) = RawGateway::connect(&sc).await;
    gw.resume("full-token", &session, 4).await;
    let replayed = gw.dispatches(20).await;
    assert_eq!(
        seqs(&replayed),
        (5..25).collect::<Vec<u64>>(),
        "every missed dispatch, in order, once"
    );
    let bodies: Vec<String> = replayed
        .iter()
        .map(|f| f["d"]["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(bodies, (0..20).map(|i| format!("b{i}")).collect::<Vec<_>>());
    let resumed = gw.frame().await;
    assert_eq!(
        (resumed["op"].clone(), resumed["t"].clone()),
        (json!(0), json!("RESUMED"))
    );

    post_ok(&sc, &json!(message("chat", "live"))).await;
    let live = gw.dispatches(1).await;
    assert_eq!(
        (live[0]["s"].clone(), live[0]["d"]["body"].clone()),
        (json!(25), json!("live"))
    );
    assert_eq!(gw.next_within(Duration::from_millis(200)).await, None, "no duplicates");
    let (_, text) = sc.get_text("/metrics").await;
    assert_eq!(
        metric(&text, "event_pusher_gateway_resumes_total", &["backend=\"live\""]),
        Some(1.0)
    );
}

#[tokio::test]
async fn op9_when_the_session_cannot_be_resumed_then_identify_works() {
    let sc = start_gateway("resume_buffer = 3").await;
    // Unknown session.
    let (mut gw, _) = RawGateway::connect(&sc).await;
    gw.resume("full-token", "01JDQ7W4Z3K8V6Y2N9T5R1M0AB", 0).await;
    let invalid = gw.frame().await;
    assert_eq!((invalid["op"].clone(), invalid["d"].clone()), (json!(9), json!(false)));
    gw.identify("full-token", 2).await;
    assert_eq!(gw.frame().await["t"], "READY");

    // A seq older than the buffer (3 kept): op 9 too.
    let (gw2, ready) = RawGateway::identified(&sc, "full-token", 2).await;
    let session = ready["d"]["session_id"].as_str().unwrap_or_default().to_owned();
    gw2.drop_tcp();
    post_ok(
        &sc,
        &Value::Array((0..6).map(|i| message("chat", &format!("x{i}"))).collect()),
    )
    .await;
    // Wait until the other session saw them all: fan-out is done.
    gw.dispatches(6).await;
    let (mut gw3, _) = RawGateway::connect(&sc).await;
    gw3.resume("full-token", &session, 1).await;
    assert_eq!(gw3.frame().await, json!({"op": 9, "d": false}));
}

#[tokio::test]
async fn a_stalled_client_is_closed_with_4000_and_others_keep_flowing() {
    let sc = start_gateway("max_queued = 300").await;
    let (mut stalled, ready) = RawGateway::identified(&sc, "full-token", 2).await;
    let (mut reader, _) = RawGateway::identified(&sc, "full-token", 2).await;
    let session = ready["d"]["session_id"].as_str().unwrap_or_default().to_owned();
    // Far more bytes than the socket buffers of a client that reads
    // nothing plus its queue hold: 60 posts of 15 events × 32 KiB.
    let body = "x".repeat(32 * 1024);
    let total = 60 * 15;
    // The reader reads while events are posted (its own task).
    let reading = tokio::spawn(async move { reader.dispatch_seqs(total).await });
    for _ in 0..60 {
        post_ok(&sc, &Value::Array((0..15).map(|_| message("chat", &body)).collect())).await;
    }
    let got = reading.await.expect("reader task");
    assert_eq!(
        got,
        (2..2 + total as u64).collect::<Vec<_>>(),
        "the reading session got everything"
    );
    // The stalled one finds its close (4000) after what was already written.
    let mut last = 1;
    let code = loop {
        match stalled.next().await {
            Next::Frame(f) => last = f["s"].as_u64().unwrap_or(last),
            Next::Closed(code) => break code,
            Next::Ended => panic!("no close frame"),
        }
    };
    assert_eq!(code, 4000);
    assert!(last < 1 + total as u64, "it really fell behind (last {last})");
    // And it resumes from where it was.
    let (mut again, _) = RawGateway::connect(&sc).await;
    again.resume("full-token", &session, last).await;
    let rest = again.dispatch_seqs((1 + total as u64 - last) as usize).await;
    assert_eq!(rest, (last + 1..=1 + total as u64).collect::<Vec<_>>());
    let (_, text) = sc.get_text("/metrics").await;
    assert_eq!(
        metric(&text, "event_pusher_gateway_closes_total", &["code=\"4000\""]),
        Some(1.0)
    );
    let high_water = metric(
        &text,
        "event_pusher_gateway_queue_depth_high_water",
        &["backend=\"live\""],
    );
    assert!(high_water.unwrap_or(0.0) >= 100.0, "{high_water:?}");
}

#[tokio::test]
async fn sigterm_sends_op7_then_closes() {
    let mut sc = start_gateway("").await;
    let (mut gw, _) = RawGateway::identified(&sc, "full-token", 63).await;
    let (mut pending, _) = RawGateway::connect(&sc).await;
    let pid = sc.pid().expect("running");
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let reconnect = gw.frame().await;
    assert_eq!(reconnect["op"], 7, "{reconnect}");
    assert_eq!(gw.close_code().await, 1012);
    assert_eq!(pending.frame().await["op"], 7, "not yet identified connections too");
    assert_eq!(sc.sigterm(), Some(0));
}

/// `check-config` output for a file whose body is `body`.
fn check_config(body: &str) -> CliOutput {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sidecar.toml");
    std::fs::write(&file, body).expect("write");
    run_cli(&["check-config", &path_str(&file)], &[])
}

#[test]
fn bad_gateway_config_is_refused_naming_the_key() {
    let cases = [
        (
            "[backends.gateway.live.clients.a]\ntoken = \"t\"\nintents = 128\n",
            &["backends.gateway.live", "clients.a.intents"][..],
        ),
        (
            "[backends.gateway.live.clients.a]\ntoken = \"t\"\nintents = 1\n[backends.gateway.live.clients.b]\ntoken = \"t\"\nintents = 1\n",
            &["clients.b.token", "same token"][..],
        ),
        ("[backends.gateway.live]\npath = \"/metrics\"\n", &["backends.gateway.live.path", "/metrics"][..]),
        ("[backends.gateway.live]\npath = \"no-slash\"\n", &["backends.gateway.live", "path"][..]),
        ("[backends.gateway.live]\nheartbeat_interval_ms = 0\n", &["heartbeat_interval_ms"][..]),
        ("[backends.gateway.live.clients.a]\ntoken = \"t\"\nintents = 1\nscope = 2\n", &["scope"][..]),
        (
            "[backends.gateway.one]\n[backends.gateway.two]\n",
            &["backends.gateway.two.path", "another backend"][..],
        ),
    ];
    for (body, words) in cases {
        let out = check_config(body);
        assert_eq!(
            out.code,
            Some(1),
            "{body}\nstdout: {}\nstderr: {}",
            out.stdout,
            out.stderr
        );
        for w in words {
            assert!(out.stderr.contains(w), "{body}: error lacks {w:?}:\n{}", out.stderr);
        }
        assert!(out.stderr.contains("sidecar.toml:"), "{}", out.stderr);
    }
    let ok = check_config(&gateway_backend(""));
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
    assert!(ok.stdout.contains("gateway"), "{}", ok.stdout);
}

#[tokio::test]
async fn websocket_sessions_do_not_hold_the_listeners_connection_slots() {
    let sc = Sidecar::start(Options {
        server: "max_connections = 2\nheader_timeout_ms = 300".into(),
        body: gateway_backend(""),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(RawGateway::identified(&sc, "full-token", 2).await.0);
    }
    // Longer than the header timeout: an upgraded session is not cut.
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Ingest still gets a connection, and every session its dispatch.
    let ids = tokio::time::timeout(Duration::from_secs(5), post_ok(&sc, &json!(message("chat", "x"))))
        .await
        .expect("ingest is not starved by open sessions");
    for gw in &mut sessions {
        assert_eq!(gw.dispatches(1).await[0]["d"]["id"], ids[0]);
    }
}

#[tokio::test]
async fn max_sessions_refuses_more_connections_with_503() {
    let sc = start_gateway("max_sessions = 2").await;
    // Identified sessions count, not connections that have not identified.
    let _a = RawGateway::identified(&sc, "full-token", 1).await;
    let _b = RawGateway::identified(&sc, "full-token", 1).await;
    let url = format!("ws://127.0.0.1:{}/v1/gateway", sc.port);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
}

#[tokio::test]
async fn heartbeats_are_read_while_dispatches_stream() {
    let sc = start_gateway("heartbeat_interval_ms = 400").await;
    let (gw, _) = RawGateway::identified(&sc, "full-token", 63).await;
    let gw = std::sync::Arc::new(tokio::sync::Mutex::new(gw));
    // Posts keep the session's queue busy for ~2 s (five intervals).
    let poster = {
        let url = sc.url.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let until = std::time::Instant::now() + Duration::from_secs(2);
            let mut posted = 0;
            while std::time::Instant::now() < until {
                let batch: Vec<Value> = (0..50).map(|i| message("chat", &format!("b{i}"))).collect();
                let r = client
                    .post(format!("{url}/v1/events"))
                    .json(&batch)
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status().as_u16(), 202);
                posted += 50;
            }
            posted
        })
    };
    // Heartbeat every 200 ms while reading everything.
    let mut seen = 0u64;
    let mut last_beat = std::time::Instant::now();
    let mut acks = 0;
    while !poster.is_finished() || seen < 1 {
        let mut g = gw.lock().await;
        if last_beat.elapsed() >= Duration::from_millis(200) {
            g.send(json!({"op": 1, "d": seen + 1})).await;
            last_beat = std::time::Instant::now();
        }
        match g.next_within(Duration::from_millis(50)).await {
            Some(Next::Frame(f)) if f["op"] == 0 => seen += 1,
            Some(Next::Frame(f)) if f["op"] == 11 => acks += 1,
            Some(Next::Frame(_)) | None => {}
            Some(other) => panic!("the session ended while heartbeating: {other:?} after {seen} dispatches"),
        }
    }
    let posted = poster.await.expect("poster");
    assert!(acks >= 5, "heartbeats were answered ({acks})");
    assert!(posted > 0 && seen > 0, "{posted} posted, {seen} seen");
}
