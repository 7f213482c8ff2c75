//! The `Backend` trait: what a delivery target implements.
//!
//! A backend does two things. In the chain it *claims* the events it wants
//! (`wants`, beside the class mask from its config), which is CPU-only. In
//! its delivery queue it *delivers* claimed events, which is where all I/O
//! happens. Retries, backoff, ordering, dead letters and pausing are the
//! delivery engine's job, not the backend's: a backend only reports what
//! happened to one attempt.
//!
//! Implementors write `impl Backend`; the sidecar keeps it as an
//! [`AnyBackend`] (kind + [`Claims`] + [`Deliver`]), see [`Backend`] for why.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::event::Event;
use crate::spool::{Spool, SpoolError};
use crate::state_change::{Changes, StateChange};

/// One attempt to deliver one event.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: Event,
    /// The canonical JSON of `event`, as stored in the spool.
    pub json: Bytes,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The item's place in the backend's queue (the spool's sequence
    /// number): later items were accepted later. 0 outside a queue.
    pub seq: u64,
    /// The target this queue item is for, when the backend claimed the
    /// event per target ([`Targets::Each`]), e.g. one device of a user.
    pub target: Option<Arc<str>>,
}

/// What a backend claims of an event in the chain: the event as a whole
/// (one queue item), or one queue item per target (each with its own
/// retries, order and dead letter), or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Targets {
    /// One queue item for the event (every backend but fan-out ones).
    #[default]
    Whole,
    /// One queue item per target; an empty list claims nothing.
    Each(Vec<Arc<str>>),
}

/// What a backend may reach once the spool is open: its own state, scoped
/// to its `KIND.NAME` (never the whole spool).
#[derive(Clone)]
pub struct Attachment {
    pub id: String,
    pub state: ScopedState,
}

impl Attachment {
    pub fn new(spool: Spool, id: impl Into<String>) -> Self {
        let id = id.into();
        Attachment {
            state: ScopedState {
                spool,
                prefix: format!("{id}/"),
            },
            id,
        }
    }
}

/// A backend's own state in the spool: the keys under its `KIND.NAME/`.
/// Changes go through [`StateChange`]s, committed like the ones a request
/// carries (and, with a cluster store, relayed like them).
#[derive(Clone)]
pub struct ScopedState {
    spool: Spool,
    prefix: String,
}

impl ScopedState {
    /// Every stored key of this backend (without its prefix) and value.
    /// Blocking.
    pub fn read(&self) -> Result<Vec<(String, Vec<u8>)>, SpoolError> {
        let rows = self.spool.read_state(&self.prefix)?;
        Ok(rows
            .into_iter()
            .map(|(k, v)| (k[self.prefix.len()..].to_owned(), v))
            .collect())
    }

    /// Commit changes with fsync; they are applied in memory (through
    /// [`Backend::apply`]) before this returns.
    pub async fn commit(&self, changes: Vec<StateChange>) -> Result<(), SpoolError> {
        self.spool.commit(Vec::new(), changes).await
    }

    /// Commit changes that a cluster store already has (written there
    /// first): stored and applied here, not relayed again.
    pub async fn commit_local(&self, changes: Vec<StateChange>) -> Result<(), SpoolError> {
        self.spool.commit_local(changes).await
    }

    /// Commit changes with the next group, without waiting.
    pub fn commit_soon(&self, changes: Vec<StateChange>) {
        self.spool.commit_soon(changes);
    }

    /// Delete some of this backend's keys without waiting (bookkeeping).
    pub fn delete_soon(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        self.spool.put_state_soon(
            keys.into_iter()
                .map(|k| (format!("{}{k}", self.prefix), None))
                .collect(),
        );
    }

