//! The scale-out case's tools: a topology of its own per run (declared by
//! the sidecar binary's `declare-topology`, deleted after), publishing hook
//! calls the way a chat node does (routing key = the user's bare JID,
//! persistent, confirms), and reading the sources' counters off
//! `/metrics`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;

/// Users the hook calls are spread over (each its own routing key).
pub const USERS: usize = 500;

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
            "[sources.amqp.bench]\nurl = \"{}\"\nexchange = \"{}\"\npartitions = {}\nprefetch = 256\ndeclare = false\n",
            self.url, self.exchange, self.partitions
        )
    }

    /// Publish hook calls `range` (call `n` is a chat message of user
    /// `n % USERS`), `window` confirms outstanding; returns how long it took.
    pub async fn publish(&self, range: std::ops::Range<u64>, window: usize) -> Result<Duration, String> {
        let conn = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.url))?;
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut pending = std::collections::VecDeque::new();
        for n in range {
            let user = format!("u{}@localhost", n as usize % USERS);
            let body = json!({"hook": "user_send_message", "from": format!("{user}/phone"), "to": "peer@localhost",
                              "type": "chat", "body": format!("message {n} of the benchmark"), "id": format!("m-{n}")});
            let confirm = ch
                .basic_publish(
                    self.exchange.as_str().into(),
                    user.as_str().into(),
                    BasicPublishOptions::default(),
                    &serde_json::to_vec(&body).map_err(|e| e.to_string())?,
                    BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_delivery_mode(2),
                )
                .await
                .map_err(|e| format!("publish: {e}"))?;
            pending.push_back(confirm);
            while pending.len() > window {
                if let Some(c) = pending.pop_front() {
                    c.await.map_err(|e| format!("confirm: {e}"))?;
                }
            }
        }
        for c in pending {
            c.await.map_err(|e| format!("confirm: {e}"))?;
        }
        let took = started.elapsed();
        let _ = conn.close(200, "done".into()).await;
        Ok(took)
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
