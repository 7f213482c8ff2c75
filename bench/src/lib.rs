//! Load tool, local sink and benchmarks for event-pusher.
//!
//! - [`mix`]: the workload, a deterministic mix of hook calls (presence,
//!   chat in/out, groupchat);
//! - [`scenario`]: the filters and backends every benchmark uses, and the
//!   exact records / wire messages the sidecar would produce for a mix;
//! - [`loadgen`]: posts hook calls to a running sidecar (binary `loadgen`);
//! - [`sink`]: a fast HTTP receiver that counts and measures latency
//!   (binary `sink`);
//! - [`raw`]: the raw baselines: redb group commit, reqwest, lapin;
//! - [`raw_ingest`]: the raw HTTP ingest baseline, bare hyper + the same
//!   group commit (binary `rawingest`);
//! - [`sidecar`]: starting the real `event-pusher` binary on the bench
//!   config (the driver itself is `event_pusher_testkit::Sidecar`);
//! - [`report`]: tables and percentiles;
//! - [`scaleout`]: the scale-out case's topology, publisher and counters.
//! - [`gateway`]: WebSocket sessions and the raw gateway server (binary
//!   `gateway`);
//! - [`scenarios`]: the cases of the binary `e2e`, one file each.
//!
//! `scripts/bench.sh` runs the whole set (binary `e2e` plus the criterion
//! bench `chain`); see BENCHMARKS.md.

pub mod gateway;
pub mod loadgen;
pub mod mix;
pub mod raw;
pub mod raw_ingest;
pub mod report;
pub mod scaleout;
pub mod scenario;
pub mod scenarios;
pub mod sidecar;
pub mod sink;

/// Nanoseconds since the Unix epoch (wall clock, comparable across the
/// processes of one machine).
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Parse `10s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid duration \"{s}\""))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration unit in \"{s}\" (use ms, s or m)")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}
