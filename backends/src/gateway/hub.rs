//! The hub: every session of one gateway backend, the clients that may
//! identify, and the fan-out of events to sessions.
//!
//! Fan-out never waits on a client: a dispatch is numbered and buffered
//! under the session's own short lock and handed to its connection with
//! `try_send`; a full queue closes that connection (4000) instead of
//! blocking ingest or other sessions.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use event_pusher_core::token::constant_time_eq;
use tokio::sync::{oneshot, watch};

use super::dispatch::Payload;
use super::metrics::GatewayMetrics;
use super::session::{Pushed, Session};

/// A client that may connect: its name (for metrics), token and the most
/// intents it may ask for.
pub struct Client {
    pub name: String,
    pub token: String,
    pub intents: u64,
}

/// Session timings and limits, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub heartbeat_interval: Duration,
    pub resume_buffer: usize,
    pub resume_timeout: Duration,
    pub max_queued: usize,
    pub max_sessions: usize,
    pub max_pending: usize,
}

/// All sessions of one gateway backend.
pub struct Hub {
    pub backend: String,
    pub path: String,
    /// `public_url` from the config: the base of `resume_gateway_url`.
    pub public_url: Option<String>,
    pub limits: Limits,
    pub clients: Vec<Client>,
    sessions: RwLock<HashMap<String, Arc<Session>>>,
    pub metrics: GatewayMetrics,
    /// Set on shutdown: every connection sends op 7 and closes.
    draining: watch::Sender<bool>,
    /// Open WebSocket connections (identified or not).
    connections: AtomicUsize,
    /// Identified connections (bounded by `max_sessions`).
    identified: AtomicUsize,
    /// Connections that have not identified yet, oldest first.
    pending: Mutex<PendingSet>,
}

/// The unidentified connections: each one's number and how to close it.
#[derive(Default)]
struct PendingSet {
    next: u64,
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
}

impl Hub {
    pub fn new(backend: String, path: String, limits: Limits, clients: Vec<Client>) -> Hub {
        Hub {
            metrics: GatewayMetrics::new(),
            backend,
            path,
            public_url: None,
            limits,
            clients,
            sessions: RwLock::new(HashMap::new()),
            draining: watch::channel(false).0,
            connections: AtomicUsize::new(0),
            identified: AtomicUsize::new(0),
            pending: Mutex::new(PendingSet::default()),
        }
    }

    pub fn with_public_url(mut self, url: Option<String>) -> Hub {
        self.public_url = url;
        self
    }

