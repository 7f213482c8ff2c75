//! Turning `[cluster]` on loses nothing: at the first start with it, the
//! devices, presence and subscriptions in the local spool are merged into
//! the store. What the store already has wins (a device or subscription in
//! both keeps the store's; a subscription detached in the store stays
//! detached); presence resources are united, and a count is taken only for
//! a user the store has none for.

use crate::feed::{self, Notice};
use crate::snapshot::Snapshot;
use crate::sql::params;
use crate::store::ClusterStore;
use crate::ClusterError;

/// What `merge_local` added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    pub devices: u64,
    pub presence: u64,
    pub subscriptions: u64,
}

impl ClusterStore {
    /// Merge the local spool's state into the store in one transaction;
    /// every sidecar then reloads (a [`crate::Change::Reloaded`]).
    pub async fn merge_local(&self, local: &Snapshot) -> Result<Merged, ClusterError> {
        let node = &self.shared.node;
        self.shared
            .run(|mut client| async move {
                let tx = client.transaction().await?;
                let device = tx
                    .prepare_cached(
                        "INSERT INTO devices (scope, user_jid, device_id, record) VALUES ($1, $2, $3, $4)
                         ON CONFLICT DO NOTHING",
                    )
                    .await?;
                let count = tx
                    .prepare_cached(
                        "INSERT INTO counts (scope, user_jid, message_count) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                    )
                    .await?;
                let resource = tx
                    .prepare_cached(
                        "INSERT INTO presence (scope, user_jid, resource) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                    )
                    .await?;
                let subscription = tx
                    .prepare_cached(
                        "INSERT INTO subscriptions (id, record, paused) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                    )
                    .await?;
                let mut merged = Merged::default();
                // Sorted, like the relay, so a merge and a relay cannot
                // deadlock on count rows.
                let mut presence: Vec<_> = local.presence.iter().collect();
                presence.sort_by(|a, b| (&a.scope, &a.user).cmp(&(&b.scope, &b.user)));
                for p in presence {
                    let n = i64::try_from(p.message_count).unwrap_or(i64::MAX);
                    tx.execute_raw(&count, params(&[&p.scope, &p.user, &n])).await?;
                    for r in &p.resources {
                        merged.presence += tx.execute_raw(&resource, params(&[&p.scope, &p.user, r])).await?;
                    }
                }
                for d in &local.devices {
                    merged.devices += tx
                        .execute_raw(&device, params(&[&d.scope, &d.user, &d.device_id, &d.record]))
                        .await?;
                }
                for s in &local.subscriptions {
                    merged.subscriptions += tx
                        .execute_raw(&subscription, params(&[&s.id, &s.record, &s.paused]))
                        .await?;
                }
                let changed = merged != Merged::default();
                feed::notify(&tx, node, if changed { vec![Notice::Reload] } else { Vec::new() }).await?;
                tx.commit().await?;
                Ok(merged)
            })
            .await
    }
}
