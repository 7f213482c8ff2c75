//! The publishing channels: a `deadpool` pool of lanes, and keeping them
//! open.
//!
//! A lane is one connection with one channel in confirm mode. One
//! connection per lane rather than many channels on one: lapin runs one I/O
//! loop per connection, and losing one connection then only takes down one
//! lane. The pool ([`LanePool`], a `deadpool::managed::Pool`) holds up to
//! `pool_size` of them; [`LaneManager`] opens a lane from the parsed URL
//! (not a URI string, which would turn an IP host into `localhost`),
//! declares the exchanges on it, and on every checkout checks that it is
//! still open.
//!
//! A delivery checks a lane out only to take handles to its channel and
//! permits, and gives it back before it publishes (holding it across the
//! `basic_publish` await serialized a lane's publishes: see publish.rs), so
//! publishes on one channel go out back to back with their confirms
//! outstanding together (up to `max_in_flight` per channel, bounded by the
//! lane's semaphore) instead of one round trip per event. The pool supplies what a hand-made one would
//! have to: wait and create timeouts, health checks on recycle, status.
//!
//! A lane that fails (an I/O or channel error, a missing confirm, the
//! broker closing the connection) is retired: marked broken, so the pool
//! drops it at its next checkout instead of handing it out. A supervisor
//! task drops dead idle lanes and, while no lane is up, opens one with
//! exponential backoff, so the backend reports itself ready again without
//! waiting for a delivery; the pool opens more as deliveries find every
//! lane busy. While no lane can be opened, a checkout fails within the
//! reconnect grace with a retryable reason and the delivery engine keeps
//! the events in the spool.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool::managed::{self, Metrics, PoolError, RecycleError, RecycleResult, Timeouts};
use event_pusher_core::BackendError;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionStatus};
use tokio::sync::{Notify, Semaphore};

use super::config::AmqpUrl;
use super::declare::{declare, Declaration};
use crate::transport::amqp;

/// Connecting, opening the channel and declaring, each bounded by this.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait after a failed reconnect; doubles up to `RECONNECT_MAX`.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// How often the supervisor looks at idle lanes. Failures seen by a
/// publish wake it at once; this catches idle lanes that died.
const HEALTH_CHECK: Duration = Duration::from_millis(500);

/// The pool of lanes.
pub type LanePool = managed::Pool<LaneManager>;
/// A lane checked out of the pool; back in the pool when dropped.
pub type PooledLane = managed::Object<LaneManager>;

/// One open lane: a connection, its channel in confirm mode, and the
/// permits for unconfirmed publishes on that channel.
pub struct Lane {
    /// Kept for its lifetime: dropping the last handle closes it.
    _connection: Connection,
    pub channel: Channel,
    /// One permit per unconfirmed publish. Belongs to this channel (and
    /// outlives a checkout: a publish runs after the lane went back),
    /// so a reopened lane starts with a full set even while publishes on
    /// the old one are still timing out.
    pub permits: Arc<Semaphore>,
    pub health: Arc<LaneHealth>,
    registry: Arc<Registry>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.registry.remove(&self.health);
    }
}

/// What a lane's users need to know about it after giving it back: is it
/// still good, and a way to retire it.
pub struct LaneHealth {
    id: u64,
    broken: AtomicBool,
    connection: ConnectionStatus,
    channel: lapin::ChannelStatus,
}

impl LaneHealth {
    fn healthy(&self) -> bool {
        !self.broken.load(Ordering::Acquire) && self.connection.connected() && self.channel.connected()
    }

    /// The broker stopped reading from this connection (a memory or disk
    /// alarm); publishes would only wait for their timeout.
    pub fn blocked(&self) -> bool {
        self.connection.blocked()
    }
}

/// Every lane that exists, checked out or idle, so readiness can be told
/// without checking one out.
#[derive(Default)]
struct Registry(Mutex<Vec<Arc<LaneHealth>>>);

impl Registry {
    fn lanes(&self) -> MutexGuard<'_, Vec<Arc<LaneHealth>>> {
        // A poisoned lock only means another thread panicked while holding
        // it; the list is still valid.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, health: &Arc<LaneHealth>) {
        self.lanes().retain(|h| !Arc::ptr_eq(h, health));
    }
}

