//! cluster: what `[cluster]` (state shared through PostgreSQL) costs, with
//! the store on and off in the same run (alternating rounds, best of each):
//!
//! - ingest: events/s accepted (standard mix, presence included, with a
//!   push backend whose presence changes go to the spool outbox and on to
//!   the store) → `ratio cluster-ingest` = on / off;
//! - push delivery: chats to offline users with a device each, preloaded
//!   with the push backend paused, then resumed and timed until the sink
//!   (standing in for MongoosePush) has them all → `ratio cluster-push`;
//! - store transactions per accepted event (`pg_stat_database.xact_commit`
//!   of the run's database, read after the sidecar exited so its counts are
//!   flushed): the relay batches, the hot path never waits on the store;
//! - convergence: with 1,000 presence changes/s going into sidecar A, a
//!   device registered on A, timed until `GET` on sidecar B shows it (p50 /
//!   p99 over the samples) → `latency cluster p99 MS`.
//!
//! Each sidecar gets a database of its own on the machine's PostgreSQL
//! (127.0.0.1:5432, user postgres), dropped afterwards; without one the
//! case says n/a.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{paused_http_body, wait_queued, Cx, SinkProc, BIG_SPOOL};
use crate::loadgen::{self, LoadOpts};
use crate::report::{ratio, table, thousands};
use crate::sidecar::Sidecar;

const PG: &str = "127.0.0.1:5432";

/// Users with a device in the push case.
const USERS: usize = 500;

/// A database for one sidecar (or a group of them), dropped with FORCE.
struct Db {
    name: String,
}

async fn admin() -> Result<tokio_postgres::Client, String> {
    let (client, conn) = tokio_postgres::connect(&format!("postgres://postgres@{PG}/postgres"), tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("no PostgreSQL at {PG} (user postgres): {e}"))?;
    tokio::spawn(conn);
    Ok(client)
}

impl Db {
    async fn create(tag: &str) -> Result<Db, String> {
        let name = format!(
            "ep_bench_{tag}_{}_{}",
            std::process::id(),
            crate::unix_ns() % 1_000_000_000
        );
        admin()
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| format!("create database {name}: {e}"))?;
        Ok(Db { name })
    }

    fn table(&self, node: &str) -> String {
        format!(
            "[cluster]\npostgres = \"postgres://postgres@{PG}/{}\"\nnode = \"{node}\"\n",
            self.name
        )
    }

    /// Transactions committed in this database so far.
    async fn commits(&self) -> Result<i64, String> {
        let row = admin()
            .await?
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = $1",
                &[&self.name],
            )
            .await
            .map_err(|e| format!("pg_stat_database: {e}"))?;
        Ok(row.get(0))
    }

    async fn drop_now(self) {
        if let Ok(c) = admin().await {
            let _ = c
                .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
                .await;
        }
    }
}

fn push_backend(sink_port: u16) -> String {
    format!(
        "[backends.push.mobile]\nconcurrency = 32\n[backends.push.mobile.mongoosepush]\nurl = \"http://127.0.0.1:{sink_port}\"\n"
    )
}

