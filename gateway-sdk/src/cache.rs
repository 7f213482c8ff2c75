//! What the client remembers between dispatches so an update can arrive
//! with the old state next to the new one: each JID's last presence.

use std::collections::HashMap;

use event_pusher_event::PresenceStatus;

/// The last presence status seen per full JID.
#[derive(Debug, Default)]
pub struct PresenceCache {
    last: HashMap<String, PresenceStatus>,
}

impl PresenceCache {
    /// Record `status` for `jid`; the status it had before (`None` when
    /// this client has not seen it yet).
    pub fn update(&mut self, jid: &str, status: PresenceStatus) -> Option<PresenceStatus> {
        self.last.insert(jid.to_owned(), status)
    }

    pub fn get(&self, jid: &str) -> Option<PresenceStatus> {
        self.last.get(jid).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_status_is_none_first_then_the_last_one() {
        let mut cache = PresenceCache::default();
        assert_eq!(cache.update("a@x/r", PresenceStatus::Online), None);
        assert_eq!(
            cache.update("a@x/r", PresenceStatus::Offline),
            Some(PresenceStatus::Online)
        );
        assert_eq!(cache.get("a@x/r"), Some(PresenceStatus::Offline));
        assert_eq!(cache.get("b@x/r"), None);
    }
}
