//! The hub: every session of one gateway backend, the clients that may
//! identify, and the fan-out of events to sessions.
//!
//! Fan-out never waits on a client: a dispatch is numbered and buffered
//! under the session's own short lock and handed to its connection with
//! `try_send`; a full queue closes that connection (4000) instead of
//! blocking ingest or other sessions.
//!
//! With the spool attached, the hub also keeps the sessions' state there
//! (`persist.rs`): it numbers every fanned-out event in the dispatch log,
//! writes session records, trims the log, and rebuilds the sessions on
//! start.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use event_pusher_core::backend::ScopedState;
use event_pusher_core::spool::SpoolError;
use event_pusher_core::token::constant_time_eq;
use tokio::sync::{oneshot, watch};

use super::dispatch::Payload;
use super::limits::{Client, Limits};
use super::metrics::GatewayMetrics;
use super::persist::{self, SessionRecord, Write};
use super::session::{Pushed, Session};

/// Log entries written between two trims of the dispatch log.
const TRIM_EVERY: usize = 512;

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
    /// The backend's state in the spool, once attached.
    store: OnceLock<ScopedState>,
    /// The next dispatch log index (from 1).
    next_index: AtomicU64,
    /// Ids of events fanned out whose delivery may come again: those in
    /// the log at start (a crash may have lost their acks) and those whose
    /// commit failed (retried). They are not dispatched twice.
    logged_before: Mutex<std::collections::HashSet<String>>,
    /// Log writes whose commit failed, tried again with the next one.
    unsaved: Mutex<Vec<Write>>,
    /// The log indexes written and not trimmed yet, and how many were
    /// written since the last trim.
    log: Mutex<(VecDeque<u64>, usize)>,
    /// Held while a session record is built and sent to the spool, and
    /// while the log is trimmed (which moves anchors): a record written
    /// after a trim never carries an anchor from before it.
    records: tokio::sync::Mutex<()>,
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
            store: OnceLock::new(),
            next_index: AtomicU64::new(1),
            logged_before: Mutex::new(std::collections::HashSet::new()),
            unsaved: Mutex::new(Vec::new()),
            log: Mutex::new((VecDeque::new(), 0)),
            records: tokio::sync::Mutex::new(()),
        }
    }

    /// Load the sessions kept in the spool (detached, resumable for
    /// `resume_timeout_ms`) and keep them there from now on. Blocking.
    pub fn attach_store(&self, store: ScopedState) -> Result<usize, SpoolError> {
        let rows = store.read()?;
        let restored = persist::restore(rows, &self.clients, &self.limits, event_pusher_core::spool::now_ms());
        store.put_all_soon(restored.dropped);
        self.next_index.store(restored.next_index, Ordering::Release);
        *self.logged_before_set() = restored.delivered;
        self.log_state().0 = restored.kept;
        let n = restored.sessions.len();
        let mut sessions = self.write();
        for session in restored.sessions {
            sessions.insert(session.id.clone(), Arc::new(session));
        }
        drop(sessions);
        let _ = self.store.set(store);
        Ok(n)
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

    /// Add a session; it is anchored at the next log index under the
    /// map's write lock, so every event fanned out later reaches it and
    /// none before did.
    pub fn insert(&self, session: Arc<Session>) {
        let mut sessions = self.write();
        session.anchor_at(self.next_index.load(Ordering::Acquire));
        sessions.insert(session.id.clone(), session);
    }

    pub fn remove(&self, id: &str) {
        self.write().remove(id);
        self.forget(vec![id.to_owned()]);
    }

    /// Put one dispatch into every session whose intents include `intent`,
    /// numbering it in the dispatch log; whether any session took it.
    pub fn fan_out(&self, intent: u64, payload: &Arc<Payload>) -> bool {
        let mut expired = Vec::new();
        let mut matched = false;
        {
            let sessions = self.read();
            // Under the read lock: a session inserted (write lock) after
            // this is anchored past this index.
            payload.set_index(self.next_index.fetch_add(1, Ordering::AcqRel));
            for session in sessions.values() {
                if session.intents & intent == 0 {
                    continue;
                }
                matched = true;
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
            for id in &expired {
                sessions.remove(id);
            }
            drop(sessions);
            self.forget(expired);
        }
        matched
    }

    /// Forget sessions detached for longer than the resume timeout.
    pub fn sweep(&self) {
        let timeout = self.limits.resume_timeout;
        let mut gone = Vec::new();
        self.write().retain(|id, s| {
            let keep = !s.expired(timeout);
            if !keep {
                gone.push(id.clone());
            }
            keep
        });
        self.forget(gone);
    }

    /// Whether this event was fanned out already (before a crash that
    /// lost its ack, or before a commit that failed): delivered again, it
    /// is not dispatched twice.
    pub fn seen_before(&self, event_id: &str) -> bool {
        let mut logged = self.logged_before_set();
        !logged.is_empty() && logged.remove(event_id)
    }

    /// Events fanned out whose commit failed: their retry is not
    /// dispatched again.
    pub fn not_committed(&self, event_ids: Vec<String>) {
        self.logged_before_set().extend(event_ids);
    }

    fn logged_before_set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.logged_before.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log entry of a fanned-out payload that some session took, when
    /// sessions are kept in the spool.
    pub fn log_entry(&self, intent: u64, event_id: &str, payload: &Payload) -> Option<Write> {
        self.store.get()?;
        let mut log = self.log_state();
        log.0.push_back(payload.index());
        log.1 += 1;
        Some(persist::log_write(intent, event_id, payload))
    }

    /// Commit a batch's log entries (with any whose commit failed before,
    /// and a trim of the log when due) with fsync; returns once they are
    /// on disk.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), SpoolError> {
        let Some(store) = self.store.get() else {
            return Ok(());
        };
        let _records = self.records.lock().await;
        let mut all = std::mem::take(&mut *self.unsaved_writes());
        all.extend(writes);
        if self.log_state().1 >= TRIM_EVERY {
            all.extend(self.trim());
        }
        if all.is_empty() {
            return Ok(());
        }
        let result = store.put(all.clone()).await;
        if result.is_err() {
            let mut unsaved = self.unsaved_writes();
            all.append(&mut unsaved);
            *unsaved = all;
        }
        result
    }

    fn unsaved_writes(&self) -> std::sync::MutexGuard<'_, Vec<Write>> {
        self.unsaved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drop the log entries no session keeps any more; sessions anchored
    /// below the cut move their anchor up (written with the deletes).
    /// Called with `records` held.
    fn trim(&self) -> Vec<Write> {
        let mut writes = Vec::new();
        let next = self.next_index.load(Ordering::Acquire);
        {
            let sessions = self.read();
            let cut = sessions.values().filter_map(|s| s.oldest_index()).min().unwrap_or(next);
            for s in sessions.values() {
                if s.reanchor(cut, next).is_some() {
                    writes.push(self.record(s).write(&s.id));
                }
            }
            let mut log = self.log_state();
            log.1 = 0;
            while log.0.front().is_some_and(|i| *i < cut) {
                if let Some(i) = log.0.pop_front() {
                    writes.push((persist::log_key(i), None));
                }
            }
        }
        writes
    }

    /// Write a session's record and wait until it is on disk (Identify:
    /// before READY goes out).
    pub async fn save_now(&self, session: &Session) -> Result<(), SpoolError> {
        let Some(store) = self.store.get() else {
            return Ok(());
        };
        let _records = self.records.lock().await;
        store.put(vec![self.record(session).write(&session.id)]).await
    }

    /// Write a session's record with the next commit (it attached or
    /// detached).
    pub async fn save_soon(&self, session: &Session) {
        let Some(store) = self.store.get() else {
            return;
        };
        let _records = self.records.lock().await;
        store.put_all_soon(vec![self.record(session).write(&session.id)]);
    }

    fn record(&self, session: &Session) -> SessionRecord {
        let (anchor, detached_for) = session.anchor();
        let client = self.clients.get(session.client).map_or("", |c| c.name.as_str());
        SessionRecord::of(session, client, anchor, detached_for)
    }

    /// Delete the records of sessions that are gone.
    fn forget(&self, ids: Vec<String>) {
        if let (Some(store), false) = (self.store.get(), ids.is_empty()) {
            store.delete_soon(ids.iter().map(|id| persist::session_key(id)).collect());
        }
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

    fn log_state(&self) -> std::sync::MutexGuard<'_, (VecDeque<u64>, usize)> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
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
