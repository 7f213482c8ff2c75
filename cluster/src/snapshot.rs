//! The shared state as values: what `load()` returns, what `merge_local()`
//! takes, and what a sidecar keeps in memory so its chain never waits on the
//! network.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Client;

use crate::ClusterError;

/// Everything shared: the device registry, presence with counts, and the
/// live (not detached) webhook subscriptions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub devices: Vec<Device>,
    pub presence: Vec<UserPresence>,
    pub subscriptions: Vec<Subscription>,
}

/// One registered device; `record` is the owning backend's stored form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub scope: String,
    pub user: String,
    pub device_id: String,
    pub record: Value,
}

/// A user's online resources and badge count in one backend. A user with
/// no resource and a zero count is not listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    pub scope: String,
    pub user: String,
    /// Sorted.
    pub resources: Vec<String>,
    pub message_count: u64,
}

/// A runtime webhook subscription; `record` is the whole subscription as
/// the webhooks API stores it (URL, secret, headers, retry settings ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub record: Value,
    pub paused: bool,
}

/// One user's presence as committed (resources sorted).
pub(crate) const PRESENCE_OF_USERS: &str = "
    SELECT c.scope, c.user_jid, c.message_count,
           ARRAY(SELECT p.resource FROM presence p
                 WHERE p.scope = c.scope AND p.user_jid = c.user_jid
                 ORDER BY p.resource) AS resources
    FROM counts c
    WHERE (c.scope, c.user_jid) IN (SELECT * FROM unnest($1::text[], $2::text[]))
    ORDER BY c.scope, c.user_jid";

pub(crate) fn user_presence(row: &tokio_postgres::Row) -> UserPresence {
    UserPresence {
        scope: row.get(0),
        user: row.get(1),
        message_count: row.get::<_, i64>(2).max(0) as u64,
        resources: row.get(3),
    }
}

/// Read the whole shared state in one consistent (repeatable read)
/// transaction.
pub(crate) async fn load(client: &mut Client) -> Result<Snapshot, ClusterError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let devices = tx
        .query(
            "SELECT scope, user_jid, device_id, record FROM devices ORDER BY scope, user_jid, device_id",
            &[],
        )
        .await?
        .iter()
        .map(|r| Device {
            scope: r.get(0),
            user: r.get(1),
            device_id: r.get(2),
            record: r.get(3),
        })
        .collect();
    let presence = tx
        .query(
            "SELECT c.scope, c.user_jid, c.message_count,
                    ARRAY(SELECT p.resource FROM presence p
                          WHERE p.scope = c.scope AND p.user_jid = c.user_jid
                          ORDER BY p.resource)
             FROM counts c
             WHERE c.message_count > 0
                OR EXISTS (SELECT 1 FROM presence p WHERE p.scope = c.scope AND p.user_jid = c.user_jid)
             ORDER BY c.scope, c.user_jid",
            &[],
        )
        .await?
        .iter()
        .map(user_presence)
        .collect();
    let subscriptions = tx
        .query(
            "SELECT id, record, paused FROM subscriptions WHERE NOT deleted ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|r| Subscription {
            id: r.get(0),
            record: r.get(1),
            paused: r.get(2),
        })
        .collect();
    tx.commit().await?;
    Ok(Snapshot {
        devices,
        presence,
        subscriptions,
    })
}
