//! `e2e`: the end-to-end benchmarks against the real sidecar binary, each
//! beside its raw baseline measured in the same run.
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
//!   backend paused) over its own batched `POST /v1/events` rate; the
//!   ratio is source / HTTP ingest.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use event_pusher_bench::loadgen::{self, LoadOpts, LoadReport};
use event_pusher_bench::mix::Mix;
use event_pusher_bench::raw;
use event_pusher_bench::report::{fmt_ms, ratio, table, thousands};
use event_pusher_bench::scenario;
use event_pusher_bench::sidecar::{check_config, cpu_secs, free_port, Sidecar};
use event_pusher_bench::sink::SinkClient;
use futures::StreamExt;

#[derive(Parser, Clone)]
#[command(
    name = "e2e",
    about = "event-pusher end-to-end benchmarks, each beside its raw baseline"
)]
struct Args {
    /// The event-pusher binary (release build).
    #[arg(long, default_value = "target/release/event-pusher")]
    sidecar: PathBuf,
    /// The sink binary (default: next to this one).
    #[arg(long)]
    sink: Option<PathBuf>,
    /// Shorter runs (for `scripts/bench.sh --quick`).
    #[arg(long)]
    quick: bool,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ingest,http,rabbit,memory,latency,mixed,lowrate,webhooks,scaleout"
    )]
    cases: Vec<String>,
    /// Where temporary spools go (same disk as a real spool would be).
    #[arg(long)]
    tmp: Option<PathBuf>,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    rabbit_url: String,
    /// Load generator connections (ingest) = raw spool submitters.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Hook calls per batched request = records per raw spool submission.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Each ingest run (default 5s, quick 3s).
    #[arg(long)]
    duration: Option<String>,
    /// Events preloaded for the HTTP case (default 200000, quick 60000).
    #[arg(long)]
    http_events: Option<u64>,
    /// HTTP backend concurrency = raw reqwest concurrency.
    #[arg(long, default_value_t = 32)]
    http_concurrency: usize,
    /// Events preloaded for the RabbitMQ case (default 100000, quick 30000).
    #[arg(long)]
    rabbit_events: Option<u64>,
    /// Unconfirmed publishes in flight, sidecar and raw lapin alike.
    #[arg(long, default_value_t = 64)]
    rabbit_window: usize,
    /// Events queued for the memory case.
    #[arg(long, default_value_t = 1_000_000)]
    memory_events: u64,
    /// Rounds of each delivery measurement (sidecar and raw alike); the
    /// best round counts, which filters out other load on a shared machine
    /// (default 3, quick 2).
    #[arg(long)]
    rounds: Option<usize>,
    /// Target rate of the latency case, events/s.
    #[arg(long, default_value_t = 2000.0)]
    latency_rate: f64,
    /// Webhook subscriptions the webhooks case attaches.
    #[arg(long, default_value_t = 10_000)]
    webhooks: usize,
    /// Target rate of the webhooks case's ingest runs, events/s.
    #[arg(long, default_value_t = 1000.0)]
    webhooks_rate: f64,
    /// Hook calls per scale-out run (default 30000, quick 10000).
    #[arg(long)]
    scaleout_events: Option<u64>,
    /// Most sidecars of the scale-out case (runs 1..=N).
    #[arg(long, default_value_t = 3)]
    scaleout_sidecars: usize,
}

struct Cx {
    a: Args,
    tmp: PathBuf,
    sink_bin: PathBuf,
    summary: Vec<String>,
}

