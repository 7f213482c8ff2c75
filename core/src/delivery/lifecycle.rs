//! A runtime slot's life, in one place: attach, change, withdraw, remove.
//!
//! A slot added while the sidecar runs (a webhook subscription: from the
//! admin API, from the spool at start, or learned from the cluster store)
//! has five parts: its entry in the [`SlotRegistry`](crate::SlotRegistry),
//! its [`BackendHandle`], its spool tables (with the record it is rebuilt
//! from), its queue task, and its listing in the pipeline's
//! [`SubscriptionIndex`]. The engine makes and unmakes them together, in
//! the one order that never lets an event be claimed by a slot that cannot
//! hold it: registered → stored (one fsync'd commit) → queue started →
//! listed; and back: unlisted → queue stopped (in-flight attempts finish)
//! → tables dropped → retired. A step that fails undoes the ones before it,
//! so callers never clean up by hand.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{AttachError, BackendHandle, DeliveryEngine, DeliveryQueue, RunningQueue};
use crate::class::EventClasses;
use crate::slot::{DuplicateSlot, Slot};
use crate::spool::{Record, SpoolError};
use crate::BackendId;

/// Everything a runtime slot is attached (or changed) with.
pub struct SlotSpec {
    pub handle: BackendHandle,
    /// Stored with the slot's tables in the same commit (a subscription's
    /// settings), under its key.
    pub record: Option<Record>,
    /// The event classes it claims after the chain.
    pub classes: EventClasses,
    /// New events go straight to its dead letters instead of its queue (a
    /// disabled subscription).
    pub diverted: bool,
}

impl SlotSpec {
    /// A slot with `record`, claiming `classes`, taking new events.
    pub fn new(handle: BackendHandle, record: Option<Record>, classes: EventClasses) -> Self {
        SlotSpec {
            handle,
            record,
            classes,
            diverted: false,
        }
    }

    /// Divert new events to dead letters (or not).
    pub fn diverted(mut self, diverted: bool) -> Self {
        self.diverted = diverted;
        self
    }
}

impl DeliveryEngine {
    /// Attach a runtime slot in one call. A taken `KIND.NAME` is
    /// [`AttachError::Taken`] and a failed commit [`AttachError::Spool`];
    /// either way nothing is left of it.
    pub async fn attach(&self, spec: SlotSpec) -> Result<Slot, AttachError> {
        let mut attached = self.attach_all(vec![spec]).await?;
        match attached.pop() {
            Some(result) => Ok(result?),
            None => Err(AttachError::Spool(SpoolError::Closed)),
        }
    }

    /// Attach several runtime slots with one spool commit (the stored
    /// subscriptions at start). A taken id is refused alone, in its place
    /// in the answer; a failed commit attaches none of them.
    pub async fn attach_all(&self, specs: Vec<SlotSpec>) -> Result<Vec<Result<Slot, DuplicateSlot>>, SpoolError> {
        let mut results = Vec::with_capacity(specs.len());
        let mut tables = Vec::new();
        let mut listed = Vec::new();
        for spec in specs {
            let table = BackendId::new(spec.handle.kind, &spec.handle.name).to_string();
            match self.register(spec.handle) {
                Ok(slot) => {
                    tables.push((slot, table, spec.record));
                    listed.push((slot, spec.classes, spec.diverted));
                    results.push(Ok(slot));
                }
                Err(taken) => results.push(Err(taken)),
            }
        }
        if tables.is_empty() {
            return Ok(results);
        }
        if let Err(e) = self.spool.attach_slots(tables).await {
            listed.iter().for_each(|(slot, _, _)| self.forget(*slot));
            return Err(e);
        }
        for (slot, _, diverted) in &listed {
            self.set_diverted(*slot, *diverted);
            self.start_slot(*slot);
        }
        self.index
            .list_all(listed.into_iter().map(|(slot, classes, _)| (slot, classes)));
        Ok(results)
    }

