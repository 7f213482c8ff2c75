//! The handler chain: filters and backends sorted by priority.
//!
//! Each event walks the chain from the lowest priority up. A filter may add
//! metadata and may stop the event, in which case no later handler sees it.
//! A backend *claims* the event if its class mask and `wants` say so. The
//! outcome is the list of claims, each with the event as it was when that
//! backend saw it (filters after a backend do not change what it gets).
//!
//! The chain is CPU-only and allocates nothing beyond what filters add; the
//! common case (all filters before all backends) takes no event copies.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::backend::{AnyBackend, Claims, Targets};
use crate::class::{EventClass, EventClasses};
use crate::event::Event;
use crate::slot::Slot;
use crate::state_change::Changes;

/// What a filter decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Stop,
}

/// A filter: inspects an event, may add metadata, may stop it.
///
/// Implement this to write a filter plugin in Rust; register it with
/// [`ChainBuilder::filter`].
pub trait Filter: Send + Sync + 'static {
    fn apply(&self, event: &mut Event) -> Verdict;

    /// Whether one call may take long enough to starve the I/O workers
    /// (a user script: up to its wall-clock budget). A chain with such a
    /// filter runs off them (see [`Chain::may_block`]).
    fn may_block(&self) -> bool {
        false
    }
}

impl<F> Filter for F
where
    F: Fn(&mut Event) -> Verdict + Send + Sync + 'static,
{
    fn apply(&self, event: &mut Event) -> Verdict {
        self(event)
    }
}

enum Handler {
    Filter(Arc<dyn Filter>),
    Backend {
        slot: Slot,
        classes: EventClasses,
        kind: &'static str,
        claims: Arc<dyn Claims>,
    },
}

struct Entry {
    name: String,
    priority: i64,
    handler: Handler,
}

/// Builds a chain; handlers with equal priority keep the order they were
/// added in.
#[derive(Default)]
pub struct ChainBuilder {
    entries: Vec<Entry>,
    backends: u32,
}

impl ChainBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn filter(mut self, name: impl Into<String>, priority: i64, filter: impl Filter) -> Self {
        self.entries.push(Entry {
            name: name.into(),
            priority,
            handler: Handler::Filter(Arc::new(filter)),
        });
        self
    }

    pub fn filter_arc(mut self, name: impl Into<String>, priority: i64, filter: Arc<dyn Filter>) -> Self {
        self.entries.push(Entry {
            name: name.into(),
            priority,
            handler: Handler::Filter(filter),
        });
        self
    }

    /// Add a backend; its slot is the order of `backend` calls (0, 1, ...).
    /// For chains built without a [`SlotRegistry`](crate::SlotRegistry).
    pub fn backend(self, name: impl Into<String>, priority: i64, classes: EventClasses, backend: AnyBackend) -> Self {
        let slot = Slot::new(self.backends);
        self.backend_at(slot, name, priority, classes, backend)
    }

    /// Add a backend whose slot the registry handed out.
    pub fn backend_at(
        mut self,
        slot: Slot,
        name: impl Into<String>,
        priority: i64,
        classes: EventClasses,
        backend: AnyBackend,
    ) -> Self {
        self.backends = self.backends.max(slot.id() + 1);
        self.entries.push(Entry {
            name: name.into(),
            priority,
            handler: Handler::Backend {
                slot,
                classes,
                kind: backend.kind,
                claims: backend.claims,
            },
        });
        self
    }

    pub fn build(mut self) -> Chain {
        // A stable sort keeps config order among equal priorities.
        self.entries.sort_by_key(|e| e.priority);
        let may_block = self
            .entries
            .iter()
            .any(|e| matches!(&e.handler, Handler::Filter(f) if f.may_block()));
        Chain {
            entries: self.entries,
            may_block,
        }
    }
}

