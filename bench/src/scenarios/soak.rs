//! soak: the steady state over a long run. Single-event requests at a
//! fixed rate (`--soak-rate`, 1,500 events/s) over 8 connections, two HTTP
//! backends delivering every event to the sink, for `--duration` (10
//! minutes by default, 1 with `--quick`). Prints, per minute, the 202's
//! p50/p99/p99.9/max and the sidecar's RSS, then the whole run's; fails
//! unless each backend delivered exactly what was accepted and the sink got
//! each event once per backend. No ratio: its figures are compared with the
//! references in BENCHMARKS.md (0 lost, RSS flat, p99 about 3 ms).

use std::time::{Duration, Instant};

use super::{errs, http_body, Cx, SinkProc, BIG_SPOOL};
use crate::loadgen::{self, LoadOpts};
use crate::report::{fmt_ms, new_hist, table, thousands, Percentiles};

/// Connections of the reference runs.
const CONNECTIONS: usize = 8;
/// Backends delivering every event.
const BACKENDS: [&str; 2] = ["sink", "sink2"];

pub async fn run(cx: &Cx) -> Result<String, String> {
    let total = cx.secs(600.0, 60.0);
    let rate = cx.args.soak_rate;
    let sink = SinkProc::start(&cx.sink_bin).await?;
    let concurrency = cx.args.http_concurrency;
    let body = format!(
        "{}\n{}",
        http_body(sink.port, concurrency),
        http_body(sink.port, concurrency).replace("[backends.http.sink]", "[backends.http.sink2]")
    );
    let sc = cx.sidecar(BIG_SPOOL, &body).await?;
    sink.client.reset().await?;
    let mb = |kb: u64| kb as f64 / 1024.0;
    let start_rss = sc.rss();
    let mut rows = Vec::new();
    let mut all = new_hist();
    let mut accepted = 0u64;
    let mut errors = 0u64;
    let started = Instant::now();
    let mut minute = 0;
    while started.elapsed() + Duration::from_secs(1) < total {
        minute += 1;
        let chunk = (total - started.elapsed()).min(Duration::from_secs(60));
        let r = loadgen::run(LoadOpts {
            url: sc.url.clone(),
            connections: CONNECTIONS,
            rate,
            duration: Some(chunk),
            batch: 1,
            seed: minute,
            ..LoadOpts::default()
        })
        .await?;
        let rss = sc.rss();
        accepted += r.events;
        errors += r.error_count();
        all.add(&r.latency).map_err(|e| format!("merging latencies: {e}"))?;
        let p = r.percentiles();
        let mut row = vec![minute.to_string(), thousands(r.events_per_s())];
        row.extend(p.cells());
        row.push(format!("{:.1}", mb(rss.rss_kb)));
        println!(
            "  minute {minute}: {} events/s, 202 p99 {} ms, RSS {:.1} MB{}",
            thousands(r.events_per_s()),
            fmt_ms(p.p99_ms),
            mb(rss.rss_kb),
            errs(&r)
        );
        rows.push(row);
    }
    let secs = started.elapsed().as_secs_f64();
    // Everything accepted reaches the sink once per backend.
    let want = accepted * BACKENDS.len() as u64;
    let got = sink.client.wait_for(want, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_sink = sink.client.stats().await?.count;
    let mut delivered = Vec::new();
    for b in BACKENDS {
        delivered.push(sc.backend(b).await["delivered"].as_u64().unwrap_or(0));
    }
    let end_rss = sc.rss();
    sc.stop();
    let p = Percentiles::of(&all);
    let mut row = vec!["all".to_owned(), thousands(accepted as f64 / secs)];
    row.extend(p.cells());
    row.push(format!("{:.1}", mb(end_rss.rss_kb)));
    rows.push(row);
    table(
        &format!(
            "soak: {rate} events/s for {secs:.0} s, single-event requests, {CONNECTIONS} connections, \
             2 HTTP backends delivering"
        ),
        &[
            "minute",
            "events/s",
            "202 p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "RSS MB",
        ],
        &rows,
    );
    println!(
        "  accepted {accepted} (failed requests {errors}); delivered per backend {delivered:?}; at the sink {at_sink} \
         (want {want}); RSS {:.1} MB at start, peak {:.1} MB",
        mb(start_rss.rss_kb),
        mb(end_rss.hwm_kb)
    );
    println!(
        "soak 202 p50 {} p99 {} p99.9 {} max {} ms; rss {:.1}-{:.1} MB; lost {}",
        fmt_ms(p.p50_ms),
        fmt_ms(p.p99_ms),
        fmt_ms(p.p999_ms),
        fmt_ms(p.max_ms),
        mb(start_rss.rss_kb),
        mb(end_rss.hwm_kb),
        want.saturating_sub(at_sink)
    );
    got?;
    if delivered.iter().any(|d| *d != accepted) || at_sink != want {
        return Err(format!(
            "delivered != accepted: accepted {accepted}, delivered per backend {delivered:?}, at the sink {at_sink} of {want}"
        ));
    }
    Ok(String::new())
}