    /// Change a runtime slot's settings: store its new record, stop its
    /// queue (in-flight attempts get up to `grace` and finish on the old
    /// backend), start it again on the new one from what the spool holds,
    /// and list it under its new classes. Counters carry over.
    pub async fn change(&self, slot: Slot, spec: SlotSpec, grace: Duration) -> Result<(), SpoolError> {
        let SlotSpec {
            mut handle,
            record,
            classes,
            diverted,
        } = spec;
        if let Some(record) = record {
            self.spool.put_record(record).await?;
        }
        if let Some(old) = self.backend(slot) {
            handle.stats = old.stats.clone();
        }
        self.stop_queue(slot, grace).await;
        // The old queue's last deliveries were acked without waiting (the
        // ack rides on the next commit); the new queue reads the spool from
        // the start, so commit those acks first or it sends them again.
        if let Err(e) = self.spool.sync().await {
            tracing::warn!(%slot, error = %e, "cannot commit the acks of a replaced queue; some events may be sent twice");
        }
        if let Some(b) = self
            .backends
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(slot.index())
        {
            *b = Some(Arc::new(handle));
        }
        self.set_diverted(slot, diverted);
        self.start_slot(slot);
        if self.index.is_listed(slot) {
            self.index.list(slot, classes);
        }
        Ok(())
    }

    /// Begin removing a runtime slot: from now on no new event claims it.
    /// Finish with [`Withdrawal::remove`]; dropping the withdrawal instead
    /// (a drain that timed out, a store that refused) lists it again.
    pub fn withdraw(&self, slot: Slot) -> Withdrawal<'_> {
        Withdrawal {
            engine: self,
            slot,
            classes: self.index.unlist(slot),
        }
    }

    /// Remove a runtime slot at once: [`withdraw`](Self::withdraw), then
    /// [`Withdrawal::remove`]. Returns how many queued events were discarded.
    pub async fn remove(&self, slot: Slot, record_key: String, grace: Duration) -> Result<u64, SpoolError> {
        self.withdraw(slot).remove(record_key, grace).await
    }

    /// New events for `slot` go to its dead letters (`true`) or its queue.
    pub fn set_diverted(&self, slot: Slot, diverted: bool) {
        self.spool.slot(slot).intake.set_diverted(diverted);
    }

    /// Whether `slot`'s queue is paused.
    pub fn is_paused(&self, slot: Slot) -> bool {
        self.spool.slot(slot).paused.load(Ordering::Acquire)
    }

    /// Register a runtime slot's handle; its queue starts once the spool
    /// has its tables.
    fn register(&self, handle: BackendHandle) -> Result<Slot, DuplicateSlot> {
        let mut registry = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let slot = registry.register_runtime(handle.kind, handle.name.clone())?;
        let mut backends = self.backends.write().unwrap_or_else(PoisonError::into_inner);
        if backends.len() <= slot.index() {
            backends.resize(slot.index() + 1, None);
        }
        backends[slot.index()] = Some(Arc::new(handle));
        Ok(slot)
    }

    /// Start a runtime slot's queue. Before [`start`](Self::start), `start`
    /// does it.
    fn start_slot(&self, slot: Slot) {
        if !self.started.load(Ordering::Acquire) {
            return;
        }
        if let Some(b) = self.backend(slot) {
            self.spawn_runtime(slot, b);
        }
    }

    pub(super) fn spawn_runtime(&self, slot: Slot, b: Arc<BackendHandle>) {
        let (stop, rx) = watch::channel(*self.stop.borrow());
        let queue = DeliveryQueue::new(slot, b, self.spool.clone(), rx).with_reporter(self.reporter());
        let task = tokio::spawn(queue.run());
        let mut running = self.runtime.lock().unwrap_or_else(PoisonError::into_inner);
        running.insert(slot, RunningQueue { stop, task });
    }

    /// Stop a runtime slot's queue, waiting up to `grace` for its attempts.
    async fn stop_queue(&self, slot: Slot, grace: Duration) {
        let running = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&slot);
        if let Some(q) = running {
            let _ = q.stop.send(true);
            if tokio::time::timeout(grace, q.task).await.is_err() {
                tracing::warn!(%slot, ?grace, "a stopped queue's attempts are still running; going on without them");
            }
        }
    }

    /// Retire a slot and drop its handle.
    fn forget(&self, slot: Slot) {
        self.slots.write().unwrap_or_else(PoisonError::into_inner).retire(slot);
        if let Some(b) = self
            .backends
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(slot.index())
        {
            *b = None;
        }
    }
}

/// A runtime slot on its way out: unlisted, so no new event claims it, but
/// still delivering what it holds. Dropped without
/// [`remove`](Self::remove), it is listed again as it was.
pub struct Withdrawal<'a> {
    engine: &'a DeliveryEngine,
    slot: Slot,
    /// What it was listed under; `None` once removed (or never listed).
    classes: Option<EventClasses>,
}

