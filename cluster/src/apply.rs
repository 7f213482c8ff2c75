//! The outbox relay's writes: state changes accepted by a sidecar, applied
//! to the store in one transaction per batch, exactly once.
//!
//! Exactly once because the batch's sequence numbers and the origin's
//! cursor commit together: a batch relayed again after a crash (applied,
//! but not yet removed from the local outbox) finds its entries at or below
//! the cursor and skips them. Changes are operations (`Count` is "one
//! more"), so interleaved batches from several sidecars lose none of each
//! other's.
//!
//! Concurrent batches touching one user are serialized on the user's
//! `counts` row (locked first, in key order so two batches cannot
//! deadlock): the presence state each batch announces is then the state
//! after it, in commit order, which is the order listeners receive it.

use std::collections::BTreeMap;

use event_pusher_core::StateChange;

use crate::feed::{self, Notice};
use crate::net::BatchNet;
use crate::sql::params;
use crate::store::ClusterStore;
use crate::ClusterError;

/// What a relayed batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Entries applied now.
    pub entries: usize,
    /// Entries skipped: at or below the origin's cursor (already applied).
    pub skipped: usize,
    /// The origin's cursor after the batch (`None`: nothing ever applied).
    pub cursor: Option<u64>,
}

impl ClusterStore {
    /// Apply the outbox entry `seq` of `origin` (a unique id of the local
    /// spool); see [`ClusterStore::apply_batch`].
    pub async fn apply(&self, origin: &str, seq: u64, changes: &[StateChange]) -> Result<Applied, ClusterError> {
        self.apply_batch(origin, &[(seq, changes.to_vec())]).await
    }

    /// Apply outbox entries of `origin` in one transaction, in the order
    /// given: entries whose `seq` is at or below the origin's cursor (or not
    /// above an earlier entry of the batch) are skipped, the others applied
    /// and the cursor moved to the last, and every sidecar is notified of
    /// the resulting state. All or nothing.
    pub async fn apply_batch(&self, origin: &str, batch: &[(u64, Vec<StateChange>)]) -> Result<Applied, ClusterError> {
        let node = &self.shared.node;
        self.shared
            .run(|mut client| async move {
                let tx = client.transaction().await?;
                let applied = apply_in(&tx, node, origin, batch).await?;
                tx.commit().await?;
                Ok(applied)
            })
            .await
    }
}

fn to_i64(seq: u64) -> Result<i64, ClusterError> {
    i64::try_from(seq).map_err(|_| ClusterError::SequenceTooLarge(seq))
}

