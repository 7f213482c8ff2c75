//! What every backend's config has in common, and what building one yields.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use event_pusher_config::types::OrderingConfig;
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
    /// What it serves on the main listener (the gateway's WebSocket).
    pub endpoint: Option<Arc<dyn Endpoint>>,
}

/// Something a backend serves on the sidecar's main listener, next to the
/// ingest and admin API: its routes, its metrics, and what it must do
/// before the listener stops on shutdown.
pub trait Endpoint: Send + Sync + 'static {
    /// The path it is mounted at (for clash checks and logs).
    fn path(&self) -> &str;
    /// Its routes, merged into the listener's router.
    fn router(&self) -> axum::Router;
    /// Append its series to the `/metrics` page.
    fn render_metrics(&self, out: &mut String);
    /// Called on the shutdown signal, before the listener drains.
    fn drain(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
}

impl BuiltBackend {
    /// `KIND.NAME`: unique across the config (names are unique per kind).
    pub fn id(&self) -> String {
        event_pusher_core::BackendId::new(self.backend.kind, &self.name).to_string()
    }
}

/// The keys every backend table has (`priority`, `events`, `concurrency`,
/// `breaker_threshold`, `ordering`, `retry`, `overflow`, `rate_limit_per_s`), gathered so the registry can build any backend the same way.
pub struct CommonKeys<'a> {
    pub priority: Priority,
    pub events: EventClassList,
    pub concurrency: usize,
    pub retry: &'a RetryConfig,
    pub breaker_threshold: u32,
    pub ordering: OrderingConfig,
    pub overflow: event_pusher_core::spool::Overflow,
    pub rate_limit_per_s: Option<f64>,
}

impl CommonKeys<'_> {
    pub fn options(&self) -> DeliveryOptions {
        let mut options =
            event_pusher_config::types::delivery_options(self.concurrency, self.breaker_threshold, self.retry);
        options.ordering = self.ordering.delivery_order();
        options.overflow = self.overflow;
        options.rate_limit_per_s = self.rate_limit_per_s;
        options
    }
}

pub fn default_concurrency() -> usize {
    32
}

pub fn default_breaker_threshold() -> u32 {
    10
}

/// What the registry needs from any backend's config table.
pub trait BackendConfig {
    fn common(&self) -> CommonKeys<'_>;
}

/// Declare a backend's config struct: its own keys as written, then the
/// common keys (`priority`, `events`, `concurrency`, `breaker_threshold`,
/// `ordering`, `retry`, `overflow`, `rate_limit_per_s`), defined here once, and its [`BackendConfig`] impl.
///
/// A macro rather than `#[serde(flatten)]`: flatten cannot be combined with
/// `deny_unknown_fields`, and unknown keys must stay errors with a position.
/// `one_writer` backends (log) have no `concurrency`, `breaker_threshold`
/// or `ordering` keys: one writer keeps lines whole and in order.
macro_rules! backend_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($body:tt)* }
    ) => {
        $crate::common::backend_config! {
            default_events = event_pusher_config::EventClassList::default();
            $(#[$meta])* pub struct $name { $($body)* }
        }
    };
    (
        default_events = $events:expr;
        $(#[$meta:meta])*
        pub struct $name:ident { $($body:tt)* }
    ) => {
        $crate::common::backend_config! {
            @declare $(#[$meta])* $name { $($body)* }
            events { $events }
            tuning {
                #[serde(
                    default = "crate::common::default_concurrency",
                    deserialize_with = "event_pusher_config::types::positive"
                )]
                pub concurrency: usize,
                /// Consecutive failures that open the circuit breaker (0: never).
                #[serde(default = "crate::common::default_breaker_threshold")]
                pub breaker_threshold: u32,
                /// `per_user` (default) or `none`.
                #[serde(default)]
                pub ordering: event_pusher_config::types::OrderingConfig,
            }
            |c| (c.concurrency, c.breaker_threshold, c.ordering)
        }
    };
    (
        one_writer;
        $(#[$meta:meta])*
        pub struct $name:ident { $($body:tt)* }
    ) => {
        $crate::common::backend_config! {
            @declare $(#[$meta])* $name { $($body)* }
            events { event_pusher_config::EventClassList::default() }
            tuning {}
            |_c| (
                1,
                $crate::common::default_breaker_threshold(),
                event_pusher_config::types::OrderingConfig::PerUser,
            )
        }
    };
    (
        @declare $(#[$meta:meta])* $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
        events { $events:expr }
        tuning { $($tuning:tt)* }
        |$c:ident| $concurrency_and_breaker:expr
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            #[serde(default)]
            pub priority: event_pusher_config::Priority,
            /// `None` when the table has no `events` key: the kind's default.
            #[serde(default)]
            pub events: Option<event_pusher_config::EventClassList>,
            $($tuning)*
            #[serde(default)]
            pub retry: event_pusher_config::RetryConfig,
            /// `refuse` (default): ingest answers 503 while this queue is
            /// full; `dead_letter`: new events go to its dead letters.
            #[serde(default)]
            pub overflow: event_pusher_core::spool::Overflow,
            /// Most deliveries per second (token bucket; deliveries wait).
            #[serde(default, deserialize_with = "event_pusher_config::types::rate_per_s")]
            pub rate_limit_per_s: Option<f64>,
        }

        impl $crate::common::BackendConfig for $name {
            fn common(&self) -> $crate::common::CommonKeys<'_> {
                let $c = self;
                let (concurrency, breaker_threshold, ordering) = $concurrency_and_breaker;
                $crate::common::CommonKeys {
                    priority: self.priority,
                    events: self.events.unwrap_or_else(|| $events),
                    concurrency,
                    retry: &self.retry,
                    breaker_threshold,
                    ordering,
                    overflow: self.overflow,
                    rate_limit_per_s: self.rate_limit_per_s,
                }
            }
        }
    };
}
pub(crate) use backend_config;
