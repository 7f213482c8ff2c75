//! `rawspool`: the raw redb group-commit baseline on its own, with the
//! process's peak RSS, for comparing redb settings (cache size) with the
//! sidecar's spool.
//!
//! ```text
//! rawspool --submitters 16 --batch 50 --duration 10s
//! rawspool --events 1000000 --cache-mb 32     # RSS with a bounded cache
//! ```

use std::sync::Arc;

use clap::Parser;
use event_pusher_bench::mix::Mix;
use event_pusher_bench::raw::{spool_with, SpoolLimit};
use event_pusher_bench::report::{thousands, Percentiles};
use event_pusher_bench::scenario;
use event_pusher_bench::sidecar::rss_of;

#[derive(Parser)]
#[command(name = "rawspool", about = "Raw redb group-commit write rate and RSS")]
struct Args {
    #[arg(long, default_value_t = 16)]
    submitters: usize,
    #[arg(long, default_value_t = 50)]
    batch: usize,
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Stop after this many records instead of after --duration.
    #[arg(long)]
    events: Option<u64>,
    /// redb cache size in MiB (default: redb's default, as the sidecar).
    #[arg(long)]
    cache_mb: Option<usize>,
    /// Directory for the database (default: the temp dir).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let records = Arc::new(scenario::records(&scenario::events(7, Mix::Standard, 20_000)));
    let limit = match (a.events, event_pusher_bench::parse_duration(&a.duration)) {
        (Some(n), _) => SpoolLimit::Events(n),
        (None, Ok(d)) => SpoolLimit::Time(d),
        (None, Err(e)) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let base = a.dir.unwrap_or_else(std::env::temp_dir);
    let dir = match tempfile::tempdir_in(&base) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let idle = rss_of(std::process::id());
    match spool_with(dir.path(), records, a.submitters, a.batch, limit, a.cache_mb) {
        Ok(r) => {
            let rss = rss_of(std::process::id());
            let p = Percentiles::of(&r.latency);
            println!(
                "rawspool submitters={} batch={} cache={} events={} secs={:.2} events_per_s={} commits={} p50_ms={} p99_ms={} hwm_mb={:.1} (idle {:.1})",
                a.submitters,
                a.batch,
                a.cache_mb.map(|m| format!("{m}MiB")).unwrap_or_else(|| "default".into()),
                r.events,
                r.elapsed.as_secs_f64(),
                thousands(r.events_per_s()),
                r.commits,
                p.p50_ms,
                p.p99_ms,
                rss.hwm_kb as f64 / 1024.0,
                idle.hwm_kb as f64 / 1024.0
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