/// One backend's claim on an event (or, for a backend that claims per
/// target, on one target of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The backend's slot.
    pub slot: Slot,
    /// Which snapshot it gets: an index into `ChainOutcome::snapshots`, or
    /// `None` for the event as it left the chain.
    pub snapshot: Option<usize>,
    /// The target (see [`Targets::Each`]); `None` for the whole event.
    pub target: Option<Arc<str>>,
}

/// What the chain made of one event.
#[derive(Debug, Default)]
pub struct ChainOutcome {
    pub claims: SmallVec<[Claim; 4]>,
    /// Copies of the event taken when a filter ran after a backend had
    /// already claimed it.
    pub snapshots: Vec<Event>,
    /// The chain index of the filter that stopped the event, if one did
    /// (see [`Chain::handler_name`]).
    pub stopped_by: Option<usize>,
}

/// The priority-ordered chain.
pub struct Chain {
    entries: Vec<Entry>,
    may_block: bool,
}

impl Chain {
    /// Whether a filter of this chain may run long (a script): the
    /// pipeline then runs the chain off the async I/O workers, so a slow
    /// script delays its own request, never `/health` or other ingest.
    pub fn may_block(&self) -> bool {
        self.may_block
    }

    /// Run one event through the chain.
    /// Run one event. Backends add the state changes their routing makes
    /// to `changes` (which holds the request's earlier ones too).
    pub fn run(&self, event: &mut Event, changes: &mut Changes) -> ChainOutcome {
        let mut out = ChainOutcome::default();
        let class = EventClass::of(event);
        // Claims made since the last filter point at the live event; a filter
        // about to run would change what they see, so freeze a copy first.
        let mut live_claims = false;
        for (i, entry) in self.entries.iter().enumerate() {
            match &entry.handler {
                Handler::Filter(f) => {
                    if live_claims {
                        let idx = out.snapshots.len();
                        out.snapshots.push(event.clone());
                        for c in out.claims.iter_mut().filter(|c| c.snapshot.is_none()) {
                            c.snapshot = Some(idx);
                        }
                        live_claims = false;
                    }
                    if f.apply(event) == Verdict::Stop {
                        out.stopped_by = Some(i);
                        break;
                    }
                }
                Handler::Backend {
                    slot, classes, claims, ..
                } => {
                    claims.observe(event, changes);
                    if classes.contains(class) && claims.wants(event) {
                        let before = out.claims.len();
                        match claims.targets(event, changes) {
                            Targets::Whole => out.claims.push(Claim {
                                slot: *slot,
                                snapshot: None,
                                target: None,
                            }),
                            Targets::Each(targets) => out.claims.extend(targets.into_iter().map(|t| Claim {
                                slot: *slot,
                                snapshot: None,
                                target: Some(t),
                            })),
                        }
                        live_claims |= out.claims.len() > before;
                    }
                }
            }
        }
        out
    }

    /// The handler names with priorities, in chain order, for summaries.
    pub fn describe(&self) -> Vec<(String, i64, &'static str)> {
        self.entries
            .iter()
            .map(|e| {
                let what = match &e.handler {
                    Handler::Filter(_) => "filter",
                    Handler::Backend { kind, .. } => kind,
                };
                (e.name.clone(), e.priority, what)
            })
            .collect()
    }

    pub fn handler_name(&self, index: usize) -> Option<&str> {
        self.entries.get(index).map(|e| e.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tests::NullBackend as Null;
    use crate::event::MetaValue;
    use crate::hook::HookTranslator;
    use std::sync::Mutex;

    fn chat() -> Event {
        HookTranslator
            .translate(
                &serde_json::json!({"hook":"user_send_message","from":"a@x","to":"b@x","type":"chat","body":"hi"}),
            )
            .unwrap()
    }

    fn tag(key: &'static str, v: i64) -> impl Filter {
        move |e: &mut Event| {
            e.metadata.insert(key.into(), MetaValue::Int(v));
            Verdict::Continue
        }
    }

    #[test]
    fn runs_in_priority_order_keeping_config_order_for_ties() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mk = |n: &'static str| {
            let seen = seen.clone();
            move |_: &mut Event| {
                seen.lock().unwrap().push(n);
                Verdict::Continue
            }
        };
        let chain = ChainBuilder::new()
            .filter("c", 30, mk("c"))
            .filter("a", 10, mk("a"))
            .filter("b1", 20, mk("b1"))
            .filter("b2", 20, mk("b2"))
            .build();
        chain.run(&mut chat(), &mut Changes::new());
        assert_eq!(*seen.lock().unwrap(), vec!["a", "b1", "b2", "c"]);
    }

