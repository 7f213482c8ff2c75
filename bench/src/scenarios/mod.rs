//! The end-to-end benchmark cases of the `e2e` binary, one file each, and
//! what they share: the command line ([`Args`]), the run's context
//! ([`Cx`]: where the sidecar and sink binaries are, where spools go), the
//! sidecar configs they start, the sink process and the table helpers.
//!
//! Every case is `run(&Cx) -> Result<String, String>`: the ratio it prints
//! as `ratio <case> <value>` (empty: no ratio), or why it could not be
//! measured.

pub mod cluster;
pub mod fanout;
pub mod http;
pub mod ingest;
pub mod latency;
pub mod lowrate;
pub mod memory;
pub mod mixed;
pub mod rabbit;
pub mod scaleout;
pub mod soak;
pub mod webhooks;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::loadgen::{self, LoadOpts, LoadReport};
use crate::mix::Mix;
use crate::report::thousands;
use crate::sidecar::{free_port, Sidecar};
use crate::sink::SinkClient;

/// Every case, in the order a full run takes them.
pub const CASES: &str = "ingest,http,rabbit,memory,latency,mixed,lowrate,webhooks,scaleout,cluster";

#[derive(Parser, Clone)]
#[command(
    name = "e2e",
    about = "event-pusher end-to-end benchmarks, each beside its raw baseline"
)]
pub struct Args {
    /// The event-pusher binary (release build).
    #[arg(long, default_value = "target/release/event-pusher")]
    pub sidecar: PathBuf,
    /// The sink binary (default: next to this one).
    #[arg(long)]
    pub sink: Option<PathBuf>,
    /// Shorter runs (for `scripts/bench.sh --quick`).
    #[arg(long)]
    pub quick: bool,
    #[arg(long, value_delimiter = ',', default_value = CASES)]
    pub cases: Vec<String>,
    /// Where temporary spools go (same disk as a real spool would be).
    #[arg(long)]
    pub tmp: Option<PathBuf>,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub rabbit_url: String,
    /// Load generator connections (ingest) = raw spool submitters.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Hook calls per batched request = records per raw spool submission.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Each ingest run (default 5s, quick 3s); the soak case's whole
    /// length (default 10m, quick 1m).
    #[arg(long)]
    pub duration: Option<String>,
    /// Events preloaded for the HTTP case (default 200000, quick 60000).
    #[arg(long)]
    pub http_events: Option<u64>,
    /// HTTP backend concurrency = raw reqwest concurrency.
    #[arg(long, default_value_t = 32)]
    pub http_concurrency: usize,
    /// Give the http case's backend `rate_limit_per_s` (set it above what
    /// the run reaches to measure what a limit costs when not reached).
    #[arg(long)]
    pub http_rate_limit: Option<f64>,
    /// Events preloaded for the RabbitMQ case (default 100000, quick 30000).
    #[arg(long)]
    pub rabbit_events: Option<u64>,
    /// Unconfirmed publishes in flight, sidecar and raw lapin alike.
    #[arg(long, default_value_t = 64)]
    pub rabbit_window: usize,
    /// Events queued for the memory case.
    #[arg(long, default_value_t = 1_000_000)]
    pub memory_events: u64,
    /// Rounds of each delivery measurement (sidecar and raw alike); the
    /// best round counts, which filters out other load on a shared machine
    /// (default 3, quick 2).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Target rate of the latency case, events/s.
    #[arg(long, default_value_t = 2000.0)]
    pub latency_rate: f64,
    /// Webhook subscriptions the webhooks case attaches.
    #[arg(long, default_value_t = 10_000)]
    pub webhooks: usize,
    /// Webhook subscriptions that want the one event of the fanout case
    /// (not in a full run: `--cases fanout`).
    #[arg(long, default_value_t = 5_000)]
    pub fanout: usize,
    /// Target rate of the webhooks case's ingest runs, events/s.
    #[arg(long, default_value_t = 1000.0)]
    pub webhooks_rate: f64,
    /// Hook calls per scale-out run (default 30000, quick 10000).
    #[arg(long)]
    pub scaleout_events: Option<u64>,
    /// Most sidecars of the scale-out case (runs 1..=N).
    #[arg(long, default_value_t = 3)]
    pub scaleout_sidecars: usize,
    /// Hook calls of one user per message in the scale-out case's batched
    /// runs (`event-pusher publish --batch`).
    #[arg(long, default_value_t = 10)]
    pub scaleout_batch: usize,
    /// Target rate of the soak case, events/s (its length is `--duration`:
    /// 10 minutes by default, 1 with `--quick`).
    #[arg(long, default_value_t = 1500.0)]
    pub soak_rate: f64,
}

