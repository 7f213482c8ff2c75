//! Who is online, per bare JID, from the presence events that reach the
//! push backend in the chain, and how many notifications each user was sent
//! since it was last online (`message_count`, the APNs badge).
//!
//! Kept in memory for the chain (which must not block) and written through
//! to the spool (key `presence/{bare JID}`) without waiting: the write goes
//! to the spool writer before the ingest append of the same request, so it
//! is committed in the same group commit or an earlier one, and a request
//! answered 202 has its presence changes stored too.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use event_pusher_core::{jid, Event, PresenceStatus};
use serde::{Deserialize, Serialize};

use super::store::Store;

const PREFIX: &str = "presence/";

/// One user's online resources and unread count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct UserPresence {
    resources: BTreeSet<String>,
    message_count: u64,
}

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

    /// Apply a presence event: `user_available` adds the resource and
    /// resets the count, `unset_presence` removes it (a bare JID: all).
    pub fn observe(&self, event: &Event, store: &Store) {
        let Some(p) = event.presence() else { return };
        let user = jid::bare(&p.jid);
        let resource = jid::resourcepart(&p.jid);
        let mut users = self.lock();
        let entry = users.entry(user.to_owned()).or_default();
        let before = entry.clone();
        match p.status {
            PresenceStatus::Online => {
                entry.resources.insert(resource.to_owned());
                entry.message_count = 0;
            }
            PresenceStatus::Offline if resource.is_empty() => entry.resources.clear(),
            PresenceStatus::Offline => {
                entry.resources.remove(resource);
            }
        }
        if *entry != before {
            let stored = (*entry != UserPresence::default()).then(|| serde_json::to_vec(&*entry).unwrap_or_default());
            if stored.is_none() {
                users.remove(user);
            }
            store.put_soon(&format!("{PREFIX}{user}"), stored);
        }
    }

    pub fn is_online(&self, user: &str) -> bool {
        self.lock().get(user).is_some_and(|p| !p.resources.is_empty())
    }

    /// Count one more notification for `user`.
    pub fn count_notification(&self, user: &str, store: &Store) {
        let mut users = self.lock();
        let entry = users.entry(user.to_owned()).or_default();
        entry.message_count += 1;
        store.put_soon(
            &format!("{PREFIX}{user}"),
            Some(serde_json::to_vec(&*entry).unwrap_or_default()),
        );
    }

    /// Notifications counted for `user` since it was last online.
    pub fn message_count(&self, user: &str) -> u64 {
        self.lock().get(user).map_or(0, |p| p.message_count)
    }
}

#[cfg(test)]
mod tests {
    use event_pusher_core::HookTranslator;
    use serde_json::json;

    use super::*;

    fn presence(hook: &str, jid: &str) -> Event {
        HookTranslator.translate(&json!({"hook": hook, "jid": jid})).unwrap()
    }

    #[test]
    fn resources_come_and_go_and_online_resets_the_count() {
        let (book, store) = (PresenceBook::default(), Store::default());
        book.count_notification("bob@x", &store);
        assert_eq!(book.message_count("bob@x"), 1);
        book.observe(&presence("user_available", "bob@x/phone"), &store);
        book.observe(&presence("user_available", "bob@x/desk"), &store);
        assert_eq!(book.message_count("bob@x"), 0);
        book.observe(&presence("unset_presence", "bob@x/phone"), &store);
        assert!(book.is_online("bob@x"));
        book.observe(&presence("unset_presence", "bob@x/desk"), &store);
        assert!(!book.is_online("bob@x"));
    }
}