const EXCHANGE: &str = "epbench_chat";
const QUEUE: &str = "epbench_chat_q";
const BIG_SPOOL: &str = "max_queue = 100000000\nmax_bytes = 100000000000";

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
    let sink_bin = a.sink.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("sink")))
            .unwrap_or_else(|| PathBuf::from("sink"))
    });
    let tmp = a.tmp.clone().unwrap_or_else(std::env::temp_dir);
    let _ = std::fs::create_dir_all(&tmp);
    let mut cx = Cx {
        a: a.clone(),
        tmp,
        sink_bin,
        summary: Vec::new(),
    };
    println!(
        "event-pusher e2e benchmarks ({}): {} cores, sidecar {}",
        if a.quick { "quick" } else { "full" },
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        a.sidecar.display()
    );
    for case in a.cases.clone() {
        let t = Instant::now();
        let result = match case.as_str() {
            "ingest" => ingest(&cx).await,
            "http" => http(&cx).await,
            "rabbit" => rabbit(&cx).await,
            "memory" => memory(&cx).await,
            "latency" => latency(&cx).await.map(|_| String::new()),
            "mixed" => mixed(&cx).await,
            "lowrate" => lowrate(&cx).await,
            "webhooks" => webhooks(&cx).await,
            "scaleout" => scaleout(&cx).await,
            other => Err(format!("unknown case \"{other}\"")),
        };
        let line = match result {
            Ok(v) if v.is_empty() => None,
            Ok(v) => Some(format!("ratio {case} {v}")),
            Err(e) => {
                println!("\n{case}: not measured: {e}");
                (case != "latency").then(|| format!("ratio {case} n/a ({})", first_line(&e)))
            }
        };
        if let Some(l) = line {
            println!("{l}");
            cx.summary.push(l);
        }
        eprintln!("[{case} took {:.1}s]", t.elapsed().as_secs_f64());
    }
    println!("\n== summary");
    for l in &cx.summary {
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

fn secs(cx: &Cx, full: f64, quick: f64) -> Duration {
    match cx.a.duration.as_deref().map(event_pusher_bench::parse_duration) {
        Some(Ok(d)) => d,
        _ => Duration::from_secs_f64(if cx.a.quick { quick } else { full }),
    }
}

fn http_body(sink_port: u16, concurrency: usize) -> String {
    format!(
        "[backends.http.sink]\nurl = \"http://127.0.0.1:{sink_port}/hook\"\nconcurrency = {concurrency}\ntimeout_ms = 10000\n"
    )
}

/// Preload `n` events flat out (batched), with the backend paused.
async fn preload(url: &str, n: u64, mix: Mix, cx: &Cx) -> Result<LoadReport, String> {
    let r = loadgen::run(LoadOpts {
        url: url.to_owned(),
        connections: cx.a.connections,
        batch: cx.a.batch,
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

async fn wait_queued(sc: &Sidecar, name: &str, n: u64) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let row = sc.backend(name).await?;
        if row["queued"].as_u64().unwrap_or(0) >= n {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!("backend {name} has {} of {n} queued", row["queued"]));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A sidecar whose HTTP backend delivers to the sink on `sink_port`.
async fn delivering_sidecar(cx: &Cx, sink_port: u16) -> Result<Sidecar, String> {
    Sidecar::start(
        &cx.a.sidecar,
        &cx.tmp,
        BIG_SPOOL,
        &http_body(sink_port, cx.a.http_concurrency),
    )
    .await
}

fn lat_cells(r: &LoadReport) -> Vec<String> {
    r.percentiles().cells().to_vec()
}

// ---------------------------------------------------------------- ingest

async fn ingest(cx: &Cx) -> Result<String, String> {
    let d = secs(cx, 5.0, 3.0);
    let (conns, batch) = (cx.a.connections, cx.a.batch);
    // The same records (canonical JSON after the filters) for raw redb.
    let records = Arc::new(scenario::records(&scenario::events(7, Mix::Standard, 20_000)));
    let (mean, min, max) = scenario::size_stats(&records);
    let dir = tempfile::tempdir_in(&cx.tmp).map_err(|e| e.to_string())?;
    let raw_run = |b: usize| {
        let (p, r) = (dir.path().to_path_buf(), records.clone());
        tokio::task::spawn_blocking(move || raw::spool(&p, r, conns, b, d))
    };
    let mut best: [Option<(f64, Vec<String>)>; 4] = [None, None, None, None];
    let mut keep = |i: usize, rate: f64, row: Vec<String>| {
        if best[i].as_ref().is_none_or(|(r, _)| rate > *r) {
            best[i] = Some((rate, row));
        }
    };
    let mut all: [Vec<f64>; 4] = Default::default();
    let mut spool_note = String::new();
    for round in 0..rounds(cx) {
        // A fresh sidecar per round; its backend is paused and points
        // nowhere, so ingest alone is measured.
        let sc = Sidecar::start(&cx.a.sidecar, &cx.tmp, BIG_SPOOL, &http_body(free_port(), 32)).await?;
        sc.pause("sink").await?;
        let opts = LoadOpts {
            url: sc.url.clone(),
            connections: conns,
            duration: Some(d),
            seed: round as u64 + 1,
            ..LoadOpts::default()
        };
        let cpu0 = cpu_secs(sc.pid());
        let batched = loadgen::run(LoadOpts { batch, ..opts.clone() }).await?;
        let cpu1 = cpu_secs(sc.pid());
        let rb = raw_run(batch).await.map_err(|e| e.to_string())??;
        let cpu2 = cpu_secs(sc.pid());
        let single = loadgen::run(LoadOpts {
            batch: 1,
            ..opts.clone()
        })
        .await?;
        let cpu3 = cpu_secs(sc.pid());
        let rs = raw_run(1).await.map_err(|e| e.to_string())??;
        spool_note = format!(
            "spool after a round: {} events, {} MB",
            thousands(sc.backend("sink").await?["queued"].as_u64().unwrap_or(0) as f64),
            sc.spool_bytes() / 1_000_000
        );
        sc.stop();
        for (i, v) in [
            batched.events_per_s(),
            rb.events_per_s(),
            single.events_per_s(),
            rs.events_per_s(),
        ]
        .into_iter()
        .enumerate()
        {
            all[i].push(v);
        }
        keep(
            0,
            batched.events_per_s(),
            side_row("sidecar batched", &batched, batch, cpu1 - cpu0),
        );
        keep(1, rb.events_per_s(), raw_row("raw redb batched", &rb, batch));
        keep(
            2,
            single.events_per_s(),
            side_row("sidecar single", &single, 1, cpu3 - cpu2),
        );
        keep(3, rs.events_per_s(), raw_row("raw redb single", &rs, 1));
    }
    let rate = |i: usize| best[i].as_ref().map(|b| b.0).unwrap_or(0.0);
    let rows: Vec<Vec<String>> = best
        .iter()
        .zip(&all)
        .filter_map(|(b, rs)| {
            b.as_ref().map(|(_, row)| {
                let mut row = row.clone();
                row.insert(3, rs.iter().map(|v| thousands(*v)).collect::<Vec<_>>().join(" / "));
                row
            })
        })
        .collect();
    table(
        &format!(
            "ingest: durable spool (fsync per commit), {conns} connections = raw submitters, {:.0}s runs, best of {} rounds, records {mean:.0} B (min {min}, max {max})",
            d.as_secs_f64(),
            all[0].len()
        ),
        &["run", "batch", "events/s", "rounds (events/s)", "requests/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "notes"],
        &rows,
    );
    println!(
        "  ratio batched {}  ratio single {}  (sidecar/raw; target batched >= 0.5); {spool_note}",
        ratio(rate(0), rate(1)),
        ratio(rate(2), rate(3)),
    );
    Ok(ratio(rate(0), rate(1)))
}

fn raw_row(name: &str, r: &raw::SpoolReport, b: usize) -> Vec<String> {
    let p = event_pusher_bench::report::Percentiles::of(&r.latency);
    let mut row = vec![
        name.to_owned(),
        b.to_string(),
        thousands(r.events_per_s()),
        thousands(r.events_per_s() / b as f64),
    ];
    row.extend(p.cells());
    row.push(format!("{} commits", thousands(r.commits as f64)));
    row
}

fn side_row(name: &str, r: &LoadReport, b: usize, cpu: f64) -> Vec<String> {
    let mut row = vec![
        name.to_owned(),
        b.to_string(),
        thousands(r.events_per_s()),
        thousands(r.requests_per_s()),
    ];
    row.extend(lat_cells(r));
    row.push(format!(
        "sidecar cpu {:.0}%, {:.1} µs/event{}",
        100.0 * cpu / r.elapsed.as_secs_f64(),
        1e6 * cpu / (r.events as f64).max(1.0),
        errs(r)
    ));
    row
}

fn errs(r: &LoadReport) -> String {
    if r.errors.is_empty() {
        String::new()
    } else {
        format!(", errors {:?}", r.errors)
    }
}

// ---------------------------------------------------------------- http

struct SinkProc {
    child: Child,
    client: SinkClient,
    port: u16,
}

impl SinkProc {
    async fn start(bin: &Path) -> Result<SinkProc, String> {
        let port = free_port();
        let child = Command::new(bin)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start sink {}: {e}", bin.display()))?;
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
}

impl Drop for SinkProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rounds(cx: &Cx) -> usize {
    cx.a.rounds.unwrap_or(if cx.a.quick { 2 } else { 3 }).max(1)
}

/// One measured round of a delivery case.
#[derive(Clone, Copy)]
struct Round {
    rate: f64,
    secs: f64,
    /// CPU of the process doing the delivering (sidecar or raw client), and of the sink.
    cpu: f64,
    sink_cpu: f64,
}

fn best(rounds: &[Round]) -> Round {
    *rounds
        .iter()
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
        .expect("at least one round")
}

fn rates(rounds: &[Round]) -> String {
    rounds.iter().map(|r| thousands(r.rate)).collect::<Vec<_>>().join(" / ")
}

fn pct(cpu: f64, secs: f64) -> String {
    format!("{:.0}%", 100.0 * cpu / secs.max(1e-9))
}

fn us_per_event(cpu: f64, rate: f64, secs: f64) -> String {
    format!("{:.0}", 1e6 * cpu / (rate * secs).max(1e-9))
}

async fn http(cx: &Cx) -> Result<String, String> {
    let n = cx.a.http_events.unwrap_or(if cx.a.quick { 60_000 } else { 200_000 });
    let conc = cx.a.http_concurrency;
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
    for _ in 0..rounds(cx) {
        let sc = Sidecar::start(&cx.a.sidecar, &cx.tmp, BIG_SPOOL, &http_body(sink.port, conc)).await?;
        sc.pause("sink").await?;
        preload(&sc.url, n, Mix::Standard, cx).await?;
        wait_queued(&sc, "sink", n).await?;
        sink.client.reset().await?;
        let (cpu0, scpu0) = (cpu_secs(sc.pid()), cpu_secs(sink.child.id()));
        let t0 = event_pusher_bench::unix_ns();
        sc.resume("sink").await?;
        let got = sink.client.wait_for(n, Duration::from_secs(300)).await?;
        let secs = got.last_ns.saturating_sub(t0) as f64 / 1e9;
        let (cpu1, scpu1) = (cpu_secs(sc.pid()), cpu_secs(sink.child.id()));
        failed += sc.backend("sink").await?["failed"].as_u64().unwrap_or(0);
        sc.stop();
        side.push(Round {
            rate: n as f64 / secs,
            secs,
            cpu: cpu1 - cpu0,
            sink_cpu: scpu1 - scpu0,
        });

        sink.client.reset().await?;
        let (cpu0, scpu0) = (cpu_secs(me), cpu_secs(sink.child.id()));
        let rep = raw::http(&format!("http://127.0.0.1:{}/hook", sink.port), bodies.clone(), conc).await?;
        let got = sink.client.stats().await?;
        let (cpu1, scpu1) = (cpu_secs(me), cpu_secs(sink.child.id()));
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

// ---------------------------------------------------------------- rabbit

fn rabbit_body(url: &str, window: usize) -> String {
    format!(
        "[backends.rabbit.rmq]\nurl = \"{url}\"\nconcurrency = {window}\npool_size = 1\nmax_in_flight = {window}\n\n\
         [backends.rabbit.rmq.chat_msg_exchange]\nname = \"{EXCHANGE}\"\n"
    )
}

async fn rabbit(cx: &Cx) -> Result<String, String> {
    let n = cx.a.rabbit_events.unwrap_or(if cx.a.quick { 30_000 } else { 100_000 });
    let w = cx.a.rabbit_window;
    let url = &cx.a.rabbit_url;
    if TcpStream::connect_timeout(
        &"127.0.0.1:5672".parse().map_err(|_| "bad addr")?,
        Duration::from_secs(2),
    )
    .is_err()
    {
        return Err("RabbitMQ is not reachable at 127.0.0.1:5672".into());
    }
    let body = rabbit_body(url, w);
    check_config(&cx.a.sidecar, &cx.tmp, &body).map_err(|e| {
        format!("the sidecar binary does not take a rabbit backend config (built without feature `rabbit`?): {e}")
    })?;
    raw::rabbit_setup(url, EXCHANGE, QUEUE).await?;
    let me = std::process::id();
    let msgs: Vec<scenario::RabbitMsg> = scenario::events(13, Mix::Chat, n as usize)
        .iter()
        .filter_map(scenario::rabbit_chat_message)
        .collect();
    let mean = msgs.iter().map(|m| m.body.len()).sum::<usize>() as f64 / msgs.len().max(1) as f64;
    let msgs = Arc::new(msgs);
    let (mut side, mut raw_r) = (Vec::new(), Vec::new());
    let mut failed = 0u64;
    for _ in 0..rounds(cx) {
        let sc = Sidecar::start(&cx.a.sidecar, &cx.tmp, BIG_SPOOL, &body).await?;
        sc.wait_path("/ready", Duration::from_secs(30)).await?;
        sc.pause("rmq").await?;
        preload(&sc.url, n, Mix::Chat, cx).await?;
        wait_queued(&sc, "rmq", n).await?;
        let cpu0 = cpu_secs(sc.pid());
        let t0 = Instant::now();
        sc.resume("rmq").await?;
        let (t1, row) = sc.wait_delivered("rmq", n, Duration::from_secs(300)).await?;
        let secs = (t1 - t0).as_secs_f64();
        let cpu1 = cpu_secs(sc.pid());
        failed += row["failed"].as_u64().unwrap_or(0);
        sc.stop();
        let in_queue = raw::rabbit_cleanup(url, EXCHANGE, QUEUE, false).await?;
        if u64::from(in_queue) < n {
            return Err(format!("sidecar: only {in_queue} of {n} messages reached the queue"));
        }
        side.push(Round {
            rate: n as f64 / secs,
            secs,
            cpu: cpu1 - cpu0,
            sink_cpu: 0.0,
        });

        let cpu0 = cpu_secs(me);
        let rep = raw::rabbit(url, EXCHANGE, msgs.clone(), w).await?;
        let cpu1 = cpu_secs(me);
        let in_queue = raw::rabbit_cleanup(url, EXCHANGE, QUEUE, false).await?;
        if rep.failed > 0 || u64::from(in_queue) < n {
            return Err(format!(
                "raw lapin: {} failed, {in_queue} of {n} in the queue",
                rep.failed
            ));
        }
        let secs = rep.elapsed.as_secs_f64();
        raw_r.push(Round {
            rate: rep.per_s(),
            secs,
            cpu: cpu1 - cpu0,
            sink_cpu: 0.0,
        });
    }
    let _ = raw::rabbit_cleanup(url, EXCHANGE, QUEUE, true).await;
    let (s, r) = (best(&side), best(&raw_r));
    table(
        &format!(
            "rabbit delivery: {n} chat events ({mean:.0} B bodies, persistent, durable queue), confirm window {w}, one channel; best of {} rounds",
            side.len()
        ),
        &["run", "events/s", "secs", "rounds (events/s)", "cpu", "cpu µs/event"],
        &[
            vec![
                "sidecar (resume → all confirmed)".into(),
                thousands(s.rate),
                format!("{:.2}", s.secs),
                rates(&side),
                pct(s.cpu, s.secs),
                us_per_event(s.cpu, s.rate, s.secs),
            ],
            vec![
                "raw lapin".into(),
                thousands(r.rate),
                format!("{:.2}", r.secs),
                rates(&raw_r),
                pct(r.cpu, r.secs),
                us_per_event(r.cpu, r.rate, r.secs),
            ],
        ],
    );
    println!("  failed deliveries: {failed}; every message checked in the bound queue; target ratio >= 0.8");
    Ok(ratio(s.rate, r.rate))
}

// ---------------------------------------------------------------- memory

async fn memory(cx: &Cx) -> Result<String, String> {
    let n = cx.a.memory_events;
    let sc = Sidecar::start(&cx.a.sidecar, &cx.tmp, BIG_SPOOL, &http_body(free_port(), 32)).await?;
    sc.pause("sink").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = sc.rss();
    let t = Instant::now();
    let load = preload(&sc.url, n, Mix::Standard, cx).await?;
    let load_secs = t.elapsed().as_secs_f64();
    wait_queued(&sc, "sink", n).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = sc.rss();
    let spool = sc.spool_bytes();
    sc.stop();
    let mb = |kb: u64| format!("{:.1}", kb as f64 / 1024.0);
    table(
        &format!(
            "memory: sidecar RSS, backend paused, {} events queued on disk",
            thousands(n as f64)
        ),
        &["state", "VmHWM MB", "VmRSS MB", "spool file MB", "notes"],
        &[
            vec![
                "idle (started, paused)".into(),
                mb(idle.hwm_kb),
                mb(idle.rss_kb),
                "-".into(),
                String::new(),
            ],
            vec![
                format!("{} queued", thousands(n as f64)),
                mb(loaded.hwm_kb),
                mb(loaded.rss_kb),
                format!("{:.0}", spool as f64 / 1e6),
                format!(
                    "loaded at {} events/s",
                    thousands(load.events_per_s().min(n as f64 / load_secs.max(1e-9)))
                ),
            ],
        ],
    );
    println!("  ratio = peak RSS loaded / peak RSS idle; flat means the queue is on disk, not in RAM");
    Ok(ratio(loaded.hwm_kb as f64, idle.hwm_kb as f64))
}

// ---------------------------------------------------------------- latency

async fn latency(cx: &Cx) -> Result<(), String> {
    let d = secs(cx, 15.0, 5.0);
    let rate = cx.a.latency_rate;
    let sink = SinkProc::start(&cx.sink_bin).await?;
    let sc = delivering_sidecar(cx, sink.port).await?;
    sink.client.reset().await?;
    let r = loadgen::run(LoadOpts {
        url: sc.url.clone(),
        connections: cx.a.connections,
        rate,
        duration: Some(d),
        batch: 1,
        stamp: true,
        ..LoadOpts::default()
    })
    .await?;
    let got = sink.client.wait_for(r.events, Duration::from_secs(30)).await?;
    sc.stop();
    let p = r.percentiles();
    let a = got.accepted_to_delivered;
    let s = got.sent_to_delivered;
    let row = |name: &str, cells: [String; 4], n: u64| {
        let mut v = vec![name.to_owned()];
        v.extend(cells);
        v.push(n.to_string());
        v
    };
    table(
        &format!(
            "latency at {rate} events/s, single-event requests, {} connections, delivery on",
            cx.a.connections
        ),
        &["what", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "count"],
        &[
            row("POST → 202 (fsync'd)", p.cells(), r.requests),
            row("accepted → at sink (ULID ms)", a.cells(), a.count),
            row("sent → at sink", s.cells(), s.count),
        ],
    );
    println!(
        "  achieved {} events/s{}; p99 202 {} ms",
        thousands(r.events_per_s()),
        errs(&r),
        fmt_ms(p.p99_ms)
    );
    Ok(())
}

// ---------------------------------------------------------------- mixed

/// Single-event ingest flat out with delivery running, over the same with
/// delivery paused, alternating over rounds (best of each). The ratio is
/// what delivery costs ingest when both share the machine.
async fn mixed(cx: &Cx) -> Result<String, String> {
    let d = secs(cx, 5.0, 3.0);
    let sink = SinkProc::start(&cx.sink_bin).await?;
    let (mut on_best, mut off_best) = (None::<LoadReport>, None::<LoadReport>);
    let mut delivered_rate: f64 = 0.0;
    for round in 0..rounds(cx) {
        let sc = delivering_sidecar(cx, sink.port).await?;
        let opts = LoadOpts {
            url: sc.url.clone(),
            connections: cx.a.connections,
            duration: Some(d),
            batch: 1,
            seed: round as u64 + 1,
            ..LoadOpts::default()
        };
        sink.client.reset().await?;
        let on = loadgen::run(opts.clone()).await?;
        let got = sink.client.stats().await?;
        delivered_rate = delivered_rate.max(got.count as f64 / d.as_secs_f64());
        sc.pause("sink").await?;
        let off = loadgen::run(opts).await?;
        sc.stop();
        if on_best.as_ref().is_none_or(|b| on.events_per_s() > b.events_per_s()) {
            on_best = Some(on);
        }
        if off_best.as_ref().is_none_or(|b| off.events_per_s() > b.events_per_s()) {
            off_best = Some(off);
        }
    }
    let (on, off) = match (on_best, off_best) {
        (Some(on), Some(off)) => (on, off),
        _ => return Err("no rounds ran".into()),
    };
    let row = |name: &str, r: &LoadReport| {
        let mut v = vec![name.to_owned(), thousands(r.events_per_s())];
        v.extend(lat_cells(r));
        v.push(errs(r));
        v
    };
    table(
        &format!(
            "mixed: single-event ingest, {} connections, {:.0}s, delivery on vs paused (best of {} rounds)",
            cx.a.connections,
            d.as_secs_f64(),
            rounds(cx)
        ),
        &["run", "events/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "notes"],
        &[row("delivery on", &on), row("delivery paused", &off)],
    );
    println!(
        "  delivered meanwhile: {} events/s; ratio mixed = on / paused (target >= 0.7)",
        thousands(delivered_rate)
    );
    Ok(ratio(on.events_per_s(), off.events_per_s()))
}

// ---------------------------------------------------------------- lowrate

/// CPU seconds the sidecar spends per event, ingest through delivery, at a
/// low steady rate and at full load. At low rates nothing batches: each
/// event pays a commit, and used to pay a read and an ack commit too.
async fn lowrate(cx: &Cx) -> Result<String, String> {
    let d = secs(cx, 10.0, 5.0);
    let sink = SinkProc::start(&cx.sink_bin).await?;
    let sc = delivering_sidecar(cx, sink.port).await?;
    // One run: events through to the sink; CPU per event and the split.
    let run = |opts: LoadOpts| {
        let (sc, sink) = (&sc, &sink);
        async move {
            sink.client.reset().await?;
            let cpu0 = cpu_secs(sc.pid());
            let r = loadgen::run(opts).await?;
            sink.client.wait_for(r.events, Duration::from_secs(60)).await?;
            let cpu = cpu_secs(sc.pid()) - cpu0;
            Ok::<_, String>((r, cpu))
        }
    };
    let base = LoadOpts {
        url: sc.url.clone(),
        duration: Some(d),
        ..LoadOpts::default()
    };
    let (low, low_cpu) = run(LoadOpts {
        connections: 4,
        rate: 200.0,
        batch: 1,
        ..base.clone()
    })
    .await?;
    // The same request shape flat out: what differs is only the rate, so
    // the ratio is what not batching across requests costs.
    let (high, high_cpu) = run(LoadOpts {
        connections: cx.a.connections,
        batch: 1,
        ..base.clone()
    })
    .await?;
    sc.stop();
    let per = |cpu: f64, r: &LoadReport| cpu * 1000.0 / (r.events.max(1) as f64);
    let (low_ms, high_ms) = (per(low_cpu, &low), per(high_cpu, &high));
    table(
        "lowrate: sidecar CPU per event, ingest through delivery to the sink",
        &["run", "events", "events/s", "CPU s", "CPU ms/event"],
        &[
            vec![
                "200 events/s, single".into(),
                low.events.to_string(),
                thousands(low.events_per_s()),
                format!("{low_cpu:.2}"),
                format!("{low_ms:.3}"),
            ],
            vec![
                format!("flat out, single, {} connections", cx.a.connections),
                high.events.to_string(),
                thousands(high.events_per_s()),
                format!("{high_cpu:.2}"),
                format!("{high_ms:.3}"),
            ],
        ],
    );
    println!("  ratio lowrate = CPU per event at 200/s / at full load (target <= 3)");
    Ok(ratio(low_ms, high_ms))
}

// ---------------------------------------------------------------- webhooks

/// Ingest at a steady rate with single-event requests: the 202's p99 (ms).
async fn steady_p99(cx: &Cx, url: &str, d: Duration) -> Result<(f64, LoadReport), String> {
    let r = loadgen::run(LoadOpts {
        url: url.to_owned(),
        connections: cx.a.connections,
        rate: cx.a.webhooks_rate,
        duration: Some(d),
        batch: 1,
        mix: Mix::Chat,
        ..LoadOpts::default()
    })
    .await?;
    Ok((r.percentiles().p99_ms, r))
}

async fn webhooks(cx: &Cx) -> Result<String, String> {
    let n = cx.a.webhooks;
    let d = secs(cx, 8.0, 3.0);
    // Two sidecars, one without subscriptions and one with `n`, measured in
    // alternating rounds (best of each), so load from elsewhere on a shared
    // machine hurts both alike. Events are stored for a paused HTTP backend
    // (each request commits as in production); the subscriptions want
    // `headline`, which the chat mix never sends: matching by class means
    // they cost ingest nothing.
    // The subscriptions point at 127.0.0.1: private addresses allowed.
    let body = format!("{}\n[egress]\nallow_private = true\n", http_body(free_port(), 32));
    let none = Sidecar::start(&cx.a.sidecar, &cx.tmp, BIG_SPOOL, &body).await?;
    let many = Sidecar::start(&cx.a.sidecar, &cx.tmp, BIG_SPOOL, &body).await?;
    none.pause("sink").await?;
    many.pause("sink").await?;
    let idle = many.rss();

    let client = reqwest::Client::new();
    let dead_url = format!("http://127.0.0.1:{}/hook", free_port());
    let t = Instant::now();
    let mut attach_ms = event_pusher_bench::report::new_hist();
    let results: Vec<Result<u64, String>> = futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let body = serde_json::json!({"id": format!("bench{i}"), "url": dead_url, "events": ["headline"]});
            let url = format!("{}/v1/webhooks", many.url);
            async move {
                let t = Instant::now();
                let r = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status().as_u16() != 201 {
                    return Err(format!("attach {i}: {}", r.status()));
                }
                Ok(t.elapsed().as_micros() as u64)
            }
        })
        .buffer_unordered(cx.a.connections)
        .collect()
        .await;
    let attach_total = t.elapsed().as_secs_f64();
    for r in results {
        event_pusher_bench::report::record(&mut attach_ms, r?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attached = many.rss();
    let (mut p99_none, mut p99_many) = (f64::MAX, f64::MAX);
    let mut errors = String::new();
    for _ in 0..rounds(cx) {
        let (p, r) = steady_p99(cx, &none.url, d).await?;
        p99_none = p99_none.min(p);
        errors.push_str(&errs(&r));
        let (p, r) = steady_p99(cx, &many.url, d).await?;
        p99_many = p99_many.min(p);
        errors.push_str(&errs(&r));
    }
    none.stop();
    many.stop();
    let ap = event_pusher_bench::report::Percentiles::of(&attach_ms);
    let mb = |kb: u64| format!("{:.1}", kb as f64 / 1024.0);
    table(
        &format!(
            "webhooks: {} subscriptions attached ({} at a time); ingest at {} events/s that none of them wants",
            thousands(n as f64),
            cx.a.connections,
            cx.a.webhooks_rate
        ),
        &["what", "value"],
        &[
            vec!["attach total s".into(), format!("{attach_total:.1}")],
            vec![
                "attach p50 / p99 ms".into(),
                format!("{} / {}", fmt_ms(ap.p50_ms), fmt_ms(ap.p99_ms)),
            ],
            vec![
                "RSS MB before / after".into(),
                format!("{} / {}", mb(idle.rss_kb), mb(attached.rss_kb)),
            ],
            vec!["ingest p99 ms, none attached (best round)".into(), fmt_ms(p99_none)],
            vec![
                format!("ingest p99 ms, {} attached (best round)", thousands(n as f64)),
                fmt_ms(p99_many),
            ],
        ],
    );
    println!("  ratio = ingest p99 with the subscriptions / without (target <= 1.10){errors}");
    Ok(ratio(p99_many, p99_none))
}

// ---------------------------------------------------------------- scaleout

const PARTITIONS: usize = 8;

async fn scaleout(cx: &Cx) -> Result<String, String> {
    use event_pusher_bench::scaleout::{source_metric, wait_balanced, Topology};
    let n = cx.a.scaleout_events.unwrap_or(if cx.a.quick { 10_000 } else { 30_000 });
    let url = &cx.a.rabbit_url;
    let bin = &cx.a.sidecar;
    check_config(
        bin,
        &cx.tmp,
        &Topology {
            url: url.clone(),
            exchange: "x".into(),
            partitions: 1,
        }
        .source_toml(),
    )?;
    let acked =
        |u: String| async move { source_metric(&u, "event_pusher_source_messages_total", "outcome=\"acked\"").await };

    // One sidecar, its backend paused: the source's ingest rate (queue
    // preloaded, start → all acked) beside its own batched POST rate.
    let topo = Topology::declare(bin, url, PARTITIONS)?;
    let published = topo.publish(0..n, 1024).await?;
    let sc = Sidecar::start(
        bin,
        &cx.tmp,
        BIG_SPOOL,
        &format!("{}\n{}", topo.source_toml(), http_body(free_port(), 32)),
    )
    .await?;
    sc.pause("sink").await?;
    let t0 = Instant::now();
    let at_t0 = acked(sc.url.clone()).await?;
    let cpu0 = cpu_secs(sc.pid());
    let until = t0 + Duration::from_secs(300);
    while (acked(sc.url.clone()).await? as u64) < n {
        if Instant::now() > until {
            return Err(format!(
                "the source acked {} of {n} in 300 s:\n{}",
                acked(sc.url.clone()).await?,
                sc.log_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let source_secs = t0.elapsed().as_secs_f64();
    let source_cpu = cpu_secs(sc.pid()) - cpu0;
    let source_rate = (n as f64 - at_t0) / source_secs;
    let cpu0 = cpu_secs(sc.pid());
    let http = loadgen::run(LoadOpts {
        url: sc.url.clone(),
        connections: cx.a.connections,
        batch: cx.a.batch,
        duration: Some(secs(cx, 5.0, 3.0)),
        seed: 5,
        ..LoadOpts::default()
    })
    .await?;
    let http_cpu = cpu_secs(sc.pid()) - cpu0;
    sc.stop();
    topo.delete().await;
    let mut rows = vec![
        vec![
            "1 sidecar, source (preloaded queues → acked, backend paused)".into(),
            thousands(source_rate),
            format!("{source_secs:.2}"),
            pct(source_cpu, source_secs),
        ],
        vec![
            format!("1 sidecar, POST /v1/events batched ({} per request)", cx.a.batch),
            thousands(http.events_per_s()),
            format!("{:.2}", http.elapsed.as_secs_f64()),
            pct(http_cpu, http.elapsed.as_secs_f64()),
        ],
    ];
    println!(
        "  preload: {n} hook calls published with confirms in {:.2}s ({}/s)",
        published.as_secs_f64(),
        thousands(n as f64 / published.as_secs_f64())
    );

    // 1..=N sidecars delivering to the sink: published → all at the sink.
    let sink = SinkProc::start(&cx.sink_bin).await?;
    for k in 1..=cx.a.scaleout_sidecars.max(1) {
        let topo = Topology::declare(bin, url, PARTITIONS)?;
        let body = format!(
            "{}\n{}",
            topo.source_toml(),
            http_body(sink.port, cx.a.http_concurrency)
        );
        let mut sidecars = Vec::new();
        for _ in 0..k {
            let sc = Sidecar::start(bin, &cx.tmp, BIG_SPOOL, &body).await?;
            sc.wait_path("/ready", Duration::from_secs(30)).await?;
            sidecars.push(sc);
        }
        let urls: Vec<String> = sidecars.iter().map(|s| s.url.clone()).collect();
        let balanced = wait_balanced(&urls, PARTITIONS, Duration::from_secs(60)).await?;
        sink.client.reset().await?;
        let cpu0: f64 = sidecars.iter().map(|s| cpu_secs(s.pid())).sum();
        let t0 = event_pusher_bench::unix_ns();
        let published = topo.publish(0..n, 1024).await?;
        let got = sink.client.wait_for(n, Duration::from_secs(300)).await?;
        let secs = got.last_ns.saturating_sub(t0) as f64 / 1e9;
        let cpu: f64 = sidecars.iter().map(|s| cpu_secs(s.pid())).sum::<f64>() - cpu0;
        let mut shares = Vec::new();
        for u in &urls {
            shares.push(thousands(acked(u.clone()).await?));
        }
        for sc in sidecars {
            sc.stop();
        }
        topo.delete().await;
        println!(
            "  {k} sidecar(s): shared {PARTITIONS} partitions {balanced:.1?} after start; published in {:.2}s; acked per sidecar {}",
            published.as_secs_f64(),
            shares.join(" / ")
        );
        println!("rate scaleout {k} {:.0}", n as f64 / secs);
        rows.push(vec![
            format!("{k} sidecar(s), published → at the sink"),
            thousands(n as f64 / secs),
            format!("{secs:.2}"),
            pct(cpu, secs),
        ]);
    }
    table(
        &format!(
            "scale-out: {n} hook calls for {} users, {PARTITIONS} partitions",
            event_pusher_bench::scaleout::USERS
        ),
        &["run", "events/s", "secs", "sidecars' cpu"],
        &rows,
    );
    println!("  ratio = one sidecar's source rate / its batched POST rate; target >= 0.8");
    Ok(ratio(source_rate, http.events_per_s()))
}
