//! The scale-out exchange in tests: waiting until sidecars share its
//! partitions, and removing a test's exchange and queues afterwards.

use std::time::{Duration, Instant};

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::{BasicProperties, Channel};
use serde_json::Value;

use super::{metric, Sidecar};

/// Wait until the sidecars share the `main` source's partitions (idle: the
/// balancer's metric shows who is active where, each at most its fair
/// share); how long it took.
pub async fn wait_balanced(sidecars: &[&Sidecar], partitions: usize) -> Duration {
    let started = Instant::now();
    let fair = partitions.div_ceil(sidecars.len());
    loop {
        let mut active = Vec::new();
        for sc in sidecars {
            let (_, text) = sc.get_text("/metrics").await;
            active.push(
                metric(&text, "event_pusher_source_partitions_active", &["source=\"main\""]).unwrap_or(0.0) as usize,
            );
        }
        if active.iter().sum::<usize>() == partitions && active.iter().all(|n| *n <= fair) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "partitions never shared: active per sidecar {active:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Put `ch` in confirm mode (once per channel, before publishing).
pub async fn confirm_select(ch: &Channel) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
}

/// Publish one hook call to the scale-out `exchange` as a chat node does
/// (routing key `user`, JSON, persistent) and wait for the broker's
/// confirm.
pub async fn publish_confirmed(ch: &Channel, exchange: &str, user: &str, call: &Value) {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            user.into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(call).expect("json"),
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "broker nacked a publish");
}

/// Delete a test's scale-out exchange with its partition, dead-letter and
/// membership queues (best effort: a test cleans up, it does not fail here).
pub async fn delete_topology(ch: &Channel, exchange: &str, partitions: usize) {
    for q in (0..partitions)
        .map(|p| format!("{exchange}.{p}"))
        .chain([format!("{exchange}.dead"), format!("{exchange}.members")])
    {
        let _ = ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default()).await;
        let _ = ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
    }
    let _ = ch
        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await;
}
