//! mixed: single-event ingest flat out with delivery on, over the same
//! with delivery paused (where ingest and delivery contend).

use super::{errs, lat_cells, Cx, SinkProc};
use crate::loadgen::{self, LoadOpts, LoadReport};
use crate::report::{ratio, table, thousands};

/// Single-event ingest flat out with delivery running, over the same with
/// delivery paused, alternating over rounds (best of each). The ratio is
/// what delivery costs ingest when both share the machine.
pub async fn run(cx: &Cx) -> Result<String, String> {
    let d = cx.secs(5.0, 3.0);
    let sink = SinkProc::start(&cx.sink_bin).await?;
    let (mut on_best, mut off_best) = (None::<LoadReport>, None::<LoadReport>);
    let mut delivered_rate: f64 = 0.0;
    for round in 0..cx.rounds() {
        let sc = cx.delivering_sidecar(sink.port).await?;
        let opts = LoadOpts {
            url: sc.url.clone(),
            connections: cx.args.connections,
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
            cx.args.connections,
            d.as_secs_f64(),
            cx.rounds()
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
