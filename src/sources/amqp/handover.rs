//! What a partition consumer and the balancer (`balance.rs`) agree on for
//! a hand-over: how a ping is marked (the consumer acks pings without
//! storing them), and waiting until everything stored so far has left the
//! delivery queues, so the next sidecar cannot overtake this one for a
//! user. Its own file so that neither side imports the other.

use std::sync::atomic::Ordering;
use std::time::Duration;

use event_pusher_core::delivery::DeliveryEngine;
use event_pusher_core::Slot;
use lapin::BasicProperties;

/// Marks a ping message.
pub const PING_HEADER: &str = "x-event-pusher-ping";
/// Longest wait for the delivery queues before a hand-over.
const HANDOVER_WAIT: Duration = Duration::from_secs(3);
/// How often the delivery queues are looked at meanwhile.
const HANDOVER_POLL: Duration = Duration::from_millis(50);

/// Whether a delivery is a balancer's ping rather than input.
pub fn is_ping(properties: &BasicProperties) -> bool {
    properties
        .headers()
        .as_ref()
        .is_some_and(|h| h.inner().contains_key(PING_HEADER))
}

/// Events waiting for delivery, over every backend.
pub fn backlog(engine: &DeliveryEngine) -> u64 {
    let spool = engine.spool();
    engine
        .slots()
        .slots()
        .map(|slot| spool.slot(slot).queued.load(Ordering::Relaxed))
        .sum()
}

/// Wait until every event stored so far has left the delivery queues
/// (delivered or dead-lettered): true if so within `HANDOVER_WAIT`.
pub async fn delivered_so_far(engine: &DeliveryEngine) -> bool {
    let spool = engine.spool();
    // Sequence numbers only grow: an event stored so far has one at most
    // its queue's head now.
    let heads: Vec<(Slot, u64)> = engine
        .slots()
        .slots()
        .map(|slot| (slot, spool.slot(slot).head.load(Ordering::Acquire)))
        .collect();
    let deadline = tokio::time::Instant::now() + HANDOVER_WAIT;
    loop {
        let spool2 = spool.clone();
        let heads2 = heads.clone();
        let done = tokio::task::spawn_blocking(move || {
            heads2.iter().all(|(slot, head)| {
                // The oldest event still queued, if any, must be newer.
                match spool2.read_queue(*slot, 0, 1) {
                    Ok(rows) => rows.first().is_none_or(|(seq, _)| seq > head),
                    Err(_) => false,
                }
            })
        })
        .await
        .unwrap_or(false);
        if done {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(HANDOVER_POLL).await;
    }
}
