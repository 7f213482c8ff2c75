//! The listener's limits against real sockets and the real binary: stalled
//! clients cannot keep the process from shutting down, idle and slowloris
//! connections are closed after `server.header_timeout_ms`, a body that
//! does not arrive gets 408, and the connection cap makes new clients wait
//! rather than fail.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Options, Sidecar};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `shutdown_grace_ms` of the support config.
const GRACE: Duration = Duration::from_millis(2000);
/// Process exit after the deadline: spool close, runtime teardown.
const MARGIN: Duration = Duration::from_secs(3);

async fn start(server: &str) -> Sidecar {
    Sidecar::start(Options {
        server: server.to_owned(),
        ..Options::default()
    })
    .await
}

async fn connect(sc: &Sidecar) -> TcpStream {
    TcpStream::connect(("127.0.0.1", sc.port)).await.expect("connect")
}

/// SIGTERM in a blocking thread (the support helper waits for the exit);
/// how long the process took to go.
async fn time_sigterm(mut sc: Sidecar) -> (Duration, Sidecar) {
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        sc.sigterm();
        (t.elapsed(), sc)
    })
    .await
    .expect("sigterm thread")
}

/// Read until the peer closes; true if it did within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or an error page before the close.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn a_stalled_body_does_not_hold_shutdown() {
    // Long body timeout: only the shutdown deadline can end the request.
    let sc = start("body_timeout_ms = 600000\nheader_timeout_ms = 600000").await;
    let mut stalled = connect(&sc).await;
    stalled
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (took, sc) = time_sigterm(sc).await;
    assert!(
        took < GRACE + MARGIN,
        "exit took {took:?} with a stalled body; stderr:\n{}",
        sc.stderr()
    );
    assert!(sc.stderr().contains("shutdown deadline reached"), "{}", sc.stderr());
    drop(stalled);
}

#[tokio::test]
async fn a_stalled_header_does_not_hold_shutdown() {
    let sc = start("header_timeout_ms = 600000").await;
    let mut stalled = connect(&sc).await;
    stalled.write_all(b"POST /v1/events HTTP/1.1\r\nHost:").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (took, sc) = time_sigterm(sc).await;
    assert!(
        took < GRACE + MARGIN,
        "exit took {took:?} with a stalled header; stderr:\n{}",
        sc.stderr()
    );
    drop(stalled);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_gets_408() {
    let sc = start("body_timeout_ms = 500").await;
    let mut stalled = connect(&sc).await;
    stalled
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a stalled body");
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
}

#[tokio::test]
async fn idle_connections_are_closed_and_do_not_block_a_real_client() {
    let sc = start("header_timeout_ms = 1500").await;
    let mut idle = Vec::new();
    for i in 0..600 {
        let mut s = connect(&sc).await;
        // Half send nothing, half start a request head and stall.
        if i % 2 == 1 {
            s.write_all(b"GET /health HTTP/1.1\r\nHo").await.unwrap();
        }
        idle.push(s);
    }
    let t = Instant::now();
    let (status, body) = sc.post(&json!({"hook": "user_available", "jid": "a@x/r"})).await;
    assert_eq!(status, 202, "{body}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a real client waited {:?} behind 600 idle connections",
        t.elapsed()
    );
    let mut open = 0;
    for s in &mut idle {
        if !closed_within(s, Duration::from_secs(10)).await {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "{open} of 600 idle connections still open after the header timeout"
    );
}

#[tokio::test]
async fn at_the_connection_cap_a_new_client_waits_for_a_free_slot() {
    let sc = start("header_timeout_ms = 1000\nmax_connections = 4").await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(connect(&sc).await);
    }
    // Served once the header timeout frees a slot, not refused.
    let t = Instant::now();
    let (status, body) = sc.get("/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "waited {:?} for a slot",
        t.elapsed()
    );
}

#[test]
fn zero_limits_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    for key in ["header_timeout_ms", "body_timeout_ms", "max_connections"] {
        let file = dir.path().join(format!("{key}.toml"));
        std::fs::write(&file, format!("[server]\n{key} = 0\n")).expect("write");
        let out = support::run_cli(&["check-config", &support::path_str(&file)], &[]);
        assert_eq!(out.code, Some(1), "{key}: {}", out.stdout);
        assert!(out.stderr.contains(&format!("server.{key}")), "{key}: {}", out.stderr);
    }
}
