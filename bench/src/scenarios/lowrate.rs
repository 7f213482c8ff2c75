//! lowrate: CPU per event (ingest + delivery) at 200 events/s, over the
//! same requests flat out (the cost of a commit, a read and an ack per
//! event when nothing batches).

use std::time::Duration;

use super::{Cx, SinkProc};
use crate::loadgen::{self, LoadOpts, LoadReport};
use crate::report::{ratio, table, thousands};

/// CPU seconds the sidecar spends per event, ingest through delivery, at a
/// low steady rate and at full load. At low rates nothing batches: each
/// event pays a commit, and used to pay a read and an ack commit too.
pub async fn run(cx: &Cx) -> Result<String, String> {
    let d = cx.secs(10.0, 5.0);
    let sink = SinkProc::start(&cx.sink_bin).await?;
    let sc = cx.delivering_sidecar(sink.port).await?;
    // One run: events through to the sink; CPU per event and the split.
    let run = |opts: LoadOpts| {
        let (sc, sink) = (&sc, &sink);
        async move {
            sink.client.reset().await?;
            let cpu0 = sc.cpu_secs();
            let r = loadgen::run(opts).await?;
            sink.client.wait_for(r.events, Duration::from_secs(60)).await?;
            let cpu = sc.cpu_secs() - cpu0;
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
        connections: cx.args.connections,
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
                format!("flat out, single, {} connections", cx.args.connections),
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
