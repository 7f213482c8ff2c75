//! Committed state changes to the backend whose state they change: the
//! spool's [`StateSink`], keyed by each backend's `KIND.NAME`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::Claims;
use crate::state_change::{StateChange, StateSink};

/// Backends that keep state, by scope (`KIND.NAME`).
#[derive(Default, Clone)]
pub struct StateRouter {
    by_scope: HashMap<String, Arc<dyn Claims>>,
}

impl StateRouter {
    pub fn new() -> Self {
        StateRouter::default()
    }

    pub fn add(&mut self, scope: String, backend: Arc<dyn Claims>) {
        self.by_scope.insert(scope, backend);
    }
}

impl StateSink for StateRouter {
    fn applied(&self, changes: &[StateChange]) {
        for change in changes {
            match self.by_scope.get(change.scope()) {
                Some(backend) => backend.apply(change),
                // A backend removed from the config since: its state stays
                // stored, nobody reads it.
                None => tracing::debug!(scope = change.scope(), "state change for no backend"),
            }
        }
    }
}
