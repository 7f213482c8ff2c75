//! rabbit: events/s published to RabbitMQ with publisher confirms
//! (preloaded with the backend paused, then resumed and timed until all
//! are confirmed), over raw lapin with the same confirm window.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{best, pct, preload, rates, us_per_event, wait_queued, Cx, Round, BIG_SPOOL};
use crate::mix::Mix;
use crate::raw;
use crate::report::{ratio, table, thousands};
use crate::scenario;
use crate::sidecar::{check_config, cpu_secs};

const EXCHANGE: &str = "epbench_chat";
const QUEUE: &str = "epbench_chat_q";

fn rabbit_body(url: &str, window: usize) -> String {
    format!(
        "[backends.rabbit.rmq]\nurl = \"{url}\"\nconcurrency = {window}\npool_size = 1\nmax_in_flight = {window}\n\n\
         [backends.rabbit.rmq.chat_msg_exchange]\nname = \"{EXCHANGE}\"\n"
    )
}

pub async fn run(cx: &Cx) -> Result<String, String> {
    let n = cx
        .args
        .rabbit_events
        .unwrap_or(if cx.args.quick { 30_000 } else { 100_000 });
    let w = cx.args.rabbit_window;
    let url = &cx.args.rabbit_url;
    if TcpStream::connect_timeout(
        &"127.0.0.1:5672".parse().map_err(|_| "bad addr")?,
        Duration::from_secs(2),
    )
    .is_err()
    {
        return Err("RabbitMQ is not reachable at 127.0.0.1:5672".into());
    }
    let body = rabbit_body(url, w);
    check_config(&cx.args.sidecar, &cx.tmp, &body).map_err(|e| {
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
    for _ in 0..cx.rounds() {
        let sc = cx.sidecar(BIG_SPOOL, &body).await?;
        sc.wait_path("/ready", Duration::from_secs(30)).await?;
        sc.pause("rmq").await?;
        preload(&sc.url, n, Mix::Chat, cx).await?;
        wait_queued(&sc, "rmq", n).await?;
        let cpu0 = sc.cpu_secs();
        let t0 = Instant::now();
        sc.resume("rmq").await?;
        let (t1, row) = sc
            .wait_count(
                "rmq",
                "delivered",
                n,
                Duration::from_millis(5),
                Duration::from_secs(300),
            )
            .await?;
        let secs = (t1 - t0).as_secs_f64();
        let cpu1 = sc.cpu_secs();
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