    /// The client whose token this is. Compares every token in full so the
    /// time taken does not tell how much of a token matched.
    pub fn client_by_token(&self, token: &str) -> Option<usize> {
        let mut found = None;
        for (i, c) in self.clients.iter().enumerate() {
            if constant_time_eq(c.token.as_bytes(), token.as_bytes()) {
                found = Some(i);
            }
        }
        found
    }

    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.read().get(id).cloned()
    }

    pub fn insert(&self, session: Arc<Session>) {
        self.write().insert(session.id.clone(), session);
    }

    pub fn remove(&self, id: &str) {
        self.write().remove(id);
    }

    /// Put one dispatch into every session whose intents include `intent`.
    pub fn fan_out(&self, intent: u64, payload: &Arc<Payload>) {
        let mut expired = Vec::new();
        {
            let sessions = self.read();
            for session in sessions.values() {
                if session.intents & intent == 0 {
                    continue;
                }
                match session.push(payload) {
                    Pushed::Queued(depth) => self.metrics.queued(depth),
                    Pushed::Detached => {
                        if session.expired(self.limits.resume_timeout) {
                            expired.push(session.id.clone());
                        }
                    }
                    Pushed::Overflowed => {}
                }
                self.metrics.dispatched();
            }
        }
        if !expired.is_empty() {
            let mut sessions = self.write();
            for id in expired {
                sessions.remove(&id);
            }
        }
    }

    /// Forget sessions detached for longer than the resume timeout.
    pub fn sweep(&self) {
        let timeout = self.limits.resume_timeout;
        self.write().retain(|_, s| !s.expired(timeout));
    }

    /// Attached sessions per client (index as in `clients`).
    pub fn attached_by_client(&self) -> Vec<usize> {
        let mut counts = vec![0; self.clients.len()];
        for s in self.read().values() {
            if s.is_attached() {
                if let Some(n) = counts.get_mut(s.client) {
                    *n += 1;
                }
            }
        }
        counts
    }

    pub fn draining(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Tell every connection to send op 7 and close; wait (up to `wait`)
    /// until they have.
    pub async fn drain(&self, wait: Duration) {
        self.draining.send_replace(true);
        let deadline = tokio::time::Instant::now() + wait;
        while self.connections.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether `max_sessions` connections are identified.
    pub fn sessions_full(&self) -> bool {
        self.identified.load(Ordering::Acquire) >= self.limits.max_sessions
    }

    /// Count a new connection, as not identified yet. When `max_pending`
    /// are waiting already, the oldest of them is told to close: a client
    /// that identifies right after Hello always gets through.
    pub fn open_connection(self: &Arc<Self>) -> (ConnectionGuard, Pending) {
        self.connections.fetch_add(1, Ordering::AcqRel);
        let guard = ConnectionGuard { hub: self.clone() };
        let (evict, evicted) = oneshot::channel();
        let mut set = self.pending_set();
        while set.waiting.len() >= self.limits.max_pending {
            match set.waiting.pop_first() {
                Some((_, oldest)) => {
                    let _ = oldest.send(());
                }
                None => break,
            }
        }
        let id = set.next;
        set.next += 1;
        set.waiting.insert(id, evict);
        let pending = Pending {
            hub: self.clone(),
            id,
            evicted,
        };
        (guard, pending)
    }

    /// Take an identified connection's place, unless `max_sessions` are
    /// taken.
    pub fn take_session_slot(self: &Arc<Self>) -> Option<SessionSlot> {
        let n = self.identified.fetch_add(1, Ordering::AcqRel);
        let slot = SessionSlot { hub: self.clone() };
        (n < self.limits.max_sessions).then_some(slot)
    }

    fn pending_set(&self) -> std::sync::MutexGuard<'_, PendingSet> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// One open connection in [`Hub`]'s count; dropping it uncounts it.
pub struct ConnectionGuard {
    hub: Arc<Hub>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.hub.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection among the unidentified; `evicted` fires when newer ones
/// need its place. Dropping it (identified, or gone) leaves the set.
pub struct Pending {
    hub: Arc<Hub>,
    id: u64,
    pub evicted: oneshot::Receiver<()>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.hub.pending_set().waiting.remove(&self.id);
    }
}

/// An identified connection's place in `max_sessions`.
pub struct SessionSlot {
    hub: Arc<Hub>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.hub.identified.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// One event to 1,000 sessions is one payload, shared: each session's
    /// buffer and queue hold the same `Arc`, nothing is encoded again.
    #[test]
    fn fan_out_shares_one_encoded_payload() {
        let limits = Limits {
            heartbeat_interval: Duration::from_secs(1),
            resume_buffer: 10,
            resume_timeout: Duration::from_secs(60),
            max_queued: 10,
            max_sessions: 2000,
            max_pending: 10,
        };
        let hub = Hub::new("live".into(), "/v1/gateway".into(), limits, Vec::new());
        let mut queues = Vec::new();
        for i in 0..1000 {
            let session = Arc::new(Session::new(format!("s{i}"), 0, 0b11, 10));
            let (tx, rx) = mpsc::channel(10);
            session.attach(tx, oneshot::channel().0);
            hub.insert(session);
            queues.push(rx);
        }
        let payload = Payload::new("MESSAGE_CREATE", r#"{"id":"x"}"#);
        hub.fan_out(1 << 1, &payload);
        // Ours + 1,000 buffers + 1,000 queues.
        assert_eq!(Arc::strong_count(&payload), 2001);
        assert!(queues.iter_mut().all(|q| q.try_recv().map(|(s, _)| s) == Ok(1)));
        // A class no session asked for reaches none.
        let other = Payload::new("MESSAGE_UNACKED", "{}");
        hub.fan_out(1 << 5, &other);
        assert_eq!(Arc::strong_count(&other), 1);
    }
}
