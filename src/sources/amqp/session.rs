//! One connection's life, and reconnecting.
//!
//! A session connects, declares the topology (`declare = true`), opens the
//! dead-letter channel, starts one consumer per partition (each on its own
//! channel, so a partition can be handed over by closing its channel) and
//! the balancer. The first failure of any of them ends the session: the
//! connection is dropped, which returns every unacked message to its queue
//! (and, with single-active-consumer, the partition to another sidecar),
//! and [`run`] connects again with exponential backoff. `/ready` is false
//! from the failure until every partition has a consumer again.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use event_pusher_backends::transport::amqp;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::balance::balance;
use super::dead_letter::DeadLetters;
use super::partition::{consume, Context, Ended, Partition};
use super::AmqpSource;
use crate::sources::Intake;

/// Connecting and declaring, each bounded by this.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait after a failed session; doubles up to `RECONNECT_MAX`.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Consume until `stop` turns true, reconnecting after failures.
pub async fn run(source: Arc<AmqpSource>, state: Arc<dyn Intake>, mut stop: watch::Receiver<bool>) {
    let mut backoff = RECONNECT_MIN;
    while !*stop.borrow() {
        let reached = AtomicBool::new(false);
        match session(&source, &state, &mut stop, &reached).await {
            Ok(()) => break,
            Err(e) => {
                if reached.load(Ordering::Acquire) {
                    backoff = RECONNECT_MIN;
                }
                source.status.set_not_consuming(e.clone());
                tracing::warn!(source = %source.name, error = %e, retry_in = ?backoff, "AMQP source cannot consume");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
    }
    source.status.set_not_consuming("stopped");
    tracing::info!(source = %source.name, "AMQP source stopped; unacked messages go back to their queues");
}

/// One connection: returns `Ok` when stopped, the reason otherwise.
/// `reached` is set once every partition had a consumer.
async fn session(
    source: &Arc<AmqpSource>,
    state: &Arc<dyn Intake>,
    stop: &mut watch::Receiver<bool>,
    reached: &AtomicBool,
) -> Result<(), String> {
    let url = &source.config.url;
    let topology = source.topology();
    let name = format!("event-pusher source amqp.{}", source.name);
    let connection = amqp::connect(url, &name).await.map_err(|e| e.to_string())?;
    let connection = Arc::new(connection);
    let setup = async {
        if source.config.declare {
            topology.declare(&connection).await?;
        }
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("cannot open a channel on {url}: {e}"))?;
        DeadLetters::open(channel, &topology.dead_queue()).await
    };
    let dead = tokio::time::timeout(SETUP_TIMEOUT, setup)
        .await
        .map_err(|_| format!("RabbitMQ at {url} did not answer within {SETUP_TIMEOUT:?} while declaring"))??;

    let partitions: Arc<Vec<Partition>> = Arc::new(
        (0..topology.partitions)
            .map(|index| Partition {
                queue: topology.queue(index),
                last_delivery_ms: AtomicU64::new(0),
                release: Notify::new(),
            })
            .collect(),
    );
    let ctx = Arc::new(Context {
        state: state.clone(),
        exchange: topology.exchange.clone(),
        status: source.status.clone(),
        dead: Arc::new(dead),
        prefetch: source.config.prefetch,
        started: tokio::time::Instant::now(),
    });
    let subscribed = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for index in 0..partitions.len() {
        let (ctx, partitions, connection, subscribed) =
            (ctx.clone(), partitions.clone(), connection.clone(), subscribed.clone());
        let mut stop = stop.clone();
        tasks.spawn(async move {
            let part = &partitions[index];
            let mut first = true;
            loop {
                let channel = connection
                    .create_channel()
                    .await
                    .map_err(|e| format!("cannot open a channel for queue \"{}\": {e}", part.queue))?;
                let on_subscribed = || {
                    if std::mem::take(&mut first) && subscribed.fetch_add(1, Ordering::AcqRel) + 1 == partitions.len() {
                        ctx.status.set_consuming();
                    }
                };
                match consume(&ctx, part, &channel, &mut stop, on_subscribed).await? {
                    Ended::Stopped => {
                        let _ = channel.close(200, "shutting down".into()).await;
                        return Ok::<(), String>(());
                    }
                    Ended::Released => {
                        // Closing the channel returns its unacked messages
                        // to the queue, in order, and makes the next
                        // waiting consumer (another sidecar) the active
                        // one; subscribing again puts this one last in line.
                        part.last_delivery_ms.store(0, Ordering::Relaxed);
                        let _ = channel.close(200, "handing the partition over".into()).await;
                        tracing::debug!(queue = %part.queue, "partition handed over");
                    }
                }
            }
        });
    }
    {
        let (ctx, partitions, connection) = (ctx.clone(), partitions.clone(), connection.clone());
        let stop = stop.clone();
        tasks.spawn(async move { balance(&ctx, &partitions, &connection, stop).await });
    }
    let mut outcome = Ok(());
    while let Some(done) = tasks.join_next().await {
        if subscribed.load(Ordering::Acquire) == partitions.len() {
            reached.store(true, Ordering::Release);
        }
        let failure = match done {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => format!("a partition consumer failed: {e}"),
        };
        if outcome.is_ok() {
            outcome = Err(failure);
            source.status.set_not_consuming("reconnecting");
            tasks.abort_all();
        }
    }
    if subscribed.load(Ordering::Acquire) == partitions.len() {
        reached.store(true, Ordering::Release);
    }
    if outcome.is_ok() {
        let _ = connection.close(200, "shutting down".into()).await;
    }
    outcome
}
