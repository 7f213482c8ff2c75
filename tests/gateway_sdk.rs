//! The consumer SDK (`event_pusher::gateway::Client`) against the real
//! binary, through a TCP proxy the test cuts mid-stream: the handler must
//! see every dispatch exactly once, and presences carry the previous status.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_pusher::core::PresenceStatus;
use event_pusher::gateway::{intents, Client, Compression, Dispatch, EventHandler, GatewayEvent};
use serde_json::{json, Value};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy to the sidecar whose connections the test can cut.
struct CutProxy {
    port: u16,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl CutProxy {
    async fn start(upstream: u16) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let registry = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                registry.lock().expect("lock").push(task);
            }
        });
        CutProxy { port, conns }
    }

    /// Close every proxied TCP connection, both ends, now.
    fn cut(&self) -> usize {
        let conns: Vec<_> = self.conns.lock().expect("lock").drain(..).collect();
        let n = conns.iter().filter(|c| !c.is_finished()).count();
        for c in conns {
            c.abort();
        }
        n
    }
}

/// Records what the handler saw: each event id with how often, and
/// presences with their previous status.
#[derive(Default)]
struct Seen {
    ids: Mutex<HashMap<String, usize>>,
    presences: Mutex<Vec<(String, Option<PresenceStatus>)>>,
    sessions: Mutex<usize>,
}

struct Recorder(Arc<Seen>);

#[event_pusher::async_trait]
impl EventHandler for Recorder {
    async fn handle_event(&self, dispatch: Dispatch) {
        if let GatewayEvent::Ready { .. } = dispatch.event {
            *self.0.sessions.lock().expect("lock") += 1;
        }
        if let GatewayEvent::Presence { event, previous } = &dispatch.event {
            let status = event.presence().map(|p| format!("{:?}", p.status)).unwrap_or_default();
            self.0.presences.lock().expect("lock").push((status, *previous));
        }
        if let Some(record) = dispatch.event.record() {
            *self.0.ids.lock().expect("lock").entry(record.id.clone()).or_default() += 1;
        }
    }
}

fn chat(i: usize) -> Value {
    json!({"hook": "user_send_message", "from": "alice@localhost/phone", "to": "bob@localhost", "type": "chat", "body": format!("m{i}")})
}

