//! `gateway`: the gateway backend's fan-out against the real sidecar, next
//! to a bare tokio-tungstenite server writing the same frames to the same
//! clients in the same run.
//!
//! ```text
//! gateway --sidecar target/release/event-pusher [--sessions 100,1000] [--events 2000]
//!         [--rate 2000] [--latency-sessions 100] [--duration 5s]
//!         [--compress-sessions 100] [--cases fanout,latency,compression]
//! ```
//!
//! - fan-out: with S sessions connected (all intents), `events` events are
//!   queued with the backend paused, then it is resumed and timed until
//!   every session has every dispatch: dispatches/s = S × events / time.
//!   The raw server is timed the same way; `ratio gateway-S` = sidecar / raw.
//! - latency: `rate` events/s posted for `duration` to `latency-sessions`
//!   sessions; percentiles of 202 received → dispatch received.
//! - compression: the fan-out run with `compress-sessions` sessions that
//!   ask for nothing, `zlib-stream`, then `zstd-stream`: WebSocket bytes
//!   on the wire per dispatch (read by the clients) and the sidecar's CPU
//!   (user + system, from /proc) per dispatch from resume to the last one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use event_pusher_bench::gateway::{self, RawServer, Sessions};
use event_pusher_bench::mix::{Mix, MixGen};
use event_pusher_bench::report::{fmt_ms, new_hist, ratio, record, table, thousands, Percentiles};
use event_pusher_bench::sidecar;
use event_pusher_bench::{parse_duration, scenario, unix_ns};
use event_pusher_gateway_protocol::compress::Compression;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Parser)]
#[command(
    name = "gateway",
    about = "gateway fan-out and latency, beside a raw WebSocket server"
)]
struct Args {
    #[arg(long, default_value = "target/release/event-pusher")]
    sidecar: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    sessions: Vec<usize>,
    /// Events per fan-out run.
    #[arg(long, default_value_t = 2000)]
    events: usize,
    /// Events/s in the latency run.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    #[arg(long, default_value_t = 100)]
    latency_sessions: usize,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Sessions in the compression runs.
    #[arg(long, default_value_t = 100)]
    compress_sessions: usize,
    /// Which parts to run.
    #[arg(long, value_delimiter = ',', default_value = "fanout,latency,compression")]
    cases: Vec<String>,
    #[arg(long)]
    tmp: Option<PathBuf>,
    /// Internal: be the raw server (a process of its own, like the
    /// sidecar): print `port P`, broadcast `--events` records on a `go`
    /// line from stdin.
    #[arg(long, hide = true)]
    raw_server: bool,
}

const TOKEN: &str = "bench-token";

fn backend_toml() -> String {
    // Large queues: the bench measures throughput, not the overflow rule.
    format!(
        "[backends.gateway.live]\npath = \"/v1/gateway\"\nheartbeat_interval_ms = 600000\n\
         resume_buffer = 1000\nmax_queued = 1000000\n\
         [backends.gateway.live.clients.bench]\ntoken = \"{TOKEN}\"\nintents = 63\n"
    )
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.raw_server {
        return serve_raw(args.events).await;
    }
    let tmp = args.tmp.clone().unwrap_or_else(std::env::temp_dir);
    let runs = |case: &str| args.cases.iter().any(|c| c == case);
    if runs("fanout") {
        fan_out_table(&args, &tmp).await?;
    }
    if runs("latency") {
        latency_table(&args, &tmp).await?;
    }
    if runs("compression") {
        compression_table(&args, &tmp).await?;
    }
    Ok(())
}

/// Bytes on the wire and sidecar CPU per dispatch, plain and compressed.
async fn compression_table(args: &Args, tmp: &std::path::Path) -> Result<(), String> {
    let mut rows = Vec::new();
    let mut plain_bytes = 0.0;
    for c in [None, Some(Compression::ZlibStream), Some(Compression::ZstdStream)] {
        let name = c.map_or("plain", Compression::as_str);
        let (bytes, cpu_us, rate) = compressed_run(args, tmp, c).await?;
        if c.is_none() {
            plain_bytes = bytes;
        }
        rows.push(vec![
            name.to_owned(),
            format!("{bytes:.0}"),
            format!("{:.2}", bytes / plain_bytes.max(1.0)),
            format!("{cpu_us:.1}"),
            thousands(rate),
        ]);
        println!("compression gateway {name} bytes/dispatch {bytes:.0} cpu-us/dispatch {cpu_us:.1}");
    }
    table(
        &format!(
            "gateway compression: {} events to {} sessions",
            args.events, args.compress_sessions
        ),
        &[
            "compress",
            "wire bytes/dispatch",
            "vs plain",
            "sidecar CPU µs/dispatch",
            "dispatches/s",
        ],
        &rows,
    );
    Ok(())
}

