//! The load generator: posts hook calls to `POST /v1/events` over N
//! keep-alive HTTP/1.1 connections, flat out or at a target rate, one call
//! or a JSON array of calls per request, and measures the `202` answers.
//!
//! At a target rate each connection sends on a fixed schedule and latency is
//! measured from the *intended* send time, so a stalled server shows up in
//! the percentiles instead of silently lowering the rate (no coordinated
//! omission).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::mix::{fill_stamp, Mix, MixGen};
use crate::report::{new_hist, record, Percentiles};

#[derive(Debug, Clone)]
pub struct LoadOpts {
    /// Base URL of the sidecar, e.g. `http://127.0.0.1:8088`.
    pub url: String,
    pub connections: usize,
    /// Target events per second over all connections; 0: flat out.
    pub rate: f64,
    /// Stop after this long (measured from the first request).
    pub duration: Option<Duration>,
    /// Stop after this many events have been accepted.
    pub events: Option<u64>,
    /// Hook calls per request: 1 sends one object, more a JSON array.
    pub batch: usize,
    pub mix: Mix,
    pub token: Option<String>,
    /// Add `metadata.sent_at_us` (send time) to every call, for the sink.
    pub stamp: bool,
    pub seed: u64,
}

impl Default for LoadOpts {
    fn default() -> Self {
        LoadOpts {
            url: "http://127.0.0.1:8088".into(),
            connections: 16,
            rate: 0.0,
            duration: Some(Duration::from_secs(10)),
            events: None,
            batch: 1,
            mix: Mix::Standard,
            token: None,
            stamp: false,
            seed: 1,
        }
    }
}

/// What a run achieved.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub elapsed: Duration,
    /// Requests answered 202.
    pub requests: u64,
    /// Events in requests answered 202.
    pub events: u64,
    /// Failed requests by status (or "io").
    pub errors: BTreeMap<String, u64>,
    /// Latency of the 202 answers, in microseconds.
    pub latency: Histogram<u64>,
}

impl LoadReport {
    pub fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.latency)
    }
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

struct Shared {
    host: String,
    addr: String,
    path: String,
    auth: Option<String>,
    /// Events handed out to connections (limit mode).
    reserved: AtomicU64,
    stop: AtomicBool,
}

struct ConnResult {
    requests: u64,
    events: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    last_done: Option<Instant>,
}

/// Split `http://host:port[/...]` into (`host:port`, base path).
fn parse_url(url: &str) -> Result<(String, String), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid URL \"{url}\": {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("URL \"{url}\" must be http://"));
    }
    let auth = uri.authority().ok_or_else(|| format!("URL \"{url}\" has no host"))?;
    let hostport = if auth.port().is_some() {
        auth.to_string()
    } else {
        format!("{}:80", auth.host())
    };
    Ok((hostport, uri.path().trim_end_matches('/').to_owned()))
}