async fn apply_in(
    tx: &deadpool_postgres::Transaction<'_>,
    node: &str,
    origin: &str,
    batch: &[(u64, Vec<StateChange>)],
) -> Result<Applied, ClusterError> {
    // Lock the origin's cursor: two relays of one origin (which should not
    // happen) would serialize here rather than both apply.
    tx.execute(
        "INSERT INTO relay_cursors (origin, seq) VALUES ($1, -1) ON CONFLICT (origin) DO NOTHING",
        &[&origin],
    )
    .await?;
    let cursor: i64 = tx
        .query_one("SELECT seq FROM relay_cursors WHERE origin = $1 FOR UPDATE", &[&origin])
        .await?
        .get(0);
    let mut last = cursor;
    let mut entries = Vec::new();
    for (seq, changes) in batch {
        let seq = to_i64(*seq)?;
        if seq > last {
            last = seq;
            entries.push(changes);
        }
    }
    let skipped = batch.len() - entries.len();
    if entries.is_empty() {
        return Ok(Applied {
            entries: 0,
            skipped,
            cursor: u64::try_from(cursor).ok(),
        });
    }
    let changes: Vec<&StateChange> = entries.iter().flat_map(|c| c.iter()).collect();

    // Presence and badges, folded per user into a handful of array
    // statements (see `net`); the users' count rows are locked first, in
    // key order, so two batches cannot deadlock.
    let net = BatchNet::fold(&changes);
    let (scopes, jids) = net.user_columns();
    if !net.users.is_empty() {
        tx.execute(
            "INSERT INTO counts (scope, user_jid)
             SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT (scope, user_jid) DO UPDATE SET message_count = counts.message_count",
            &[&scopes, &jids],
        )
        .await?;
        let (clear_scopes, clear_jids) = net.clears();
        let offline = net.resources(false);
        let online = net.resources(true);
        let counts = net.counts();
        // Pipelined, in this order: clear, per-resource offline, online,
        // then the badges.
        let clear_stmt = tx
            .prepare_cached(
                "DELETE FROM presence WHERE (scope, user_jid) IN
                 (SELECT * FROM unnest($1::text[], $2::text[]))",
            )
            .await?;
        let offline_stmt = tx
            .prepare_cached(
                "DELETE FROM presence WHERE (scope, user_jid, resource) IN
                 (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
            )
            .await?;
        let online_stmt = tx
            .prepare_cached(
                "INSERT INTO presence (scope, user_jid, resource)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                 ON CONFLICT (scope, user_jid, resource) DO NOTHING",
            )
            .await?;
        let counts_stmt = tx
            .prepare_cached(
                "UPDATE counts c
                 SET message_count = CASE WHEN v.reset THEN v.add ELSE c.message_count + v.add END
                 FROM unnest($1::text[], $2::text[], $3::bool[], $4::int8[]) AS v(scope, user_jid, reset, add)
                 WHERE c.scope = v.scope AND c.user_jid = v.user_jid",
            )
            .await?;
        let mut pending = Vec::with_capacity(4);
        if !clear_scopes.is_empty() {
            pending.push(tx.execute_raw(&clear_stmt, params(&[&clear_scopes, &clear_jids])));
        }
        if !offline.0.is_empty() {
            pending.push(tx.execute_raw(&offline_stmt, params(&[&offline.0, &offline.1, &offline.2])));
        }
        if !online.0.is_empty() {
            pending.push(tx.execute_raw(&online_stmt, params(&[&online.0, &online.1, &online.2])));
        }
        if !counts.0.is_empty() {
            pending.push(tx.execute_raw(&counts_stmt, params(&[&counts.0, &counts.1, &counts.2, &counts.3])));
        }
        futures::future::try_join_all(pending).await?;
    }

    // Devices are rare on this path: one statement each, pipelined in order.
    let put = tx.prepare_cached(PUT_DEVICE).await?;
    let remove = tx
        .prepare_cached("DELETE FROM devices WHERE scope = $1 AND user_jid = $2 AND device_id = $3")
        .await?;
    // The devices' final states, in first-touched order.
    let mut devices: Vec<(&str, &str, &str)> = Vec::new();
    let mut device_state: BTreeMap<(&str, &str, &str), Option<&serde_json::Value>> = BTreeMap::new();
    let mut pending = Vec::new();
    for change in &changes {
        match change {
            StateChange::DevicePut {
                scope,
                user,
                device_id,
                record,
            } => {
                pending.push(tx.execute_raw(&put, params(&[scope, user, device_id, record])));
                let key = (scope.as_str(), user.as_str(), device_id.as_str());
                if device_state.insert(key, Some(record)).is_none() {
                    devices.push(key);
                }
            }
            StateChange::DeviceRemove { scope, user, device_id } => {
                pending.push(tx.execute_raw(&remove, params(&[scope, user, device_id])));
                let key = (scope.as_str(), user.as_str(), device_id.as_str());
                if device_state.insert(key, None).is_none() {
                    devices.push(key);
                }
            }
            StateChange::Presence { .. } | StateChange::Count { .. } => {}
        }
    }
    futures::future::try_join_all(pending).await?;

    let mut notices = Vec::with_capacity(net.users.len() + devices.len());
    if !net.users.is_empty() {
        for row in tx.query(crate::snapshot::PRESENCE_OF_USERS, &[&scopes, &jids]).await? {
            let p = crate::snapshot::user_presence(&row);
            notices.push(Notice::Presence {
                scope: p.scope,
                user: p.user,
                resources: p.resources,
                message_count: p.message_count,
                fetch: false,
            });
        }
    }
    for key in devices {
        notices.push(Notice::Device {
            scope: key.0.to_owned(),
            user: key.1.to_owned(),
            device_id: key.2.to_owned(),
            record: device_state[&key].cloned(),
            fetch: false,
        });
    }
    tx.execute(
        "UPDATE relay_cursors SET seq = $2, updated_at = now() WHERE origin = $1",
        &[&origin, &last],
    )
    .await?;
    feed::notify(tx, node, notices).await?;
    Ok(Applied {
        entries: entries.len(),
        skipped,
        cursor: u64::try_from(last).ok(),
    })
}

/// Insert or replace a device; returns whether it was new.
pub(crate) const PUT_DEVICE: &str = "
    INSERT INTO devices (scope, user_jid, device_id, record) VALUES ($1, $2, $3, $4)
    ON CONFLICT (scope, user_jid, device_id)
    DO UPDATE SET record = excluded.record, updated_at = now()
    RETURNING (xmax = 0) AS created";
