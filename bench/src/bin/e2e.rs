//! `e2e`: the end-to-end benchmarks against the real sidecar binary, each
//! beside its raw baseline measured in the same run. This file parses the
//! arguments and runs the cases in order; each case is a file of its own
//! under `bench/src/scenarios/`.
//!
//! ```text
//! e2e --sidecar target/release/event-pusher [--quick] [--cases ingest,http,rabbit,memory,latency,mixed,lowrate]
//! ```
//!
//! Cases (each prints a table and `ratio <case> <value>`):
//! - ingest: events/s accepted (202, fsync'd) by the sidecar, batched and
//!   single, over raw redb group commit with the same records and
//!   concurrency;
//! - http: events/s delivered to the local sink (preloaded with the backend
//!   paused, then resumed and timed until the sink has them all), over raw
//!   reqwest posting the same bodies with the same concurrency;
//! - rabbit: the same with RabbitMQ and publisher confirms, over raw lapin
//!   with the same confirm window;
//! - memory: peak RSS idle and with 1,000,000 events queued (paused);
//!   the ratio is loaded / idle;
//! - latency: a steady rate with delivery on; percentiles of the 202 and of
//!   accepted → delivered (no ratio);
//! - mixed: single-event ingest flat out with delivery on, over the same
//!   with delivery paused (where ingest and delivery contend);
//! - lowrate: CPU per event (ingest + delivery) at 200 events/s, over the
//!   same requests flat out (the cost of a commit, a read and an ack per
//!   event when nothing batches).
//! - webhooks: attach 10,000 webhook subscriptions (time per attach, RSS)
//!   and the ingest p99 of events none of them wants, with them attached
//!   over with none; the ratio is p99 with / p99 without (target ≤ 1.10).
//! - scaleout: hook calls from RabbitMQ partitions (`[sources.amqp]`):
//!   events/s published → delivered to the sink through 1, 2 and 3
//!   sidecars, and one sidecar's source rate (queue preloaded → acked,
//!   backend paused) over bare lapin consuming the same partitions (the
//!   ratio), with a user's batch per message, and through
//!   `event-pusher publish --batch`;
//! - soak (not in the default list: 10 minutes, `--duration`): a steady
//!   1,500 events/s to two HTTP backends; the 202's percentiles and RSS
//!   per minute; fails unless delivered = accepted.
//! - fanout (only with `--cases fanout`): one event wanted by `--fanout`
//!   webhook subscriptions: its POST, other requests meanwhile, RSS before,
//!   after and once all are detached (no ratio).

use std::time::Instant;

use clap::Parser;
use event_pusher_bench::scenarios::{Args, Cx};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let a = Args::parse();
    if !a.sidecar.exists() {
        eprintln!(
            "error: no sidecar binary at {} (build it: cargo build --release -p event-pusher)",
            a.sidecar.display()
        );
        return std::process::ExitCode::FAILURE;
    }
    let cx = Cx::new(a.clone());
    let _ = std::fs::create_dir_all(&cx.tmp);
    println!(
        "event-pusher e2e benchmarks ({}): {} cores, sidecar {}",
        if a.quick { "quick" } else { "full" },
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        a.sidecar.display()
    );
    let mut summary = Vec::new();
    for case in &a.cases {
        let t = Instant::now();
        let line = match cx.run(case).await {
            Ok(v) if v.is_empty() => None,
            Ok(v) => Some(format!("ratio {case} {v}")),
            Err(e) => {
                println!("\n{case}: not measured: {e}");
                (case != "latency").then(|| format!("ratio {case} n/a ({})", first_line(&e)))
            }
        };
        if let Some(l) = line {
            println!("{l}");
            summary.push(l);
        }
        eprintln!("[{case} took {:.1}s]", t.elapsed().as_secs_f64());
    }
    println!("\n== summary");
    for l in &summary {
        println!("{l}");
    }
    std::process::ExitCode::SUCCESS
}

fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("").trim();
    if l.len() > 160 {
        format!("{}...", &l[..160])
    } else {
        l.to_owned()
    }
}