pub async fn run(cx: &Cx) -> Result<String, String> {
    admin().await?;
    let sink = SinkProc::start(&cx.sink_bin).await?;
    let d = cx.secs(5.0, 3.0);
    let n_push: u64 = if cx.args.quick { 10_000 } else { 30_000 };
    let mut ingest = [0.0f64; 2];
    let mut cpu_us = [f64::INFINITY; 2];
    let mut push = [0.0f64; 2];
    let mut per_event = Vec::new();
    for round in 0..cx.rounds() {
        for (i, on) in [false, true].into_iter().enumerate() {
            // Ingest: the http backend paused (ingest alone), the push
            // backend sees every presence change.
            let db = if on { Some(Db::create("ingest").await?) } else { None };
            let body = format!(
                "{}{}{}",
                paused_http_body(),
                push_backend(sink.port),
                db.as_ref().map(|d| d.table("a")).unwrap_or_default()
            );
            let sc = cx.sidecar(BIG_SPOOL, &body).await?;
            sc.pause("sink").await?;
            let cpu0 = sc.cpu_secs();
            let r = loadgen::run(LoadOpts {
                url: sc.url.clone(),
                connections: cx.args.connections,
                batch: cx.args.batch,
                duration: Some(d),
                seed: round as u64 + 1,
                ..LoadOpts::default()
            })
            .await?;
            // The sidecar's own CPU per event (PostgreSQL runs on the same
            // machine here: its share of the cores is not the sidecar's).
            let us = 1e6 * (sc.cpu_secs() - cpu0) / r.events.max(1) as f64;
            cpu_us[i] = cpu_us[i].min(us);
            ingest[i] = ingest[i].max(r.events_per_s());
            sc.stop();
            if let Some(db) = db {
                let commits = db.commits().await?;
                per_event.push(commits as f64 / r.events.max(1) as f64);
                db.drop_now().await;
            }

            // Push delivery.
            let db = if on { Some(Db::create("push").await?) } else { None };
            let body = format!(
                "{}{}",
                push_backend(sink.port),
                db.as_ref().map(|d| d.table("a")).unwrap_or_default()
            );
            let sc = cx.sidecar(BIG_SPOOL, &body).await?;
            push[i] = push[i].max(push_round(&sc, &sink, n_push, cx).await?);
            sc.stop();
            if let Some(db) = db {
                db.drop_now().await;
            }
        }
    }
    let (p50, p99, samples, lag) = convergence(cx, &sink).await?;
    let per_event = per_event.iter().copied().fold(f64::INFINITY, f64::min);
    table(
        "cluster: [cluster] off vs on (best of rounds)",
        &["case", "off", "on", "ratio on/off"],
        &[
            vec![
                "ingest ev/s (standard mix, batched)".into(),
                thousands(ingest[0]),
                thousands(ingest[1]),
                ratio(ingest[1], ingest[0]),
            ],
            vec![
                "sidecar CPU per ingested event, µs".into(),
                format!("{:.1}", cpu_us[0]),
                format!("{:.1}", cpu_us[1]),
                ratio(cpu_us[1], cpu_us[0]),
            ],
            vec![
                format!("push deliveries/s ({n_push} chats, {USERS} devices)"),
                thousands(push[0]),
                thousands(push[1]),
                ratio(push[1], push[0]),
            ],
        ],
    );
    println!(
        "store transactions per accepted event (all of them: relay batches, stats, migrations): {per_event:.4}\n\
         convergence under 1,000 presence changes/s on A: device put on A -> seen on B, \
         p50 {:.1} ms, p99 {:.1} ms over {samples} samples; B's apply-lag histogram p99 <= {lag}",
        p50 * 1e3,
        p99 * 1e3
    );
    println!("latency cluster p99 {:.1}", p99 * 1e3);
    println!("ratio cluster-push {}", ratio(push[1], push[0]));
    Ok(ratio(ingest[1], ingest[0]))
}

