//! The spool's outbox as the cluster relay reads it: the oldest rows in
//! order, removed once the store applied them, woken by each commit that
//! added some.

use event_pusher_cluster::Outbox;
use event_pusher_core::spool::Spool;
use event_pusher_core::StateChange;

/// How long to wait before reading again after the spool failed a read.
const READ_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

pub struct SpoolOutbox {
    spool: Spool,
}

impl SpoolOutbox {
    pub fn new(spool: Spool) -> Self {
        SpoolOutbox { spool }
    }
}

impl Outbox for SpoolOutbox {
    async fn next_batch(&self, limit: usize) -> Vec<(u64, Vec<StateChange>)> {
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || spool.outbox_batch(limit)).await {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cluster relay: cannot read the outbox yet");
                tokio::time::sleep(READ_RETRY).await;
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    async fn remove_through(&self, seq: u64) {
        // A failed removal only means these rows are relayed again later,
        // and the store's cursor skips them.
        if let Err(e) = self.spool.outbox_remove_through(seq).await {
            tracing::warn!(error = %e, "cluster relay: could not trim the outbox; it will be relayed again");
        }
    }

    async fn wait_for_more(&self) {
        self.spool.outbox_added().await
    }
}
