//! The handle to the cluster store: the connection pool, the background
//! tasks (listening, heartbeat) and the in-memory status they keep.
//! Operations live beside it, one concept per file: `apply.rs` (the outbox
//! relay's writes), `admin.rs` (registry and subscription writes answered
//! once committed), `merge.rs` (first start), `heartbeat.rs` (nodes).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use event_pusher_config::ClusterConfig;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use crate::change::Change;
use crate::feed::{self, Listener};
use crate::shared::{Shared, NODE_LIVENESS, OP_TIMEOUT};
use crate::snapshot::{self, Snapshot};
use crate::status::{self, ClusterStatus, Health, Metrics, NodeSeen, NodesView, SubscriptionCounters};
use crate::{heartbeat, migrate, ClusterError};

/// Changes a slow subscriber may fall behind before it sees
/// `RecvError::Lagged` (it must then `load()` again).
const FEED_CAPACITY: usize = 16_384;

/// Stops the background tasks when the last handle is dropped.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A connection to the cluster store. Cheap to clone; the background tasks
/// stop when the last clone is dropped.
#[derive(Clone)]
pub struct ClusterStore {
    pub(crate) shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for ClusterStore {
    /// Without the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore")
            .field("node", &self.shared.node)
            .field("postgres", &self.shared.postgres_redacted)
            .field("up", &self.shared.health.up())
            .finish()
    }
}

/// This sidecar's default node name: the host name and the listen port
/// (`chat-1:8088`), unique per sidecar even with several on one host.
pub fn default_node_name(listen_port: u16) -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{listen_port}")
}

impl ClusterStore {
    /// Connect, migrate the schema, start listening for changes and the
    /// heartbeat. Fails with `Unavailable` when the store cannot be reached
    /// (the sidecar is then not ready; call again later). Then
    /// `subscribe()`, `load()`, and apply the received changes on top of
    /// the loaded state: the listening connection is open before `connect`
    /// returns, so nothing committed after the load is missed (changes
    /// committed just before it may arrive too; they carry whole states,
    /// so applying them again is harmless).
    pub async fn connect(config: &ClusterConfig, listen_port: u16) -> Result<ClusterStore, ClusterError> {
        let mut pg = tokio_postgres::Config::from_str(&config.postgres).map_err(ClusterError::Config)?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(5));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("event-pusher");
        }
        // Notice a dead peer on idle connections (the listening one).
        pg.keepalives(true).keepalives_idle(Duration::from_secs(30));
        let node = config
            .node
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| default_node_name(listen_port));
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(OP_TIMEOUT))
            .create_timeout(Some(OP_TIMEOUT))
            .recycle_timeout(Some(OP_TIMEOUT))
            .build()
            .map_err(|e| ClusterError::Unavailable(e.into()))?;

        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let shared = Arc::new(Shared {
            pool,
            pg,
            node,
            postgres_redacted: config.redacted_postgres(),
            health: Health::new(),
            metrics: Metrics::new(),
            feed,
            nodes: Mutex::new(NodesView::default()),
            stats: Mutex::new(serde_json::json!({})),
        });

        let applied = shared
            .run(|mut client| async move { migrate::migrate(&mut client).await })
            .await?;
        if !applied.is_empty() {
            tracing::info!(migrations = ?applied, "cluster store: schema migrated");
        }
        let listener = tokio::time::timeout(OP_TIMEOUT, Listener::connect(&shared.pg)).await??;
        heartbeat::beat(&shared, true).await?;

        let tasks = vec![
            tokio::spawn(feed::listen(shared.clone(), listener)),
            tokio::spawn(heartbeat::run(shared.clone())),
        ];
        tracing::info!(
            node = %shared.node,
            postgres = %shared.postgres_redacted,
            "cluster store: connected"
        );
        Ok(ClusterStore {
            shared,
            _tasks: Arc::new(Tasks(tasks)),
        })
    }

    /// [`ClusterStore::connect`], retried with backoff (up to 5 s) while
    /// the store is unavailable; `on_unavailable` sees each failure (for
    /// `/ready` and the log). Other errors (a bad connection string, a
    /// refused login, a schema newer than this build) are returned: waiting
    /// does not fix them.
    pub async fn connect_retrying(
        config: &ClusterConfig,
        listen_port: u16,
        mut on_unavailable: impl FnMut(&ClusterError),
    ) -> Result<ClusterStore, ClusterError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match ClusterStore::connect(config, listen_port).await {
                Err(e) if e.is_unavailable() => {
                    on_unavailable(&e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    /// This sidecar's node name.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// Everything shared, as committed now.
    pub async fn load(&self) -> Result<Snapshot, ClusterError> {
        self.shared
            .run(|mut client| async move { snapshot::load(&mut client).await })
            .await
    }

    /// Committed changes from now on, from every sidecar (this one
    /// included). On `RecvError::Lagged`, `load()` again.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.shared.feed.subscribe()
    }

    /// Whether the last attempt to reach the store succeeded.
    pub fn is_up(&self) -> bool {
        self.shared.health.up()
    }

    /// The answer of `GET /v1/cluster`.
    pub fn status(&self) -> ClusterStatus {
        let now = feed::unix_now();
        let nodes = self
            .shared
            .nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .nodes
            .iter()
            .filter(|(_, last_seen, _)| now - last_seen <= NODE_LIVENESS.as_secs_f64())
            .map(|(name, last_seen, started_at)| NodeSeen {
                name: name.clone(),
                last_seen: status::rfc3339(status::from_unix(*last_seen)),
                started_at: status::rfc3339(status::from_unix(*started_at)),
            })
            .collect();
        ClusterStatus {
            node: self.shared.node.clone(),
            store: self.shared.health.status(self.shared.postgres_redacted.clone()),
            nodes,
        }
    }

    /// Append the store's metrics in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        self.shared
            .metrics
            .render(out, &self.shared.node, self.shared.health.up());
    }

    /// This node's counters, stored with its next heartbeat. Shape:
    /// [`crate::NodeStats`] (`{"subscriptions": {ID: {"queued", "delivered",
    /// "failed", "dead_letters"}}}`); other keys are kept but not read.
    pub fn report_stats(&self, stats: serde_json::Value) {
        *self.shared.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats;
    }

    /// Per subscription, the counters summed over the nodes seen in the
    /// last 30 s, as of the last heartbeat (so it answers during an outage,
    /// with the last known sums).
    pub fn subscription_totals(&self) -> BTreeMap<String, SubscriptionCounters> {
        self.shared
            .nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .totals
            .clone()
    }
}
