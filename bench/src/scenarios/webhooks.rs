//! webhooks: attach 10,000 webhook subscriptions (time per attach, RSS)
//! and the ingest p99 of events none of them wants, with them attached
//! over with none; the ratio is p99 with / p99 without (target ≤ 1.10).

use std::time::{Duration, Instant};

use futures::StreamExt;

use super::{errs, paused_http_body, Cx, BIG_SPOOL};
use crate::loadgen::{self, LoadOpts, LoadReport};
use crate::mix::Mix;
use crate::report::{fmt_ms, new_hist, ratio, record, table, thousands, Percentiles};
use crate::sidecar::free_port;

/// Ingest at a steady rate with single-event requests: the 202's p99 (ms).
async fn steady_p99(cx: &Cx, url: &str, d: Duration) -> Result<(f64, LoadReport), String> {
    let r = loadgen::run(LoadOpts {
        url: url.to_owned(),
        connections: cx.args.connections,
        rate: cx.args.webhooks_rate,
        duration: Some(d),
        batch: 1,
        mix: Mix::Chat,
        ..LoadOpts::default()
    })
    .await?;
    Ok((r.percentiles().p99_ms, r))
}

pub async fn run(cx: &Cx) -> Result<String, String> {
    let n = cx.args.webhooks;
    let d = cx.secs(8.0, 3.0);
    // Two sidecars, one without subscriptions and one with `n`, measured in
    // alternating rounds (best of each), so load from elsewhere on a shared
    // machine hurts both alike. Events are stored for a paused HTTP backend
    // (each request commits as in production); the subscriptions want
    // `headline`, which the chat mix never sends: matching by class means
    // they cost ingest nothing.
    // The subscriptions point at 127.0.0.1: private addresses allowed.
    let body = format!("{}\n[egress]\nallow_private = true\n", paused_http_body());
    let none = cx.sidecar(BIG_SPOOL, &body).await?;
    let many = cx.sidecar(BIG_SPOOL, &body).await?;
    none.pause("sink").await?;
    many.pause("sink").await?;
    let idle = many.rss();

    let client = reqwest::Client::new();
    let dead_url = format!("http://127.0.0.1:{}/hook", free_port());
    let t = Instant::now();
    let mut attach_ms = new_hist();
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
        .buffer_unordered(cx.args.connections)
        .collect()
        .await;
    let attach_total = t.elapsed().as_secs_f64();
    for r in results {
        record(&mut attach_ms, r?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attached = many.rss();
    let (mut p99_none, mut p99_many) = (f64::MAX, f64::MAX);
    let mut errors = String::new();
    for _ in 0..cx.rounds() {
        let (p, r) = steady_p99(cx, &none.url, d).await?;
        p99_none = p99_none.min(p);
        errors.push_str(&errs(&r));
        let (p, r) = steady_p99(cx, &many.url, d).await?;
        p99_many = p99_many.min(p);
        errors.push_str(&errs(&r));
    }
    none.stop();
    many.stop();
    let ap = Percentiles::of(&attach_ms);
    let mb = |kb: u64| format!("{:.1}", kb as f64 / 1024.0);
    table(
        &format!(
            "webhooks: {} subscriptions attached ({} at a time); ingest at {} events/s that none of them wants",
            thousands(n as f64),
            cx.args.connections,
            cx.args.webhooks_rate
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