/// One run's context.
pub struct Cx {
    pub args: Args,
    /// Where temporary spools go.
    pub tmp: PathBuf,
    pub sink_bin: PathBuf,
}

/// Spool limits no benchmark reaches.
pub const BIG_SPOOL: &str = "max_queue = 100000000\nmax_bytes = 100000000000";

impl Cx {
    /// The context of `args`: the sink next to this binary unless given,
    /// temporary spools in the system's temp dir unless given.
    pub fn new(args: Args) -> Cx {
        let sink_bin = args.sink.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("sink")))
                .unwrap_or_else(|| PathBuf::from("sink"))
        });
        let tmp = args.tmp.clone().unwrap_or_else(std::env::temp_dir);
        Cx { args, tmp, sink_bin }
    }

    /// Run one case by name.
    pub async fn run(&self, case: &str) -> Result<String, String> {
        match case {
            "ingest" => ingest::run(self).await,
            "http" => http::run(self).await,
            "rabbit" => rabbit::run(self).await,
            "memory" => memory::run(self).await,
            "latency" => latency::run(self).await,
            "mixed" => mixed::run(self).await,
            "lowrate" => lowrate::run(self).await,
            "webhooks" => webhooks::run(self).await,
            "scaleout" => scaleout::run(self).await,
            "soak" => soak::run(self).await,
            "cluster" => cluster::run(self).await,
            "fanout" => fanout::run(self).await,
            other => Err(format!("unknown case \"{other}\"")),
        }
    }

    /// A sidecar on the bench config with `spool` limits and `body`.
    pub async fn sidecar(&self, spool: &str, body: &str) -> Result<Sidecar, String> {
        crate::sidecar::start(&self.args.sidecar, &self.tmp, spool, body).await
    }

    /// A sidecar whose HTTP backend delivers to the sink on `sink_port`.
    pub async fn delivering_sidecar(&self, sink_port: u16) -> Result<Sidecar, String> {
        self.sidecar(BIG_SPOOL, &http_body(sink_port, self.args.http_concurrency))
            .await
    }

    /// A run's length: `--duration`, else `full` or (`--quick`) `quick`
    /// seconds.
    pub fn secs(&self, full: f64, quick: f64) -> Duration {
        match self.args.duration.as_deref().map(crate::parse_duration) {
            Some(Ok(d)) => d,
            _ => Duration::from_secs_f64(if self.args.quick { quick } else { full }),
        }
    }

    /// Rounds of each alternating measurement.
    pub fn rounds(&self) -> usize {
        self.args.rounds.unwrap_or(if self.args.quick { 2 } else { 3 }).max(1)
    }
}

/// The `[backends.http.sink]` table: deliver to the sink on `sink_port`.
pub fn http_body(sink_port: u16, concurrency: usize) -> String {
    format!(
        "[backends.http.sink]\nurl = \"http://127.0.0.1:{sink_port}/hook\"\nconcurrency = {concurrency}\ntimeout_ms = 10000\n"
    )
}

/// An HTTP backend that points nowhere (to be paused: ingest alone).
pub fn paused_http_body() -> String {
    http_body(free_port(), 32)
}