impl Withdrawal<'_> {
    /// Wait until the slot has nothing queued or in flight; `Err(queued)`
    /// at the deadline.
    pub async fn drained(&self, timeout: Duration) -> Result<(), u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.engine.status_of(self.slot);
            if s.queued == 0 && s.in_flight == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(s.queued);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop the queue (in-flight attempts get up to `grace`), drop the
    /// slot's tables and the record under `record_key` in one commit, and
    /// retire it. Returns how many queued events were discarded. If the
    /// spool cannot commit, the slot is started and listed again.
    pub async fn remove(mut self, record_key: String, grace: Duration) -> Result<u64, SpoolError> {
        let engine = self.engine;
        engine.stop_queue(self.slot, grace).await;
        match engine.spool.detach_slot(self.slot, record_key).await {
            Ok(discarded) => {
                engine.forget(self.slot);
                self.classes = None;
                Ok(discarded)
            }
            Err(e) => {
                engine.start_slot(self.slot);
                Err(e)
            }
        }
    }
}

impl Drop for Withdrawal<'_> {
    fn drop(&mut self) {
        if let Some(classes) = self.classes.take() {
            self.engine.index.list(self.slot, classes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tests::NullBackend;
    use crate::class::EventClass;
    use crate::spool::{Spool, SpoolLimits};
    use crate::{AnyBackend, SlotRegistry};

    fn spec(name: &str, classes: EventClasses) -> SlotSpec {
        let handle = BackendHandle::new(name, AnyBackend::new(NullBackend), Default::default());
        SlotSpec::new(handle, None, classes)
    }

    fn engine(dir: &std::path::Path) -> (DeliveryEngine, Arc<crate::subscriptions::SubscriptionIndex>) {
        let spool = Spool::open(dir, &[], SpoolLimits::default()).unwrap();
        let index = Arc::new(crate::subscriptions::SubscriptionIndex::new());
        (
            DeliveryEngine::new(spool, SlotRegistry::new(), Vec::new(), index.clone()),
            index,
        )
    }

    #[tokio::test]
    async fn attach_lists_and_remove_unlists_and_retires() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, index) = engine(dir.path());
        let chat: EventClasses = [EventClass::Chat].into_iter().collect();
        let slot = engine.attach(spec("a", chat)).await.unwrap();
        assert_eq!(index.matching(EventClass::Chat), [slot]);
        assert!(engine.slot("null.a").is_ok());
        assert!(matches!(
            engine.attach(spec("a", chat)).await,
            Err(AttachError::Taken(_))
        ));
        assert_eq!(
            index.matching(EventClass::Chat),
            [slot],
            "a refused attach changes nothing"
        );
        engine.remove(slot, "a".into(), Duration::from_secs(1)).await.unwrap();
        assert!(index.matching(EventClass::Chat).is_empty());
        assert!(engine.slot("null.a").is_err());
        assert!(engine.backend(slot).is_none());
        engine.spool().close().await.unwrap();
    }

    #[tokio::test]
    async fn a_withdrawal_given_up_lists_the_slot_again() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, index) = engine(dir.path());
        let slot = engine.attach(spec("a", EventClasses::ALL)).await.unwrap();
        {
            let w = engine.withdraw(slot);
            assert!(index.matching(EventClass::Chat).is_empty(), "withdrawn: no new claims");
            assert_eq!(w.drained(Duration::from_millis(10)).await, Ok(()));
        }
        assert_eq!(index.matching(EventClass::Chat), [slot]);
        engine.spool().close().await.unwrap();
    }

    #[tokio::test]
    async fn attach_all_refuses_a_taken_id_alone_and_change_relists() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, index) = engine(dir.path());
        let chat: EventClasses = [EventClass::Chat].into_iter().collect();
        let presence: EventClasses = [EventClass::Presence].into_iter().collect();
        let results = engine
            .attach_all(vec![spec("a", chat), spec("a", chat), spec("b", chat)])
            .await
            .unwrap();
        assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
        let (a, b) = (*results[0].as_ref().unwrap(), *results[2].as_ref().unwrap());
        assert_eq!(index.matching(EventClass::Chat), [a, b]);
        engine
            .change(a, spec("a", presence).diverted(true), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(index.matching(EventClass::Chat), [b]);
        assert_eq!(index.matching(EventClass::Presence), [a]);
        assert!(engine.status_of(a).disabled, "diverted with the change");
        engine.spool().close().await.unwrap();
    }
}
