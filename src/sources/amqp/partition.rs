//! One partition's consumer: deliveries in, events in the spool, acks out.
//!
//! Deliveries are taken in batches (what has arrived, up to `prefetch`):
//! the batch's hook calls go through one [`Pipeline::accept`] — one fsync'd
//! spool transaction, as for a batched `POST /v1/events` — and only then is
//! the batch acked, with one `multiple` ack. A batch is processed whole
//! before the next is read, so a partition's messages are stored in queue
//! order, and with them each user's hook calls.
//!
//! A message that is not valid input is published to the dead-letter queue
//! with the reason and rejected; the rest of its batch goes on. So is a
//! message larger than `server.max_body_bytes` (the HTTP limit), and one
//! the spool refuses as full while nothing is queued or in flight anywhere
//! (no delivery can make room: it can never fit). A spool that refuses
//! otherwise (full, unwritable) is waited out with the batch in hand:
//! nothing is acked, requeued or dropped, and the broker sends no more than
//! `prefetch` meanwhile.
//!
//! [`Pipeline::accept`]: event_pusher_core::Pipeline::accept

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use event_pusher_core::delivery::DeliveryEngine;
use event_pusher_core::hook::{parse_body, parse_calls, CallItem, Framing};
use event_pusher_core::spool::SpoolError;
use event_pusher_core::IngestError;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use tokio::sync::{watch, Notify};

use super::dead_letter::DeadLetters;
use super::handover::{delivered_so_far, is_ping};
use super::status::{Outcome, SourceStatus};
use super::topology::short;
use crate::sources::Intake;

/// How long to wait before offering a refused batch to the spool again.
const SPOOL_RETRY: Duration = Duration::from_millis(500);

/// What the consumer of one partition shares with the source's balancer.
pub struct Partition {
    pub queue: String,
    /// When this sidecar last received a message from the partition
    /// (milliseconds since the source started; 0: never): how the
    /// balancer tells the partitions this sidecar is the active consumer of.
    pub last_delivery_ms: AtomicU64,
    /// Woken by the balancer: let the partition go to another sidecar.
    pub release: Notify,
}

/// Why a consumer returned without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The sidecar is shutting down.
    Stopped,
    /// The balancer asked to hand the partition over.
    Released,
}

/// What every partition consumer of a source uses.
pub struct Context {
    pub state: Arc<dyn Intake>,
    /// The source's exchange, which names its queues.
    pub exchange: String,
    pub status: Arc<SourceStatus>,
    pub dead: Arc<DeadLetters>,
    pub prefetch: u16,
    pub started: tokio::time::Instant,
}

/// Subscribe to the partition on `channel` (calling `on_subscribed` once
/// the broker took the subscription) and consume until stopped, released,
/// or the channel fails.
pub async fn consume(
    ctx: &Context,
    part: &Partition,
    channel: &Channel,
    stop: &mut watch::Receiver<bool>,
    on_subscribed: impl FnOnce(),
) -> Result<Ended, String> {
    let queue = &part.queue;
    channel
        .basic_qos(ctx.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| format!("cannot set prefetch on queue \"{queue}\": {e}"))?;
    let mut consumer = channel
        .basic_consume(
            short(queue)?,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("cannot consume from queue \"{queue}\": {e}"))?;
    on_subscribed();
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Ok(Ended::Stopped),
            _ = part.release.notified() => None,
            d = consumer.next() => Some(d),
        };
        let Some(first) = first else {
            let delivered = tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(Ended::Stopped),
                done = delivered_so_far(ctx.state.engine()) => done,
            };
            if delivered {
                return Ok(Ended::Released);
            }
            tracing::info!(queue, "kept the partition: events stored from it are not delivered yet");
            continue;
        };
        let mut batch = vec![next_delivery(first, queue)?];
        let mut failed = None;
        while batch.len() < usize::from(ctx.prefetch) {
            match consumer.next().now_or_never() {
                Some(Some(Ok(d))) => batch.push(d),
                Some(other) => {
                    // Store and ack what arrived before the failure.
                    failed = Some(next_delivery(other, queue).err().unwrap_or_default());
                    break;
                }
                None => break,
            }
        }
        let now = ctx.started.elapsed().as_millis() as u64;
        part.last_delivery_ms.store(now.max(1), Ordering::Relaxed);
        if store(ctx, channel, queue, batch, stop).await? == Stored::Abandoned {
            return Ok(Ended::Stopped);
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
}

