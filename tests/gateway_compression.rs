//! Gateway transport compression end to end: the real binary, and an
//! independent peer (Python's `websockets`, `zlib` and `zstandard`,
//! tests/fixtures/gateway/compressed_peer.py) that asks for
//! `compress=zlib-stream` or `compress=zstd-stream` and decodes every
//! server message with one context per connection.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gateway/compressed_peer.py");

fn chat(i: usize) -> Value {
    json!({"hook": "user_send_message", "from": "alice@localhost/phone", "to": "bob@localhost",
           "type": "chat", "body": format!("hello number {i}"), "id": format!("m{i}")})
}

/// Run the Python peer with `compress`, post `n` events once it is
/// identified, and return what it decoded: each dispatch with its bytes on
/// the wire and decoded.
async fn python_peer(sc: &Sidecar, compress: &str, n: usize) -> (Vec<String>, Vec<(Value, u64, u64)>) {
    let url = format!("ws://127.0.0.1:{}/v1/gateway", sc.port);
    let mut child = tokio::process::Command::new("python3")
        .args([PEER, &url, compress, "full-token", "127", &n.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (scripts/setup.sh installs websockets and zstandard)");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the peer identified within 20 s")
        .expect("read the peer");
    let Some(first) = first else {
        let out = child.wait_with_output().await.expect("peer");
        panic!("the peer ended before READY: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ready: Value = serde_json::from_str(&first).expect("ready line");
    assert!(ready["ready"].is_string(), "{first}");
    let batch: Vec<Value> = (0..n).map(chat).collect();
    let ids = post_ok(sc, &Value::Array(batch)).await;
    let mut got = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the peer read its dispatches within 30 s")
        .expect("read the peer")
    {
        let v: Value = serde_json::from_str(&line).expect("a JSON line");
        got.push((
            v["frame"].clone(),
            v["wire"].as_u64().unwrap_or(0),
            v["plain"].as_u64().unwrap_or(0),
        ));
    }
    let out = child.wait_with_output().await.expect("peer");
    assert!(
        out.status.success(),
        "{compress} peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (ids, got)
}

#[tokio::test]
async fn python_decodes_zlib_stream_and_zstd_stream_with_one_context_per_connection() {
    let sc = Sidecar::start(Options {
        body: gateway_backend("heartbeat_interval_ms = 30000"),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    for compress in ["zlib-stream", "zstd-stream"] {
        let n = 40;
        let (ids, got) = python_peer(&sc, compress, n).await;
        let seqs: Vec<u64> = got.iter().map(|(f, _, _)| f["s"].as_u64().unwrap_or(0)).collect();
        assert_eq!(seqs, (2..2 + n as u64).collect::<Vec<_>>(), "{compress}");
        let got_ids: Vec<&str> = got
            .iter()
            .map(|(f, _, _)| f["d"]["id"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            got_ids,
            ids.iter().map(String::as_str).collect::<Vec<_>>(),
            "{compress}"
        );
        assert!(got.iter().all(|(f, _, _)| f["t"] == "DM_MESSAGE_CREATE"), "{compress}");
        assert_eq!(got[7].0["d"]["body"], "hello number 7", "{compress}");
        // One context for the connection: later messages cost far less
        // than their text (each alone would not).
        let wire: u64 = got.iter().map(|(_, w, _)| w).sum();
        let plain: u64 = got.iter().map(|(_, _, p)| p).sum();
        assert!(
            wire * 2 < plain,
            "{compress}: {wire} bytes on the wire for {plain} of JSON"
        );
    }
}

#[tokio::test]
async fn an_unknown_compress_value_is_refused_before_the_upgrade_naming_it() {
    let sc = Sidecar::start(Options {
        body: gateway_backend(""),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    for bad in ["gzip", "zlib", ""] {
        let url = format!("ws://127.0.0.1:{}/v1/gateway?v=10&compress={bad}", sc.port);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 400, "{bad:?}");
                let body: Value = serde_json::from_slice(r.body().as_deref().unwrap_or_default()).expect("JSON body");
                assert_eq!(body["field"], "compress", "{body}");
                assert!(
                    body["error"].as_str().unwrap_or_default().contains("zlib-stream"),
                    "{body}"
                );
            }
            other => panic!("{bad:?}: expected 400, got {other:?}"),
        }
    }
    // No `compress`: plain text frames, as before.
    let (mut gw, hello) = RawGateway::connect(&sc).await;
    assert_eq!(hello["op"], 10);
    gw.identify("full-token", 2).await;
    assert_eq!(gw.frame().await["t"], "READY");
}
