//! A receiver's answer body must not decide the sidecar's memory or its
//! connection count: a 2xx body of 64 KiB still lets the connection go back
//! to the pool, and an endless error body is cut off after the excerpt we
//! keep (the event is still retried, then dead-lettered).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};
use support::{eventually, http_backend, Options, Sidecar};

/// A receiver that answers every POST with `answer()` and counts the TCP
/// connections it accepted and the requests it served.
struct CountingReceiver {
    url: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl CountingReceiver {
    async fn start(answer: fn() -> (StatusCode, Body)) -> CountingReceiver {
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let accepted = connections.clone();
        let listener = listener.tap_io(move |_| {
            accepted.fetch_add(1, Ordering::SeqCst);
        });
        let served = requests.clone();
        let app = Router::new().route(
            "/hook",
            post(move |_body: Bytes| {
                let served = served.clone();
                async move {
                    served.fetch_add(1, Ordering::SeqCst);
                    answer().into_response()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        CountingReceiver {
            url,
            connections,
            requests,
        }
    }
}

fn chat(i: usize) -> Value {
    json!({"hook":"user_send_message","from":format!("u{}@localhost/r", i % 7),"to":"bob@localhost",
           "type":"chat","body":"hi","id":format!("m{i}")})
}

/// Peak resident memory of a process, in KiB (`VmHWM` in /proc).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[tokio::test]
async fn a_64_kib_success_body_does_not_cost_a_connection_per_event() {
    let rx = CountingReceiver::start(|| (StatusCode::OK, Body::from(vec![b'x'; 64 * 1024]))).await;
    let sc = Sidecar::start(Options {
        body: http_backend("sink", &rx.url, "concurrency = 4"),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;

    const EVENTS: usize = 300;
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(50) {
        let calls: Vec<Value> = chunk.iter().map(|&i| chat(i)).collect();
        let (status, answer) = sc.post(&Value::Array(calls)).await;
        assert_eq!(status, 202, "{answer}");
    }
    let all = eventually(Duration::from_secs(60), || rx.requests.load(Ordering::SeqCst) >= EVENTS).await;
    assert!(all, "only {} of {EVENTS} delivered", rx.requests.load(Ordering::SeqCst));
    let connections = rx.connections.load(Ordering::SeqCst);
    eprintln!("{EVENTS} events with 64 KiB 200 bodies used {connections} TCP connections");
    // concurrency = 4: a handful of connections, not one per event.
    assert!(connections <= 8, "{connections} connections for {EVENTS} events");
}

#[tokio::test]
async fn an_endless_error_body_neither_grows_memory_nor_stops_retries() {
    // "Endless" in practice: 2 GiB per answer, far more than the sidecar
    // may hold; the stream ends when the sidecar hangs up.
    let rx = CountingReceiver::start(|| {
        let chunk = Bytes::from(vec![b'e'; 64 * 1024]);
        let chunks = futures::stream::repeat(chunk)
            .take(32 * 1024)
            .map(Ok::<_, std::io::Error>);
        (StatusCode::INTERNAL_SERVER_ERROR, Body::from_stream(chunks))
    })
    .await;
    let body = http_backend("sink", &rx.url, "timeout_ms = 5000")
        + "[backends.http.sink.retry]\nmax_attempts = 3\ninitial_backoff_ms = 50\nmax_backoff_ms = 100\n";
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    let pid = sc.pid().expect("running");

    let (status, answer) = sc.post(&chat(1)).await;
    assert_eq!(status, 202, "{answer}");
    let mut row = Value::Null;
    for _ in 0..600 {
        row = sc.backend("sink").await;
        if row["dead_letters"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(row["dead_letters"], 1, "not dead-lettered: {row}");
    assert_eq!(
        rx.requests.load(Ordering::SeqCst),
        3,
        "every attempt reaches the receiver"
    );

    let peak = peak_rss_kib(pid);
    eprintln!("peak RSS with endless 500 bodies: {} MiB", peak / 1024);
    assert!(peak < 100 * 1024, "peak RSS {} MiB", peak / 1024);

    // The kept excerpt is short and says what the receiver said.
    let (status, dead) = sc.get("/v1/dead-letters?backend=sink").await;
    assert_eq!(status, 200, "{dead}");
    let error = dead[0]["last_error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(error.starts_with("HTTP 500"), "{dead}");
    assert_eq!(dead[0]["last_error"]["status"], 500, "{dead}");
    assert!(error.contains("eee") && error.len() < 1024, "{error}");

    // Failed attempts reach the log at WARN, named KIND.NAME, rate-limited:
    // three failures within a second make one line.
    let log = sc.stderr();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("delivery attempt failed"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(
        warned[0].contains("backend=http.sink") && warned[0].contains("status=500"),
        "{log}"
    );
}
