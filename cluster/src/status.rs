//! What the sidecar shows about the store: reachability (`GET /v1/cluster`,
//! `/ready`, the status page), the nodes reporting to it, and the metrics.
//! Everything here is kept in memory and updated by the background tasks,
//! so it answers while the store is down.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use event_pusher_core::metrics::{label, Histogram};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::ClusterError;

/// The answer of `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This sidecar's node name.
    pub node: String,
    pub store: StoreStatus,
    /// Nodes that reported to the store in the last 30 s (this one
    /// included while the store is up), by name.
    pub nodes: Vec<NodeSeen>,
}

/// The store as this sidecar sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// The connection string with the password replaced by `***`.
    pub postgres: String,
    pub up: bool,
    /// The last error talking to the store (kept after it recovers).
    pub last_error: Option<String>,
    /// When `up` last changed (RFC 3339).
    pub since: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSeen {
    pub name: String,
    /// Its last heartbeat (RFC 3339).
    pub last_seen: String,
    /// When it (last) started reporting (RFC 3339).
    pub started_at: String,
}

/// A subscription's delivery counters summed over the nodes that reported
/// in the last 30 s: the `"cluster"` object of `GET /v1/webhooks`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionCounters {
    #[serde(default)]
    pub queued: u64,
    #[serde(default)]
    pub delivered: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub dead_letters: u64,
}

impl SubscriptionCounters {
    fn add(&mut self, other: &SubscriptionCounters) {
        self.queued += other.queued;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.dead_letters += other.dead_letters;
    }
}

/// What a node reports with its heartbeat (`report_stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Subscription id -> this node's counters for it.
    #[serde(default)]
    pub subscriptions: BTreeMap<String, SubscriptionCounters>,
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub(crate) fn from_unix(seconds: f64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos((seconds * 1e9) as i128).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Reachability of the store, from every operation's outcome.
pub(crate) struct Health {
    state: Mutex<HealthState>,
}

struct HealthState {
    up: bool,
    last_error: Option<String>,
    since: OffsetDateTime,
}

impl Health {
    /// Up: `connect()` only returns a store it reached.
    pub(crate) fn new() -> Health {
        Health {
            state: Mutex::new(HealthState {
                up: true,
                last_error: None,
                since: OffsetDateTime::now_utc(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn ok(&self) {
        let mut s = self.lock();
        if !s.up {
            tracing::info!("cluster store: reachable again");
            s.up = true;
            s.since = OffsetDateTime::now_utc();
        }
    }

    /// Only unreachability marks the store down; a refused statement does
    /// not.
    pub(crate) fn failed(&self, e: &ClusterError) {
        if !e.is_unavailable() {
            return;
        }
        let mut s = self.lock();
        if s.up {
            tracing::warn!(error = %e, "cluster store: unreachable");
            s.up = false;
            s.since = OffsetDateTime::now_utc();
        }
        s.last_error = Some(e.to_string());
    }

    /// Record an operation's outcome.
    pub(crate) fn observe<T>(&self, r: &Result<T, ClusterError>) {
        match r {
            Ok(_) => self.ok(),
            Err(e) => self.failed(e),
        }
    }

    pub(crate) fn up(&self) -> bool {
        self.lock().up
    }

    pub(crate) fn status(&self, postgres: String) -> StoreStatus {
        let s = self.lock();
        StoreStatus {
            postgres,
            up: s.up,
            last_error: s.last_error.clone(),
            since: rfc3339(s.since),
        }
    }
}

/// The nodes seen at the last heartbeat and their summed counters.
#[derive(Default)]
pub(crate) struct NodesView {
    /// (name, last_seen, started_at), unix seconds.
    pub nodes: Vec<(String, f64, f64)>,
    pub totals: BTreeMap<String, SubscriptionCounters>,
}

impl NodesView {
    /// Built from the rows (name, last_seen, started_at, stats) of the nodes
    /// seen in the last 30 s. Unreadable stats count as none.
    pub(crate) fn from_rows(rows: Vec<(String, f64, f64, serde_json::Value)>) -> NodesView {
        let mut view = NodesView::default();
        for (name, last_seen, started_at, stats) in rows {
            let stats: NodeStats = serde_json::from_value(stats).unwrap_or_default();
            for (id, c) in &stats.subscriptions {
                view.totals.entry(id.clone()).or_default().add(c);
            }
            view.nodes.push((name, last_seen, started_at));
        }
        view
    }
}

/// The store's metrics.
pub(crate) struct Metrics {
    /// Changes received through the feed, by kind.
    changes: [AtomicU64; 4],
    /// Commit on the writer to received here.
    pub lag: Histogram,
}

const KINDS: [&str; 4] = ["device", "presence", "subscription", "reloaded"];

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            changes: Default::default(),
            lag: Histogram::default(),
        }
    }

    pub(crate) fn count(&self, kind: &str) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.changes[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn render(&self, out: &mut String, node: &str, up: bool) {
        let node = label(node);
        let _ = writeln!(
            out,
            "# HELP event_pusher_cluster_store_up 1 when the cluster store (PostgreSQL) is reachable.\n\
             # TYPE event_pusher_cluster_store_up gauge\n\
             event_pusher_cluster_store_up{{node=\"{node}\"}} {}",
            u8::from(up)
        );
        let _ = writeln!(
            out,
            "# HELP event_pusher_cluster_changes_total Shared state changes received from the cluster store, by kind.\n\
             # TYPE event_pusher_cluster_changes_total counter"
        );
        for (kind, n) in KINDS.iter().zip(&self.changes) {
            let _ = writeln!(
                out,
                "event_pusher_cluster_changes_total{{node=\"{node}\",kind=\"{kind}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP event_pusher_cluster_apply_lag_seconds From a change's commit on any sidecar to its arrival here.\n\
             # TYPE event_pusher_cluster_apply_lag_seconds histogram"
        );
        self.lag.render(
            out,
            "event_pusher_cluster_apply_lag_seconds",
            &format!("node=\"{node}\""),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counters_are_summed_over_nodes_and_bad_stats_count_as_none() {
        let view = NodesView::from_rows(vec![
            (
                "a".into(),
                1.0,
                0.0,
                json!({"subscriptions": {"s1": {"queued": 1, "delivered": 2}}}),
            ),
            (
                "b".into(),
                1.0,
                0.0,
                json!({"subscriptions": {"s1": {"failed": 3, "dead_letters": 4}, "s2": {}}}),
            ),
            ("c".into(), 1.0, 0.0, json!("not an object")),
        ]);
        assert_eq!(view.nodes.len(), 3);
        assert_eq!(
            view.totals["s1"],
            SubscriptionCounters {
                queued: 1,
                delivered: 2,
                failed: 3,
                dead_letters: 4
            }
        );
        assert_eq!(view.totals["s2"], SubscriptionCounters::default());
    }

    #[test]
    fn only_unreachability_marks_the_store_down() {
        let h = Health::new();
        h.failed(&ClusterError::SequenceTooLarge(u64::MAX));
        assert!(h.up());
        h.failed(&ClusterError::Unavailable(crate::error::Unreachable::TimedOut));
        let s = h.status("pg".into());
        assert!(!s.up);
        assert_eq!(s.last_error.as_deref(), Some("cluster store unavailable: timed out"));
        h.ok();
        let s = h.status("pg".into());
        assert!(s.up);
        assert!(s.last_error.is_some(), "kept after recovery");
    }
}
