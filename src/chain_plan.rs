//! The order of the handler chain: config filters, Rust filters and backends
//! sorted by priority, file order among equal priorities, handlers added in
//! code last. Startup and a filter reload both assemble the chain here, so a
//! reloaded chain is ordered exactly as a restart would order it.

use std::sync::Arc;

use event_pusher_core::{AnyBackend, Chain, ChainBuilder, EventClasses, Filter, Slot};
use event_pusher_filters::BuiltFilter;

/// A filter added in Rust with `Sidecar::with_filter`; it outlives reloads.
#[derive(Clone)]
pub(crate) struct PluginFilter {
    pub name: String,
    pub priority: i64,
    pub filter: Arc<dyn Filter>,
}

/// A running backend as the chain sees it: the slot it claims into and
/// what it wants. A reload keeps these and only moves `position`.
#[derive(Clone)]
pub(crate) struct ChainBackend {
    pub slot: Slot,
    pub name: String,
    pub priority: i64,
    pub classes: EventClasses,
    pub backend: AnyBackend,
    /// Byte offset of its table in the config file (`usize::MAX` for one
    /// added in code), to keep file order among equal priorities.
    pub position: usize,
}

impl ChainBackend {
    /// `KIND.NAME`, as in the spool and the admin API.
    pub fn id(&self) -> String {
        event_pusher_core::BackendId::new(self.backend.kind, &self.name).to_string()
    }
}

/// Build the chain from its parts.
pub(crate) fn assemble(filters: &[BuiltFilter], backends: &[ChainBackend], plugins: &[PluginFilter]) -> Chain {
    enum Handler<'a> {
        Config(&'a BuiltFilter),
        Backend(&'a ChainBackend),
    }
    // Order by position in the file so equal priorities keep file order;
    // the builder's stable sort then orders by priority.
    let mut all: Vec<(usize, Handler)> = filters
        .iter()
        .map(|f| (f.position, Handler::Config(f)))
        .chain(backends.iter().map(|b| (b.position, Handler::Backend(b))))
        .collect();
    all.sort_by_key(|(position, _)| *position);
    let mut chain = ChainBuilder::new();
    for (_, handler) in all {
        chain = match handler {
            Handler::Config(f) => chain.filter_arc(f.name.clone(), f.priority, f.filter.clone()),
            Handler::Backend(b) => chain.backend_at(b.slot, b.name.clone(), b.priority, b.classes, b.backend.clone()),
        };
    }
    // Rust filters come after everything from the file at equal priority.
    for p in plugins {
        chain = chain.filter_arc(p.name.clone(), p.priority, p.filter.clone());
    }
    chain.build()
}