    /// Set (`Some`) or delete (`None`) some of this backend's keys and wait
    /// until they are committed with fsync, without going through a change:
    /// for bookkeeping that must be on disk before the caller answers (the
    /// gateway's resume buffers, before a delivery counts as done).
    pub async fn put(&self, entries: Vec<(String, Option<Vec<u8>>)>) -> Result<(), SpoolError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.spool.put_state(self.scoped(entries)).await
    }

    /// [`put`](Self::put) without waiting: committed with the next group,
    /// before any command sent after it.
    pub fn put_all_soon(&self, entries: Vec<(String, Option<Vec<u8>>)>) {
        if entries.is_empty() {
            return;
        }
        self.spool.put_state_soon(self.scoped(entries));
    }

    fn scoped(&self, entries: Vec<(String, Option<Vec<u8>>)>) -> Vec<(String, Option<Vec<u8>>)> {
        entries
            .into_iter()
            .map(|(k, v)| (format!("{}{k}", self.prefix), v))
            .collect()
    }

    /// Overwrite one of this backend's keys without waiting, and without
    /// going through a change: for bookkeeping that is not shared state
    /// (a device's `last_push_at`).
    pub fn put_soon(&self, key: &str, value: Vec<u8>) {
        self.spool
            .put_state_soon(vec![(format!("{}{key}", self.prefix), Some(value))]);
    }
}

/// Why an attempt failed, and whether trying again could help.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryError {
    pub retryable: bool,
    /// A wait the peer asked for (HTTP `Retry-After`, throttling).
    pub retry_after: Option<Duration>,
    /// A status code from the peer, when it gave one.
    pub status: Option<u16>,
    pub message: String,
    /// Nothing was sent: the backend knew this item cannot go now (e.g.
    /// the push provider of its device is not ready) and asks to hold it
    /// for `retry_after`. The attempt is not counted, the circuit breaker
    /// is not told, and nothing is logged as a failure.
    pub held: bool,
}

impl DeliveryError {
    /// A failure that may succeed later (timeouts, 5xx, broker down).
    pub fn retryable(message: impl Into<String>) -> Self {
        DeliveryError {
            retryable: true,
            retry_after: None,
            status: None,
            message: message.into(),
            held: false,
        }
    }

    /// Not attempted: hold the item for `wait`, then try again, without
    /// counting an attempt (see [`held`](Self::held)).
    pub fn held(message: impl Into<String>, wait: Duration) -> Self {
        DeliveryError {
            held: true,
            retry_after: Some(wait),
            ..DeliveryError::retryable(message)
        }
    }