/// One fan-out run with `compression`: wire bytes and sidecar CPU µs per
/// dispatch, and dispatches/s.
async fn compressed_run(
    args: &Args,
    tmp: &std::path::Path,
    compression: Option<Compression>,
) -> Result<(f64, f64, f64), String> {
    let n = args.compress_sessions;
    let sc = sidecar::start(&args.sidecar, tmp, "", &backend_toml()).await?;
    sc.wait_path("/ready", Duration::from_secs(20)).await?;
    let url = format!("ws{}/v1/gateway", sc.url.trim_start_matches("http"));
    let sessions = gateway::connect_with(&url, TOKEN, n, false, compression).await?;
    sc.pause("live").await?;
    let client = reqwest::Client::new();
    let mut events = 0;
    for body in bodies(args.events, 200) {
        events += post(&client, &sc.url, &body).await?.len();
    }
    sessions.wire_bytes.store(0, std::sync::atomic::Ordering::Relaxed);
    let cpu_before = sc.cpu_secs();
    let start = Instant::now();
    sc.resume("live").await?;
    let want = (events * n) as u64;
    let done = wait_for(&sessions, want, Duration::from_secs(300)).await?;
    let cpu = sc.cpu_secs() - cpu_before;
    let bytes = sessions.wire_bytes.load(std::sync::atomic::Ordering::Relaxed) as f64 / want as f64;
    drop(sessions);
    sc.stop();
    Ok((
        bytes,
        cpu * 1e6 / want as f64,
        want as f64 / done.duration_since(start).as_secs_f64(),
    ))
}

async fn fan_out_table(args: &Args, tmp: &std::path::Path) -> Result<(), String> {
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for &n in &args.sessions {
        let sidecar = fan_out_sidecar(args, tmp, n).await?;
        let raw = fan_out_raw(args, n).await?;
        rows.push(vec![
            n.to_string(),
            thousands(sidecar),
            thousands(raw),
            ratio(sidecar, raw),
        ]);
        ratios.push(format!("ratio gateway-{n} {}", ratio(sidecar, raw)));
    }
    table(
        &format!("gateway fan-out: {} events to S sessions (dispatches/s)", args.events),
        &["sessions", "sidecar", "raw tungstenite", "ratio"],
        &rows,
    );
    for r in ratios {
        println!("{r}");
    }
    Ok(())
}

async fn latency_table(args: &Args, tmp: &std::path::Path) -> Result<(), String> {
    let p = latency(args, tmp).await?;
    let [p50, p99, p999, max] = p.cells();
    table(
        &format!(
            "gateway latency: {} events/s to {} sessions, 202 -> dispatch received",
            args.rate, args.latency_sessions
        ),
        &["dispatches", "p50", "p99", "p99.9", "max"],
        &[vec![p.count.to_string(), p50, p99, p999, max]],
    );
    println!("latency gateway p99 {}", fmt_ms(p.p99_ms));
    Ok(())
}

/// Hook-call bodies of `batch` calls each, `n` calls in all.
fn bodies(n: usize, batch: usize) -> Vec<serde_json::Value> {
    let mut gen = MixGen::new(7, Mix::Standard);
    let calls = gen.calls(n);
    calls
        .chunks(batch)
        .map(|c| serde_json::Value::Array(c.to_vec()))
        .collect()
}