/// Register a device per user, preload `n` chats to them (the backend
/// paused), resume and time until the sink has them all: deliveries/s.
async fn push_round(sc: &Sidecar, sink: &SinkProc, n: u64, cx: &Cx) -> Result<f64, String> {
    // With [cluster], admin writes wait until the store's state is loaded.
    sc.wait_path("/ready", Duration::from_secs(30)).await?;
    let http = reqwest::Client::new();
    for u in 0..USERS {
        let url = format!("{}/v1/push/devices/u{u}@localhost/d{u}", sc.url);
        let resp = http
            .put(&url)
            .json(&json!({"provider": "mongoosepush", "service": "fcm"}))
            .send()
            .await
            .map_err(|e| format!("PUT {url}: {e}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(format!("PUT {url}: {status} {}", resp.text().await.unwrap_or_default()));
        }
    }
    sc.pause("mobile").await?;
    let calls: Vec<Value> = (0..n)
        .map(|i| {
            json!({"hook": "filter_local_packet", "from": "alice@localhost/a",
                "to": format!("u{}@localhost", i as usize % USERS), "type": "chat",
                "body": "are you coming tonight?", "id": format!("m-{i}")})
        })
        .collect();
    for chunk in calls.chunks(cx.args.batch.max(1)) {
        let resp = http
            .post(format!("{}/v1/events", sc.url))
            .json(&chunk)
            .send()
            .await
            .map_err(|e| format!("POST /v1/events: {e}"))?;
        if resp.status().as_u16() != 202 {
            return Err(format!("POST /v1/events: {}", resp.status()));
        }
    }
    wait_queued(sc, "mobile", n).await?;
    sink.client.reset().await?;
    let t0 = crate::unix_ns();
    sc.resume("mobile").await?;
    let got = sink.client.wait_for(n, Duration::from_secs(300)).await?;
    Ok(n as f64 / (got.last_ns.saturating_sub(t0) as f64 / 1e9).max(1e-9))
}

/// Two sidecars on one store; presence changes at 1,000/s into A while
/// devices put on A are timed until B lists them. (p50, p99, samples, B's
/// apply-lag histogram bound at p99).
async fn convergence(cx: &Cx, sink: &SinkProc) -> Result<(f64, f64, usize, String), String> {
    let db = Db::create("converge").await?;
    let a = cx
        .sidecar(BIG_SPOOL, &format!("{}{}", push_backend(sink.port), db.table("a")))
        .await?;
    let b = cx
        .sidecar(BIG_SPOOL, &format!("{}{}", push_backend(sink.port), db.table("b")))
        .await?;
    a.wait_path("/ready", Duration::from_secs(30)).await?;
    b.wait_path("/ready", Duration::from_secs(30)).await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (url, stop) = (a.url.clone(), stop.clone());
        tokio::spawn(async move { presence_load(&url, 1000.0, &stop).await })
    };
    let http = reqwest::Client::new();
    let samples = if cx.args.quick { 100 } else { 300 };
    let mut took = Vec::with_capacity(samples);
    for i in 0..samples {
        let jid = format!("conv{i}@localhost");
        let t0 = Instant::now();
        let resp = http
            .put(format!("{}/v1/push/devices/{jid}/c{i}", a.url))
            .json(&json!({"provider": "mongoosepush", "service": "fcm"}))
            .send()
            .await
            .map_err(|e| format!("PUT on A: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("PUT on A: {}", resp.status()));
        }
        let answered = Instant::now();
        loop {
            let v: Value = http
                .get(format!("{}/v1/push/devices/{jid}", b.url))
                .send()
                .await
                .map_err(|e| format!("GET on B: {e}"))?
                .json()
                .await
                .map_err(|e| format!("GET on B: {e}"))?;
            if v["devices"].as_array().is_some_and(|d| !d.is_empty()) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(format!("{jid}'s device never reached B"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        took.push(answered.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.await.map_err(|e| e.to_string())??;
    let lag = lag_p99(&b).await.unwrap_or_else(|| "n/a".into());
    a.stop();
    b.stop();
    db.drop_now().await;
    if sent == 0 {
        return Err("no presence changes were accepted during the convergence run".into());
    }
    took.sort_by(f64::total_cmp);
    let at = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    Ok((at(0.5), at(0.99), took.len(), lag))
}

/// `user_available` / `unset_presence` at `rate` per second (10 a request)
/// until `stop`; how many were accepted.
async fn presence_load(url: &str, rate: f64, stop: &std::sync::atomic::AtomicBool) -> Result<u64, String> {
    let http = reqwest::Client::new();
    let per_request = 10usize;
    let every = Duration::from_secs_f64(per_request as f64 / rate);
    let mut tick = tokio::time::interval(every);
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        let calls: Vec<Value> = (0..per_request as u64)
            .map(|k| {
                let i = n + k;
                let hook = if (i / 1000).is_multiple_of(2) {
                    "user_available"
                } else {
                    "unset_presence"
                };
                json!({"hook": hook, "jid": format!("p{}@localhost/r", i % 1000)})
            })
            .collect();
        let resp = http
            .post(format!("{url}/v1/events"))
            .json(&calls)
            .send()
            .await
            .map_err(|e| format!("presence load: {e}"))?;
        if resp.status().as_u16() == 202 {
            n += per_request as u64;
        }
    }
    Ok(n)
}

/// The bucket bound at which B's `event_pusher_cluster_apply_lag_seconds`
/// reaches 99 % of its count.
async fn lag_p99(b: &Sidecar) -> Option<String> {
    let (_, text) = b.get_text("/metrics").await;
    let name = "event_pusher_cluster_apply_lag_seconds_bucket";
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?.to_owned();
            let v = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, v))
        })
        .collect();
    let total = buckets.last()?.1;
    buckets
        .iter()
        .find(|(_, v)| *v >= 0.99 * total)
        .map(|(le, _)| format!("{le} s ({total} changes)"))
}