fn next_delivery(d: Option<lapin::Result<Delivery>>, queue: &str) -> Result<Delivery, String> {
    match d {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(format!("consumer of queue \"{queue}\" failed: {e}")),
        None => Err(format!("the broker cancelled the consumer of queue \"{queue}\"")),
    }
}

/// How a batch ended.
#[derive(Debug, PartialEq, Eq)]
enum Stored {
    /// Stored and acked (or dead-lettered).
    Done,
    /// Shutdown came while the spool was refusing: left unacked, for the
    /// broker to redeliver.
    Abandoned,
}

/// Parse, dead-letter what is not valid, store the rest, ack.
async fn store(
    ctx: &Context,
    channel: &Channel,
    queue: &str,
    batch: Vec<Delivery>,
    stop: &mut watch::Receiver<bool>,
) -> Result<Stored, String> {
    let status = &ctx.status;
    // Pings (see balance.rs) only say this sidecar is the active consumer:
    // acked with the batch, not counted, not stored.
    let (pings, batch): (Vec<Delivery>, Vec<Delivery>) = batch.into_iter().partition(|d| is_ping(&d.properties));
    let last_ping = pings.iter().map(|d| d.delivery_tag).max();
    status.count(Outcome::Consumed, batch.len() as u64);
    let redelivered = batch.iter().filter(|d| d.redelivered).count();
    status.count(Outcome::Redelivered, redelivered as u64);

    // Messages whose body parses, with how many hook calls each holds.
    // The body is already in memory (AMQP hands whole messages); one over
    // the limit is dead-lettered by its length, without being parsed.
    let max = ctx.state.max_body_bytes();
    let mut good: Vec<(Delivery, usize)> = Vec::with_capacity(batch.len());
    for d in batch {
        if d.data.len() > max {
            let reason = format!(
                "message of {} bytes is larger than server.max_body_bytes ({max})",
                d.data.len()
            );
            dead_letter(ctx, channel, queue, &d, &reason).await?;
            continue;
        }
        match parse_calls(&d.data, framing(&d)) {
            Ok(calls) => {
                let n = calls.len();
                good.push((d, n));
            }
            Err(e) => dead_letter(ctx, channel, queue, &d, &format!("invalid body: {e}")).await?,
        }
    }
    // Groups of messages stored together, in queue order: the whole batch,
    // unless the spool refuses it with nothing left to drain, when it is
    // split into single messages (see `never_fits`).
    let mut groups = std::collections::VecDeque::from([good]);
    let mut stored: Vec<u64> = Vec::new();
    while let Some(mut good) = groups.pop_front() {
        match accept_group(ctx, channel, queue, &mut good, stop).await? {
            Group::Stored => stored.extend(good.iter().map(|(d, _)| d.delivery_tag)),
            Group::Abandoned => return Ok(Stored::Abandoned),
            Group::NeverFits(why) if good.len() == 1 => {
                let (d, _) = good.remove(0);
                let reason = format!("larger than the spool can ever hold (spool.max_bytes): {why}");
                dead_letter(ctx, channel, queue, &d, &reason).await?;
            }
            Group::NeverFits(_) => {
                for single in good.into_iter().rev() {
                    groups.push_front(vec![single]);
                }
            }
        }
    }
    if let Some(last) = stored.iter().copied().chain(last_ping).max() {
        // Every earlier delivery of this channel is settled already (acked
        // in an earlier batch or rejected above), so `multiple` acks
        // exactly this batch's good messages.
        channel
            .basic_ack(last, BasicAckOptions { multiple: true })
            .await
            .map_err(|e| format!("cannot ack on queue \"{queue}\": {e}"))?;
        status.count(Outcome::Acked, stored.len() as u64);
    }
    Ok(Stored::Done)
}