async fn post(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> Result<Vec<String>, String> {
    let r = client
        .post(format!("{url}/v1/events"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().as_u16() != 202 {
        return Err(format!("ingest answered {}", r.status()));
    }
    let bytes = r.bytes().await.map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    Ok(v["ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect())
        .unwrap_or_default())
}

async fn wait_for(sessions: &Sessions, want: u64, timeout: Duration) -> Result<Instant, String> {
    let until = Instant::now() + timeout;
    while sessions.count() < want {
        if Instant::now() > until {
            return Err(format!(
                "sessions got {} of {want} dispatches within {timeout:?}",
                sessions.count()
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(Instant::now())
}

async fn fan_out_sidecar(args: &Args, tmp: &std::path::Path, n: usize) -> Result<f64, String> {
    let sc = sidecar::start(&args.sidecar, tmp, "", &backend_toml()).await?;
    sc.wait_path("/ready", Duration::from_secs(20)).await?;
    let url = format!("ws{}/v1/gateway", sc.url.trim_start_matches("http"));
    let sessions = gateway::connect(&url, TOKEN, n, false).await?;
    sc.pause("live").await?;
    let client = reqwest::Client::new();
    let mut events = 0;
    for body in bodies(args.events, 200) {
        events += post(&client, &sc.url, &body).await?.len();
    }
    let start = Instant::now();
    sc.resume("live").await?;
    let want = (events * n) as u64;
    let done = wait_for(&sessions, want, Duration::from_secs(300)).await?;
    drop(sessions);
    sc.stop();
    Ok(want as f64 / done.duration_since(start).as_secs_f64())
}

async fn fan_out_raw(args: &Args, n: usize) -> Result<f64, String> {
    // The raw server runs as a process of its own, as the sidecar does, so
    // it does not share a runtime with the 1,000 clients.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(exe)
        .args(["--raw-server", "--events", &args.events.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the raw server: {e}"))?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let port = stdout
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .and_then(|l| l.strip_prefix("port ").and_then(|p| p.parse::<u16>().ok()))
        .ok_or("the raw server did not say its port")?;
    let sessions = gateway::connect(&format!("ws://127.0.0.1:{port}/"), TOKEN, n, false).await?;
    let events = stdout
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .and_then(|l| l.strip_prefix("events ").and_then(|p| p.parse::<usize>().ok()))
        .ok_or("the raw server did not say its event count")?;
    let start = Instant::now();
    stdin.write_all(b"go\n").await.map_err(|e| e.to_string())?;
    let want = (events * n) as u64;
    let done = wait_for(&sessions, want, Duration::from_secs(300)).await?;
    let _ = child.kill().await;
    Ok(want as f64 / done.duration_since(start).as_secs_f64())
}

/// `--raw-server`: print the port, then the event count, and broadcast on
/// each `go` line.
async fn serve_raw(events: usize) -> Result<(), String> {
    let records = scenario::records(&scenario::events(7, Mix::Standard, events));
    let server = RawServer::start()?;
    println!("port {}", server.port);
    println!("events {}", records.len());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "go" {
            server.broadcast(&records);
        }
    }
    Ok(())
}

async fn latency(args: &Args, tmp: &std::path::Path) -> Result<Percentiles, String> {
    let sc = sidecar::start(&args.sidecar, tmp, "", &backend_toml()).await?;
    sc.wait_path("/ready", Duration::from_secs(20)).await?;
    let url = format!("ws{}/v1/gateway", sc.url.trim_start_matches("http"));
    let sessions = gateway::connect(&url, TOKEN, args.latency_sessions, true).await?;
    // Batches of 20 calls, paced to the rate; each post runs on its own
    // task so a slow answer does not hold back the schedule.
    let batch = 20usize;
    let total = (args.rate as f64 * args.duration.as_secs_f64()) as usize;
    let every = Duration::from_secs_f64(batch as f64 / args.rate as f64);
    let accepted_at: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let client = reqwest::Client::new();
    let mut ticker = tokio::time::interval(every);
    let mut posts = Vec::new();
    let mut events = 0;
    for body in bodies(total, batch) {
        ticker.tick().await;
        let (client, url, accepted_at) = (client.clone(), sc.url.clone(), accepted_at.clone());
        posts.push(tokio::spawn(async move {
            let ids = post(&client, &url, &body).await?;
            let now = unix_ns();
            let mut map = accepted_at.lock().unwrap_or_else(|p| p.into_inner());
            let n = ids.len();
            for id in ids {
                map.insert(id, now);
            }
            Ok::<usize, String>(n)
        }));
    }
    for p in posts {
        events += p.await.map_err(|e| e.to_string())??;
    }
    wait_for(
        &sessions,
        (events * args.latency_sessions) as u64,
        Duration::from_secs(120),
    )
    .await?;
    let accepted_at = accepted_at.lock().unwrap_or_else(|p| p.into_inner());
    let mut hist = new_hist();
    if let Some(arrivals) = &sessions.arrivals {
        for (id, at) in arrivals.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some(t202) = accepted_at.get(id) {
                // A dispatch can beat its own 202 to the client: count 0.
                record(&mut hist, at.saturating_sub(*t202) / 1000);
            }
        }
    }
    drop(sessions);
    sc.stop();
    Ok(Percentiles::of(&hist))
}
