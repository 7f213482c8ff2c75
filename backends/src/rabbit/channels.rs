//! The publishing channels, and keeping them open.
//!
//! `pool_size` lanes, each one connection with one channel in confirm mode.
//! A lane's channel is shared by every delivery that picks it: publishes go
//! out back to back and their confirms come back asynchronously, so up to
//! `max_in_flight` of them are outstanding per channel (a semaphore bounds
//! it) instead of one round trip per event. One connection per lane rather
//! than many channels on one: lapin runs one I/O loop per connection, and
//! losing one connection then only takes down one lane.
//!
//! A lane that fails (an I/O or channel error, a missing confirm, the
//! broker closing the connection) is retired: taken out of rotation at
//! once, its channel closed when the last publish using it lets go. A
//! supervisor task reopens retired lanes with exponential backoff and
//! declares the exchanges again on each new channel. While no lane is up,
//! `pick` fails fast with a retryable reason and the delivery engine keeps
//! the events in the spool.
//!
//! (Why not deadpool-lapin: a pool hands an object to one user at a time,
//! which is exactly the one-round-trip-per-event pattern confirms
//! pipelining avoids, and its manager connects from a URI string, which
//! amq-protocol-uri resolves to `localhost` whenever the host is an IP
//! address. The lanes below are the pool.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::types::LongString;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::{Notify, Semaphore};

use super::config::AmqpUrl;
use super::declare::{declare, Declaration};

/// Connecting, opening the channel and declaring, each bounded by this.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait after a failed reconnect; doubles up to `RECONNECT_MAX`.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// How often the supervisor looks at healthy-looking lanes. Failures seen
/// by a publish wake it at once; this catches idle lanes that died.
const HEALTH_CHECK: Duration = Duration::from_millis(500);

/// One open lane: a connection, its channel in confirm mode, and the
/// permits for unconfirmed publishes on that channel.
pub struct Live {
    lane: usize,
    connection: Connection,
    pub channel: Channel,
    /// One permit per unconfirmed publish. Belongs to this channel, so a
    /// reopened lane starts with a full set even while publishes on the old
    /// one are still timing out.
    pub permits: Semaphore,
}

