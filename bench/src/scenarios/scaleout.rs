//! scaleout: hook calls from RabbitMQ partitions (`[sources.amqp]`).
//!
//! - One sidecar's source rate (queues preloaded → all acked, backend
//!   paused) over the raw limit: bare lapin consuming the same preloaded
//!   partitions with the same prefetch and `multiple` acks, doing nothing
//!   with the messages. `ratio scaleout` = source / raw consumer (messages
//!   of one call each).
//! - The same source with messages carrying a user's batch of
//!   `--scaleout-batch` calls (a JSON array): events/s rise by about that
//!   factor, since the broker's cost is per message.
//! - Its batched `POST /v1/events` rate, for reference.
//! - Events/s published → delivered to the sink through 1, 2 and 3
//!   sidecars (`rate scaleout K N`), one call per message; then the same
//!   published by `event-pusher publish --batch B`
//!   (`rate scaleout-batch K N`).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{http_body, paused_http_body, pct, Cx, SinkProc, BIG_SPOOL};
use crate::loadgen::{self, LoadOpts};
use crate::report::{ratio, table, thousands};
use crate::scaleout::{call, source_metric, wait_balanced, Topology, USERS};
use crate::sidecar::{check_config, Sidecar};

const PARTITIONS: usize = 8;

pub async fn run(cx: &Cx) -> Result<String, String> {
    let n = cx
        .args
        .scaleout_events
        .unwrap_or(if cx.args.quick { 10_000 } else { 30_000 });
    let url = &cx.args.rabbit_url;
    let bin = &cx.args.sidecar;
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
    // The raw limit: bare lapin drains the preloaded partitions.
    let topo = Topology::declare(bin, url, PARTITIONS)?;
    let published = topo.publish(0..n, 1024).await?;
    let raw_took = topo.raw_consume(n, Duration::from_secs(300)).await?;
    topo.delete().await;
    let raw_rate = n as f64 / raw_took.as_secs_f64();

    // One sidecar, its backend paused: the source's ingest rate (queues
    // preloaded, start → all acked), one call per message.
    let topo = Topology::declare(bin, url, PARTITIONS)?;
    topo.publish(0..n, 1024).await?;
    let sc = cx
        .sidecar(BIG_SPOOL, &format!("{}\n{}", topo.source_toml(), paused_http_body()))
        .await?;
    let (source_rate, source_secs, source_cpu) = drain_source(&sc, n).await?;
    topo.delete().await;
    sc.stop();

    // The same with a user's batch per message.
    let b = cx.args.scaleout_batch.max(1);
    let topo = Topology::declare(bin, url, PARTITIONS)?;
    let (_, batch_messages) = topo.publish_batched(0..n, 1024, b).await?;
    let sc = cx
        .sidecar(BIG_SPOOL, &format!("{}\n{}", topo.source_toml(), paused_http_body()))
        .await?;
    let (batch_msg_rate, batch_secs, batch_cpu) = drain_source(&sc, batch_messages).await?;
    let batch_rate = batch_msg_rate * n as f64 / batch_messages as f64;

    let cpu0 = sc.cpu_secs();
    let http = loadgen::run(LoadOpts {
        url: sc.url.clone(),
        connections: cx.args.connections,
        batch: cx.args.batch,
        duration: Some(cx.secs(5.0, 3.0)),
        seed: 5,
        ..LoadOpts::default()
    })
    .await?;
    let http_cpu = sc.cpu_secs() - cpu0;
    sc.stop();
    topo.delete().await;
    let mut rows = vec![
        vec![
            "raw lapin consumer (preloaded queues → acked, one call per message)".into(),
            thousands(raw_rate),
            format!("{:.2}", raw_took.as_secs_f64()),
            "-".into(),
        ],
        vec![
            "1 sidecar, source (preloaded queues → acked, backend paused, one call per message)".into(),
            thousands(source_rate),
            format!("{source_secs:.2}"),
            pct(source_cpu, source_secs),
        ],
        vec![
            format!("1 sidecar, source, {b} calls of one user per message ({batch_messages} messages)"),
            thousands(batch_rate),
            format!("{batch_secs:.2}"),
            pct(batch_cpu, batch_secs),
        ],
        vec![
            format!("1 sidecar, POST /v1/events batched ({} per request)", cx.args.batch),
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

    // 1..=N sidecars delivering to the sink: published → all at the sink,
    // one call per message, then `event-pusher publish --batch B`.
    let sink = SinkProc::start(&cx.sink_bin).await?;
    for batch in [1, b] {
        for k in 1..=cx.args.scaleout_sidecars.max(1) {
            rows.push(delivering(cx, &sink, k, n, batch).await?);
        }
    }
    table(
        &format!("scale-out: {n} hook calls for {} users, {PARTITIONS} partitions", USERS),
        &["run", "events/s", "secs", "sidecars' cpu"],
        &rows,
    );
    println!(
        "  source / batched POST: {}; {b} calls per message / 1: {}",
        ratio(source_rate, http.events_per_s()),
        ratio(batch_rate, source_rate)
    );
    println!("  ratio = one sidecar's source rate / the raw lapin consumer's, one call per message; target >= 0.8");
    Ok(ratio(source_rate, raw_rate))
}

/// Wait until `sc`'s source has acked `messages` (preloaded before it
/// started): messages/s, seconds and the sidecar's CPU seconds.
async fn drain_source(sc: &Sidecar, messages: u64) -> Result<(f64, f64, f64), String> {
    let acked =
        |u: String| async move { source_metric(&u, "event_pusher_source_messages_total", "outcome=\"acked\"").await };
    sc.pause("sink").await?;
    let t0 = Instant::now();
    let at_t0 = acked(sc.url.clone()).await?;
    let cpu0 = sc.cpu_secs();
    let until = t0 + Duration::from_secs(300);
    while (acked(sc.url.clone()).await? as u64) < messages {
        if Instant::now() > until {
            return Err(format!(
                "the source acked {} of {messages} in 300 s:\n{}",
                acked(sc.url.clone()).await?,
                sc.log_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(((messages as f64 - at_t0) / secs, secs, sc.cpu_secs() - cpu0))
}

/// `k` sidecars delivering to the sink: `n` calls published (`batch` per
/// message: through `event-pusher publish --batch`) → all at the sink.
async fn delivering(cx: &Cx, sink: &SinkProc, k: usize, n: u64, batch: usize) -> Result<Vec<String>, String> {
    let (url, bin) = (&cx.args.rabbit_url, &cx.args.sidecar);
    let topo = Topology::declare(bin, url, PARTITIONS)?;
    let body = format!(
        "{}\n{}",
        topo.source_toml(),
        http_body(sink.port, cx.args.http_concurrency)
    );
    let mut sidecars = Vec::new();
    for _ in 0..k {
        let sc = cx.sidecar(BIG_SPOOL, &body).await?;
        sc.wait_path("/ready", Duration::from_secs(30)).await?;
        sidecars.push(sc);
    }
    let urls: Vec<String> = sidecars.iter().map(|s| s.url.clone()).collect();
    let balanced = wait_balanced(&urls, PARTITIONS, Duration::from_secs(60)).await?;
    // The command's input is ready before the clock starts.
    let lines: String = (0..n).map(|i| format!("{}\n", call(i))).collect();
    sink.client.reset().await?;
    let cpu0: f64 = sidecars.iter().map(|s| s.cpu_secs()).sum();
    let t0 = crate::unix_ns();
    let published = if batch == 1 {
        topo.publish(0..n, 1024).await?
    } else {
        publish_command(bin, &topo, batch, &lines)?
    };
    let got = sink.client.wait_for(n, Duration::from_secs(300)).await?;
    let secs = got.last_ns.saturating_sub(t0) as f64 / 1e9;
    let cpu: f64 = sidecars.iter().map(|s| s.cpu_secs()).sum::<f64>() - cpu0;
    let mut shares = Vec::new();
    for u in &urls {
        shares.push(thousands(
            source_metric(u, "event_pusher_source_messages_total", "outcome=\"acked\"").await?,
        ));
    }
    for sc in sidecars {
        sc.stop();
    }
    topo.delete().await;
    println!(
        "  {k} sidecar(s), {batch} per message: shared {PARTITIONS} partitions {balanced:.1?} after start; published in {:.2}s; acked messages per sidecar {}",
        published.as_secs_f64(),
        shares.join(" / ")
    );
    let name = if batch == 1 { "scaleout" } else { "scaleout-batch" };
    println!("rate {name} {k} {:.0}", n as f64 / secs);
    Ok(vec![
        format!("{k} sidecar(s), published ({batch} per message) → at the sink"),
        thousands(n as f64 / secs),
        format!("{secs:.2}"),
        pct(cpu, secs),
    ])
}

/// `event-pusher publish --batch B` with `lines` on stdin; how long it ran.
fn publish_command(bin: &std::path::Path, topo: &Topology, batch: usize, lines: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["publish", "--url", &topo.url, "--exchange", &topo.exchange])
        .args(["--batch", &batch.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {} publish: {e}", bin.display()))?;
    child
        .stdin
        .take()
        .ok_or("publish: no stdin")?
        .write_all(lines.as_bytes())
        .map_err(|e| format!("publish: writing stdin: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("publish: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "publish failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(started.elapsed())
}
