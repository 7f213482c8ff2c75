//! Sharing the partitions between sidecars.
//!
//! Single-active-consumer gives a partition to the sidecar that subscribed
//! first, so the first sidecar to start would consume every partition and
//! the others would only wait. RabbitMQ 3.x does not move an active
//! consumer by itself, so each sidecar gives partitions away: every few
//! seconds it counts the sidecars (the consumers of `EXCHANGE.members`, a
//! queue nobody publishes to, on which every sidecar holds a consumer; a
//! single-active-consumer queue's count shows only the active one) and the
//! partitions it is active on (those it received from lately: AMQP 0-9-1
//! does not tell a consumer it became active, so every sidecar also puts a
//! small ping message on each partition every round, which the active
//! consumer acks without storing, and idle partitions are seen too); if
//! it holds more than its fair share (`ceil(partitions / sidecars)`) it
//! hands the extra ones over (the partition consumer closes its channel,
//! see `session.rs`) and subscribes again at the back of the line. The
//! waiting sidecar next in line takes each over, in queue order (the
//! unacked messages go back to the head of the queue). Within a few rounds
//! the sidecars hold about equal shares.
//!
//! Per-user order across a hand-over: the next sidecar must not deliver a
//! user's newer events before this one delivered the older ones it
//! stored. So a partition is handed over only once everything this
//! sidecar had stored when it decided has left its delivery queues
//! (`handover::delivered_so_far`); it stops reading the partition
//! meanwhile. If that takes longer than `HANDOVER_WAIT` (a backend down or paused), it
//! keeps the partition and tries again later; and it does not try while
//! more than `HANDOVER_BACKLOG` events wait for delivery, so a partition
//! is not stalled waiting for a backlog to drain.

use std::sync::atomic::Ordering;
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::watch;

use super::handover::{backlog, PING_HEADER};
use super::partition::{Context, Partition};
use super::topology::short;

/// How often the shares are looked at.
const BALANCE_EVERY: Duration = Duration::from_secs(2);
/// A partition that delivered within this long is one this sidecar is the
/// active consumer of.
const ACTIVE_WITHIN_MS: u64 = 3_000;
/// Events waiting for delivery above which no hand-over is tried.
const HANDOVER_BACKLOG: u64 = 2_000;
/// The members queue is deleted this long after its last consumer left.
const MEMBERS_EXPIRE_MS: u32 = 60_000;

/// Run until stopped; an error (the connection failed) ends the session.
pub async fn balance(
    ctx: &Context,
    partitions: &[Partition],
    connection: &Connection,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| format!("cannot open the balancer's channel: {e}"))?;
    let members = format!("{}.members", ctx.exchange);
    // Held for the session: our consumer is what the count counts.
    let _membership = match join(&channel, &members).await {
        Ok(consumer) => consumer,
        Err(e) => {
            // Without configure permission the sidecars still work, each
            // partition with whichever sidecar subscribed first.
            tracing::warn!(queue = %members, error = %e, "cannot count the sidecars: partitions are not balanced");
            let _ = stop.wait_for(|s| *s).await;
            return Ok(());
        }
    };
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            _ = tokio::time::sleep(BALANCE_EVERY) => {}
        }
        ping(&channel, partitions).await?;
        let now = ctx.started.elapsed().as_millis() as u64;
        let active: Vec<&Partition> = partitions
            .iter()
            .filter(|p| {
                let at = p.last_delivery_ms.load(Ordering::Relaxed);
                at != 0 && now.saturating_sub(at) < ACTIVE_WITHIN_MS
            })
            .collect();
        ctx.status.set_active_partitions(active.len());
        if active.len() <= 1 {
            continue;
        }
        let sidecars = channel
            .queue_declare(
                short(&members)?,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("cannot count the consumers of queue \"{members}\": {e}"))?
            .consumer_count() as usize;
        let fair = fair_share(partitions.len(), sidecars);
        let backlog = backlog(ctx.state.engine());
        if active.len() > fair && backlog > HANDOVER_BACKLOG {
            tracing::debug!(
                backlog,
                "not handing partitions over while the delivery backlog is large"
            );
        } else if active.len() > fair {
            for p in &active[fair..] {
                tracing::info!(queue = %p.queue, active = active.len(), fair, sidecars, "handing a partition over to share the work");
                p.last_delivery_ms.store(0, Ordering::Relaxed);
                p.release.notify_one();
            }
        }
    }
}

/// Put a ping on every partition (see the module doc).
async fn ping(channel: &Channel, partitions: &[Partition]) -> Result<(), String> {
    let mut headers = FieldTable::default();
    headers.insert(PING_HEADER.into(), AMQPValue::Boolean(true));
    for p in partitions {
        channel
            .basic_publish(
                "".into(),
                short(&p.queue)?,
                BasicPublishOptions::default(),
                b"",
                BasicProperties::default().with_headers(headers.clone()),
            )
            .await
            .map_err(|e| format!("cannot ping queue \"{}\": {e}", p.queue))?;
    }
    Ok(())
}

/// Declare the members queue (idempotent; it goes away a minute after the
/// last sidecar) and put a consumer on it.
async fn join(channel: &Channel, members: &str) -> Result<lapin::Consumer, String> {
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongUInt(MEMBERS_EXPIRE_MS));
    channel
        .queue_declare(short(members)?, QueueDeclareOptions::default(), args)
        .await
        .map_err(|e| format!("cannot declare queue \"{members}\": {e}"))?;
    channel
        .basic_consume(
            short(members)?,
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("cannot consume from queue \"{members}\": {e}"))
}

/// Most partitions one of `sidecars` should consume.
fn fair_share(partitions: usize, sidecars: usize) -> usize {
    partitions.div_ceil(sidecars.max(1))
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn shares() {
        assert_eq!(fair_share(8, 1), 8);
        assert_eq!(fair_share(8, 2), 4);
        assert_eq!(fair_share(8, 3), 3);
        assert_eq!(fair_share(8, 0), 8);
        assert_eq!(fair_share(2, 3), 1);
    }
}
