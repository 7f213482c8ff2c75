//! Admin writes (the device registry and runtime webhook subscriptions):
//! made in the store first and answered only once committed, each with its
//! NOTIFY in the same transaction. While the store is unreachable they
//! fail with `Unavailable` and change nothing (the API answers 503).

use serde_json::Value;

use crate::apply::PUT_DEVICE;
use crate::feed::{self, Notice};
use crate::store::ClusterStore;
use crate::ClusterError;

/// What `put_device` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Replaced,
}

/// What `create_subscription` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// A subscription with this id exists: nothing changed.
    AlreadyExists,
}

impl ClusterStore {
    /// Register or replace a device.
    pub async fn put_device(
        &self,
        scope: &str,
        user: &str,
        device_id: &str,
        record: &Value,
    ) -> Result<PutOutcome, ClusterError> {
        let node = &self.shared.node;
        self.shared
            .run(|mut client| async move {
                let tx = client.transaction().await?;
                let created: bool = tx
                    .query_one(PUT_DEVICE, &[&scope, &user, &device_id, record])
                    .await?
                    .get(0);
                commit(tx, node, [device_notice(scope, user, device_id, Some(record))]).await?;
                Ok(if created {
                    PutOutcome::Created
                } else {
                    PutOutcome::Replaced
                })
            })
            .await
    }

    /// Remove a device; false if it was not registered (nothing changed).
    pub async fn remove_device(&self, scope: &str, user: &str, device_id: &str) -> Result<bool, ClusterError> {
        let node = &self.shared.node;
        self.shared
            .run(|mut client| async move {
                let tx = client.transaction().await?;
                let n = tx
                    .execute(
                        "DELETE FROM devices WHERE scope = $1 AND user_jid = $2 AND device_id = $3",
                        &[&scope, &user, &device_id],
                    )
                    .await?;
                // Nothing removed: nothing to announce.
                let removed = (n > 0).then(|| device_notice(scope, user, device_id, None));
                commit(tx, node, removed).await?;
                Ok(n > 0)
            })
            .await
    }

    /// Attach a subscription. An id detached earlier can be used again.
    pub async fn create_subscription(
        &self,
        id: &str,
        record: &Value,
        paused: bool,
    ) -> Result<CreateOutcome, ClusterError> {
        let node = &self.shared.node;
        self.shared
            .run(|mut client| async move {
                let tx = client.transaction().await?;
                let row = tx
                    .query_opt(
                        "INSERT INTO subscriptions (id, record, paused) VALUES ($1, $2, $3)
                         ON CONFLICT (id) DO UPDATE SET record = excluded.record, paused = excluded.paused,
                             deleted = false, version = subscriptions.version + 1, updated_at = now()
                         WHERE subscriptions.deleted
                         RETURNING version",
                        &[&id, record, &paused],
                    )
                    .await?;
                let Some(_) = row else {
                    return Ok(CreateOutcome::AlreadyExists);
                };
                commit(tx, node, [subscription_notice(id, Some(record), paused)]).await?;
                Ok(CreateOutcome::Created)
            })
            .await
    }

    /// Replace a subscription's record and paused state (PATCH, pause,
    /// restart); false if there is no such subscription.
    pub async fn update_subscription(&self, id: &str, record: &Value, paused: bool) -> Result<bool, ClusterError> {
        let node = &self.shared.node;
        self.shared
            .run(|mut client| async move {
                let tx = client.transaction().await?;
                let n = tx
                    .execute(
                        "UPDATE subscriptions SET record = $2, paused = $3, version = version + 1, updated_at = now()
                         WHERE id = $1 AND NOT deleted",
                        &[&id, record, &paused],
                    )
                    .await?;
                let changed = (n > 0).then(|| subscription_notice(id, Some(record), paused));
                commit(tx, node, changed).await?;
                Ok(n > 0)
            })
            .await
    }

    /// Detach a subscription (its secrets are dropped from the store);
    /// false if there is no such subscription.
    pub async fn delete_subscription(&self, id: &str) -> Result<bool, ClusterError> {
        let node = &self.shared.node;
        self.shared
            .run(|mut client| async move {
                let tx = client.transaction().await?;
                let n = tx
                    .execute(
                        "UPDATE subscriptions SET deleted = true, record = NULL, paused = false,
                             version = version + 1, updated_at = now()
                         WHERE id = $1 AND NOT deleted",
                        &[&id],
                    )
                    .await?;
                let deleted = (n > 0).then(|| subscription_notice(id, None, false));
                commit(tx, node, deleted).await?;
                Ok(n > 0)
            })
            .await
    }
}

fn device_notice(scope: &str, user: &str, device_id: &str, record: Option<&Value>) -> Notice {
    Notice::Device {
        scope: scope.to_owned(),
        user: user.to_owned(),
        device_id: device_id.to_owned(),
        record: record.cloned(),
        fetch: false,
    }
}

fn subscription_notice(id: &str, record: Option<&Value>, paused: bool) -> Notice {
    Notice::Subscription {
        id: id.to_owned(),
        record: record.cloned(),
        paused,
        fetch: false,
    }
}

/// Announce the notices and commit: the answer is given only after this.
async fn commit(
    tx: deadpool_postgres::Transaction<'_>,
    node: &str,
    notices: impl IntoIterator<Item = Notice>,
) -> Result<(), ClusterError> {
    feed::notify(&tx, node, notices.into_iter().collect()).await?;
    tx.commit().await?;
    Ok(())
}
