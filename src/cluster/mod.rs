//! The cluster store inside the sidecar (`[cluster]`): the state every
//! sidecar must share — push devices, presence with badge counts, webhook
//! subscriptions — kept in PostgreSQL by `event_pusher_cluster`, followed
//! here in memory so the chain never waits on the network.
//!
//! How the pieces meet:
//! - changes accepted with requests (presence, `push_enable`, badge
//!   counts) are committed to the local spool with the request and kept in
//!   its outbox; [`outbox::SpoolOutbox`] hands them to the store's relay,
//!   in order, across outages and restarts;
//! - admin writes (devices, subscriptions) go to the store first and are
//!   answered once it committed ([`Cluster::store`] answers
//!   [`Unavailable`] while it cannot be reached: the API says 503);
//! - what any sidecar changed comes back through `LISTEN/NOTIFY` and is
//!   applied to this sidecar's views ([`sync`]).
//!
//! Without `[cluster]` none of this runs: the spool alone holds the state.

pub mod outbox;
pub mod sync;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use event_pusher_cluster::{ClusterConfig, ClusterError, ClusterStore, SubscriptionCounters, UNAVAILABLE};
use serde_json::{json, Value};
use time::OffsetDateTime;

/// The store cannot be reached (or was not loaded yet): nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("{UNAVAILABLE}")]
    Unavailable,
    /// The store refused the write for another reason.
    #[error(transparent)]
    Store(ClusterError),
}

impl From<ClusterError> for SharedError {
    fn from(e: ClusterError) -> Self {
        if e.is_unavailable() {
            SharedError::Unavailable
        } else {
            SharedError::Store(e)
        }
    }
}

/// This sidecar's link to the cluster store.
pub struct Cluster {
    config: ClusterConfig,
    node: String,
    /// Set once connected and the state was loaded.
    store: OnceLock<ClusterStore>,
    loaded: AtomicBool,
    /// Why the store is not connected yet, and since when.
    waiting: Mutex<Option<(String, String)>>,
}

impl Cluster {
    pub fn new(config: ClusterConfig, listen_port: u16) -> Self {
        let node = config
            .node
            .clone()
            .unwrap_or_else(|| event_pusher_cluster::default_node_name(listen_port));
        Cluster {
            config,
            node,
            store: OnceLock::new(),
            loaded: AtomicBool::new(false),
            waiting: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The store, for an admin write: `Unavailable` until it was reached
    /// and loaded once (the write would not be seen by this sidecar's view
    /// otherwise).
    pub fn store(&self) -> Result<&ClusterStore, SharedError> {
        match self.store.get() {
            Some(s) if self.loaded.load(Ordering::Acquire) => Ok(s),
            _ => Err(SharedError::Unavailable),
        }
    }

    /// Why `/ready` must say no: the store was never loaded.
    pub fn not_ready(&self) -> Option<String> {
        if self.loaded.load(Ordering::Acquire) {
            return None;
        }
        let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        Some(match &*waiting {
            Some((why, _)) => format!("cluster store unavailable: {why}"),
            None => "cluster store: not loaded yet".to_owned(),
        })
    }

    fn set_waiting(&self, why: &ClusterError) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let since = waiting.as_ref().map(|(_, s)| s.clone()).unwrap_or_else(now);
        *waiting = Some((why.to_string(), since));
    }

    fn set_loaded(&self, store: ClusterStore) {
        let _ = self.store.set(store);
        self.loaded.store(true, Ordering::Release);
    }

    /// `GET /v1/cluster`.
    pub fn status(&self) -> Value {
        match self.store.get() {
            Some(store) => serde_json::to_value(store.status()).unwrap_or(Value::Null),
            None => {
                let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                let (last_error, since) = waiting.clone().unzip();
                json!({
                    "node": self.node,
                    "store": {
                        "postgres": self.config.redacted_postgres(),
                        "up": false,
                        "last_error": last_error,
                        "since": since,
                    },
                    "nodes": [],
                })
            }
        }
    }

    /// The store's series for `/metrics` (the up gauge at 0 until reached).
    pub fn render_metrics(&self, out: &mut String) {
        match self.store.get() {
            Some(store) => store.render_metrics(out),
            None => {
                out.push_str(
                    "# HELP event_pusher_cluster_store_up Whether the cluster store (PostgreSQL) is reachable.\n",
                );
                out.push_str("# TYPE event_pusher_cluster_store_up gauge\n");
                out.push_str(&format!("event_pusher_cluster_store_up{{node=\"{}\"}} 0\n", self.node));
            }
        }
    }

    /// Each subscription's counters summed over the sidecars that report.
    pub fn subscription_totals(&self) -> BTreeMap<String, SubscriptionCounters> {
        self.store
            .get()
            .map(ClusterStore::subscription_totals)
            .unwrap_or_default()
    }
}

fn now() -> String {
    event_pusher_core::event::timestamp_millis::format(&OffsetDateTime::now_utc())
}
