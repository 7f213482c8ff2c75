//! http: events/s delivered to the local sink (preloaded with the backend
//! paused, then resumed and timed until the sink has them all), over raw
//! reqwest posting the same bodies with the same concurrency.

use std::sync::Arc;
use std::time::Duration;

use super::{best, http_body, pct, preload, rates, us_per_event, wait_queued, Cx, Round, SinkProc, BIG_SPOOL};
use crate::mix::Mix;
use crate::raw;
use crate::report::{ratio, table, thousands};
use crate::scenario;
use crate::sidecar::cpu_secs;

pub async fn run(cx: &Cx) -> Result<String, String> {
    let n = cx
        .args
        .http_events
        .unwrap_or(if cx.args.quick { 60_000 } else { 200_000 });
    let conc = cx.args.http_concurrency;
    let sink = SinkProc::start(&cx.sink_bin).await?;
    let me = std::process::id();
    let bodies: Vec<(String, bytes::Bytes)> = scenario::events(11, Mix::Standard, n as usize)
        .iter()
        .map(|e| (e.id.clone(), bytes::Bytes::from(e.to_json())))
        .collect();
    let (mean, _, _) = scenario::size_stats(&bodies.iter().map(|b| b.1.clone()).collect::<Vec<_>>());
    let bodies = Arc::new(bodies);
    let (mut side, mut raw_r) = (Vec::new(), Vec::new());
    let mut failed = 0u64;
    // Alternate sidecar and raw rounds so both see the same background load.
    for _ in 0..cx.rounds() {
        let mut body = http_body(sink.port, conc);
        if let Some(rate) = cx.args.http_rate_limit {
            body.push_str(&format!("rate_limit_per_s = {rate}\n"));
        }
        let sc = cx.sidecar(BIG_SPOOL, &body).await?;
        sc.pause("sink").await?;
        preload(&sc.url, n, Mix::Standard, cx).await?;
        wait_queued(&sc, "sink", n).await?;
        sink.client.reset().await?;
        let (cpu0, scpu0) = (sc.cpu_secs(), sink.cpu_secs());
        let t0 = crate::unix_ns();
        sc.resume("sink").await?;
        let got = sink.client.wait_for(n, Duration::from_secs(300)).await?;
        let secs = got.last_ns.saturating_sub(t0) as f64 / 1e9;
        let (cpu1, scpu1) = (sc.cpu_secs(), sink.cpu_secs());
        failed += sc.try_backend("sink").await?["failed"].as_u64().unwrap_or(0);
        sc.stop();
        side.push(Round {
            rate: n as f64 / secs,
            secs,
            cpu: cpu1 - cpu0,
            sink_cpu: scpu1 - scpu0,
        });

        sink.client.reset().await?;
        let (cpu0, scpu0) = (cpu_secs(me), sink.cpu_secs());
        let rep = raw::http(&format!("http://127.0.0.1:{}/hook", sink.port), bodies.clone(), conc).await?;
        let got = sink.client.stats().await?;
        let (cpu1, scpu1) = (cpu_secs(me), sink.cpu_secs());
        if rep.failed > 0 || got.count < n {
            return Err(format!(
                "raw reqwest: {} failed, sink got {} of {n}",
                rep.failed, got.count
            ));
        }
        let secs = got.last_ns.saturating_sub(rep.start_ns) as f64 / 1e9;
        raw_r.push(Round {
            rate: rep.ok as f64 / secs,
            secs,
            cpu: cpu1 - cpu0,
            sink_cpu: scpu1 - scpu0,
        });
    }
    let (s, r) = (best(&side), best(&raw_r));
    table(
        &format!(
            "http delivery: {n} events ({mean:.0} B JSON), concurrency {conc}, to the local sink; best of {} rounds",
            side.len()
        ),
        &[
            "run",
            "events/s",
            "secs",
            "rounds (events/s)",
            "cpu",
            "cpu µs/event",
            "sink cpu",
        ],
        &[
            vec![
                "sidecar (resume → last at sink)".into(),
                thousands(s.rate),
                format!("{:.2}", s.secs),
                rates(&side),
                pct(s.cpu, s.secs),
                us_per_event(s.cpu, s.rate, s.secs),
                pct(s.sink_cpu, s.secs),
            ],
            vec![
                "raw reqwest".into(),
                thousands(r.rate),
                format!("{:.2}", r.secs),
                rates(&raw_r),
                pct(r.cpu, r.secs),
                us_per_event(r.cpu, r.rate, r.secs),
                pct(r.sink_cpu, r.secs),
            ],
        ],
    );
    println!("  failed deliveries: {failed}; cpu = the delivering process (sidecar, or this process for raw); target ratio >= 0.8");
    Ok(ratio(s.rate, r.rate))
}
