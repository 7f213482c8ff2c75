//! The cluster store: the state several sidecars must share (the push
//! device registry, presence with badge counts, runtime webhook
//! subscriptions) kept in PostgreSQL, with every change announced to every
//! sidecar through `LISTEN/NOTIFY`.
//!
//! A sidecar `connect`s (which migrates the schema), `subscribe`s, `load`s
//! everything into its in-memory view, then applies the [`Change`]s
//! received (a [`Change::Reloaded`] replaces the view; so does a `load()`
//! after the receiver lagged).
//! Writes come two ways: state changes accepted with requests are relayed
//! from the local spool's outbox (`relay`, `apply_batch`: ordered, exactly
//! once), and admin writes go to the store directly and are answered once
//! committed (`put_device`, `create_subscription`, ...).

mod admin;
mod apply;
mod change;
mod error;
mod feed;
mod heartbeat;
mod merge;
mod migrate;
mod net;
mod relay;
mod shared;
mod snapshot;
mod sql;
mod status;
mod store;

pub use admin::{CreateOutcome, PutOutcome};
pub use apply::Applied;
pub use change::Change;
pub use error::{ClusterError, Unreachable, UNAVAILABLE};
pub use event_pusher_config::ClusterConfig;
pub use feed::INLINE_LIMIT;
pub use merge::Merged;
pub use migrate::SCHEMA_VERSION;
pub use relay::{relay, Outbox, RELAY_BATCH};
pub use snapshot::{Device, Snapshot, Subscription, UserPresence};
pub use status::{ClusterStatus, NodeSeen, NodeStats, StoreStatus, SubscriptionCounters};
pub use store::{default_node_name, ClusterStore};
