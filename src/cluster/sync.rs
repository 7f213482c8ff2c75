//! Following the cluster store: connect (retrying while it is down), merge
//! this spool's state into it on the first start with `[cluster]`, load
//! everything into the in-memory views, then relay the outbox and apply
//! every change any sidecar makes. Runs for the sidecar's life.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use event_pusher_cluster::{Change, ClusterError, ClusterStore, Snapshot};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::outbox::SpoolOutbox;
use super::Cluster;
use crate::state::AppState;

/// The spool flag set once its state was merged into a store.
const MERGED: &str = "cluster_merged";

/// How often this sidecar's subscription counters are handed to the
/// store's heartbeat (for the `"cluster"` sums of `GET /v1/webhooks`).
const STATS_EVERY: Duration = Duration::from_secs(2);

/// Start following the store. Returns at once; the work runs in tasks
/// that end with the process.
pub fn start(cluster: Arc<Cluster>, state: Arc<AppState>, listen_port: u16) {
    tokio::spawn(async move {
        if let Err(e) = run(&cluster, &state, listen_port).await {
            tracing::error!(error = %e, "cluster store: giving up; this sidecar stays not ready");
        }
    });
}

async fn run(cluster: &Arc<Cluster>, state: &Arc<AppState>, listen_port: u16) -> Result<(), ClusterError> {
    let store = ClusterStore::connect_retrying(cluster.config(), listen_port, |e| {
        cluster.set_waiting(e);
        tracing::warn!(error = %e, "cluster store not reachable yet; not ready until it is");
    })
    .await?;
    let mut feed = store.subscribe();
    let spool = state.pipeline.spool().clone();
    if !spool_flag(&spool).await {
        let local = local_snapshot(state).await;
        let merged = retrying(cluster, || store.merge_local(&local)).await?;
        tracing::info!(
            ?merged,
            "this spool's devices, presence and subscriptions merged into the cluster store"
        );
        if let Err(e) = spool.set_flag(MERGED).await {
            tracing::warn!(error = %e, "could not note the merge; it will run again (it keeps the store's)");
        }
    }
    let snapshot = retrying(cluster, || store.load()).await?;
    apply_snapshot(state, &snapshot).await;
    cluster.set_loaded(store.clone());
    tracing::info!(
        node = cluster.node(),
        devices = snapshot.devices.len(),
        subscriptions = snapshot.subscriptions.len(),
        "cluster store loaded"
    );

    let origin = spool.origin().to_owned();
    tokio::spawn(event_pusher_cluster::relay(
        store.clone(),
        origin,
        SpoolOutbox::new(spool),
    ));
    let reporter = {
        let (store, state) = (store.clone(), state.clone());
        tokio::spawn(async move {
            loop {
                store.report_stats(stats(&state).await);
                tokio::time::sleep(STATS_EVERY).await;
            }
        })
    };
    loop {
        match feed.recv().await {
            Ok(change) => apply_change(state, change).await,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "cluster feed fell behind; reloading the whole state");
                if let Ok(s) = retrying(cluster, || store.load()).await {
                    apply_snapshot(state, &s).await;
                }
            }
            Err(RecvError::Closed) => break,
        }
    }
    reporter.abort();
    Ok(())
}

/// Run `op` until the store answers (retrying while it is unavailable).
async fn retrying<T, F, Fut>(cluster: &Cluster, mut op: F) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match op().await {
            Err(e) if e.is_unavailable() => {
                cluster.set_waiting(&e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

async fn spool_flag(spool: &event_pusher_core::spool::Spool) -> bool {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || spool.flag(MERGED).unwrap_or(false))
        .await
        .unwrap_or(false)
}

/// What this spool holds of the shared state, to merge into the store.
async fn local_snapshot(state: &AppState) -> Snapshot {
    let mut snapshot = Snapshot::default();
    #[cfg(feature = "push")]
    for b in state.push.backends() {
        let (devices, presence) = b.export();
        snapshot.devices.extend(
            devices
                .into_iter()
                .map(|(user, device_id, record)| event_pusher_cluster::Device {
                    scope: b.scope().to_owned(),
                    user,
                    device_id,
                    record,
                }),
        );
        snapshot.presence.extend(
            presence
                .into_iter()
                .map(|(user, p)| event_pusher_cluster::UserPresence {
                    scope: b.scope().to_owned(),
                    user,
                    resources: p.resources.into_iter().collect(),
                    message_count: p.message_count,
                }),
        );
    }
    snapshot.subscriptions = state
        .webhooks
        .shared_records(&state.engine)
        .await
        .into_iter()
        .map(|(id, record, paused)| event_pusher_cluster::Subscription { id, record, paused })
        .collect();
    snapshot
}

/// Replace this sidecar's views with the store's state.
async fn apply_snapshot(state: &AppState, snapshot: &Snapshot) {
    #[cfg(feature = "push")]
    for b in state.push.backends() {
        let devices = snapshot
            .devices
            .iter()
            .filter(|d| d.scope == b.scope())
            .map(|d| (d.user.as_str(), d.device_id.as_str(), &d.record));
        let presence = snapshot
            .presence
            .iter()
            .filter(|p| p.scope == b.scope())
            .map(|p| (p.user.clone(), presence(&p.resources, p.message_count)));
        b.replace_shared(devices, presence);
    }
    let subs: Vec<(String, Value, bool)> = snapshot
        .subscriptions
        .iter()
        .map(|s| (s.id.clone(), s.record.clone(), s.paused))
        .collect();
    state.webhooks.reconcile_shared(&state.engine, &subs).await;
}

/// Apply one change any sidecar made.
async fn apply_change(state: &AppState, change: Change) {
    match change {
        #[cfg(feature = "push")]
        Change::Device {
            scope,
            user,
            device_id,
            record,
        } => {
            if let Some(b) = state.push.backends().iter().find(|b| b.scope() == scope) {
                b.set_shared_device(&user, &device_id, record.as_ref());
            }
        }
        #[cfg(feature = "push")]
        Change::Presence {
            scope,
            user,
            resources,
            message_count,
        } => {
            if let Some(b) = state.push.backends().iter().find(|b| b.scope() == scope) {
                b.set_shared_presence(&user, presence(&resources, message_count));
            }
        }
        Change::Subscription { id, record, paused } => {
            state.webhooks.apply_shared(&state.engine, &id, record, paused).await
        }
        Change::Reloaded(snapshot) => apply_snapshot(state, &snapshot).await,
        #[allow(unreachable_patterns)]
        _ => {}
    }
}

fn presence(resources: &[String], message_count: u64) -> event_pusher_core::state_change::UserPresence {
    event_pusher_core::state_change::UserPresence {
        resources: resources.iter().cloned().collect::<BTreeSet<_>>(),
        message_count,
    }
}

/// This sidecar's counters of each subscription.
async fn stats(state: &AppState) -> Value {
    let subs: serde_json::Map<String, Value> = state
        .webhooks
        .list(&state.engine)
        .await
        .into_iter()
        .map(|v| {
            (
                v.id.clone(),
                json!({"queued": v.queued, "delivered": v.delivered, "failed": v.failed, "dead_letters": v.dead_letters}),
            )
        })
        .collect();
    json!({ "subscriptions": subs })
}