#[tokio::test]
async fn sdk_sees_every_dispatch_exactly_once_across_cut_connections() {
    let sc = Sidecar::start(Options {
        body: gateway_backend("heartbeat_interval_ms = 1000"),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    let proxy = CutProxy::start(sc.port).await;
    let seen = Arc::new(Seen::default());
    let client = Client::new(
        format!("ws://127.0.0.1:{}/v1/gateway", proxy.port),
        "full-token",
        intents::ALL,
    )
    .consumers(3)
    .max_backoff(Duration::from_millis(200));
    let running = tokio::spawn(client.run(Recorder(seen.clone())));
    if !eventually(Duration::from_secs(10), || *seen.sessions.lock().expect("lock") == 1).await {
        let client = if running.is_finished() {
            format!("{:?}", running.await)
        } else {
            "still running".into()
        };
        panic!("no READY (client: {client}); sidecar log:\n{}", sc.log_tail());
    }

    let mut posted = Vec::new();
    posted.extend(post_ok(&sc, &json!({"hook": "user_available", "jid": "carol@localhost/phone"})).await);
    let mut cuts = 0;
    for round in 0..5 {
        let batch: Vec<Value> = (0..40).map(|i| chat(round * 40 + i)).collect();
        posted.extend(post_ok(&sc, &Value::Array(batch)).await);
        // Cut while the dispatches are on their way.
        cuts += proxy.cut();
        let more: Vec<Value> = (0..10).map(|i| chat(1000 + round * 10 + i)).collect();
        posted.extend(post_ok(&sc, &Value::Array(more)).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    posted.extend(post_ok(&sc, &json!({"hook": "unset_presence", "jid": "carol@localhost/phone"})).await);
    assert!(cuts >= 3, "connections really were cut ({cuts})");

    let all_seen = eventually(Duration::from_secs(20), || {
        let ids = seen.ids.lock().expect("lock");
        posted.iter().all(|id| ids.contains_key(id))
    })
    .await;
    running.abort();
    // Heartbeats kept every connection alive: none timed out.
    let (_, text) = sc.get_text("/metrics").await;
    assert_eq!(
        metric(&text, "event_pusher_gateway_closes_total", &["code=\"4009\""]),
        None,
        "{text}"
    );
    let ids = seen.ids.lock().expect("lock");
    assert!(
        all_seen,
        "missing: {} of {}",
        posted.iter().filter(|id| !ids.contains_key(*id)).count(),
        posted.len()
    );
    let repeated: Vec<_> = ids.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "seen more than once: {repeated:?}");
    assert_eq!(ids.len(), posted.len(), "nothing else was seen");
    assert_eq!(
        *seen.sessions.lock().expect("lock"),
        1,
        "every reconnect resumed the one session"
    );
    let presences = seen.presences.lock().expect("lock").clone();
    assert_eq!(
        presences,
        vec![
            ("Online".to_owned(), None),
            ("Offline".to_owned(), Some(PresenceStatus::Online))
        ]
    );
}

/// Start a client on the sidecar's gateway with `compression`; wait for
/// its READY.
async fn running_client(sc: &Sidecar, compression: Option<Compression>, seen: &Arc<Seen>) -> JoinHandle<()> {
    let client = Client::new(
        format!("ws://127.0.0.1:{}/v1/gateway", sc.port),
        "full-token",
        intents::CHAT,
    )
    .compression(compression)
    .max_backoff(Duration::from_millis(200));
    let recorder = Recorder(seen.clone());
    let running = tokio::spawn(async move {
        let _ = client.run(recorder).await;
    });
    assert!(eventually(Duration::from_secs(10), || *seen.sessions.lock().expect("lock") == 1).await);
    running
}

async fn handled(seen: &Seen, ids: &[String]) -> bool {
    eventually(Duration::from_secs(10), || {
        let got = seen.ids.lock().expect("lock");
        ids.iter().all(|id| got.contains_key(id))
    })
    .await
}

#[tokio::test]
async fn sdk_identifies_again_when_its_session_is_gone() {
    let mut sc = Sidecar::start(Options {
        body: gateway_backend(""),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    let seen = Arc::new(Seen::default());
    let running = running_client(&sc, Some(Compression::ZlibStream), &seen).await;
    let first = post_ok(&sc, &chat(1)).await;
    assert!(handled(&seen, &first).await, "the first event arrived");
    // A restart on a new spool knows no session: the resume gets op 9 and
    // the client identifies again (a second READY), then gets new events.
    sc.kill9();
    std::fs::remove_dir_all(sc.spool_dir()).expect("remove the spool");
    sc.spawn().await;
    sc.wait_ready().await;
    assert!(
        eventually(Duration::from_secs(10), || *seen.sessions.lock().expect("lock") == 2).await,
        "a new session after op 9:\n{}",
        sc.stderr()
    );
    let second = post_ok(&sc, &chat(2)).await;
    let all = handled(&seen, &second).await;
    running.abort();
    assert!(
        all,
        "the event after the restart was handled: {:?}",
        seen.ids.lock().expect("lock")
    );
}

/// With zlib-stream, plain text, and the default (zstd-stream): the client
/// decodes its stream, and after a kill -9 and restart on the same spool it
/// resumes its one session, every event handled exactly once.
#[tokio::test]
async fn sdk_resumes_its_session_across_a_kill_9_restart_with_each_compression() {
    for compression in [Some(Compression::ZlibStream), None, Some(Compression::ZstdStream)] {
        let mut sc = Sidecar::start(Options {
            body: gateway_backend("heartbeat_interval_ms = 2000"),
            ..Default::default()
        })
        .await;
        sc.wait_ready().await;
        let seen = Arc::new(Seen::default());
        let running = running_client(&sc, compression, &seen).await;
        let before = post_ok(&sc, &Value::Array((0..10).map(chat).collect())).await;
        assert!(handled(&seen, &before).await, "{compression:?}: before the restart");
        sc.kill9();
        sc.spawn().await;
        sc.wait_ready().await;
        let after = post_ok(&sc, &Value::Array((10..20).map(chat).collect())).await;
        let all = handled(&seen, &after).await;
        running.abort();
        assert!(all, "{compression:?}: after the restart:\n{}", sc.log_tail());
        assert_eq!(
            *seen.sessions.lock().expect("lock"),
            1,
            "{compression:?}: the session was resumed, not identified again"
        );
        let ids = seen.ids.lock().expect("lock");
        assert_eq!(ids.len(), 20, "{compression:?}");
        assert!(ids.values().all(|n| *n == 1), "{compression:?}: {ids:?}");
    }
}
