//! The outbox relay: state changes accepted while answering requests are
//! stored in the local spool (the outbox) in the same transaction as the
//! events, and this loop carries them to the store in order. While the
//! store is down it waits and retries the same batch, so changes accepted
//! during an outage reach the store when it returns, in the order they
//! were accepted; `apply_batch`'s cursor makes a batch relayed twice
//! (e.g. after a kill between apply and remove) count once.

use std::future::Future;
use std::time::Duration;

use event_pusher_core::StateChange;

use crate::store::ClusterStore;
use crate::ClusterError;

/// Most outbox entries per store transaction: under heavy presence traffic
/// fewer, larger transactions cost the store (and this sidecar) less per
/// change; a quiet sidecar relays each change as soon as it is committed.
pub const RELAY_BATCH: usize = 1024;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The local side of the relay (the spool implements it).
pub trait Outbox: Send + Sync {
    /// Up to `limit` of the oldest entries not yet removed, in order
    /// (ascending `seq`). Empty when there are none.
    fn next_batch(&self, limit: usize) -> impl Future<Output = Vec<(u64, Vec<StateChange>)>> + Send;
    /// Forget every entry up to and including `seq`: it is in the store.
    fn remove_through(&self, seq: u64) -> impl Future<Output = ()> + Send;
    /// Resolve when entries may have been added since the last
    /// `next_batch` (spurious wake-ups are fine).
    fn wait_for_more(&self) -> impl Future<Output = ()> + Send;
}

/// Relay `outbox` (whose entries are numbered by the spool identified by
/// `origin`) to the store, forever. `origin` must identify the spool
/// instance, not the host (e.g. an id generated when the spool was
/// created): a new spool numbering from 1 again under an old origin would
/// have its entries skipped as already applied. Run it as a task; abort it to stop (an
/// interrupted batch is relayed again later, and applied once).
pub async fn relay(store: ClusterStore, origin: String, outbox: impl Outbox) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let batch = outbox.next_batch(RELAY_BATCH).await;
        let Some(&(last, _)) = batch.last() else {
            outbox.wait_for_more().await;
            continue;
        };
        match store.apply_batch(&origin, &batch).await {
            Ok(_) => {
                backoff = BACKOFF_MIN;
                outbox.remove_through(last).await;
            }
            Err(ClusterError::Rejected(e)) => {
                // Invalid data cannot become valid by waiting: apply the
                // entries one by one and drop only the refused ones, rather
                // than block every later change behind them.
                tracing::error!(error = %e, "cluster relay: the store refused a batch; applying it entry by entry");
                if relay_one_by_one(&store, &origin, &batch).await {
                    outbox.remove_through(last).await;
                } else {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cluster relay: will retry");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Apply each entry alone; an entry the store refuses is skipped (its seq
/// still moves the cursor, applying nothing). False if the store became
/// unreachable meanwhile (the caller retries the batch; done entries are
/// skipped by the cursor).
async fn relay_one_by_one(store: &ClusterStore, origin: &str, batch: &[(u64, Vec<StateChange>)]) -> bool {
    for (seq, changes) in batch {
        match store.apply(origin, *seq, changes).await {
            Ok(_) => {}
            Err(ClusterError::Rejected(e)) => {
                // Not the changes themselves: device records hold push tokens.
                tracing::error!(
                    error = %e,
                    seq,
                    changes = changes.len(),
                    "cluster relay: dropping an outbox entry the store refuses"
                );
                if store.apply(origin, *seq, &[]).await.is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}
