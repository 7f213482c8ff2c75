//! Gateway hardening through the binary: connections that never identify
//! are bounded on their own and never lock out a client with a valid token;
//! frames the WebSocket layer refuses close with their code and a close
//! frame; intents beyond i64 are invalid intents; a resume that replaces a
//! live connection closes the old one with its own code; the
//! `resume_gateway_url` is never the client's `Host` copied verbatim.

mod support;

use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn sockets_that_never_identify_do_not_lock_out_a_bot() {
    let sc = start_gateway("max_sessions = 3\nmax_pending = 50").await;
    // 300 connections that take their Hello and then say nothing.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(RawGateway::connect(&sc).await.0);
    }
    // A bot with a valid token still gets in, three times (max_sessions).
    let mut bots = Vec::new();
    for _ in 0..3 {
        let (bot, ready) = RawGateway::identified(&sc, "full-token", 63).await;
        assert!(ready["d"]["session_id"].is_string(), "{ready}");
        bots.push(bot);
    }
    // The oldest unidentified ones were closed to make room, with 1013.
    assert_eq!(idle[0].close_code().await, 1013);
    // Identified sessions are what max_sessions counts: a fourth is refused.
    let url = format!("ws://127.0.0.1:{}/v1/gateway", sc.port);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503 with max_sessions identified, got {other:?}"),
    }
    // And the bots are live: an event reaches them.
    let ids = post_ok(&sc, &json!({"hook": "user_available", "jid": "a@localhost/r"})).await;
    for bot in &mut bots {
        assert_eq!(bot.dispatches(1).await[0]["d"]["id"], ids[0]);
    }
}

#[tokio::test]
async fn refused_frames_close_with_their_code_and_a_close_frame() {
    let sc = start_gateway("").await;

    // Over the 64 KiB limit: 1009.
    let (mut gw, _) = RawGateway::connect(&sc).await;
    gw.send_text("x".repeat(70 * 1024)).await;
    assert_eq!(gw.close_code().await, 1009, "frame over the limit");

    // A text frame that is not UTF-8: 1007.
    let (mut gw, _) = RawGateway::connect(&sc).await;
    let bad = Frame::message(vec![0xff, 0xfe, b'{'], OpCode::Data(Data::Text), true);
    gw.send_message(Message::Frame(bad)).await;
    assert_eq!(gw.close_code().await, 1007, "invalid UTF-8");

    // A continuation with nothing to continue: 1002.
    let (mut gw, _) = RawGateway::connect(&sc).await;
    let stray = Frame::message(b"{}".to_vec(), OpCode::Data(Data::Continue), true);
    gw.send_message(Message::Frame(stray)).await;
    assert_eq!(gw.close_code().await, 1002, "protocol error");

    // Intents of 2^63 and more are invalid intents, not a decode error.
    for intents in [json!(9223372036854775808u64), json!(18446744073709551615u64)] {
        let (mut gw, _) = RawGateway::connect(&sc).await;
        gw.send(json!({"op": 2, "d": {"token": "full-token", "intents": intents}}))
            .await;
        assert_eq!(gw.close_code().await, 4013, "intents {intents}");
    }
}

#[tokio::test]
async fn a_resume_that_replaces_a_live_connection_closes_it_with_4006() {
    let sc = start_gateway("").await;
    let (mut old, ready) = RawGateway::identified(&sc, "full-token", 63).await;
    let session = ready["d"]["session_id"].as_str().expect("session id").to_owned();
    let (mut new, _) = RawGateway::connect(&sc).await;
    new.resume("full-token", &session, 1).await;
    let resumed = new.frame().await;
    assert_eq!(resumed["t"], "RESUMED", "{resumed}");
    assert_eq!(old.close_code().await, 4006, "replaced, not the slow-client 4000");
}

#[tokio::test]
async fn resume_gateway_url_comes_from_public_url_or_a_valid_host() {
    // A Host header with a quote is not copied.
    let sc = start_gateway("").await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://127.0.0.1:{}/v1/gateway",
        sc.port
    ))
    .expect("request");
    req.headers_mut().insert("host", "a\"b".parse().expect("header value"));
    let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("connect");
    let mut gw = RawGateway::from_stream(ws);
    gw.frame().await;
    gw.identify("full-token", 1).await;
    let ready = gw.frame().await;
    let url = ready["d"]["resume_gateway_url"].as_str().unwrap_or_default().to_owned();
    assert!(!url.contains('"'), "{url}");
    assert_eq!(url, "ws://localhost/v1/gateway");

    let sc = start_gateway("public_url = \"wss://gw.example.com\"").await;
    let (_, ready) = RawGateway::identified(&sc, "full-token", 1).await;
    assert_eq!(ready["d"]["resume_gateway_url"], "wss://gw.example.com/v1/gateway");
}

#[test]
fn public_url_must_be_a_websocket_url() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidecar.toml");
    let text = format!(
        "[spool]\ndir = \"./data\"\n\n{}",
        gateway_backend("public_url = \"http://x\"")
    );
    std::fs::write(&file, text).unwrap();
    let file = path_str(&file);
    let out = run_cli(&["check-config", &file], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!("{file}:6:")) && out.stderr.contains("ws://"),
        "{}",
        out.stderr
    );
}
