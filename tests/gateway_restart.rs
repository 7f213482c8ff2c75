//! Gateway sessions across restarts of the real binary (SIGTERM and
//! kill -9) on the same spool: a client that resumes with an older `seq`
//! gets every dispatch after it, in order, then RESUMED; the buffers stay
//! bounded by `resume_buffer`, and sessions past `resume_timeout_ms` are
//! gone (op 9).

mod support;

use serde_json::{json, Value};
use support::*;

async fn restart(sc: &mut Sidecar) {
    sc.spawn().await;
    sc.wait_ready().await;
}

fn chat(body: &str) -> Value {
    json!({"hook": "user_send_message", "from": "alice@localhost/phone", "to": "bob@localhost",
           "type": "chat", "body": body, "id": body})
}

fn presence() -> Value {
    json!({"hook": "user_available", "jid": "alice@localhost/phone"})
}

fn session_of(ready: &Value) -> String {
    ready["d"]["session_id"].as_str().unwrap_or_default().to_owned()
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().map(|f| f["s"].as_u64().unwrap_or(0)).collect()
}

fn bodies(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f["d"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Resume `session` from `seq` on the restarted sidecar: the `n`
/// dispatches replayed, then RESUMED.
async fn resume_after(sc: &Sidecar, session: &str, seq: u64, n: usize) -> (RawGateway, Vec<Value>) {
    let (mut gw, _) = RawGateway::connect(sc).await;
    gw.resume("full-token", session, seq).await;
    let replayed = gw.dispatches(n).await;
    let resumed = gw.frame().await;
    assert_eq!(
        (resumed["op"].clone(), resumed["t"].clone()),
        (json!(0), json!("RESUMED")),
        "RESUMED right after the replay: {resumed}"
    );
    (gw, replayed)
}

/// The events a chat-only session got before SIGTERM come back after a
/// restart, in order, from the seq it resumes with; numbering goes on.
#[tokio::test]
async fn a_session_resumes_after_sigterm_and_restart() {
    let mut sc = start_gateway("heartbeat_interval_ms = 5000").await;
    // Chats only: the presences posted between them are not its own.
    let (mut gw, ready) = RawGateway::identified(&sc, "full-token", 1 << 1).await;
    let session = session_of(&ready);
    let first: Vec<Value> = (0..5).flat_map(|i| [chat(&format!("a{i}")), presence()]).collect();
    post_ok(&sc, &Value::Array(first)).await;
    let seen = gw.dispatches(5).await;
    assert_eq!(seqs(&seen), vec![2, 3, 4, 5, 6]);
    let pid = sc.pid().expect("running");
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    // op 7 and a close first: the client is told to resume.
    assert_eq!(gw.frame().await["op"], 7);
    assert_eq!(gw.close_code().await, 1012);
    assert_eq!(sc.sigterm(), Some(0));
    restart(&mut sc).await;

    // From seq 3: a2, a3, a4 (seq 4, 5, 6) again, then RESUMED, then live.
    let (mut gw, replayed) = resume_after(&sc, &session, 3, 3).await;
    assert_eq!(seqs(&replayed), vec![4, 5, 6]);
    assert_eq!(bodies(&replayed), ["a2", "a3", "a4"]);
    post_ok(&sc, &json!([presence(), chat("live")])).await;
    let live = gw.dispatches(1).await;
    assert_eq!(
        (live[0]["s"].clone(), live[0]["d"]["body"].clone()),
        (json!(7), json!("live")),
        "numbering goes on from the restored session"
    );
    let (_, text) = sc.get_text("/metrics").await;
    assert_eq!(
        metric(&text, "event_pusher_gateway_resumes_total", &["backend=\"live\""]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_session_resumes_after_kill_9_and_restart_with_what_it_missed() {
    let mut sc = start_gateway("heartbeat_interval_ms = 5000").await;
    let (mut gw, ready) = RawGateway::identified(&sc, "full-token", 1 << 1).await;
    let session = session_of(&ready);
    post_ok(&sc, &json!([chat("a0"), chat("a1")])).await;
    assert_eq!(seqs(&gw.dispatches(2).await), vec![2, 3]);
    gw.drop_tcp();
    // Delivered while nobody is connected: only in the session's buffer.
    let missed: Vec<Value> = (0..20).map(|i| chat(&format!("b{i}"))).collect();
    post_ok(&sc, &Value::Array(missed)).await;
    // Fanned out before the kill (committed or, if not yet, delivered
    // again after the restart with the same numbers).
    wait_delivered(&sc, 22).await;
    sc.kill9();
    restart(&mut sc).await;

    let (_gw, replayed) = resume_after(&sc, &session, 2, 21).await;
    assert_eq!(seqs(&replayed), (3..24).collect::<Vec<u64>>());
    let mut want = vec!["a1".to_owned()];
    want.extend((0..20).map(|i| format!("b{i}")));
    assert_eq!(bodies(&replayed), want, "every dispatch after seq, in order, once");
}

/// Wait until the gateway has delivered `n` events (its queue is empty).
async fn wait_delivered(sc: &Sidecar, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, text) = sc.get_text("/metrics").await;
        let done = metric(&text, "event_pusher_gateway_dispatches_total", &["backend=\"live\""]).unwrap_or(0.0);
        if done >= n as f64 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{done} of {n} dispatched:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn after_a_restart_buffers_stay_bounded_and_expired_sessions_get_op9() {
    let mut sc = start_gateway("resume_buffer = 3\nresume_timeout_ms = 1500\nheartbeat_interval_ms = 5000").await;
    let (mut gw_a, ready_a) = RawGateway::identified(&sc, "full-token", 1 << 1).await;
    let (mut gw_b, ready_b) = RawGateway::identified(&sc, "full-token", 1 << 1).await;
    let (session_a, session_b) = (session_of(&ready_a), session_of(&ready_b));
    let batch: Vec<Value> = (0..6).map(|i| chat(&format!("c{i}"))).collect();
    post_ok(&sc, &Value::Array(batch)).await;
    assert_eq!(seqs(&gw_a.dispatches(6).await), (2..8).collect::<Vec<u64>>());
    assert_eq!(seqs(&gw_b.dispatches(6).await), (2..8).collect::<Vec<u64>>());
    sc.kill9();
    restart(&mut sc).await;

    // Three kept: from 4, the buffer has 5, 6, 7.
    let (_gw, replayed) = resume_after(&sc, &session_a, 4, 3).await;
    assert_eq!(bodies(&replayed), ["c3", "c4", "c5"]);
    // From 1, it would need 2..7: older than the buffer, op 9.
    let (mut gw, _) = RawGateway::connect(&sc).await;
    gw.resume("full-token", &session_b, 1).await;
    assert_eq!(gw.frame().await, json!({"op": 9, "d": false}));

    // A third session, then a restart, then longer than the timeout.
    let (_c, ready_c) = RawGateway::identified(&sc, "full-token", 1 << 1).await;
    let session_c = session_of(&ready_c);
    sc.kill9();
    restart(&mut sc).await;
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let (mut gw, _) = RawGateway::connect(&sc).await;
    gw.resume("full-token", &session_c, 1).await;
    assert_eq!(gw.frame().await, json!({"op": 9, "d": false}));
}
