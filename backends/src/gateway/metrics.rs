//! The gateway's counters and their Prometheus text: sessions by client,
//! dispatches, resumes, closes by code, and the high-water mark of any
//! session's outgoing queue.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use event_pusher_core::metrics::label;

/// Counters of one gateway backend.
pub struct GatewayMetrics {
    dispatches: AtomicU64,
    resumes: AtomicU64,
    queue_high_water: AtomicUsize,
    closes: Mutex<BTreeMap<u16, u64>>,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        GatewayMetrics {
            dispatches: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            queue_high_water: AtomicUsize::new(0),
            closes: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn dispatched(&self) {
        self.dispatches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn resumed(&self) {
        self.resumes.fetch_add(1, Ordering::Relaxed);
    }

    /// A session's queue holds `depth` frames now.
    pub fn queued(&self, depth: usize) {
        self.queue_high_water.fetch_max(depth, Ordering::Relaxed);
    }

    pub fn closed(&self, code: u16) {
        let mut closes = self.closes.lock().unwrap_or_else(|p| p.into_inner());
        *closes.entry(code).or_default() += 1;
    }
}

/// Append a gateway backend's series to a Prometheus text page: its
/// counters and, per client, the sessions connected now.
pub fn render<'a>(
    m: &GatewayMetrics,
    backend: &str,
    sessions: impl Iterator<Item = (&'a str, usize)>,
    out: &mut String,
) {
    let backend = label(backend);
    head(
        out,
        "event_pusher_gateway_sessions",
        "gauge",
        "Connected gateway sessions by client.",
    );
    for (client, n) in sessions {
        let _ = writeln!(
            out,
            "event_pusher_gateway_sessions{{backend=\"{backend}\",client=\"{}\"}} {n}",
            label(client)
        );
    }
    head(
        out,
        "event_pusher_gateway_dispatches_total",
        "counter",
        "Dispatches put into session buffers.",
    );
    let _ = writeln!(
        out,
        "event_pusher_gateway_dispatches_total{{backend=\"{backend}\"}} {}",
        m.dispatches.load(Ordering::Relaxed)
    );
    head(
        out,
        "event_pusher_gateway_resumes_total",
        "counter",
        "Sessions resumed.",
    );
    let _ = writeln!(
        out,
        "event_pusher_gateway_resumes_total{{backend=\"{backend}\"}} {}",
        m.resumes.load(Ordering::Relaxed)
    );
    head(
        out,
        "event_pusher_gateway_closes_total",
        "counter",
        "Connections closed by the server, by close code.",
    );
    let closes = m.closes.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for (code, n) in closes {
        let _ = writeln!(
            out,
            "event_pusher_gateway_closes_total{{backend=\"{backend}\",code=\"{code}\"}} {n}"
        );
    }
    head(
        out,
        "event_pusher_gateway_queue_depth_high_water",
        "gauge",
        "The most frames any one session has had waiting to be written.",
    );
    let _ = writeln!(
        out,
        "event_pusher_gateway_queue_depth_high_water{{backend=\"{backend}\"}} {}",
        m.queue_high_water.load(Ordering::Relaxed)
    );
}

/// HELP and TYPE once per page, even with several gateway backends.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    if !out.contains(&format!("# TYPE {name} ")) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
}
