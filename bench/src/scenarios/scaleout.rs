//! scaleout: hook calls from RabbitMQ partitions (`[sources.amqp]`):
//! events/s published → delivered to the sink through 1, 2 and 3 sidecars,
//! and one sidecar's source rate (queue preloaded → acked, backend paused)
//! over its own batched `POST /v1/events` rate; the ratio is source / HTTP
//! ingest.

use std::time::{Duration, Instant};

use super::{http_body, paused_http_body, pct, Cx, SinkProc, BIG_SPOOL};
use crate::loadgen::{self, LoadOpts};
use crate::report::{ratio, table, thousands};
use crate::scaleout::{source_metric, wait_balanced, Topology, USERS};
use crate::sidecar::check_config;

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
    let acked =
        |u: String| async move { source_metric(&u, "event_pusher_source_messages_total", "outcome=\"acked\"").await };

    // One sidecar, its backend paused: the source's ingest rate (queue
    // preloaded, start → all acked) beside its own batched POST rate.
    let topo = Topology::declare(bin, url, PARTITIONS)?;
    let published = topo.publish(0..n, 1024).await?;
    let sc = cx
        .sidecar(BIG_SPOOL, &format!("{}\n{}", topo.source_toml(), paused_http_body()))
        .await?;
    sc.pause("sink").await?;
    let t0 = Instant::now();
    let at_t0 = acked(sc.url.clone()).await?;
    let cpu0 = sc.cpu_secs();
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
    let source_cpu = sc.cpu_secs() - cpu0;
    let source_rate = (n as f64 - at_t0) / source_secs;
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
            "1 sidecar, source (preloaded queues → acked, backend paused)".into(),
            thousands(source_rate),
            format!("{source_secs:.2}"),
            pct(source_cpu, source_secs),
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

    // 1..=N sidecars delivering to the sink: published → all at the sink.
    let sink = SinkProc::start(&cx.sink_bin).await?;
    for k in 1..=cx.args.scaleout_sidecars.max(1) {
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
        sink.client.reset().await?;
        let cpu0: f64 = sidecars.iter().map(|s| s.cpu_secs()).sum();
        let t0 = crate::unix_ns();
        let published = topo.publish(0..n, 1024).await?;
        let got = sink.client.wait_for(n, Duration::from_secs(300)).await?;
        let secs = got.last_ns.saturating_sub(t0) as f64 / 1e9;
        let cpu: f64 = sidecars.iter().map(|s| s.cpu_secs()).sum::<f64>() - cpu0;
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
        &format!("scale-out: {n} hook calls for {} users, {PARTITIONS} partitions", USERS),
        &["run", "events/s", "secs", "sidecars' cpu"],
        &rows,
    );
    println!("  ratio = one sidecar's source rate / its batched POST rate; target >= 0.8");
    Ok(ratio(source_rate, http.events_per_s()))
}
