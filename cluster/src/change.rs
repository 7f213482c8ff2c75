//! A committed change to the shared state, as every sidecar learns it
//! from the feed (`feed.rs`) and hands it to its subscribers.

use std::sync::Arc;

use serde_json::Value;

use crate::snapshot::Snapshot;

/// A committed change, as every sidecar learns it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A device's new record; `None`: removed.
    Device {
        scope: String,
        user: String,
        device_id: String,
        record: Option<Value>,
    },
    /// A user's presence now (all resources, sorted) and badge count.
    Presence {
        scope: String,
        user: String,
        resources: Vec<String>,
        message_count: u64,
    },
    /// A subscription's new record and paused state; `record: None`:
    /// detached.
    Subscription {
        id: String,
        record: Option<Value>,
        paused: bool,
    },
    /// The feed may have missed changes (the listening connection was lost,
    /// or another sidecar merged its spool): this is the whole state now;
    /// replace the in-memory view with it.
    Reloaded(Arc<Snapshot>),
}

impl Change {
    /// Label of `event_pusher_cluster_changes_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Device { .. } => "device",
            Change::Presence { .. } => "presence",
            Change::Subscription { .. } => "subscription",
            Change::Reloaded(_) => "reloaded",
        }
    }
}