/// Preload `n` events flat out (batched), with the backend paused.
pub async fn preload(url: &str, n: u64, mix: Mix, cx: &Cx) -> Result<LoadReport, String> {
    let r = loadgen::run(LoadOpts {
        url: url.to_owned(),
        connections: cx.args.connections,
        batch: cx.args.batch,
        duration: None,
        events: Some(n),
        mix,
        seed: 99,
        ..LoadOpts::default()
    })
    .await?;
    if r.events != n {
        return Err(format!(
            "preload accepted {} of {n} events; errors {:?}",
            r.events, r.errors
        ));
    }
    Ok(r)
}

/// Wait until backend `name` has `n` events queued.
pub async fn wait_queued(sc: &Sidecar, name: &str, n: u64) -> Result<(), String> {
    sc.wait_count(name, "queued", n, Duration::from_millis(20), Duration::from_secs(30))
        .await
        .map(|_| ())
}

/// The sink binary as a child process, and a client for its counters.
pub struct SinkProc {
    child: Child,
    pub client: SinkClient,
    pub port: u16,
}

impl SinkProc {
    pub async fn start(bin: &Path) -> Result<SinkProc, String> {
        let port = free_port();
        let child = spawn_listener(bin, port, &[])?;
        let client = SinkClient::new(format!("http://127.0.0.1:{port}"));
        let until = Instant::now() + Duration::from_secs(10);
        while client.stats().await.is_err() {
            if Instant::now() >= until {
                return Err("sink did not come up".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(SinkProc { child, client, port })
    }

    /// The sink's CPU time so far, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        crate::sidecar::cpu_secs(self.child.id())
    }
}

impl Drop for SinkProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start one of the bench's servers (`sink`, `rawingest`) on
/// 127.0.0.1:`port`, quiet.
fn spawn_listener(bin: &Path, port: u16, args: &[&std::ffi::OsStr]) -> Result<Child, String> {
    Command::new(bin)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))
}

/// A running `rawingest` process (bare hyper + group commit, the raw HTTP
/// ingest baseline), next to this binary.
pub struct RawIngestProc {
    child: Child,
    pub url: String,
}

impl RawIngestProc {
    pub async fn start(tmp: &Path) -> Result<RawIngestProc, String> {
        let bin = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("rawingest")))
            .unwrap_or_else(|| PathBuf::from("rawingest"));
        let port = free_port();
        let child = spawn_listener(&bin, port, &["--dir".as_ref(), tmp.as_os_str()])?;
        let until = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() >= until {
                return Err("rawingest did not come up".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(RawIngestProc {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Its CPU time so far, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        crate::sidecar::cpu_secs(self.child.id())
    }
}

impl Drop for RawIngestProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One measured round of a delivery case.
#[derive(Clone, Copy)]
pub struct Round {
    pub rate: f64,
    pub secs: f64,
    /// CPU of the process doing the delivering (sidecar or raw client), and of the sink.
    pub cpu: f64,
    pub sink_cpu: f64,
}

/// The round with the best rate.
pub fn best(rounds: &[Round]) -> Round {
    *rounds
        .iter()
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
        .expect("at least one round")
}

/// Every round's rate, for the tables.
pub fn rates(rounds: &[Round]) -> String {
    rounds.iter().map(|r| thousands(r.rate)).collect::<Vec<_>>().join(" / ")
}

pub fn pct(cpu: f64, secs: f64) -> String {
    format!("{:.0}%", 100.0 * cpu / secs.max(1e-9))
}

pub fn us_per_event(cpu: f64, rate: f64, secs: f64) -> String {
    format!("{:.0}", 1e6 * cpu / (rate * secs).max(1e-9))
}

pub fn lat_cells(r: &LoadReport) -> Vec<String> {
    r.percentiles().cells().to_vec()
}

/// `, errors {...}` when the load generator saw any.
pub fn errs(r: &LoadReport) -> String {
    if r.errors.is_empty() {
        String::new()
    } else {
        format!(", errors {:?}", r.errors)
    }
}