    #[test]
    fn stop_hides_the_event_from_later_handlers_only() {
        let chain = ChainBuilder::new()
            .backend("early", 5, EventClasses::ALL, AnyBackend::new(Null))
            .filter("tag", 10, tag("t", 1))
            .filter("stop", 30, |_: &mut Event| Verdict::Stop)
            .backend("late", 50, EventClasses::ALL, AnyBackend::new(Null))
            .filter("after", 60, tag("after", 1))
            .build();
        let mut e = chat();
        let out = chain.run(&mut e, &mut Changes::new());
        assert_eq!(
            out.claims.iter().map(|c| c.slot).collect::<Vec<_>>(),
            vec![Slot::new(0)]
        );
        assert_eq!(chain.handler_name(out.stopped_by.unwrap()), Some("stop"));
        assert!(!e.metadata.contains_key("after"));
        // the early backend saw the event before the tag was added
        let snap = &out.snapshots[out.claims[0].snapshot.unwrap()];
        assert!(!snap.metadata.contains_key("t"));
        assert!(e.metadata.contains_key("t"));
    }

    #[test]
    fn backends_see_metadata_added_before_them_and_classes_select() {
        let only_presence: EventClasses = [EventClass::Presence].into_iter().collect();
        let chain = ChainBuilder::new()
            .filter("tag", 10, tag("tier", 2))
            .backend("all", 50, EventClasses::ALL, AnyBackend::new(Null))
            .backend("presence", 50, only_presence, AnyBackend::new(Null))
            .build();
        let mut e = chat();
        let out = chain.run(&mut e, &mut Changes::new());
        assert_eq!(out.claims.len(), 1);
        assert_eq!(
            out.claims[0],
            Claim {
                slot: Slot::new(0),
                snapshot: None,
                target: None,
            }
        );
        assert!(out.snapshots.is_empty());
        assert_eq!(e.metadata["tier"], MetaValue::Int(2));
    }

    /// Claims per target and watches every event, whatever its mask.
    struct Fanout(std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl crate::Backend for Fanout {
        const KIND: &'static str = "fanout";
        fn observe(&self, _event: &Event, _changes: &mut Changes) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn targets(&self, _event: &Event, _changes: &mut Changes) -> Targets {
            Targets::Each(vec![Arc::from("d1"), Arc::from("d2")])
        }
        async fn deliver(&self, batch: &[crate::Delivery]) -> Vec<Result<(), crate::DeliveryError>> {
            batch.iter().map(|_| Ok(())).collect()
        }
    }

    #[test]
    fn a_backend_claims_once_per_target_and_observes_events_outside_its_mask() {
        let fanout = Arc::new(Fanout(std::sync::atomic::AtomicUsize::new(0)));
        let only_presence: EventClasses = [EventClass::Presence].into_iter().collect();
        let chain = ChainBuilder::new()
            .backend("push", 50, EventClasses::ALL, AnyBackend::from_arc(fanout.clone()))
            .backend("presence-only", 50, only_presence, AnyBackend::from_arc(fanout.clone()))
            .build();
        let out = chain.run(&mut chat(), &mut Changes::new());
        let targets: Vec<_> = out.claims.iter().map(|c| c.target.as_deref()).collect();
        assert_eq!(
            targets,
            vec![Some("d1"), Some("d2")],
            "the presence-only one claims nothing"
        );
        assert_eq!(
            fanout.0.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "both observed it"
        );
    }
}
