//! Test support: a database of its own per test on the real PostgreSQL
//! (127.0.0.1:5432, user postgres, trust; `scripts/setup.sh` starts it),
//! a TCP proxy the test cuts to simulate an outage, an in-memory outbox
//! standing in for the spool, and waiting on the change feed.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_pusher_cluster::{Change, ClusterConfig, ClusterStore, Outbox};
use event_pusher_core::StateChange;
use tokio::sync::{broadcast, Notify};

/// Generous: only a hang fails on it (no timing is asserted).
pub const PATIENCE: Duration = Duration::from_secs(60);

#[allow(unused_imports)]
pub use event_pusher_testkit::postgres::{Proxy, TestDb, PG};

/// The cluster store's views of a test database.
pub trait DbExt {
    fn config(&self, node: &str) -> ClusterConfig;
    fn config_via(&self, addr: &str, node: &str) -> ClusterConfig;
    fn store(&self, node: &str) -> impl std::future::Future<Output = ClusterStore>;
}

impl DbExt for TestDb {
    fn config(&self, node: &str) -> ClusterConfig {
        self.config_via(PG, node)
    }

    fn config_via(&self, addr: &str, node: &str) -> ClusterConfig {
        ClusterConfig {
            postgres: self.url_via(addr),
            pool_size: 4,
            node: Some(node.to_owned()),
        }
    }

    async fn store(&self, node: &str) -> ClusterStore {
        ClusterStore::connect(&self.config(node), 8088)
            .await
            .expect("connect to the test database")
    }
}

/// An outbox in memory, standing in for the spool's: entries numbered
/// from 1, removed once relayed.
#[derive(Clone, Default)]
pub struct MemOutbox {
    inner: Arc<MemOutboxInner>,
}

#[derive(Default)]
struct MemOutboxInner {
    entries: Mutex<VecDeque<(u64, Vec<StateChange>)>>,
    next: AtomicU64,
    added: Notify,
    removed: Notify,
}

impl MemOutbox {
    pub fn push(&self, changes: Vec<StateChange>) -> u64 {
        let mut entries = self.inner.entries.lock().unwrap();
        let seq = self.inner.next.fetch_add(1, Ordering::SeqCst) + 1;
        entries.push_back((seq, changes));
        drop(entries);
        self.inner.added.notify_one();
        seq
    }

    pub fn len(&self) -> usize {
        self.inner.entries.lock().unwrap().len()
    }

    /// Wait until every entry was relayed.
    pub async fn drained(&self) {
        let wait = async {
            loop {
                let removed = self.inner.removed.notified();
                if self.len() == 0 {
                    return;
                }
                removed.await;
            }
        };
        tokio::time::timeout(PATIENCE, wait).await.expect("the outbox drains");
    }
}

impl Outbox for MemOutbox {
    async fn next_batch(&self, limit: usize) -> Vec<(u64, Vec<StateChange>)> {
        self.inner.entries.lock().unwrap().iter().take(limit).cloned().collect()
    }

    async fn remove_through(&self, seq: u64) {
        self.inner.entries.lock().unwrap().retain(|(s, _)| *s > seq);
        self.inner.removed.notify_waiters();
    }

    async fn wait_for_more(&self) {
        self.inner.added.notified().await;
    }
}

/// Receive changes until one matches `want`; returns it.
pub async fn wait_for(rx: &mut broadcast::Receiver<Change>, what: &str, want: impl Fn(&Change) -> bool) -> Change {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(c) if want(&c) => return c,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("feed closed while waiting for {what}: {e}"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("no change on the feed: {what}"))
}

/// Retry `f` until it returns Some (for state that settles eventually, e.g.
/// after a heartbeat).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let wait = async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("never happened: {what}"))
}

pub fn presence(user: &str, resource: &str, online: bool) -> StateChange {
    StateChange::Presence {
        scope: "push.mobile".into(),
        user: user.into(),
        resource: resource.into(),
        online,
    }
}

pub fn count(user: &str) -> StateChange {
    StateChange::Count {
        scope: "push.mobile".into(),
        user: user.into(),
    }
}

pub fn device_put(user: &str, device_id: &str, record: serde_json::Value) -> StateChange {
    StateChange::DevicePut {
        scope: "push.mobile".into(),
        user: user.into(),
        device_id: device_id.into(),
        record,
    }
}

pub fn device_remove(user: &str, device_id: &str) -> StateChange {
    StateChange::DeviceRemove {
        scope: "push.mobile".into(),
        user: user.into(),
        device_id: device_id.into(),
    }
}
