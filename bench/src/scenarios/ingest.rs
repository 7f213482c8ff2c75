//! ingest: events/s accepted (202, fsync'd) by the sidecar, batched and
//! single, over two raw baselines with the same records and concurrency
//! (best of alternating rounds): redb group commit alone (`ratio ingest`,
//! `ratio ingest-single`), and a bare hyper server doing the same JSON
//! parse and the same group commit behind HTTP on the same cores
//! (`ratio ingest-hyper`, `ratio ingest-hyper-single`).

use std::sync::Arc;

use super::{errs, lat_cells, paused_http_body, Cx, RawIngestProc, BIG_SPOOL};
use crate::loadgen::{self, LoadOpts, LoadReport};
use crate::mix::Mix;
use crate::raw;
use crate::report::{ratio, table, thousands, Percentiles};
use crate::scenario;

pub async fn run(cx: &Cx) -> Result<String, String> {
    let d = cx.secs(5.0, 3.0);
    let (conns, batch) = (cx.args.connections, cx.args.batch);
    // The same records (canonical JSON after the filters) for raw redb.
    let records = Arc::new(scenario::records(&scenario::events(7, Mix::Standard, 20_000)));
    let (mean, min, max) = scenario::size_stats(&records);
    let dir = tempfile::tempdir_in(&cx.tmp).map_err(|e| e.to_string())?;
    let raw_run = |b: usize| {
        let (p, r) = (dir.path().to_path_buf(), records.clone());
        tokio::task::spawn_blocking(move || raw::spool(&p, r, conns, b, d))
    };
    // sidecar batched, raw redb batched, sidecar single, raw redb single,
    // raw hyper batched, raw hyper single.
    let mut best: [Option<(f64, Vec<String>)>; 6] = Default::default();
    let mut keep = |i: usize, rate: f64, row: Vec<String>| {
        if best[i].as_ref().is_none_or(|(r, _)| rate > *r) {
            best[i] = Some((rate, row));
        }
    };
    let mut all: [Vec<f64>; 6] = Default::default();
    let mut spool_note = String::new();
    for round in 0..cx.rounds() {
        // A fresh sidecar per round; its backend is paused and points
        // nowhere, so ingest alone is measured.
        let sc = cx.sidecar(BIG_SPOOL, &paused_http_body()).await?;
        sc.pause("sink").await?;
        let opts = LoadOpts {
            url: sc.url.clone(),
            connections: conns,
            duration: Some(d),
            seed: round as u64 + 1,
            ..LoadOpts::default()
        };
        let cpu0 = sc.cpu_secs();
        let batched = loadgen::run(LoadOpts { batch, ..opts.clone() }).await?;
        let cpu1 = sc.cpu_secs();
        let rb = raw_run(batch).await.map_err(|e| e.to_string())??;
        let cpu2 = sc.cpu_secs();
        let single = loadgen::run(LoadOpts {
            batch: 1,
            ..opts.clone()
        })
        .await?;
        let cpu3 = sc.cpu_secs();
        let rs = raw_run(1).await.map_err(|e| e.to_string())??;
        // The HTTP baseline, in its own process as the sidecar is.
        let hyper = RawIngestProc::start(&cx.tmp).await?;
        let hopts = LoadOpts {
            url: hyper.url.clone(),
            ..opts.clone()
        };
        let hc0 = hyper.cpu_secs();
        let hb = loadgen::run(LoadOpts { batch, ..hopts.clone() }).await?;
        let hc1 = hyper.cpu_secs();
        let hs = loadgen::run(LoadOpts { batch: 1, ..hopts }).await?;
        let hc2 = hyper.cpu_secs();
        drop(hyper);
        spool_note = format!(
            "spool after a round: {} events, {} MB",
            thousands(sc.try_backend("sink").await?["queued"].as_u64().unwrap_or(0) as f64),
            sc.spool_bytes() / 1_000_000
        );
        sc.stop();
        for (i, v) in [
            batched.events_per_s(),
            rb.events_per_s(),
            single.events_per_s(),
            rs.events_per_s(),
            hb.events_per_s(),
            hs.events_per_s(),
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
        keep(
            4,
            hb.events_per_s(),
            side_row("raw hyper batched", &hb, batch, hc1 - hc0),
        );
        keep(5, hs.events_per_s(), side_row("raw hyper single", &hs, 1, hc2 - hc1));
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
        "  sidecar / raw redb: batched {}, single {}; sidecar / raw hyper: batched {}, single {} (target 0.85); {spool_note}",
        ratio(rate(0), rate(1)),
        ratio(rate(2), rate(3)),
        ratio(rate(0), rate(4)),
        ratio(rate(2), rate(5)),
    );
    println!("ratio ingest-single {}", ratio(rate(2), rate(3)));
    println!("ratio ingest-hyper {}", ratio(rate(0), rate(4)));
    println!("ratio ingest-hyper-single {}", ratio(rate(2), rate(5)));
    Ok(ratio(rate(0), rate(1)))
}

fn raw_row(name: &str, r: &raw::SpoolReport, b: usize) -> Vec<String> {
    let p = Percentiles::of(&r.latency);
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
        "cpu {:.0}%, {:.1} µs/event{}",
        100.0 * cpu / r.elapsed.as_secs_f64(),
        1e6 * cpu / (r.events as f64).max(1.0),
        errs(r)
    ));
    row
}
