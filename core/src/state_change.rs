//! State changes as data: what accepting a request changes besides the
//! delivery queues (who is online, badge counts, the push device registry).
//!
//! Routing is pure: the chain and the hook commands do not change backend
//! state themselves, they return [`StateChange`] values. [`Pipeline::accept`]
//! stores them in the same fsync'd spool transaction as the request's claims
//! and applies them to in-memory state only after that commit, so a refused
//! request (400, 409, 422, 503) changes nothing anywhere. With a cluster
//! store configured, the same values are relayed to it in the order they
//! were accepted (the spool's outbox).
//!
//! Changes are operations, not final values (`Count` is "one more", not
//! "now 7"), so sidecars applying them to one shared store in any
//! interleaving lose none of each other's.
//!
//! [`Pipeline::accept`]: crate::Pipeline::accept

use serde::{Deserialize, Serialize};

/// One change to backend state. `scope` is the owning backend's
/// `KIND.NAME` (e.g. `push.mobile`), `user` a bare JID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum StateChange {
    /// `resource` of `user` came online (`online = true`, which also resets
    /// the user's count) or went offline; offline with an empty resource
    /// means every resource.
    Presence {
        scope: String,
        user: String,
        resource: String,
        online: bool,
    },
    /// One more notification counted for `user` (`message_count`, the badge).
    Count { scope: String, user: String },
    /// A device registered or replaced: `record` is the registry's stored
    /// form (opaque to everything but the backend that owns `scope`).
    DevicePut {
        scope: String,
        user: String,
        device_id: String,
        record: serde_json::Value,
    },
    /// A device removed (absent already: no effect).
    DeviceRemove {
        scope: String,
        user: String,
        device_id: String,
    },
}

impl StateChange {
    /// The backend (`KIND.NAME`) whose state this changes.
    pub fn scope(&self) -> &str {
        match self {
            StateChange::Presence { scope, .. }
            | StateChange::Count { scope, .. }
            | StateChange::DevicePut { scope, .. }
            | StateChange::DeviceRemove { scope, .. } => scope,
        }
    }

    /// The bare JID it is about.
    pub fn user(&self) -> &str {
        match self {
            StateChange::Presence { user, .. }
            | StateChange::Count { user, .. }
            | StateChange::DevicePut { user, .. }
            | StateChange::DeviceRemove { user, .. } => user,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_round_trips_through_json() {
        let c = StateChange::Presence {
            scope: "push.mobile".into(),
            user: "bob@localhost".into(),
            resource: "phone".into(),
            online: true,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""op":"presence""#), "{json}");
        assert_eq!(serde_json::from_str::<StateChange>(&json).unwrap(), c);
        assert_eq!(c.scope(), "push.mobile");
        assert_eq!(c.user(), "bob@localhost");
    }
}
