//! What the store handle and its background tasks (the feed's listener,
//! the heartbeat) share: the pool, health, metrics and the subscribers'
//! channel; and how long any store operation may take.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::broadcast;

use crate::change::Change;
use crate::status::{Health, Metrics, NodesView};
use crate::ClusterError;

/// Longest any single store operation may take before it counts as the
/// store being unreachable (a black-holed network would otherwise hang
/// the caller forever).
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// A node is listed while its last heartbeat is this recent.
pub(crate) const NODE_LIVENESS: Duration = Duration::from_secs(30);

/// What the handle and the background tasks share.
pub(crate) struct Shared {
    pub pool: Pool,
    pub pg: tokio_postgres::Config,
    pub node: String,
    pub postgres_redacted: String,
    pub health: Health,
    pub metrics: Metrics,
    pub feed: broadcast::Sender<Change>,
    pub nodes: Mutex<NodesView>,
    pub stats: Mutex<serde_json::Value>,
}

impl Shared {
    /// Hand a change to the subscribers and count it.
    pub(crate) fn publish(&self, change: Change, lag: Option<f64>) {
        self.metrics.count(change.kind());
        if let Some(lag) = lag {
            self.metrics.lag.observe(lag);
        }
        // No subscriber yet is fine: they load() before subscribing to
        // deltas anyway.
        let _ = self.feed.send(change);
    }

    /// Run `op` on a pooled connection, bounded by [`OP_TIMEOUT`], and
    /// record whether the store was reachable.
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> Result<T, ClusterError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T, ClusterError>>,
    {
        let r = tokio::time::timeout(OP_TIMEOUT, async {
            let client = self.pool.get().await?;
            op(client).await
        })
        .await
        .unwrap_or_else(|elapsed| Err(elapsed.into()));
        self.health.observe(&r);
        r
    }
}
