//! The subscription index: which runtime slots (webhook subscriptions) want
//! an event of each class.
//!
//! It is the chain's last handler: [`Pipeline`](crate::Pipeline) consults it
//! after the chain has run (filters and config backends), unless a filter
//! stopped the event, and every slot listed for the event's class claims
//! the event as it left the chain. Matching is one array lookup by class,
//! so subscriptions that do not want a class cost an event of that class
//! nothing, however many there are. The index is rebuilt whole and swapped
//! when a subscription is added, changed or removed; an event in flight
//! finishes with the index it started with.
//!
//! Slots are listed and unlisted by their owner, the
//! [`DeliveryEngine`](crate::delivery::DeliveryEngine), as part of attaching
//! and detaching them; nothing else writes here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::class::{EventClass, EventClasses};
use crate::slot::Slot;

/// Slots per event class, in [`EventClass::EVERY`] order.
type ByClass = [Vec<Slot>; EventClass::EVERY.len()];

/// Slots by event class, swapped whole on change.
#[derive(Default)]
pub struct SubscriptionIndex {
    by_class: ArcSwap<ByClass>,
    /// What is listed, by slot: the source `by_class` is rebuilt from.
    listed: Mutex<BTreeMap<Slot, EventClasses>>,
}

impl SubscriptionIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// List `slot` under `classes` (replacing what it was listed under).
    pub fn list(&self, slot: Slot, classes: EventClasses) {
        self.change(|listed| {
            listed.insert(slot, classes);
        });
    }

    /// List several slots with one rebuild (a start with many stored
    /// subscriptions).
    pub fn list_all(&self, slots: impl IntoIterator<Item = (Slot, EventClasses)>) {
        self.change(|listed| listed.extend(slots));
    }

    /// Take `slot` out: no new event claims it. Returns what it was listed
    /// under, to list it again if the removal is given up.
    pub fn unlist(&self, slot: Slot) -> Option<EventClasses> {
        let mut was = None;
        self.change(|listed| was = listed.remove(&slot));
        was
    }

    /// Whether `slot` is listed.
    pub fn is_listed(&self, slot: Slot) -> bool {
        self.listed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&slot)
    }

    /// Change the listing and swap in the index rebuilt from it. The lock
    /// is held through the rebuild, so two changes never swap out of order.
    fn change(&self, f: impl FnOnce(&mut BTreeMap<Slot, EventClasses>)) {
        let mut listed = self.listed.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut listed);
        self.rebuild(listed.iter().map(|(s, c)| (*s, *c)));
    }

    /// Swap in the index of these `(slot, classes)` pairs; each class lists
    /// its slots in the order given.
    fn rebuild(&self, subscriptions: impl IntoIterator<Item = (Slot, EventClasses)>) {
        let mut by_class = ByClass::default();
        for (slot, classes) in subscriptions {
            for (i, class) in EventClass::EVERY.into_iter().enumerate() {
                if classes.contains(class) {
                    by_class[i].push(slot);
                }
            }
        }
        self.by_class.store(Arc::new(by_class));
    }

    /// The index as it is now, for one request.
    pub fn load(&self) -> Matches {
        Matches(self.by_class.load())
    }

    /// The slots that want events of `class`, now.
    pub fn matching(&self, class: EventClass) -> Vec<Slot> {
        self.load().get(class).to_vec()
    }
}

/// One loaded version of the index.
pub struct Matches(arc_swap::Guard<Arc<ByClass>>);

impl Matches {
    /// The slots that want events of `class`.
    pub fn get(&self, class: EventClass) -> &[Slot] {
        // `bit` is 1 << (position in `ALL`).
        self.0
            .get(class.bit().trailing_zeros() as usize)
            .map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_each_slot_under_its_classes_only() {
        let index = SubscriptionIndex::new();
        let chat: EventClasses = [EventClass::Chat].into_iter().collect();
        index.list_all([(Slot::new(4), EventClasses::ALL), (Slot::new(3), chat)]);
        assert_eq!(index.matching(EventClass::Chat), [Slot::new(3), Slot::new(4)]);
        assert_eq!(index.matching(EventClass::Presence), [Slot::new(4)]);
        assert_eq!(index.unlist(Slot::new(4)), Some(EventClasses::ALL));
        assert_eq!(index.matching(EventClass::Presence), []);
        index.list(Slot::new(3), [EventClass::Presence].into_iter().collect());
        assert!(index.matching(EventClass::Chat).is_empty());
        assert_eq!(index.matching(EventClass::Presence), [Slot::new(3)]);
        assert_eq!(index.unlist(Slot::new(9)), None);
    }

    /// Subscriptions claim after the chain: the event as its filters left
    /// it, and nothing a filter stopped.
    #[tokio::test]
    async fn the_pipeline_claims_for_subscriptions_after_the_chain() {
        use std::sync::atomic::Ordering;

        use serde_json::json;

        use crate::chain::{ChainBuilder, Verdict};
        use crate::event::Event;
        use crate::spool::{Spool, SpoolLimits};
        use crate::Pipeline;

        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), &[], SpoolLimits::default()).unwrap();
        let chain = ChainBuilder::new()
            .filter("tag", 1, |e: &mut Event| {
                if e.user().starts_with("bot") {
                    return Verdict::Stop;
                }
                e.metadata.insert("seen".into(), true.into());
                Verdict::Continue
            })
            .build();
        let p = Pipeline::new(chain, spool.clone());
        let (chat_sub, presence_sub) = (Slot::new(1), Slot::new(2));
        spool
            .attach_slots(vec![
                (chat_sub, "webhook.c".into(), None),
                (presence_sub, "webhook.p".into(), None),
            ])
            .await
            .unwrap();
        let chat: EventClasses = [EventClass::Chat].into_iter().collect();
        let presence: EventClasses = [EventClass::Presence].into_iter().collect();
        p.subscriptions().list_all([(chat_sub, chat), (presence_sub, presence)]);

        let msg = |from: &str| json!({"hook": "user_send_message", "from": format!("{from}/r"), "to": "b@x", "type": "chat", "body": "hi"});
        p.accept(&[msg("alice@x"), msg("bot@x")]).await.unwrap();
        assert_eq!(
            spool.slot(chat_sub).queued.load(Ordering::Relaxed),
            1,
            "the stopped event is not claimed"
        );
        assert_eq!(spool.slot(presence_sub).queued.load(Ordering::Relaxed), 0);
        let rows = spool.read_queue(chat_sub, 0, 10).unwrap();
        let stored: serde_json::Value = serde_json::from_slice(&rows[0].1).unwrap();
        assert_eq!(stored["metadata"]["seen"], true, "{stored}");
        spool.close().await.unwrap();
    }
}
