//! `loadgen`: post a mix of hook calls to a running sidecar and report the
//! achieved rate and the latency of the 202 answers.
//!
//! ```text
//! loadgen --url http://127.0.0.1:8088 --connections 16 --rate 0 --duration 10s --batch 50
//! ```

use clap::Parser;
use event_pusher_bench::loadgen::{print_report, run, LoadOpts};
use event_pusher_bench::mix::Mix;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Post hook calls to event-pusher and measure the 202 answers"
)]
struct Args {
    /// Base URL of the sidecar.
    #[arg(long, default_value = "http://127.0.0.1:8088")]
    url: String,
    /// Keep-alive HTTP/1.1 connections, each with one request in flight.
    #[arg(long, short, default_value_t = 16)]
    connections: usize,
    /// Target events per second over all connections; 0: flat out.
    #[arg(long, short, default_value_t = 0.0)]
    rate: f64,
    /// How long to run (10s, 500ms, 2m).
    #[arg(long, short, default_value = "10s")]
    duration: String,
    /// Stop after this many accepted events instead (with --duration 0: no time limit).
    #[arg(long)]
    events: Option<u64>,
    /// Hook calls per request: 1 posts one object, more a JSON array.
    #[arg(long, short, default_value_t = 1)]
    batch: usize,
    /// `standard` (presence, chat in/out, groupchat) or `chat` (1:1 chat with a body).
    #[arg(long, default_value = "standard")]
    mix: Mix,
    /// Add metadata.sent_at_us to each call, so the sink can measure sent → delivered.
    #[arg(long)]
    stamp: bool,
    #[arg(long, env = "EVENT_PUSHER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let duration = match event_pusher_bench::parse_duration(&a.duration) {
        Ok(d) if d.is_zero() => None,
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let opts = LoadOpts {
        url: a.url,
        connections: a.connections,
        rate: a.rate,
        duration,
        events: a.events,
        batch: a.batch,
        mix: a.mix,
        token: a.token,
        stamp: a.stamp,
        seed: a.seed,
    };
    match run(opts.clone()).await {
        Ok(r) => {
            print_report("loadgen", &opts, &r);
            let p = r.percentiles();
            println!(
                "\nloadgen events_per_s={:.0} requests_per_s={:.0} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} errors={}",
                r.events_per_s(),
                r.requests_per_s(),
                p.p50_ms,
                p.p99_ms,
                p.p999_ms,
                r.error_count()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
