//! fanout: one event wanted by `--fanout` webhook subscriptions (default
//! 5,000): how long its POST takes, how long until it is written to every
//! queue, how long other requests sent meanwhile take (single chat events
//! for a paused HTTP backend, one every 10 ms, until the fan-out is
//! written), and the sidecar's RSS before the subscriptions are attached,
//! after, once the event reached all of them (the sink), and once all are
//! detached again. No ratio: a before/after measurement (BENCHMARKS.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::{paused_http_body, Cx, SinkProc, BIG_SPOOL};
use crate::report::{fmt_ms, table, thousands};

/// Send `calls` admin requests 16 at a time; each must answer `want`.
async fn each(
    client: &reqwest::Client,
    calls: Vec<(reqwest::Method, String, Option<serde_json::Value>)>,
    want: u16,
) -> Result<(), String> {
    let results: Vec<Result<(), String>> = futures::stream::iter(calls)
        .map(|(method, url, body)| {
            let client = client.clone();
            async move {
                let mut req = client.request(method, &url);
                if let Some(b) = body {
                    req = req.header("content-type", "application/json").body(b.to_string());
                }
                let r = req.send().await.map_err(|e| e.to_string())?;
                if r.status().as_u16() != want {
                    return Err(format!("{url}: {}", r.status()));
                }
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn post(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> Result<Duration, String> {
    let t = Instant::now();
    let r = client
        .post(format!("{url}/v1/events"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().as_u16() != 202 {
        return Err(format!("POST /v1/events: {}", r.status()));
    }
    Ok(t.elapsed())
}

/// `event_pusher_spool_fanout_pending` (0 when the sidecar has no such gauge).
async fn fanout_pending(client: &reqwest::Client, url: &str) -> Result<u64, String> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("event_pusher_spool_fanout_pending "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64))
}

pub async fn run(cx: &Cx) -> Result<String, String> {
    let n = cx.args.fanout;
    let sink = SinkProc::start(&cx.sink_bin).await?;
    // The subscriptions deliver to 127.0.0.1: private addresses allowed.
    let body = format!("{}\n[egress]\nallow_private = true\n", paused_http_body());
    let sc = cx.sidecar(BIG_SPOOL, &body).await?;
    sc.pause("sink").await?;
    let idle = sc.rss();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let hook = format!("http://127.0.0.1:{}/hook", sink.port);
    let attaches = (0..n)
        .map(|i| {
            let body = serde_json::json!({"id": format!("fan{i}"), "url": hook, "events": ["unacked"]});
            (reqwest::Method::POST, format!("{}/v1/webhooks", sc.url), Some(body))
        })
        .collect();
    each(&client, attaches, 201).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attached = sc.rss();

    // Other requests all along the fan-out, each on its own task: a slow
    // answer does not hold the next one back.
    let stop = Arc::new(AtomicBool::new(false));
    let others = {
        let (client, url, stop) = (client.clone(), sc.url.clone(), stop.clone());
        tokio::spawn(async move {
            let chat = serde_json::json!({"hook": "user_send_message", "from": "a@localhost/r", "to": "b@localhost",
                "type": "chat", "body": "hi"});
            let mut sent = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (client, url, chat) = (client.clone(), url.clone(), chat.clone());
                sent.push(tokio::spawn(async move { post(&client, &url, &chat).await }));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut worst = Duration::ZERO;
            for one in futures::future::join_all(sent).await {
                worst = worst.max(one.map_err(|e| e.to_string())??);
            }
            Ok::<_, String>(worst)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let unacked =
        serde_json::json!({"hook": "unacknowledged_message", "to": "bob@localhost/phone", "body": "x".repeat(512)});
    let t0 = Instant::now();
    let fan = post(&client, &sc.url, &unacked).await?;
    // A large fan-out is written to its queues after its 202, a chunk per
    // commit: the other requests go on until all of it is written (the
    // gauge is absent on a build that writes it in the request's commit).
    let written = loop {
        let pending = fanout_pending(&client, &sc.url).await?;
        if pending == 0 {
            break t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let worst = others.await.map_err(|e| e.to_string())??;
    sink.client.wait_for(n as u64, Duration::from_secs(300)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = sc.rss();
    let detaches = (0..n)
        .map(|i| (reqwest::Method::DELETE, format!("{}/v1/webhooks/fan{i}", sc.url), None))
        .collect();
    each(&client, detaches, 200).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let detached = sc.rss();
    sc.stop();
    let mb = |kb: u64| format!("{:.1}", kb as f64 / 1024.0);
    table(
        &format!(
            "fanout: one event for {} webhook subscriptions, other requests meanwhile",
            thousands(n as f64)
        ),
        &["what", "value"],
        &[
            vec!["fan-out POST ms".into(), fmt_ms(fan.as_secs_f64() * 1000.0)],
            vec![
                "fan-out written to every queue ms".into(),
                fmt_ms(written.as_secs_f64() * 1000.0),
            ],
            vec![
                "other requests meanwhile: slowest ms".into(),
                fmt_ms(worst.as_secs_f64() * 1000.0),
            ],
            vec![
                "RSS MB idle / attached / delivered / detached".into(),
                format!(
                    "{} / {} / {} / {}",
                    mb(idle.rss_kb),
                    mb(attached.rss_kb),
                    mb(delivered.rss_kb),
                    mb(detached.rss_kb)
                ),
            ],
        ],
    );
    Ok(String::new())
}