/// Run the load and report.
pub async fn run(opts: LoadOpts) -> Result<LoadReport, String> {
    if opts.connections == 0 || opts.batch == 0 {
        return Err("connections and batch must be at least 1".into());
    }
    if opts.duration.is_none() && opts.events.is_none() {
        return Err("give a duration, an event count, or both".into());
    }
    let (addr, base) = parse_url(&opts.url)?;
    let shared = Arc::new(Shared {
        host: addr.clone(),
        addr,
        path: format!("{base}/v1/events"),
        auth: opts.token.as_ref().map(|t| format!("Bearer {t}")),
        reserved: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    // Pre-built request bodies: building JSON while sending would make the
    // load generator, not the sidecar, the bottleneck.
    let per_conn = if opts.batch == 1 {
        512
    } else {
        (4096 / opts.batch).clamp(16, 256)
    };
    let mut conns = Vec::with_capacity(opts.connections);
    for c in 0..opts.connections {
        let mut gen = MixGen::new(opts.seed.wrapping_mul(1000).wrapping_add(c as u64), opts.mix).stamped(opts.stamp);
        let bodies: Vec<Bytes> = (0..per_conn).map(|_| gen.next_body(opts.batch)).collect();
        // Connect up front so the timed part starts with warm connections.
        let stream = TcpStream::connect(&shared.addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", shared.addr))?;
        let _ = stream.set_nodelay(true);
        conns.push((c, gen, bodies, stream));
    }
    let start = Instant::now();
    let deadline = opts.duration.map(|d| start + d);
    let interval = if opts.rate > 0.0 {
        Some(Duration::from_secs_f64(
            opts.batch as f64 * opts.connections as f64 / opts.rate,
        ))
    } else {
        None
    };
    let mut tasks = Vec::new();
    for (c, gen, bodies, stream) in conns {
        let shared = shared.clone();
        let opts = opts.clone();
        let first = interval.map(|i| start + i.mul_f64(c as f64 / opts.connections as f64));
        tasks.push(tokio::spawn(async move {
            connection(shared, opts, gen, bodies, stream, first, interval, deadline).await
        }));
    }
    let mut report = LoadReport {
        elapsed: Duration::ZERO,
        requests: 0,
        events: 0,
        errors: BTreeMap::new(),
        latency: new_hist(),
    };
    let mut last_done = start;
    for t in tasks {
        let r = t.await.map_err(|e| format!("connection task failed: {e}"))?;
        report.requests += r.requests;
        report.events += r.events;
        for (k, v) in r.errors {
            *report.errors.entry(k).or_default() += v;
        }
        let _ = report.latency.add(&r.latency);
        if let Some(t) = r.last_done {
            last_done = last_done.max(t);
        }
    }
    report.elapsed = match deadline {
        // Flat out for a duration: the window is the duration (requests
        // finishing just after it are counted, as wrk does).
        Some(d) if opts.events.is_none() => d.max(last_done) - start,
        _ => last_done - start,
    };
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    shared: Arc<Shared>,
    opts: LoadOpts,
    mut gen: MixGen,
    bodies: Vec<Bytes>,
    first_stream: TcpStream,
    first_send: Option<Instant>,
    interval: Option<Duration>,
    deadline: Option<Instant>,
) -> ConnResult {
    let mut out = ConnResult {
        requests: 0,
        events: 0,
        errors: BTreeMap::new(),
        latency: new_hist(),
        last_done: None,
    };
    let mut stream = Some(first_stream);
    let mut next_send = first_send;
    let mut i = 0usize;
    'outer: loop {
        let s = match stream.take() {
            Some(s) => s,
            None => match TcpStream::connect(&shared.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s
                }
                Err(_) => {
                    *out.errors.entry("connect".into()).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if past(deadline) || shared.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    continue;
                }
            },
        };
        let (mut sender, conn) = match http1::handshake::<_, Full<Bytes>>(TokioIo::new(s)).await {
            Ok(x) => x,
            Err(_) => {
                *out.errors.entry("handshake".into()).or_default() += 1;
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                break 'outer;
            }
            // How many events this request carries.
            let n = match opts.events {
                Some(limit) => {
                    let prev = shared.reserved.fetch_add(opts.batch as u64, Ordering::Relaxed);
                    if prev >= limit {
                        break 'outer;
                    }
                    (limit - prev).min(opts.batch as u64) as usize
                }
                None => opts.batch,
            };
            let mut body = if n == opts.batch {
                bodies[i % bodies.len()].clone()
            } else {
                gen.next_body(n)
            };
            i += 1;
            let intended = match (next_send.as_mut(), interval) {
                (Some(at), Some(iv)) => {
                    let t = *at;
                    *at += iv;
                    tokio::time::sleep_until(t.into()).await;
                    t
                }
                _ => Instant::now(),
            };
            if past(deadline) {
                break 'outer;
            }
            // Retries (limit mode only) keep the preload count exact when
            // the sidecar pushes back with 503.
            let mut attempts = 0;
            loop {
                attempts += 1;
                if opts.stamp {
                    body = fill_stamp(&body, crate::unix_ns() / 1000);
                }
                if sender.ready().await.is_err() {
                    *out.errors.entry("io".into()).or_default() += 1;
                    unreserve(&shared, &opts, n);
                    continue 'outer;
                }
                let mut req = Request::post(&shared.path)
                    .header(hyper::header::HOST, &shared.host)
                    .header(hyper::header::CONTENT_TYPE, "application/json");
                if let Some(a) = &shared.auth {
                    req = req.header(hyper::header::AUTHORIZATION, a);
                }
                let req = match req.body(Full::new(body.clone())) {
                    Ok(r) => r,
                    Err(_) => break 'outer,
                };
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let _ = resp.into_body().collect().await;
                        let done = Instant::now();
                        if status == StatusCode::ACCEPTED {
                            out.requests += 1;
                            out.events += n as u64;
                            record(&mut out.latency, (done - intended).as_micros() as u64);
                            out.last_done = Some(done);
                            break;
                        }
                        *out.errors.entry(status.as_u16().to_string()).or_default() += 1;
                        if opts.events.is_none() || attempts >= 50 || status != StatusCode::SERVICE_UNAVAILABLE {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(_) => {
                        *out.errors.entry("io".into()).or_default() += 1;
                        unreserve(&shared, &opts, n);
                        continue 'outer;
                    }
                }
            }
        }
    }
    out
}

/// Give back a reservation whose request failed in transit (limit mode), so
/// another attempt sends those events.
fn unreserve(shared: &Shared, opts: &LoadOpts, n: usize) {
    if opts.events.is_some() {
        shared.reserved.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// Print a human summary of a run.
pub fn print_report(title: &str, opts: &LoadOpts, r: &LoadReport) {
    let p = r.percentiles();
    let mode = if opts.rate > 0.0 {
        format!("rate {} ev/s", opts.rate)
    } else {
        "flat out".into()
    };
    crate::report::table(
        title,
        &[
            "connections",
            "batch",
            "mode",
            "secs",
            "events/s",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
        ],
        &[vec![
            opts.connections.to_string(),
            opts.batch.to_string(),
            mode,
            format!("{:.2}", r.elapsed.as_secs_f64()),
            crate::report::thousands(r.events_per_s()),
            crate::report::thousands(r.requests_per_s()),
            crate::report::fmt_ms(p.p50_ms),
            crate::report::fmt_ms(p.p99_ms),
            crate::report::fmt_ms(p.p999_ms),
            crate::report::fmt_ms(p.max_ms),
            if r.errors.is_empty() {
                "0".into()
            } else {
                format!("{:?}", r.errors)
            },
        ]],
    );
}