    /// A failure that no retry can fix (400, 404, invalid parameter).
    pub fn permanent(message: impl Into<String>) -> Self {
        DeliveryError {
            retryable: false,
            retry_after: None,
            status: None,
            message: message.into(),
            held: false,
        }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "status {s}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DeliveryError {}

/// A backend could not start (bad endpoint, failed declare), or could not
/// be built from its config. The message is what logs and `/status` show;
/// the source, when there is one, is kept for `Error::source` chains. It is
/// `Clone` (the engine keeps the last start error), so the source is shared.
#[derive(Debug, Clone)]
pub struct BackendError {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {
    /// The error itself, not the `Arc` around it, so callers can downcast.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl BackendError {
    /// An error with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        BackendError {
            message: message.into(),
            source: None,
        }
    }

    /// An error caused by `source`; `message` says what was being done and
    /// (as before typed errors) may already quote the source.
    pub fn with_source(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        BackendError {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// An error that is `source` itself: its message, and it kept for
    /// `Error::source` chains and downcasts.
    pub fn from_source(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        BackendError::with_source(source.to_string(), source)
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What a delivery target implements.
///
/// Implementors write one `impl Backend`; the sidecar stores it through two
/// narrow object-safe views, [`Claims`] for the chain and [`Deliver`] for the
/// delivery queue, plus the kind, in an [`AnyBackend`]. Why not one `dyn
/// Backend`: the kind is an associated constant (a backend kind is a type,
/// not a per-instance choice), and a trait with a constant cannot be a
/// trait object; and the chain and the queue need different halves, so each
/// holds only the one it uses.
///
/// There is one way to deliver: [`Backend::deliver`] takes a batch of at
/// most [`Backend::max_batch`] events (1 unless the backend says more) and
/// returns one result per event, in order. A backend that sends one event
/// at a time writes `one_by_one(batch, |d| self.publish(d)).await`
/// ([`one_by_one`]).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The kind, as in config: `http`, `log`, `rabbit`, ...
    const KIND: &'static str;

    /// Whether to claim this event, beyond the `events` class mask. Runs in
    /// the chain, so it must be cheap and must not block.
    fn wants(&self, _event: &Event) -> bool {
        true
    }

    /// Which targets to claim the event for, once its class mask and
    /// [`wants`](Self::wants) said yes. Runs in the chain, like `wants`.
    /// Pure: a backend whose claim changes its state (a badge count)
    /// returns that change in `changes`, which also holds the changes the
    /// request made before this event (read them to decide as if they were
    /// applied already).
    fn targets(&self, _event: &Event, _changes: &mut Changes) -> Targets {
        Targets::Whole
    }

    /// Every event that reaches the backend in the chain, whatever its class
    /// mask, before `wants`: for backends that keep state from events they
    /// do not deliver (the push backend's presence). Pure like `targets`:
    /// the state change goes into `changes`, and is applied only once the
    /// request is stored.
    fn observe(&self, _event: &Event, _changes: &mut Changes) {}

    /// Apply a committed change of this backend's state to its in-memory
    /// view (see [`StateChange`]). Called in commit order; quick, no I/O.
    fn apply(&self, _change: &StateChange) {}

    /// Called once by the sidecar after the spool opened, before any event
    /// runs through the chain: a backend that keeps state in the spool
    /// loads it here. Blocking is allowed (it runs before serving).
    fn attach(&self, _attachment: &Attachment) -> Result<(), BackendError> {
        Ok(())
    }

    /// Connect, declare, warm up. Called once before delivery starts; an
    /// error here leaves the backend not ready, and the engine calls it again
    /// with backoff.
    async fn start(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Whether the backend can deliver right now (used by `/ready`).
    fn is_ready(&self) -> bool {
        true
    }

    /// Readiness of the parts a backend delivers through, when it has
    /// several that can fail alone (the push backend's providers): shown
    /// as `providers` in the backend's `/v1/backends` row.
    fn providers_ready(&self) -> Option<Vec<(&'static str, bool)>> {
        None
    }

    /// The most events one `deliver` call takes. 1 means one at a time.
    fn max_batch(&self) -> usize {
        1
    }

    /// The delivery order the backend needs whatever its `ordering` key
    /// says (a coalescing push backend needs a device's items in `deliver`
    /// together: unordered); `None` keeps the key's.
    fn ordering(&self) -> Option<crate::delivery_order::DeliveryOrder> {
        None
    }

    /// Deliver a batch of 1..=`max_batch()` events: one result per event,
    /// in order. A short answer counts the missing ones as retryable
    /// failures.
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>>;

    /// Forget what the backend holds about `user` (a bare JID): devices,
    /// presence, counters (`DELETE /v1/users/{jid}`). Returns how many
    /// devices went. Backends that hold nothing per user keep the default.
    async fn erase_user(&self, _user: &str) -> Result<u64, BackendError> {
        Ok(0)
    }
}

/// Deliver a batch one event after the other with `deliver_one`: the
/// adapter for backends that have no batch call.
pub async fn one_by_one<'a, F, Fut>(batch: &'a [Delivery], mut deliver_one: F) -> Vec<Result<(), DeliveryError>>
where
    F: FnMut(&'a Delivery) -> Fut,
    Fut: Future<Output = Result<(), DeliveryError>>,
{
    let mut out = Vec::with_capacity(batch.len());
    for d in batch {
        out.push(deliver_one(d).await);
    }
    out
}

/// The chain's view of a backend: which events it claims. Object-safe.
pub trait Claims: Send + Sync + 'static {
    fn wants(&self, event: &Event) -> bool;
    fn targets(&self, event: &Event, changes: &mut Changes) -> Targets;
    fn observe(&self, event: &Event, changes: &mut Changes);
    fn apply(&self, change: &StateChange);
}

impl<B: Backend> Claims for B {
    fn wants(&self, event: &Event) -> bool {
        Backend::wants(self, event)
    }
    fn targets(&self, event: &Event, changes: &mut Changes) -> Targets {
        Backend::targets(self, event, changes)
    }
    fn observe(&self, event: &Event, changes: &mut Changes) {
        Backend::observe(self, event, changes)
    }
    fn apply(&self, change: &StateChange) {
        Backend::apply(self, change)
    }
}

/// The delivery queue's view of a backend. Object-safe.
#[async_trait]
pub trait Deliver: Send + Sync + 'static {
    fn attach(&self, attachment: &Attachment) -> Result<(), BackendError>;
    async fn start(&self) -> Result<(), BackendError>;
    fn is_ready(&self) -> bool;
    fn providers_ready(&self) -> Option<Vec<(&'static str, bool)>>;
    fn max_batch(&self) -> usize;
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>>;
    async fn erase_user(&self, user: &str) -> Result<u64, BackendError>;
}

#[async_trait]
impl<B: Backend> Deliver for B {
    fn attach(&self, attachment: &Attachment) -> Result<(), BackendError> {
        Backend::attach(self, attachment)
    }
    async fn start(&self) -> Result<(), BackendError> {
        Backend::start(self).await
    }
    fn is_ready(&self) -> bool {
        Backend::is_ready(self)
    }
    fn providers_ready(&self) -> Option<Vec<(&'static str, bool)>> {
        Backend::providers_ready(self)
    }
    fn max_batch(&self) -> usize {
        Backend::max_batch(self)
    }
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        Backend::deliver(self, batch).await
    }
    async fn erase_user(&self, user: &str) -> Result<u64, BackendError> {
        Backend::erase_user(self, user).await
    }
}

/// A backend of any kind as the registry, chain and engine store it: its
/// kind next to its two views (both the same instance), and the instance
/// itself, for the code that knows its type (the push routes find their
/// backend with [`AnyBackend::downcast`]).
#[derive(Clone)]
pub struct AnyBackend {
    pub kind: &'static str,
    pub claims: Arc<dyn Claims>,
    pub deliver: Arc<dyn Deliver>,
    any: Arc<dyn Any + Send + Sync>,
}

impl AnyBackend {
    pub fn new<B: Backend>(backend: B) -> Self {
        Self::from_arc(Arc::new(backend))
    }

    pub fn from_arc<B: Backend>(backend: Arc<B>) -> Self {
        AnyBackend {
            kind: B::KIND,
            claims: backend.clone(),
            deliver: backend.clone(),
            any: backend,
        }
    }

    /// The backend as its own type, when it is a `B`.
    pub fn downcast<B: Backend>(&self) -> Option<Arc<B>> {
        self.any.clone().downcast::<B>().ok()
    }
}

impl fmt::Debug for AnyBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyBackend")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn backend_error_keeps_its_message_and_source() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = BackendError::with_source("cannot open log output x: denied", io);
        assert_eq!(e.to_string(), "cannot open log output x: denied");
        let source = std::error::Error::source(&e.clone()).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("denied"));
        assert!(std::error::Error::source(&BackendError::new("plain")).is_none());
    }

    /// Claims everything, delivers nowhere: for chain and ingest tests.
    pub(crate) struct NullBackend;

    #[async_trait]
    impl Backend for NullBackend {
        const KIND: &'static str = "null";
        async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
            batch.iter().map(|_| Ok(())).collect()
        }
    }
}
