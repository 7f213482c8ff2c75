//! `sink`: a fast local HTTP receiver for the sidecar's HTTP backend. It
//! answers 200 at once, counts, and measures accepted → delivered latency
//! from each event's ULID id (and sent → delivered from
//! `metadata.sent_at_us` when the load generator stamped it).
//!
//! `GET /stats` gives the counters as JSON, `POST /reset` zeroes them; with
//! `--report 1s` it also prints a line per interval.

use std::sync::Arc;

use clap::Parser;
use event_pusher_bench::sink::{serve, SinkState};

#[derive(Parser)]
#[command(name = "sink", about = "Count and time events delivered over HTTP")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    /// Print counts and latency every interval (e.g. 1s); off by default.
    #[arg(long)]
    report: Option<String>,
    /// Worker threads (default: tokio's, one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = a.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = match rt.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&a.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", a.listen);
                return std::process::ExitCode::FAILURE;
            }
        };
        eprintln!("sink listening on {}", a.listen);
        let state = Arc::new(SinkState::default());
        if let Some(every) = a.report.as_deref().map(event_pusher_bench::parse_duration) {
            let every = match every {
                Ok(d) if !d.is_zero() => d,
                _ => {
                    eprintln!("error: invalid --report interval");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let st = state.clone();
            tokio::spawn(async move {
                let mut last = 0;
                loop {
                    tokio::time::sleep(every).await;
                    let s = st.stats();
                    let a2d = s.accepted_to_delivered;
                    println!(
                        "sink count={} (+{}/{:?}) accepted->delivered p50={}ms p99={}ms p99.9={}ms",
                        s.count,
                        s.count.saturating_sub(last),
                        every,
                        a2d.p50_ms,
                        a2d.p99_ms,
                        a2d.p999_ms
                    );
                    last = s.count;
                }
            });
        }
        serve(listener, state).await;
        std::process::ExitCode::SUCCESS
    })
}
