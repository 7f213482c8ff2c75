//! PostgreSQL for tests: a database of its own per test on the machine's
//! server (127.0.0.1:5432, user `postgres`, trust auth; `scripts/setup.sh`
//! starts it), created on demand and dropped `WITH (FORCE)` when the value
//! is dropped, so tests run in parallel; and a TCP proxy a test cuts to
//! simulate an outage of the database (never stopping the shared server).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const PG: &str = "127.0.0.1:5432";

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
}

impl TestDb {
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
