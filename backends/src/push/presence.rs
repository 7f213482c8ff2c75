//! Who is online, per bare JID, and how many notifications each user was
//! sent since it was last online (`message_count`, the APNs badge): the push
//! backend's in-memory view, read by the chain (which must not block).
//!
//! The view never changes itself from an event: the chain returns
//! [`StateChange`]s (`Presence`, `Count`), the spool stores them with the
//! request (key `push.NAME/presence/{bare JID}`), and only the committed
//! ones come back here through [`PresenceBook::apply`]. A refused request
//! therefore changes nobody's presence or badge.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use event_pusher_core::state_change::UserPresence;
use event_pusher_core::StateChange;

const PREFIX: &str = "presence/";

/// Presence and message counts of every user seen.
#[derive(Default)]
pub struct PresenceBook {
    users: Mutex<HashMap<String, UserPresence>>,
}

impl PresenceBook {
    /// Load what was stored (rows are `(key, value)` of this backend).
    pub fn load(&self, rows: &[(String, Vec<u8>)]) {
        let mut users = self.lock();
        for (key, value) in rows {
            let Some(user) = key.strip_prefix(PREFIX) else { continue };
            match serde_json::from_slice::<UserPresence>(value) {
                Ok(p) => {
                    users.insert(user.to_owned(), p);
                }
                Err(e) => tracing::warn!(user, error = %e, "unreadable stored presence skipped"),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserPresence>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `user`'s presence as if `pending` (the request's earlier changes to
    /// this user, in order) were applied already.
    pub fn effective<'c>(&self, user: &str, pending: impl Iterator<Item = &'c StateChange>) -> UserPresence {
        let mut p = self.lock().get(user).cloned().unwrap_or_default();
        for change in pending {
            p.apply(change);
        }
        p
    }

    /// Apply a committed `Presence` or `Count` change.
    pub fn apply(&self, user: &str, change: &StateChange) {
        let mut users = self.lock();
        let entry = users.entry(user.to_owned()).or_default();
        entry.apply(change);
        if entry.is_empty() {
            users.remove(user);
        }
    }

    /// Replace a user's presence with what a cluster store holds.
    pub fn set(&self, user: &str, presence: UserPresence) {
        let mut users = self.lock();
        if presence.is_empty() {
            users.remove(user);
        } else {
            users.insert(user.to_owned(), presence);
        }
    }

    /// Replace everything (a cluster store's snapshot).
    pub fn replace(&self, all: impl IntoIterator<Item = (String, UserPresence)>) {
        let mut users = self.lock();
        users.clear();
        users.extend(all.into_iter().filter(|(_, p)| !p.is_empty()));
    }

    /// Every user's presence (to merge into a cluster store).
    pub fn all(&self) -> Vec<(String, UserPresence)> {
        self.lock().iter().map(|(u, p)| (u.clone(), p.clone())).collect()
    }

    #[cfg(test)]
    pub fn is_online(&self, user: &str) -> bool {
        self.lock().get(user).is_some_and(UserPresence::is_online)
    }

    /// Notifications counted for `user` since it was last online.
    pub fn message_count(&self, user: &str) -> u64 {
        self.lock().get(user).map_or(0, |p| p.message_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(user: &str, resource: &str, online: bool) -> StateChange {
        StateChange::Presence {
            scope: "push.m".into(),
            user: user.into(),
            resource: resource.into(),
            online,
        }
    }

    #[test]
    fn only_applied_changes_count_and_pending_ones_are_seen_as_if_applied() {
        let book = PresenceBook::default();
        let pending = [presence("bob@x", "phone", true)];
        assert!(book.effective("bob@x", pending.iter()).is_online());
        assert!(!book.is_online("bob@x"), "not applied: nothing changed");
        book.apply("bob@x", &pending[0]);
        assert!(book.is_online("bob@x"));
        book.apply("bob@x", &presence("bob@x", "", false));
        assert!(!book.is_online("bob@x"));
    }
}