/// Opens lanes for the pool and checks them on checkout.
pub struct LaneManager {
    /// `rabbit.NAME`: the backend instance, for logs and the connection name.
    name: String,
    url: AmqpUrl,
    declarations: Vec<Declaration>,
    max_in_flight: usize,
    next_id: AtomicU64,
    registry: Arc<Registry>,
    last_error: Mutex<Option<String>>,
}

impl LaneManager {
    fn set_last_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connect, open a channel, declare the exchanges, turn on confirms.
    async fn open(&self) -> Result<Lane, BackendError> {
        let url = &self.url;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name = format!("event-pusher {} #{id}", self.name);
        let connection = amqp::connect(url, &name)
            .await
            .map_err(|e| BackendError::with_source(e.to_string(), e))?;
        // On any error below, dropping `connection` closes it.
        let setup = async {
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| BackendError::with_source(format!("cannot open a channel on {url}: {e}"), e))?;
            for d in &self.declarations {
                declare(&channel, d).await?;
            }
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| {
                    BackendError::with_source(format!("cannot turn on publisher confirms on {url}: {e}"), e)
                })?;
            Ok::<_, BackendError>(channel)
        };
        let channel = tokio::time::timeout(SETUP_TIMEOUT, setup).await.map_err(|_| {
            BackendError::new(format!(
                "RabbitMQ at {url} did not answer within {SETUP_TIMEOUT:?} while opening a channel and declaring"
            ))
        })??;
        let health = Arc::new(LaneHealth {
            id,
            broken: AtomicBool::new(false),
            connection: connection.status().clone(),
            channel: channel.status().clone(),
        });
        self.registry.lanes().push(health.clone());
        Ok(Lane {
            _connection: connection,
            channel,
            permits: Arc::new(Semaphore::new(self.max_in_flight)),
            health,
            registry: self.registry.clone(),
        })
    }
}

impl managed::Manager for LaneManager {
    type Type = Lane;
    type Error = BackendError;

    async fn create(&self) -> Result<Lane, BackendError> {
        match self.open().await {
            Ok(lane) => {
                tracing::info!(backend = %self.name, lane = lane.health.id, url = %self.url, "RabbitMQ channel open, exchanges declared");
                self.set_last_error(None);
                Ok(lane)
            }
            Err(e) => {
                self.set_last_error(Some(e.to_string()));
                Err(e)
            }
        }
    }

    /// Only an open, unretired lane goes out again. (The exchanges were
    /// declared when its channel opened; a channel that lost its connection
    /// is never reused, so a reconnect always declares again.)
    async fn recycle(&self, lane: &mut Lane, _: &Metrics) -> RecycleResult<BackendError> {
        if lane.health.healthy() {
            Ok(())
        } else {
            Err(RecycleError::message("the connection or channel is closed"))
        }
    }
}

/// Why no lane could be checked out within the grace period.
#[derive(Debug, thiserror::Error)]
pub enum NotConnected {
    /// Opening a lane failed.
    #[error("not connected to RabbitMQ at {url}: {source}")]
    Open { url: String, source: BackendError },
    /// None freed or opened in time, and the last lane lost says why.
    #[error("not connected to RabbitMQ at {url}: {last_error}")]
    Lost { url: String, last_error: String },
    #[error("not connected to RabbitMQ at {url}: no channel free or opened within {grace:?}")]
    Busy { url: String, grace: Duration },
    #[error("not connected to RabbitMQ at {url}: {source}")]
    Pool {
        url: String,
        source: PoolError<BackendError>,
    },
}

pub struct Channels {
    pool: LanePool,
    /// A lane was retired or none could be had: reconnect now.
    wake: Arc<Notify>,
    supervised: AtomicBool,
}

