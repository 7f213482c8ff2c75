//! The scale-out case's tools: a topology of its own per run (declared by
//! the sidecar binary's `declare-topology`, deleted after), publishing hook
//! calls the way a chat node does (routing key = the user's bare JID,
//! persistent, confirms; one call per message or a user's batch as a JSON
//! array), reading the sources' counters off `/metrics`, and the raw
//! baseline of the source: bare lapin consuming the same partitions.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};

/// Users the hook calls are spread over (each its own routing key).
pub const USERS: usize = 500;

/// Unacked messages per partition: the sidecar's `prefetch` in
/// [`Topology::source_toml`] and the raw consumer's alike.
pub const PREFETCH: u16 = 256;

/// Hook call `n`: a chat message of user `n % USERS`.
pub fn call(n: u64) -> Value {
    let user = user_of(n);
    json!({"hook": "user_send_message", "from": format!("{user}/phone"), "to": "peer@localhost",
           "type": "chat", "body": format!("message {n} of the benchmark"), "id": format!("m-{n}")})
}

fn user_of(n: u64) -> String {
    format!("u{}@localhost", n as usize % USERS)
}

/// One run's exchange and queues.
pub struct Topology {
    pub url: String,
    pub exchange: String,
    pub partitions: usize,
}

impl Topology {
    /// A fresh exchange (`epbench.hooks.<ns>`), declared with the sidecar
    /// binary's own command.
    pub fn declare(bin: &Path, url: &str, partitions: usize) -> Result<Topology, String> {
        let exchange = format!("epbench.hooks.{}", crate::unix_ns());
        let out = Command::new(bin)
            .args(["declare-topology", "--url", url, "--exchange", &exchange])
            .args(["--partitions", &partitions.to_string()])
            .output()
            .map_err(|e| format!("cannot run {} declare-topology: {e}", bin.display()))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Topology {
            url: url.to_owned(),
            exchange,
            partitions,
        })
    }

    /// The `[sources.amqp.bench]` table for this topology.
    pub fn source_toml(&self) -> String {
        format!(
            "[sources.amqp.bench]\nurl = \"{}\"\nexchange = \"{}\"\npartitions = {}\nprefetch = {PREFETCH}\ndeclare = false\n",
            self.url, self.exchange, self.partitions
        )
    }

    /// Publish hook calls `range` (call `n` is a chat message of user
    /// `n % USERS`), one per message, `window` confirms outstanding;
    /// returns how long it took.
    pub async fn publish(&self, range: std::ops::Range<u64>, window: usize) -> Result<Duration, String> {
        self.publish_batched(range, window, 1).await.map(|(took, _)| took)
    }

    /// As [`Topology::publish`], with up to `batch` calls of one user per
    /// message (a JSON array, each user's calls in order); returns how long
    /// it took and how many messages it sent.
    pub async fn publish_batched(
        &self,
        range: std::ops::Range<u64>,
        window: usize,
        batch: usize,
    ) -> Result<(Duration, u64), String> {
        let conn = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.url))?;
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut pending = std::collections::VecDeque::new();
        let mut held: Vec<Vec<Value>> = vec![Vec::new(); USERS];
        let mut messages = 0u64;
        let last = range.end;
        for n in range {
            let u = n as usize % USERS;
            held[u].push(call(n));
            // Full, or the run's last calls: send this user's.
            if held[u].len() < batch.max(1) && n + 1 < last {
                continue;
            }
            let users: Vec<usize> = if n + 1 < last {
                vec![u]
            } else {
                (0..USERS).filter(|u| !held[*u].is_empty()).collect()
            };
            for u in users {
                let calls = std::mem::take(&mut held[u]);
                let body = match calls.len() {
                    1 => serde_json::to_vec(&calls[0]),
                    _ => serde_json::to_vec(&calls),
                }
                .map_err(|e| e.to_string())?;
                let confirm = ch
                    .basic_publish(
                        self.exchange.as_str().into(),
                        user_of(u as u64).as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default()
                            .with_content_type("application/json".into())
                            .with_delivery_mode(2),
                    )
                    .await
                    .map_err(|e| format!("publish: {e}"))?;
                messages += 1;
                pending.push_back(confirm);
                while pending.len() > window {
                    if let Some(c) = pending.pop_front() {
                        c.await.map_err(|e| format!("confirm: {e}"))?;
                    }
                }
            }
        }
        for c in pending {
            c.await.map_err(|e| format!("confirm: {e}"))?;
        }
        let took = started.elapsed();
        let _ = conn.close(200, "done".into()).await;
        Ok((took, messages))
    }

    /// The raw baseline of the source: bare lapin on one connection, a
    /// channel per partition (as the sidecar has), the same prefetch,
    /// taking what has arrived and acking it with one `multiple` ack, no
    /// processing. Returns how long consuming `messages` took, from the
    /// subscriptions to the last ack.
    pub async fn raw_consume(&self, messages: u64, timeout: Duration) -> Result<Duration, String> {
        let conn = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.url))?;
        let done = Arc::new(AtomicU64::new(0));
        let all_in = Arc::new(tokio::sync::Notify::new());
        let mut tasks = tokio::task::JoinSet::new();
        let started = Instant::now();
        for p in 0..self.partitions {
            let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
            ch.basic_qos(PREFETCH, BasicQosOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            let queue = format!("{}.{p}", self.exchange);
            let mut consumer = ch
                .basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("consume {queue}: {e}"))?;
            let (done, all_in) = (done.clone(), all_in.clone());
            tasks.spawn(async move {
                while let Some(first) = consumer.next().await {
                    let mut last = first.map_err(|e| e.to_string())?.delivery_tag;
                    let mut n = 1;
                    while n < u64::from(PREFETCH) {
                        match consumer.next().now_or_never() {
                            Some(Some(Ok(d))) => {
                                last = d.delivery_tag;
                                n += 1;
                            }
                            _ => break,
                        }
                    }
                    ch.basic_ack(last, BasicAckOptions { multiple: true })
                        .await
                        .map_err(|e| e.to_string())?;
                    if done.fetch_add(n, Ordering::Relaxed) + n >= messages {
                        all_in.notify_one();
                    }
                }
                Ok::<(), String>(())
            });
        }
        let finished = tokio::time::timeout(timeout, all_in.notified()).await;
        let took = started.elapsed();
        tasks.abort_all();
        let _ = conn.close(200, "done".into()).await;
        match finished {
            Ok(()) => Ok(took),
            Err(_) => Err(format!(
                "the raw consumer got {} of {messages} messages in {timeout:?}",
                done.load(Ordering::Relaxed)
            )),
        }
    }

    /// Delete the exchange and its queues.
    pub async fn delete(&self) {
        let Ok(conn) = Connection::connect(&self.url, ConnectionProperties::default()).await else {
            return;
        };
        let Ok(ch) = conn.create_channel().await else {
            return;
        };
        let queues = (0..self.partitions)
            .map(|p| format!("{}.{p}", self.exchange))
            .chain(["dead", "members"].map(|q| format!("{}.{q}", self.exchange)));
        for q in queues {
            let _ = ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
        }
        let _ = ch
            .exchange_delete(self.exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
        let _ = conn.close(200, "done".into()).await;
    }
}

/// One sample of a source's series off a sidecar's `/metrics` (summed
/// over every line with the name and label).
pub async fn source_metric(base_url: &str, name: &str, label: &str) -> Result<f64, String> {
    let text = event_pusher_testkit::scrape(base_url).await?;
    Ok(event_pusher_testkit::sum_of(&text, name, &[label]))
}

/// Wait until the sidecars at `urls` share `partitions` (each active on at
/// most its fair share, all of them covered).
pub async fn wait_balanced(urls: &[String], partitions: usize, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let fair = partitions.div_ceil(urls.len().max(1));
    loop {
        let mut active = Vec::new();
        for u in urls {
            active.push(source_metric(u, "event_pusher_source_partitions_active", "source=\"bench\"").await? as usize);
        }
        if active.iter().sum::<usize>() == partitions && active.iter().all(|n| *n <= fair) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            return Err(format!("partitions not shared after {timeout:?}: active {active:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
