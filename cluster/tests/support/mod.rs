//! Test support: a database of its own per test on the real PostgreSQL
//! (127.0.0.1:5432, user postgres, trust; `scripts/setup.sh` starts it),
//! a TCP proxy the test cuts to simulate an outage, an in-memory outbox
//! standing in for the spool, and waiting on the change feed.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_pusher_cluster::{Change, ClusterConfig, ClusterStore, Outbox};
use event_pusher_core::StateChange;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinHandle;

pub const PG: &str = "127.0.0.1:5432";

/// Generous: only a hang fails on it (no timing is asserted).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A database created for one test and dropped (even with connections
/// still open) when the value is dropped.
pub struct TestDb {
    pub name: String,
}

async fn admin_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&format!("postgres://postgres@{PG}/postgres"), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {PG} (user postgres, trust): {e}; run scripts/setup.sh"));
    tokio::spawn(conn);
    client
}

impl TestDb {
    pub async fn create() -> TestDb {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "ep_cluster_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        admin_client()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        TestDb { name }
    }

    /// The URL of this database at `addr` (PostgreSQL, or a proxy to it).
    pub fn url_via(&self, addr: &str) -> String {
        format!("postgres://postgres@{addr}/{}", self.name)
    }

    pub fn url(&self) -> String {
        self.url_via(PG)
    }

    pub fn config(&self, node: &str) -> ClusterConfig {
        self.config_via(PG, node)
    }

    pub fn config_via(&self, addr: &str, node: &str) -> ClusterConfig {
        ClusterConfig {
            postgres: self.url_via(addr),
            pool_size: 4,
            node: Some(node.to_owned()),
        }
    }

    pub async fn store(&self, node: &str) -> ClusterStore {
        ClusterStore::connect(&self.config(node), 8088)
            .await
            .expect("connect to the test database")
    }

    /// A plain client on this database, to look at the tables directly.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do it on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = admin_client()
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

/// A TCP proxy in front of PostgreSQL. `cut()` closes every connection
/// through it and refuses new ones (accepts and closes them at once, as a
/// dead server behind a load balancer would look); `restore()` lets them
/// through again. `stall()` black-holes the connections open now (they
/// stay open, nothing more crosses them, as after a lost NAT entry) while
/// new ones work.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let epoch = Arc::new(AtomicU64::new(0));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let target = target.to_owned();
        let accept = tokio::spawn({
            let up = up.clone();
            let epoch = epoch.clone();
            let conns = conns.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = target.clone();
                    let epoch = epoch.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(outbound) = TcpStream::connect(&target).await {
                            let born = epoch.load(Ordering::SeqCst);
                            let (in_read, in_write) = inbound.into_split();
                            let (out_read, out_write) = outbound.into_split();
                            tokio::join!(
                                pump(in_read, out_write, epoch.clone(), born),
                                pump(out_read, in_write, epoch, born)
                            );
                        }
                    });
                    conns.lock().unwrap().push(task);
                }
            }
        });
        Proxy {
            addr,
            up,
            epoch,
            conns,
            accept,
        }
    }

    pub fn stall(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort(); // drops both sockets: the peers see the close
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Copy one direction of a proxied connection until either side closes,
/// or forever without forwarding once the proxy is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    epoch: Arc<AtomicU64>,
    born: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if epoch.load(Ordering::SeqCst) != born {
            // Black hole: keep both sockets open, forward nothing.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
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
