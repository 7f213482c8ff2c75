//! Slots: the one numbering of backend instances that the chain's claims,
//! the spool's tables and the delivery queues share.
//!
//! A [`SlotRegistry`] hands out a [`Slot`] once per backend instance
//! (`KIND.NAME`); everything else receives the slot from it rather than
//! working the numbering out again from build order.
//!
//! Lifecycle (designed for runtime webhook subscriptions):
//! - **add**: `register` gives the next id; ids only grow and are never
//!   reused, so a claim or a queued event can never reach the wrong backend
//!   after a removal. The spool opens the slot's tables (`queue/ID`,
//!   `dead/ID`) and the engine starts its delivery queue.
//! - **claim**: config backends claim in the chain; dynamic slots will claim
//!   through one "subscriptions" handler in the chain that maps an event to
//!   the subscription slots that want it, so the chain need not be rebuilt
//!   per subscription.
//! - **remove**: stop the delivery queue, then drop the slot's tables; the
//!   id stays retired.
//!
//! Config backends (and `Sidecar::with_backend`) are registered at start;
//! webhook subscriptions with `register_runtime` at any time, and retired
//! when removed. `index` is a position in the spool's and engine's sparse
//! per-slot vectors (a retired slot leaves a hole).

use std::collections::HashSet;
use std::fmt;

use crate::backend_lookup::{find_backend, Lookup};

/// A backend instance's id within one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(u32);

impl Slot {
    /// For code that numbers slots itself (tests, benchmarks, a chain
    /// built without a registry).
    pub const fn new(id: u32) -> Self {
        Slot(id)
    }

    pub const fn id(self) -> u32 {
        self.0
    }

    /// The position in per-slot vectors (sparse: removed slots leave holes).
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One registered backend instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotEntry {
    pub slot: Slot,
    pub kind: &'static str,
    pub name: String,
    /// Added at runtime (a webhook subscription), not from the config.
    pub runtime: bool,
}

impl SlotEntry {
    /// `KIND.NAME`: unique in a process; names the spool tables.
    pub fn id(&self) -> String {
        crate::BackendId::new(self.kind, &self.name).to_string()
    }
}

/// Hands out slots; the single owner of the numbering.
#[derive(Debug, Default, Clone)]
pub struct SlotRegistry {
    entries: Vec<SlotEntry>,
    /// `KIND.NAME` of every live entry: the duplicate check stays O(1)
    /// with thousands of runtime slots.
    taken: HashSet<String>,
    next: u32,
}

/// A second backend with the same `KIND.NAME`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backend {0} is registered twice")]
pub struct DuplicateSlot(pub String);

impl SlotRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a backend instance and return its new slot.
    pub fn register(&mut self, kind: &'static str, name: impl Into<String>) -> Result<Slot, DuplicateSlot> {
        self.add(kind, name.into(), false)
    }

    /// Register a backend added at runtime; it can be [`retire`](Self::retire)d.
    pub fn register_runtime(&mut self, kind: &'static str, name: impl Into<String>) -> Result<Slot, DuplicateSlot> {
        self.add(kind, name.into(), true)
    }

    fn add(&mut self, kind: &'static str, name: String, runtime: bool) -> Result<Slot, DuplicateSlot> {
        let id = crate::BackendId::new(kind, &name).to_string();
        if self.taken.contains(&id) {
            return Err(DuplicateSlot(id));
        }
        self.taken.insert(id);
        let slot = Slot(self.next);
        self.next += 1;
        self.entries.push(SlotEntry {
            slot,
            kind,
            name,
            runtime,
        });
        Ok(slot)
    }

    /// Remove a slot for good: its id is never handed out again.
    pub fn retire(&mut self, slot: Slot) {
        if let Some(i) = self.entries.iter().position(|e| e.slot == slot) {
            let entry = self.entries.remove(i);
            self.taken.remove(&entry.id());
        }
    }

    /// Whether the slot was added at runtime.
    pub fn is_runtime(&self, slot: Slot) -> bool {
        self.entries.iter().any(|e| e.slot == slot && e.runtime)
    }

    /// Every live slot, in the order registered.
    pub fn entries(&self) -> &[SlotEntry] {
        &self.entries
    }

    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.entries.iter().map(|e| e.slot)
    }

    /// `KIND.NAME` of every live slot, in slot order (the spool's tables).
    pub fn ids(&self) -> Vec<String> {
        self.entries.iter().map(SlotEntry::id).collect()
    }

    /// The slot of `NAME`, or of `KIND.NAME` where several kinds use NAME.
    pub fn find(&self, query: &str) -> Result<Slot, Lookup> {
        find_backend(self.entries.iter().map(|e| (e.kind, e.name.as_str())), query).map(|i| self.entries[i].slot)
    }

    /// One backend's slot, or all of them when `query` is `None`: what the
    /// admin API and the `dlq` command act on.
    pub fn select(&self, query: Option<&str>) -> Result<Vec<Slot>, Lookup> {
        match query {
            None => Ok(self.slots().collect()),
            Some(q) => self.find(q).map(|s| vec![s]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_handed_out_once_and_found_by_name() {
        let mut r = SlotRegistry::new();
        let a = r.register("rabbit", "main").unwrap();
        let b = r.register("sns", "main").unwrap();
        assert_ne!(a, b);
        assert_eq!(r.register("sns", "main"), Err(DuplicateSlot("sns.main".into())));
        assert_eq!(r.find("sns.main"), Ok(b));
        assert!(matches!(r.find("main"), Err(Lookup::Ambiguous(..))));
        assert_eq!(r.select(None), Ok(vec![a, b]));
        assert_eq!(r.ids(), ["rabbit.main", "sns.main"]);
        let c = r.register_runtime("webhook", "crm").unwrap();
        r.retire(c);
        assert_eq!(r.find("crm"), Err(Lookup::NotFound("crm".into())));
        let d = r.register_runtime("webhook", "crm").unwrap();
        assert!(d > c, "ids are never reused");
    }
}
