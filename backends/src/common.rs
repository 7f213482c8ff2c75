//! What every backend's config has in common, and what building one yields.

use event_pusher_config::{EventClassList, Priority, RetryConfig};
use event_pusher_core::delivery::DeliveryOptions;
use event_pusher_core::{AnyBackend, EventClasses};

/// A backend instance ready to be put in the chain and the delivery engine.
pub struct BuiltBackend {
    pub name: String,
    pub priority: i64,
    pub classes: EventClasses,
    pub options: DeliveryOptions,
    pub backend: AnyBackend,
    /// Byte offset of its table in the config file: equal priorities keep
    /// the order of the file.
    pub position: usize,
}

impl BuiltBackend {
    /// `KIND.NAME`: unique across the config (names are unique per kind).
    pub fn id(&self) -> String {
        format!("{}.{}", self.backend.kind, self.name)
    }
}

/// The keys every backend table has (`priority`, `events`, `concurrency`,
/// `retry`), gathered so the registry can build any backend the same way.
pub struct CommonKeys<'a> {
    pub priority: Priority,
    pub events: EventClassList,
    pub concurrency: usize,
    pub retry: &'a RetryConfig,
    pub breaker_threshold: u32,
}

impl CommonKeys<'_> {
    pub fn options(&self) -> DeliveryOptions {
        event_pusher_config::types::delivery_options(self.concurrency, self.breaker_threshold, self.retry)
    }
}

pub fn default_concurrency() -> usize {
    32
}

pub fn default_breaker_threshold() -> u32 {
    10
}
