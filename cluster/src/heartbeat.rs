//! The heartbeat: every few seconds this node upserts its row in `nodes`
//! (with its counters) and reads the nodes seen in the last 30 s, for
//! `GET /v1/cluster` and the summed subscription counters. It is also the
//! store's reachability probe while nothing else is happening.

use std::sync::Arc;
use std::time::Duration;

use crate::shared::{Shared, NODE_LIVENESS};
use crate::status::NodesView;
use crate::ClusterError;

pub(crate) const INTERVAL: Duration = Duration::from_secs(2);

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; connect() just beat
    loop {
        tick.tick().await;
        if let Err(e) = beat(&shared, false).await {
            tracing::debug!(error = %e, "cluster store: heartbeat failed");
        }
    }
}

/// One heartbeat; `starting`: this process's first (resets `started_at`).
pub(crate) async fn beat(shared: &Shared, starting: bool) -> Result<(), ClusterError> {
    let stats = shared.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let rows = shared
        .run(|client| async move {
            client
                .execute(
                    "INSERT INTO nodes (name, stats) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET last_seen = now(), stats = excluded.stats,
                         started_at = CASE WHEN $3 THEN now() ELSE nodes.started_at END",
                    &[&shared.node, &stats, &starting],
                )
                .await?;
            let rows = client
                .query(
                    "SELECT name, extract(epoch FROM last_seen)::float8,
                            extract(epoch FROM started_at)::float8, stats
                     FROM nodes WHERE last_seen > now() - make_interval(secs => $1)
                     ORDER BY name",
                    &[&NODE_LIVENESS.as_secs_f64()],
                )
                .await?;
            Ok(rows)
        })
        .await?;
    let view = NodesView::from_rows(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect());
    *shared.nodes.lock().unwrap_or_else(|p| p.into_inner()) = view;
    Ok(())
}