impl Channels {
    pub fn new(
        name: &str,
        url: AmqpUrl,
        declarations: Vec<Declaration>,
        pool_size: usize,
        max_in_flight: usize,
    ) -> Result<Self, BackendError> {
        let manager = LaneManager {
            name: format!("rabbit.{name}"),
            url,
            declarations,
            max_in_flight,
            next_id: AtomicU64::new(0),
            registry: Arc::default(),
            last_error: Mutex::new(None),
        };
        let pool = managed::Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| BackendError::with_source(format!("cannot build the RabbitMQ channel pool: {e}"), e))?;
        Ok(Channels {
            pool,
            wake: Arc::new(Notify::new()),
            supervised: AtomicBool::new(false),
        })
    }

    /// Open every lane that is not up. The first failure is returned (and
    /// the lanes opened so far stay open).
    pub async fn open_missing(&self) -> Result<(), BackendError> {
        open_missing(&self.pool, true).await
    }

    /// Start the task that reopens lost lanes. Idempotent. The task holds
    /// only a weak reference to the pool and ends when the backend is
    /// dropped.
    pub fn supervise(&self) {
        if self.supervised.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(supervise(self.pool.weak(), self.wake.clone()));
    }

    /// A lane to publish on, waiting up to `grace` for one to be free or
    /// (re)opened. A connection reset is usually repaired in well under a
    /// second; waiting for that costs the event nothing, where failing would
    /// spend one of its attempts.
    pub async fn checkout(&self, grace: Duration) -> Result<PooledLane, NotConnected> {
        let timeouts = Timeouts {
            wait: Some(grace),
            create: Some(grace),
            recycle: Some(grace),
        };
        self.pool.timeout_get(&timeouts).await.map_err(|e| {
            self.wake.notify_one();
            let manager = self.pool.manager();
            let url = manager.url.to_string();
            match e {
                PoolError::Backend(source) => NotConnected::Open { url, source },
                PoolError::Timeout(_) => match manager.last_error() {
                    Some(last_error) => NotConnected::Lost { url, last_error },
                    None => NotConnected::Busy { url, grace },
                },
                source => NotConnected::Pool { url, source },
            }
        })
    }

    /// Take a lane out of rotation after a failure on it: the pool drops it
    /// at its next checkout, and the supervisor opens a new one.
    pub fn retire(&self, health: &LaneHealth, why: &str) {
        if !health.broken.swap(true, Ordering::AcqRel) {
            let m = self.pool.manager();
            tracing::warn!(backend = %m.name, lane = health.id, reason = why, "RabbitMQ channel lost; reconnecting");
            m.set_last_error(Some(why.to_owned()));
            self.wake.notify_one();
        }
    }

    /// At least one lane is up.
    pub fn is_up(&self) -> bool {
        is_up(&self.pool)
    }
}

/// Drop dead idle lanes, then make sure lanes are open: all `max_size` of
/// them (at start, when nothing else uses the pool), or at least one (the
/// supervisor: the pool opens more when deliveries find every lane busy).
/// The first failure is returned.
async fn open_missing(pool: &LanePool, all: bool) -> Result<(), BackendError> {
    pool.retain(|lane, _| lane.health.healthy());
    let timeouts = Timeouts {
        // Lanes checked out by deliveries come back within one publish.
        wait: Some(SETUP_TIMEOUT),
        create: Some(SETUP_TIMEOUT * 2),
        recycle: Some(SETUP_TIMEOUT),
    };
    let want = if all { pool.status().max_size } else { 1 };
    // Lanes are held until the end so that each checkout opens a new one.
    let mut held = Vec::with_capacity(want);
    while held.len() < want && (all || !is_up(pool)) {
        match pool.timeout_get(&timeouts).await {
            Ok(lane) => held.push(lane),
            Err(PoolError::Backend(e)) => return Err(e),
            Err(e) => {
                return Err(BackendError::with_source(
                    format!("cannot open a RabbitMQ channel: {e}"),
                    e,
                ))
            }
        }
    }
    Ok(())
}

fn is_up(pool: &LanePool) -> bool {
    pool.manager().registry.lanes().iter().any(|h| h.healthy())
}

async fn supervise(pool: managed::WeakPool<LaneManager>, wake: Arc<Notify>) {
    let mut backoff = RECONNECT_MIN;
    loop {
        // Hold the pool only while working, never while sleeping, so
        // dropping the backend ends this task.
        let failed = {
            let Some(pool) = pool.upgrade() else { return };
            match open_missing(&pool, false).await {
                Ok(()) => false,
                Err(e) => {
                    tracing::warn!(backend = %pool.manager().name, error = %e, retry_in = ?backoff, "cannot reopen RabbitMQ channel");
                    true
                }
            }
        };
        if failed {
            // Not woken early: deliveries finding no lane must not turn
            // the backoff into a busy loop.
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(RECONNECT_MAX);
        } else {
            backoff = RECONNECT_MIN;
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(HEALTH_CHECK) => {}
            }
        }
    }
}

/// ±20% so that many instances do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.8 + f64::from(nanos % 1000) / 2500.0;
    d.mul_f64(factor)
}