/// How storing one group of messages ended.
enum Group {
    /// Stored (those that were invalid were dead-lettered and removed).
    Stored,
    /// Shutdown came while the spool was refusing.
    Abandoned,
    /// The spool is full with nothing queued or in flight that could free
    /// it: waiting cannot help (the spool's own words).
    NeverFits(String),
}

/// One `Pipeline::accept` of a group, dead-lettering invalid messages and
/// waiting out a spool that refuses while something drains it.
async fn accept_group(
    ctx: &Context,
    channel: &Channel,
    queue: &str,
    good: &mut Vec<(Delivery, usize)>,
    stop: &mut watch::Receiver<bool>,
) -> Result<Group, String> {
    let mut refused_logged = false;
    while !good.is_empty() {
        // Typed calls borrowed from the bodies (parsed again: cheaper than
        // keeping `Value` trees, and bodies that parsed once parse again).
        let calls: Vec<CallItem<'_>> = good
            .iter()
            .flat_map(|(d, _)| parse_calls(&d.data, framing(d)).unwrap_or_default())
            .collect();
        let outcome = match ctx.state.pipeline().accept(&calls).await {
            // Hook commands (`push_enable`, ...) read fields the typed
            // reader skips: then the batch is read again as JSON values.
            Err(IngestError::CommandNeedsJson { .. }) => {
                let values: Vec<serde_json::Value> = good
                    .iter()
                    .flat_map(|(d, _)| parse_body(&d.data, framing(d)).unwrap_or_default())
                    .collect();
                ctx.state.pipeline().accept(&values).await
            }
            other => other,
        };
        match outcome {
            Ok(_) => break,
            Err(IngestError::Invalid { index, source: message }) => {
                // Find the message holding item `index`, dead-letter it,
                // and try the rest again.
                let mut start = 0;
                let mut at = None;
                for (i, (_, n)) in good.iter().enumerate() {
                    if index < start + n {
                        at = Some(i);
                        break;
                    }
                    start += n;
                }
                let at = at.ok_or_else(|| format!("ingest named item {index} of {} hook calls", calls.len()))?;
                drop(calls);
                let (d, _) = good.remove(at);
                let reason = format!("item {}: {message}", index - start);
                dead_letter(ctx, channel, queue, &d, &reason).await?;
            }
            Err(IngestError::CommandNeedsJson { index }) => {
                return Err(format!("hook command at item {index} could not be read as JSON"));
            }
            Err(IngestError::Spool(e)) => {
                if matches!(e, SpoolError::Full(_)) && nothing_draining(ctx.state.engine()) {
                    return Ok(Group::NeverFits(e.to_string()));
                }
                if !refused_logged {
                    tracing::warn!(queue, error = %e, "spool refused a batch; holding it (unacked) until it accepts");
                    refused_logged = true;
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(Group::Abandoned),
                    _ = tokio::time::sleep(SPOOL_RETRY) => {}
                }
            }
        }
    }
    Ok(Group::Stored)
}

/// Nothing queued or in flight in any backend: no delivery will free room
/// in the spool, so a refusal for being full is final for this request.
fn nothing_draining(engine: &DeliveryEngine) -> bool {
    engine.slots().slots().all(|slot| {
        let s = engine.status_of(slot);
        s.queued == 0 && s.in_flight == 0
    })
}

/// The framing the body's content type asks for (JSON unless NDJSON).
fn framing(d: &Delivery) -> Framing {
    let media = d.properties.content_type().as_ref().map(|c| {
        c.as_str()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match media.as_deref() {
        Some("application/x-ndjson" | "application/jsonl" | "application/jsonlines") => Framing::NdJson,
        _ => Framing::Json,
    }
}

async fn dead_letter(ctx: &Context, channel: &Channel, queue: &str, d: &Delivery, reason: &str) -> Result<(), String> {
    tracing::warn!(
        queue,
        reason,
        "message is not valid input: moved to the dead-letter queue"
    );
    ctx.dead.publish(d, queue, reason).await?;
    channel
        .basic_reject(d.delivery_tag, BasicRejectOptions { requeue: false })
        .await
        .map_err(|e| format!("cannot reject on queue \"{queue}\": {e}"))?;
    ctx.status.count(Outcome::Rejected, 1);
    Ok(())
}
