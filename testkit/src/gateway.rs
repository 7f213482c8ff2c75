//! A raw gateway client: JSON frames over tokio-tungstenite, no SDK
//! logic, so tests check the wire itself and the gateway benchmark's
//! sessions do no more work than a client must.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::sidecar::Sidecar;

/// A `[backends.gateway.live]` table with two clients: `full` (token
/// `full-token`, every intent) and `presence` (token `presence-token`,
/// presence only). `extra` goes into the backend table.
pub fn gateway_backend(extra: &str) -> String {
    format!(
        "[backends.gateway.live]\npath = \"/v1/gateway\"\n{extra}\n\
         [backends.gateway.live.clients.full]\ntoken = \"full-token\"\nintents = 127\n\
         [backends.gateway.live.clients.presence]\ntoken = \"presence-token\"\nintents = 1\n"
    )
}

/// What reading the next frame found.
#[derive(Debug, PartialEq)]
pub enum Next {
    Frame(Value),
    /// A close frame with this code.
    Closed(u16),
    /// The stream ended without a close frame.
    Ended,
}

/// One raw WebSocket connection to the gateway.
pub struct RawGateway {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawGateway {
    /// A connection made by the test itself (custom request headers).
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> RawGateway {
        RawGateway { ws }
    }

    /// Open a WebSocket to `url` and read nothing yet.
    pub async fn open(url: &str) -> Result<RawGateway, String> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| format!("connect {url}: {e}"))?;
        Ok(RawGateway { ws })
    }

    /// The WebSocket, for a caller that reads and writes on its own.
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    /// Send Identify with `token` and `intents`, then read until READY
    /// (skipping Hello and anything else); the READY frame.
    pub async fn identify_until_ready(&mut self, token: &str, intents: u64) -> Result<Value, String> {
        let identify = json!({"op": 2, "d": {"token": token, "intents": intents}});
        self.ws
            .send(Message::text(identify.to_string()))
            .await
            .map_err(|e| format!("identify: {e}"))?;
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str().contains("\"t\":\"READY\"") => {
                    return serde_json::from_str(t.as_str()).map_err(|e| format!("READY: {e}"));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("before READY: {e}")),
                None => return Err("the connection ended before READY".into()),
            }
        }
    }

    /// The next message of any kind (binary frames of a compressed
    /// connection included), or `None` when the connection ended.
    pub async fn next_message(&mut self) -> Option<Message> {
        match self.ws.next().await {
            Some(Ok(m)) => Some(m),
            _ => None,
        }
    }

    /// Connect to the sidecar's gateway and read Hello.
    pub async fn connect(sc: &Sidecar) -> (RawGateway, Value) {
        let url = format!("ws://127.0.0.1:{}/v1/gateway", sc.port);
        let mut gw = RawGateway::open(&url).await.unwrap_or_else(|e| panic!("websocket {e}"));
        let hello = gw.frame().await;
        assert_eq!(hello["op"], 10, "first frame is Hello: {hello}");
        (gw, hello)
    }

    /// Connect, identify with `token` and `intents`, and read READY.
    pub async fn identified(sc: &Sidecar, token: &str, intents: u64) -> (RawGateway, Value) {
        let (mut gw, _) = RawGateway::connect(sc).await;
        gw.identify(token, intents).await;
        let ready = gw.frame().await;
        assert_eq!(ready["t"], "READY", "READY after Identify: {ready}");
        (gw, ready)
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    /// Send any message, raw frames included (invalid on purpose).
    pub async fn send_message(&mut self, m: Message) {
        self.ws.send(m).await.expect("send message");
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.expect("send frame");
    }

    pub async fn identify(&mut self, token: &str, intents: u64) {
        self.send(json!({"op": 2, "d": {"token": token, "intents": intents, "properties": {"os": "linux"}}}))
            .await;
    }

    pub async fn resume(&mut self, token: &str, session_id: &str, seq: u64) {
        self.send(json!({"op": 6, "d": {"token": token, "session_id": session_id, "seq": seq}}))
            .await;
    }

    /// The next frame or close, within 10 s.
    pub async fn next(&mut self) -> Next {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("a frame within 10 s")
    }

    /// The next frame or close, or `None` if nothing came within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Next> {
        loop {
            let m = tokio::time::timeout(wait, self.ws.next()).await.ok()?;
            return Some(match m {
                Some(Ok(Message::Text(t))) => Next::Frame(serde_json::from_str(t.as_str()).expect("frame is JSON")),
                Some(Ok(Message::Close(Some(c)))) => Next::Closed(u16::from(c.code)),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => Next::Ended,
                Some(Ok(_)) => continue,
            });
        }
    }

    /// The next frame, which must not be a close.
    pub async fn frame(&mut self) -> Value {
        match self.next().await {
            Next::Frame(v) => v,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Read until a close; its code. Frames before it are skipped.
    pub async fn close_code(&mut self) -> u16 {
        loop {
            match self.next().await {
                Next::Frame(_) => continue,
                Next::Closed(code) => return code,
                Next::Ended => panic!("connection ended without a close frame"),
            }
        }
    }

    /// The next `n` dispatches (op 0), skipping Heartbeat ACKs.
    pub async fn dispatches(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let f = self.frame().await;
            if f["op"] == 0 {
                out.push(f);
            }
        }
        out
    }

    /// The sequence numbers of the next `n` dispatches, read from each
    /// frame's head (`{"op":0,"s":N,`) without parsing the rest: fast
    /// enough to keep up with large frames in a debug build.
    pub async fn dispatch_seqs(&mut self, n: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let m = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a frame within 10 s");
            let Some(Ok(Message::Text(t))) = m else {
                panic!("expected a text frame, got {m:?}");
            };
            if let Some(rest) = t.as_str().strip_prefix("{\"op\":0,\"s\":") {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                out.push(digits.parse().expect("s is a number"));
            }
        }
        out
    }

    /// Drop the TCP connection without a close handshake.
    pub fn drop_tcp(self) {
        let stream = self.ws.into_inner();
        if let MaybeTlsStream::Plain(s) = stream {
            let _ = socket2_shutdown(s);
        }
    }
}

fn socket2_shutdown(s: TcpStream) -> std::io::Result<()> {
    let std = s.into_std()?;
    std.shutdown(std::net::Shutdown::Both)
}
