//! memory: the sidecar's peak RSS idle and with 1,000,000 events queued
//! (backend paused); the ratio is loaded / idle.

use std::time::{Duration, Instant};

use super::{paused_http_body, preload, wait_queued, Cx, BIG_SPOOL};
use crate::mix::Mix;
use crate::report::{ratio, table, thousands};

pub async fn run(cx: &Cx) -> Result<String, String> {
    let n = cx.args.memory_events;
    let sc = cx.sidecar(BIG_SPOOL, &paused_http_body()).await?;
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