impl Live {
    fn healthy(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// The broker stopped reading from this connection (a memory or disk
    /// alarm); publishes would only wait for their timeout.
    pub fn blocked(&self) -> bool {
        self.connection.status().blocked()
    }
}

pub struct Channels {
    shared: Arc<Shared>,
}

struct Shared {
    /// The backend instance name, for logs and the connection name.
    name: String,
    url: AmqpUrl,
    declarations: Vec<Declaration>,
    max_in_flight: usize,
    lanes: Vec<Mutex<Option<Arc<Live>>>>,
    /// Round-robin start for `pick`.
    next: AtomicUsize,
    /// Held while opening lanes, so `start` and the supervisor never open
    /// the same lane twice.
    opening: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<String>>,
    /// A lane was retired or none was found: reconnect now.
    wake: Arc<Notify>,
    /// A lane was (re)opened: deliveries waiting in `pick_within` go on.
    opened: Notify,
    supervised: AtomicBool,
}

/// A poisoned lock only means another thread panicked while holding it;
/// the `Option` inside is still a valid value.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Channels {
    pub fn new(
        name: &str,
        url: AmqpUrl,
        declarations: Vec<Declaration>,
        pool_size: usize,
        max_in_flight: usize,
    ) -> Self {
        Channels {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                url,
                declarations,
                max_in_flight,
                lanes: (0..pool_size.max(1)).map(|_| Mutex::new(None)).collect(),
                next: AtomicUsize::new(0),
                opening: tokio::sync::Mutex::new(()),
                last_error: Mutex::new(None),
                wake: Arc::new(Notify::new()),
                opened: Notify::new(),
                supervised: AtomicBool::new(false),
            }),
        }
    }

    /// Open every lane that is not up. The first failure is returned (and
    /// the lanes opened so far stay open).
    pub async fn open_missing(&self) -> Result<(), String> {
        self.shared.open_missing().await
    }

    /// Start the task that reopens lost lanes. Idempotent. The task holds
    /// only a weak reference and ends when the backend is dropped.
    pub fn supervise(&self) {
        if self.shared.supervised.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(supervise(Arc::downgrade(&self.shared), self.shared.wake.clone()));
    }

    /// A lane to publish on: the next one up in round-robin order, skipping
    /// those with no free permit when another has one.
    pub fn pick(&self) -> Result<Arc<Live>, String> {
        let s = &self.shared;
        let n = s.lanes.len();
        let start = s.next.fetch_add(1, Ordering::Relaxed);
        let mut fallback = None;
        for i in 0..n {
            let lane = (start + i) % n;
            let Some(live) = lock(&s.lanes[lane]).clone() else {
                continue;
            };
            if !live.healthy() {
                s.retire(&live, "the connection or channel is closed");
                continue;
            }
            if live.permits.available_permits() > 0 {
                return Ok(live);
            }
            fallback.get_or_insert(live);
        }
        if let Some(live) = fallback {
            return Ok(live);
        }
        s.wake.notify_one();
        let why = lock(&s.last_error).clone().unwrap_or_else(|| {
            let state = if s.supervised.load(Ordering::Acquire) {
                "reconnecting"
            } else {
                "not started yet"
            };
            state.to_owned()
        });
        Err(format!("not connected to RabbitMQ at {}: {why}", s.url))
    }

    /// Like [`pick`](Self::pick), but when no lane is up and the supervisor
    /// is reconnecting, wait up to `grace` for one. A connection reset is
    /// usually repaired in well under a second; waiting for that costs the
    /// event nothing, where failing would spend one of its attempts.
    pub async fn pick_within(&self, grace: Duration) -> Result<Arc<Live>, String> {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            // Registered before looking, so an opening in between is not missed.
            let opened = self.shared.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            match self.pick() {
                Ok(live) => return Ok(live),
                Err(e) if !self.shared.supervised.load(Ordering::Acquire) => return Err(e),
                Err(e) => {
                    if tokio::time::timeout_at(deadline, opened).await.is_err() {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Take a lane out of rotation after a failure on it; the supervisor
    /// reopens it. A no-op if the lane was already replaced.
    pub fn retire(&self, live: &Arc<Live>, why: &str) {
        self.shared.retire(live, why);
    }

    /// At least one lane is up.
    pub fn is_up(&self) -> bool {
        self.shared
            .lanes
            .iter()
            .any(|l| lock(l).as_ref().is_some_and(|live| live.healthy()))
    }
}

impl Shared {
    fn retire(&self, live: &Arc<Live>, why: &str) {
        let mut slot = lock(&self.lanes[live.lane]);
        if slot.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, live)) {
            *slot = None;
            drop(slot);
            tracing::warn!(backend = %self.name, lane = live.lane, reason = why, "RabbitMQ channel lost; reconnecting");
            *lock(&self.last_error) = Some(why.to_owned());
            self.wake.notify_one();
        }
    }

    fn all_up(&self) -> bool {
        self.lanes.iter().all(|l| lock(l).is_some())
    }

    /// Retire lanes whose connection or channel has closed.
    fn check_health(&self) {
        for l in &self.lanes {
            let live = lock(l).clone();
            if let Some(live) = live.filter(|live| !live.healthy()) {
                self.retire(&live, "the connection or channel was closed");
            }
        }
    }

    async fn open_missing(&self) -> Result<(), String> {
        let _guard = self.opening.lock().await;
        self.check_health();
        for lane in 0..self.lanes.len() {
            if lock(&self.lanes[lane]).is_some() {
                continue;
            }
            match self.open(lane).await {
                Ok(live) => {
                    tracing::info!(backend = %self.name, lane, url = %self.url, "RabbitMQ channel open, exchanges declared");
                    *lock(&self.lanes[lane]) = Some(Arc::new(live));
                    self.opened.notify_waiters();
                }
                Err(e) => {
                    *lock(&self.last_error) = Some(e.clone());
                    return Err(e);
                }
            }
        }
        *lock(&self.last_error) = None;
        Ok(())
    }

    /// Connect, open a channel, declare the exchanges, turn on confirms.
    async fn open(&self, lane: usize) -> Result<Live, String> {
        let url = &self.url;
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(format!("event-pusher {} #{lane}", self.name)));
        let connection = tokio::time::timeout(SETUP_TIMEOUT, Connection::connect_uri(url.uri().clone(), props))
            .await
            .map_err(|_| format!("cannot connect to RabbitMQ at {url}: no answer within {SETUP_TIMEOUT:?}"))?
            .map_err(|e| format!("cannot connect to RabbitMQ at {url}: {e}"))?;
        // On any error below, dropping `connection` closes it.
        let setup = async {
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| format!("cannot open a channel on {url}: {e}"))?;
            for d in &self.declarations {
                declare(&channel, d).await?;
            }
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| format!("cannot turn on publisher confirms on {url}: {e}"))?;
            Ok::<_, String>(channel)
        };
        let channel = tokio::time::timeout(SETUP_TIMEOUT, setup).await.map_err(|_| {
            format!("RabbitMQ at {url} did not answer within {SETUP_TIMEOUT:?} while opening a channel and declaring")
        })??;
        Ok(Live {
            lane,
            connection,
            channel,
            permits: Semaphore::new(self.max_in_flight),
        })
    }
}

async fn supervise(shared: Weak<Shared>, wake: Arc<Notify>) {
    let mut backoff = RECONNECT_MIN;
    loop {
        // Hold the backend only while working, never while sleeping, so
        // dropping it ends this task.
        let failed = {
            let Some(s) = shared.upgrade() else { return };
            s.check_health();
            if s.all_up() {
                false
            } else {
                match s.open_missing().await {
                    Ok(()) => false,
                    Err(e) => {
                        tracing::warn!(backend = %s.name, error = %e, retry_in = ?backoff, "cannot reopen RabbitMQ channel");
                        true
                    }
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
