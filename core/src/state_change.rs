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

use std::collections::BTreeSet;

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

/// The changes one request made so far, in the order they were made: the
/// chain's backends add theirs while routing each event, hook commands
/// theirs, and later events of the request see the earlier ones (a chat
/// right after `push_enable` in the same request reaches the new device).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    list: Vec<StateChange>,
}

impl Changes {
    pub fn new() -> Self {
        Changes::default()
    }

    pub fn push(&mut self, change: StateChange) {
        self.list.push(change);
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, StateChange> {
        self.list.iter()
    }

    /// The changes to `user`'s state in `scope`, in order.
    pub fn about<'a>(&'a self, scope: &'a str, user: &'a str) -> impl Iterator<Item = &'a StateChange> + 'a {
        self.list.iter().filter(move |c| c.scope() == scope && c.user() == user)
    }

    /// Forget the changes made after the first `len` (a command or event
    /// that failed part-way).
    pub fn truncate(&mut self, len: usize) {
        self.list.truncate(len);
    }

    pub fn into_vec(self) -> Vec<StateChange> {
        self.list
    }
}

impl From<Vec<StateChange>> for Changes {
    fn from(list: Vec<StateChange>) -> Self {
        Changes { list }
    }
}

/// One user's presence as kept: the online resources and the number of
/// notifications counted since the user was last online.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    pub resources: BTreeSet<String>,
    pub message_count: u64,
}

impl UserPresence {
    /// Apply a `Presence` or `Count` change (others do nothing); whether
    /// anything changed.
    pub fn apply(&mut self, change: &StateChange) -> bool {
        let before = self.clone();
        match change {
            StateChange::Presence {
                resource, online: true, ..
            } => {
                self.resources.insert(resource.clone());
                self.message_count = 0;
            }
            StateChange::Presence { resource, .. } if resource.is_empty() => self.resources.clear(),
            StateChange::Presence { resource, .. } => {
                self.resources.remove(resource);
            }
            StateChange::Count { .. } => self.message_count += 1,
            StateChange::DevicePut { .. } | StateChange::DeviceRemove { .. } => {}
        }
        *self != before
    }

    pub fn is_online(&self) -> bool {
        !self.resources.is_empty()
    }

    /// Nothing worth keeping: offline with no count.
    pub fn is_empty(&self) -> bool {
        *self == UserPresence::default()
    }
}

/// Where the spool keeps what a change is about, in its backend-state
/// table: `SCOPE/presence/USER` (a [`UserPresence`]) or
/// `SCOPE/device/USER/DEVICE_ID` (the device record).
pub fn state_key(change: &StateChange) -> String {
    match change {
        StateChange::Presence { scope, user, .. } | StateChange::Count { scope, user } => presence_key(scope, user),
        StateChange::DevicePut {
            scope, user, device_id, ..
        }
        | StateChange::DeviceRemove {
            scope, user, device_id, ..
        } => device_key(scope, user, device_id),
    }
}

pub fn presence_key(scope: &str, user: &str) -> String {
    format!("{scope}/presence/{user}")
}

pub fn device_key(scope: &str, user: &str, device_id: &str) -> String {
    format!("{scope}/device/{user}/{device_id}")
}

/// Where applied changes go once they are committed: the backends that
/// keep an in-memory view of their state. Called by the spool writer in
/// commit order, right after the commit and before anyone hears "stored";
/// must be quick and must not block.
pub trait StateSink: Send + Sync + 'static {
    fn applied(&self, changes: &[StateChange]);
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

    #[test]
    fn presence_comes_and_goes_and_online_resets_the_count() {
        let p = |resource: &str, online| StateChange::Presence {
            scope: "push.m".into(),
            user: "bob@x".into(),
            resource: resource.into(),
            online,
        };
        let count = StateChange::Count {
            scope: "push.m".into(),
            user: "bob@x".into(),
        };
        let mut u = UserPresence::default();
        assert!(u.apply(&count));
        assert_eq!(u.message_count, 1);
        u.apply(&p("phone", true));
        u.apply(&p("desk", true));
        assert_eq!(u.message_count, 0);
        u.apply(&p("phone", false));
        assert!(u.is_online());
        assert!(!u.apply(&p("phone", false)), "already offline");
        u.apply(&p("", false));
        assert!(!u.is_online());
        assert!(u.is_empty());
    }
}
