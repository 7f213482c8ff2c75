//! The local sink: an HTTP/1.1 receiver that answers 200 at once, counts
//! what it gets, and measures how long each event took to arrive.
//!
//! Latency comes from the event itself: accepted → delivered from the
//! event's ULID `id` (its first 48 bits are the acceptance time in ms), and,
//! when the load generator stamped the call, sent → delivered from
//! `metadata.sent_at_us` (µs).
//!
//! `GET /stats` answers the counters as JSON; `POST /reset` zeroes them.
//! Every other request counts as one delivered event.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::mix::STAMP_KEY;
use crate::report::{new_hist, record, Percentiles};

pub struct SinkState {
    count: AtomicU64,
    bytes: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    /// (accepted → delivered, sent → delivered), µs.
    hist: Mutex<(Histogram<u64>, Histogram<u64>)>,
}

impl Default for SinkState {
    fn default() -> Self {
        SinkState {
            count: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
            hist: Mutex::new((new_hist(), new_hist())),
        }
    }
}

/// `GET /stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SinkStats {
    pub count: u64,
    pub bytes: u64,
    /// Unix ns of the first and last event received (0 when none).
    pub first_ns: u64,
    pub last_ns: u64,
    /// Events per second between the first and the last one.
    pub rate: f64,
    /// Accepted (ULID time) → delivered.
    pub accepted_to_delivered: Percentiles,
    /// Sent by the load generator (`metadata.sent_at_us`) → delivered.
    pub sent_to_delivered: Percentiles,
}

impl SinkState {
    pub fn stats(&self) -> SinkStats {
        let count = self.count.load(Ordering::Relaxed);
        let first = self.first_ns.load(Ordering::Relaxed);
        let last = self.last_ns.load(Ordering::Relaxed);
        let first = if first == u64::MAX { 0 } else { first };
        let span = last.saturating_sub(first) as f64 / 1e9;
        let h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        SinkStats {
            count,
            bytes: self.bytes.load(Ordering::Relaxed),
            first_ns: first,
            last_ns: last,
            rate: if span > 0.0 {
                count.saturating_sub(1) as f64 / span
            } else {
                0.0
            },
            accepted_to_delivered: Percentiles::of(&h.0),
            sent_to_delivered: Percentiles::of(&h.1),
        }
    }

    pub fn reset(&self) {
        let mut h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        h.0.reset();
        h.1.reset();
        self.count.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.first_ns.store(u64::MAX, Ordering::Relaxed);
        self.last_ns.store(0, Ordering::Relaxed);
    }

    fn event(&self, body: &[u8]) {
        let now = crate::unix_ns();
        self.first_ns.fetch_min(now, Ordering::Relaxed);
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        let accepted_ms = ulid_ms(body);
        let sent_us = stamp_us(body);
        if accepted_ms.is_some() || sent_us.is_some() {
            let now_us = now / 1000;
            let mut h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(ms) = accepted_ms {
                record(&mut h.0, now_us.saturating_sub(ms * 1000));
            }
            if let Some(us) = sent_us {
                record(&mut h.1, now_us.saturating_sub(us));
            }
        }
        // Counted last, so a reader that sees the count sees the timestamps.
        self.count.fetch_add(1, Ordering::Release);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The acceptance time (ms) in the ULID of the event's `"id"`.
fn ulid_ms(body: &[u8]) -> Option<u64> {
    let at = find(body, b"\"id\":\"")? + 6;
    let s = std::str::from_utf8(body.get(at..at + 26)?).ok()?;
    ulid::Ulid::from_string(s).ok().map(|u| u.timestamp_ms())
}

/// `"sent_at_us":"<16 digits>"` anywhere in the body.
fn stamp_us(body: &[u8]) -> Option<u64> {
    let key = format!("\"{STAMP_KEY}\":\"");
    let at = find(body, key.as_bytes())? + key.len();
    std::str::from_utf8(body.get(at..at + 16)?).ok()?.parse().ok()
}

async fn handle(state: Arc<SinkState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let resp = match (parts.method, parts.uri.path()) {
        (Method::GET, "/stats") => {
            let json = serde_json::to_vec(&state.stats()).unwrap_or_default();
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(json)))
        }
        (Method::POST, "/reset") => {
            state.reset();
            Response::builder().body(Full::new(Bytes::new()))
        }
        _ => {
            state.event(&body);
            Response::builder().status(StatusCode::OK).body(Full::new(Bytes::new()))
        }
    };
    Ok(resp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// Serve until the process ends.
pub async fn serve(listener: TcpListener, state: Arc<SinkState>) {
    serve_http1(listener, move |req| handle(state.clone(), req)).await
}

/// Accept keep-alive HTTP/1.1 connections on `listener` until the process
/// ends, answering each request with `handler` (the sink's and the raw
/// ingest baseline's one serving loop).
pub async fn serve_http1<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(handler))
                .await;
        });
    }
}

/// Talks to a sink process.
#[derive(Clone)]
pub struct SinkClient {
    pub url: String,
    client: reqwest::Client,
}

impl SinkClient {
    pub fn new(url: impl Into<String>) -> Self {
        SinkClient {
            url: url.into(),
            client: reqwest::Client::new(),
        }
    }

    pub async fn stats(&self) -> Result<SinkStats, String> {
        let r = self
            .client
            .get(format!("{}/stats", self.url))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let b = r.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&b).map_err(|e| e.to_string())
    }

    pub async fn reset(&self) -> Result<(), String> {
        self.client
            .post(format!("{}/reset", self.url))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Poll until `n` events have arrived or `timeout` passes.
    pub async fn wait_for(&self, n: u64, timeout: std::time::Duration) -> Result<SinkStats, String> {
        let until = std::time::Instant::now() + timeout;
        loop {
            let s = self.stats().await?;
            if s.count >= n {
                return Ok(s);
            }
            if std::time::Instant::now() >= until {
                return Err(format!("sink got {} of {n} events within {timeout:?}", s.count));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ulid_and_stamp() {
        let id = ulid::Ulid::generate();
        let body = format!(r#"{{"id":"{id}","event":"chat","metadata":{{"sent_at_us":"0000000000001234"}}}}"#);
        assert_eq!(ulid_ms(body.as_bytes()), Some(id.timestamp_ms()));
        assert_eq!(stamp_us(body.as_bytes()), Some(1234));
        assert_eq!(stamp_us(b"{}"), None);
    }
}
