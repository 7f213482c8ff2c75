//! The raw baselines the sidecar is measured against, each moving the same
//! bytes with the same concurrency:
//!
//! - [`spool`]: redb alone, with the same group-commit scheme as the
//!   sidecar's spool writer (one writer thread; each submitter hands it a
//!   batch of records and waits for the fsync'd commit that holds it);
//! - [`http`]: reqwest posting the same bodies to the same sink;
//! - [`rabbit`]: lapin publishing the same messages with the same confirm
//!   window.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use redb::{Database, Durability, TableDefinition};

/// Result of a raw spool run.
#[derive(Debug, Clone)]
pub struct SpoolReport {
    pub events: u64,
    pub commits: u64,
    pub elapsed: Duration,
    /// Submit → committed latency per batch, µs.
    pub latency: hdrhistogram::Histogram<u64>,
}

impl SpoolReport {
    pub fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A batch of records for the group-commit writer, and whom to tell once
/// the commit that holds it is on disk.
pub type Submit = (Vec<Bytes>, Committed);

/// How a submitter hears that its batch is committed: a blocked thread
/// (the plain baseline) or a task (the HTTP one, `raw_ingest`).
pub enum Committed {
    Thread(mpsc::SyncSender<()>),
    Task(tokio::sync::oneshot::Sender<()>),
}

impl Committed {
    fn send(self) {
        match self {
            Committed::Thread(tx) => {
                let _ = tx.send(());
            }
            Committed::Task(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

/// The writer thread; it ends when every sender is dropped.
pub type WriterThread = std::thread::JoinHandle<Result<(), String>>;

/// The raw group-commit writer: a thread that takes every batch waiting
/// (up to [`MAX_GROUP`]), writes them in one fsync'd redb transaction and
/// answers each submitter; until every sender is dropped. Counts commits
/// in `commits`.
pub fn group_commit_writer(
    path: &std::path::Path,
    cache_mb: Option<usize>,
    commits: Arc<AtomicU64>,
) -> Result<(mpsc::Sender<Submit>, WriterThread), String> {
    let _ = std::fs::remove_file(path);
    let db = match cache_mb {
        None => Database::create(path),
        Some(mb) => Database::builder().set_cache_size(mb << 20).create(path),
    }
    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let table: TableDefinition<u64, &[u8]> = TableDefinition::new("queue/raw");
    {
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(table).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
    }
    let (tx, rx) = mpsc::channel::<Submit>();
    let writer = std::thread::Builder::new()
        .name("raw-writer".into())
        .spawn(move || -> Result<(), String> {
            let mut seq = 0u64;
            let mut group: Vec<Submit> = Vec::with_capacity(64);
            while let Ok(first) = rx.recv() {
                group.push(first);
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(s) => group.push(s),
                        Err(_) => break,
                    }
                }
                let mut txn = db.begin_write().map_err(|e| e.to_string())?;
                txn.set_durability(Durability::Immediate).map_err(|e| e.to_string())?;
                {
                    let mut t = txn.open_table(table).map_err(|e| e.to_string())?;
                    for (records, _) in &group {
                        for r in records {
                            seq += 1;
                            t.insert(seq, r.as_ref()).map_err(|e| e.to_string())?;
                        }
                    }
                }
                txn.commit().map_err(|e| e.to_string())?;
                commits.fetch_add(1, Ordering::Relaxed);
                for (_, reply) in group.drain(..) {
                    reply.send();
                }
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok((tx, writer))
}

/// Most submissions in one transaction (as the sidecar's writer).
const MAX_GROUP: usize = 4096;

/// Raw redb group-commit write rate: `submitters` threads each append
/// `batch` records (cycling through `records`) and wait for the durable
/// commit, for `duration`.
pub fn spool(
    dir: &std::path::Path,
    records: Arc<Vec<Bytes>>,
    submitters: usize,
    batch: usize,
    duration: Duration,
) -> Result<SpoolReport, String> {
    spool_with(dir, records, submitters, batch, SpoolLimit::Time(duration), None)
}

/// When a raw spool run stops.
#[derive(Debug, Clone, Copy)]
pub enum SpoolLimit {
    Time(Duration),
    Events(u64),
}

/// [`spool`] with a stop condition and optionally redb's cache size (MiB;
/// `None`: redb's default, as the sidecar's spool uses).
pub fn spool_with(
    dir: &std::path::Path,
    records: Arc<Vec<Bytes>>,
    submitters: usize,
    batch: usize,
    limit: SpoolLimit,
    cache_mb: Option<usize>,
) -> Result<SpoolReport, String> {
    let path = dir.join("raw.redb");
    let commits = Arc::new(AtomicU64::new(0));
    let (tx, writer) = group_commit_writer(&path, cache_mb, commits.clone())?;

    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(AtomicU64::new(match limit {
        SpoolLimit::Events(n) => n,
        SpoolLimit::Time(_) => u64::MAX,
    }));
    let start = Instant::now();
    let mut threads = Vec::new();
    for s in 0..submitters {
        let tx = tx.clone();
        let records = records.clone();
        let stop = stop.clone();
        let budget = budget.clone();
        threads.push(std::thread::spawn(move || {
            let mut hist = crate::report::new_hist();
            let mut events = 0u64;
            let mut i = s * 7919;
            let (rtx, rrx) = mpsc::sync_channel(1);
            while !stop.load(Ordering::Relaxed) {
                if budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(batch as u64))
                    .is_err()
                {
                    break;
                }
                let b: Vec<Bytes> = (0..batch).map(|k| records[(i + k) % records.len()].clone()).collect();
                i += batch;
                let t = Instant::now();
                if tx.send((b, Committed::Thread(rtx.clone()))).is_err() || rrx.recv().is_err() {
                    break;
                }
                crate::report::record(&mut hist, t.elapsed().as_micros() as u64);
                events += batch as u64;
            }
            (events, hist)
        }));
    }
    drop(tx);
    if let SpoolLimit::Time(duration) = limit {
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    }
    let mut report = SpoolReport {
        events: 0,
        commits: 0,
        elapsed: Duration::ZERO,
        latency: crate::report::new_hist(),
    };
    for t in threads {
        let (e, h) = t.join().map_err(|_| "submitter panicked".to_string())?;
        report.events += e;
        let _ = report.latency.add(&h);
    }
    report.elapsed = start.elapsed();
    writer.join().map_err(|_| "writer panicked".to_string())??;
    report.commits = commits.load(Ordering::Relaxed);
    let _ = std::fs::remove_file(&path);
    Ok(report)
}

/// Result of a raw delivery run (HTTP or RabbitMQ).
#[derive(Debug, Clone)]
pub struct DeliverReport {
    pub ok: u64,
    pub failed: u64,
    /// Unix ns when the first request was started.
    pub start_ns: u64,
    pub elapsed: Duration,
}

impl DeliverReport {
    pub fn per_s(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// reqwest posting `bodies` to `url`, `concurrency` requests at a time, with
/// the headers the sidecar's HTTP backend sends (content type, user agent,
/// `webhook-id`). Elapsed ends when the last answer is in.
pub async fn http(url: &str, bodies: Arc<Vec<(String, Bytes)>>, concurrency: usize) -> Result<DeliverReport, String> {
    let client = reqwest::Client::builder()
        .user_agent("event-pusher/0.1.0")
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(concurrency)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start_ns = crate::unix_ns();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, ok, failed, bodies, url) = (
            client.clone(),
            next.clone(),
            ok.clone(),
            failed.clone(),
            bodies.clone(),
            url.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((id, body)) = bodies.get(i) else { break };
                let r = client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header("webhook-id", id.as_str())
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    Ok(DeliverReport {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        start_ns,
        elapsed: start.elapsed(),
    })
}

/// Declare the bench exchange and a durable queue bound to everything on
/// it (so messages are really stored, as in production), and purge it.
pub async fn rabbit_setup(url: &str, exchange: &str, queue: &str) -> Result<(), String> {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions};
    use lapin::types::FieldTable;
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect to RabbitMQ: {e}"))?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.exchange_declare(
        exchange.into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("cannot declare exchange {exchange}: {e}"))?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("cannot declare queue {queue}: {e}"))?;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    ch.queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}

/// Purge (and with `delete`, remove) the bench queue.
pub async fn rabbit_cleanup(url: &str, exchange: &str, queue: &str, delete: bool) -> Result<u32, String> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions, QueuePurgeOptions};
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| e.to_string())?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    let n = ch
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    if delete {
        let _ = ch.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
        let _ = ch
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(n)
}

/// lapin publishing `msgs` to `exchange` on one confirm-mode channel,
/// keeping at most `window` publishes unconfirmed. Persistent messages with
/// the properties the rabbit backend sets.
pub async fn rabbit(
    url: &str,
    exchange: &str,
    msgs: Arc<Vec<crate::scenario::RabbitMsg>>,
    window: usize,
) -> Result<DeliverReport, String> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::types::ShortString;
    use lapin::{BasicProperties, Confirmation};
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect to RabbitMQ: {e}"))?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut pending = FuturesUnordered::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    let start_ns = crate::unix_ns();
    let start = Instant::now();
    let exchange = ShortString::from(exchange.to_owned());
    let mut tally = |c: Result<Confirmation, lapin::Error>| match c {
        Ok(Confirmation::Ack(None)) => ok += 1,
        _ => failed += 1,
    };
    for m in msgs.iter() {
        while pending.len() >= window {
            if let Some(c) = pending.next().await {
                tally(c);
            }
        }
        let props = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(m.message_id.clone()))
            .with_timestamp(m.timestamp)
            .with_type(ShortString::from(m.class));
        let confirm = ch
            .basic_publish(
                exchange.clone(),
                ShortString::from(m.routing_key.clone()),
                BasicPublishOptions::default(),
                &m.body,
                props,
            )
            .await
            .map_err(|e| format!("publish failed: {e}"))?;
        pending.push(confirm);
    }
    while let Some(c) = pending.next().await {
        tally(c);
    }
    let elapsed = start.elapsed();
    let _ = conn.close(200, "bye".into()).await;
    Ok(DeliverReport {
        ok,
        failed,
        start_ns,
        elapsed,
    })
}
