//! Gateway benchmark parts: WebSocket sessions that count event dispatches
//! and note when each arrived, and the raw baseline, a bare
//! tokio-tungstenite server writing the same frames to the same clients.
//! Sessions may ask for `compress=`; they then inflate every frame with one
//! context each, and count the bytes that came over the wire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use event_pusher_gateway_protocol::compress::{Compression, Decoder};
use event_pusher_testkit::RawGateway;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What every dispatch of an event record holds, right before its id.
const ID_MARK: &str = "\"d\":{\"id\":\"";

/// Each event dispatch read: its event id and when (Unix ns).
pub type Arrivals = Arc<Mutex<Vec<(String, u64)>>>;

/// The raw server's connections: each one gets the frame tails to write.
type RawConns = Arc<Mutex<Vec<mpsc::Sender<Arc<Vec<String>>>>>>;

/// Connected sessions: how many event dispatches all of them have read,
/// and (when asked) each arrival's event id and time.
pub struct Sessions {
    pub received: Arc<AtomicU64>,
    /// WebSocket bytes of the server's data frames read (header included).
    pub wire_bytes: Arc<AtomicU64>,
    pub arrivals: Option<Arrivals>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sessions {
    pub fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Connect `n` sessions to `url`, each identifying with `token` and every
/// intent, and wait until all have their READY.
pub async fn connect(url: &str, token: &str, n: usize, note_arrivals: bool) -> Result<Sessions, String> {
    connect_with(url, token, n, note_arrivals, None).await
}

/// [`connect`] asking for `compression`.
pub async fn connect_with(
    url: &str,
    token: &str,
    n: usize,
    note_arrivals: bool,
    compression: Option<Compression>,
) -> Result<Sessions, String> {
    let url = match compression {
        Some(c) => format!("{url}?compress={}", c.as_str()),
        None => url.to_owned(),
    };
    let url = url.as_str();
    let received = Arc::new(AtomicU64::new(0));
    let wire_bytes = Arc::new(AtomicU64::new(0));
    let arrivals = note_arrivals.then(|| Arc::new(Mutex::new(Vec::new())));
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), String>>(n.max(1));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (url, token) = (url.to_owned(), token.to_owned());
        let (received, arrivals, ready) = (received.clone(), arrivals.clone(), ready_tx.clone());
        let wire_bytes = wire_bytes.clone();
        tasks.push(tokio::spawn(async move {
            // The handshake is the shared raw client's (testkit) when
            // plain; the counting below is this benchmark's own.
            let mut decoder = match compression.map(Decoder::new).transpose() {
                Ok(d) => d,
                Err(e) => {
                    let _ = ready.send(Err(e.to_string())).await;
                    return;
                }
            };
            let handshake = async {
                let mut gw = RawGateway::open(&url).await?;
                match decoder.as_mut() {
                    None => {
                        gw.identify_until_ready(&token, 63).await?;
                    }
                    Some(d) => identify_compressed(&mut gw, d, &token).await?,
                }
                Ok::<_, String>(gw)
            };
            let gw = match handshake.await {
                Ok(gw) => gw,
                Err(e) => {
                    let _ = ready.send(Err(e)).await;
                    return;
                }
            };
            let _ = ready.send(Ok(())).await;
            let (_sink, mut stream) = gw.into_inner().split();
            while let Some(Ok(m)) = stream.next().await {
                let inflated;
                let t = match &m {
                    Message::Text(t) => {
                        wire_bytes.fetch_add(frame_bytes(t.len()), Ordering::Relaxed);
                        t.as_str()
                    }
                    Message::Binary(b) => {
                        wire_bytes.fetch_add(frame_bytes(b.len()), Ordering::Relaxed);
                        let Some(Ok(text)) = decoder.as_mut().map(|d| d.message(b)) else {
                            return;
                        };
                        inflated = String::from_utf8(text).unwrap_or_default();
                        inflated.as_str()
                    }
                    _ => continue,
                };
                let Some(at) = t.find(ID_MARK) else { continue };
                received.fetch_add(1, Ordering::Relaxed);
                if let Some(arrivals) = &arrivals {
                    let id = t[at + ID_MARK.len()..].chars().take(26).collect();
                    let now = crate::unix_ns();
                    arrivals.lock().unwrap_or_else(|p| p.into_inner()).push((id, now));
                }
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..n {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => return Err("a session ended before READY".into()),
        }
    }
    Ok(Sessions {
        received,
        wire_bytes,
        arrivals,
        tasks,
    })
}

/// A server data frame's bytes on the wire: the payload and the header
/// (2, 4 or 10 bytes by length; server frames are not masked).
fn frame_bytes(payload: usize) -> u64 {
    let header = match payload {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    };
    (payload + header) as u64
}

/// Identify on a compressed connection: Hello and READY arrive as
/// binary frames of the connection's stream.
async fn identify_compressed(gw: &mut RawGateway, decoder: &mut Decoder, token: &str) -> Result<(), String> {
    gw.send_text(format!("{{\"op\":2,\"d\":{{\"token\":\"{token}\",\"intents\":63}}}}"))
        .await;
    loop {
        match gw.next_message().await {
            Some(Message::Binary(b)) => {
                let text = decoder.message(&b).map_err(|e| e.to_string())?;
                if String::from_utf8_lossy(&text).contains("\"t\":\"READY\"") {
                    return Ok(());
                }
            }
            Some(_) => continue,
            None => return Err("the connection ended before READY".into()),
        }
    }
}

/// The raw baseline: accepts gateway clients (answers Identify with READY)
/// and writes the dispatches of `records` to every one of them, each
/// encoded once and spliced with the session's `s`, like the sidecar.
pub struct RawServer {
    pub port: u16,
    conns: RawConns,
    runtime: Option<tokio::runtime::Runtime>,
}

impl RawServer {
    /// Listen on a free port, on a runtime of its own (two workers, as the
    /// sidecar has on this machine).
    pub fn start() -> Result<RawServer, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        // Bound here (std), adopted on the server's runtime: this may be
        // called from inside another runtime, where `block_on` panics.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        std_listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let port = std_listener.local_addr().map_err(|e| e.to_string())?.port();
        let conns: RawConns = Arc::default();
        let registry = conns.clone();
        runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(std_listener) else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                let registry = registry.clone();
                tokio::spawn(async move {
                    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    let (mut sink, mut stream) = ws.split();
                    let _identify = stream.next().await;
                    // Registered before READY goes out: a client that has
                    // its READY is in the next broadcast.
                    let (tx, mut rx) = mpsc::channel::<Arc<Vec<String>>>(1);
                    registry.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
                    let ready =
                        "{\"op\":0,\"s\":1,\"t\":\"READY\",\"d\":{\"session_id\":\"raw\",\"resume_gateway_url\":\"\"}}";
                    if sink.send(Message::text(ready)).await.is_err() {
                        return;
                    }
                    tokio::spawn(async move { while stream.next().await.is_some() {} });
                    // As fast as the socket takes them: frames fed, one
                    // flush per 64, like the sidecar's writer.
                    while let Some(tails) = rx.recv().await {
                        for (i, tail) in tails.iter().enumerate() {
                            let mut frame = String::with_capacity(tail.len() + 24);
                            frame.push_str("{\"op\":0,\"s\":");
                            frame.push_str(&(i + 2).to_string());
                            frame.push_str(tail);
                            if sink.feed(Message::text(frame)).await.is_err() {
                                return;
                            }
                            if i % 64 == 63 && sink.flush().await.is_err() {
                                return;
                            }
                        }
                        if sink.flush().await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(RawServer {
            port,
            conns,
            runtime: Some(runtime),
        })
    }

    /// Write every record to every connected client (as MESSAGE_CREATE):
    /// each encoded once, handed to every connection's writer at once.
    pub fn broadcast(&self, records: &[Bytes]) {
        let tails: Arc<Vec<String>> = Arc::new(
            records
                .iter()
                .map(|r| format!(",\"t\":\"MESSAGE_CREATE\",\"d\":{}}}", String::from_utf8_lossy(r)))
                .collect(),
        );
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for conn in conns {
            let _ = conn.try_send(tails.clone());
        }
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
