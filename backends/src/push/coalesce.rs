//! Coalescing a conversation's notifications (`coalesce_ms`).
//!
//! Per device and conversation (the collapse key): the first notification
//! goes out at once; the events that arrive within `coalesce_ms` after a
//! notification was sent are merged into one trailing notification, sent
//! when the window closes, with the latest event's body and how many it
//! covers. Nothing is acked before the notification that covers it was
//! sent: each covered event stays a queue item, held (no attempt spent)
//! until then, and is acked afterwards ([`Step::Covered`]). A crash inside
//! the window loses no event: their items are still in the spool, and
//! after the restart the time of the last notification (kept in the spool)
//! puts them in one trailing notification again.
//!
//! A group needs its members in `deliver` together, so a coalescing push
//! backend delivers without per-user order (`ordering = "none"`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use event_pusher_core::Event;

/// Where the time of a conversation's last notification is kept.
pub const PREFIX: &str = "coalesce/";

/// How often a member polls while another member sends the group's
/// notification.
const SENDING_POLL: Duration = Duration::from_millis(50);

/// A backlog (after a restart, or after a provider outage) is gathered for
/// at most this long before its trailing notification goes out.
const GATHER: Duration = Duration::from_millis(100);

/// What to do with one queue item.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send its own notification now: the first of a window (or no
    /// coalescing).
    SendNow,
    /// A trailing notification that covered it was sent: ack it.
    Covered,
    /// Held for this long: its group's notification is not due yet.
    Wait(Duration),
    /// Send the group's trailing notification: the latest event, and how
    /// many events it covers. Report the outcome with [`Coalescer::sent`].
    SendTrailing { latest: Box<Event>, count: usize },
}

type Key = (String, String, String);

#[derive(Default)]
struct Conversation {
    /// Wall-clock ms of the last notification sent (or being sent).
    last_sent_ms: u64,
    /// The event it showed, when this process sent it: a group's members
    /// can be earlier in the queue (they reach `deliver` in any order),
    /// and the trailing notification shows the latest of all.
    last_shown: Option<(u64, Event)>,
    group: Option<Group>,
    /// Events a sent trailing notification covered, not acked yet.
    covered: HashSet<String>,
}

struct Group {
    closes_at_ms: u64,
    /// The member latest in the queue (by sequence number), and its event.
    latest: (u64, Event),
    members: BTreeSet<String>,
    sending: bool,
}

/// Every conversation's window, per device.
pub struct Coalescer {
    window_ms: u64,
    conversations: Mutex<HashMap<Key, Conversation>>,
    calls: std::sync::atomic::AtomicU64,
}

/// The stored key of a conversation's last notification time.
pub fn stored_key(user: &str, device_id: &str, conversation: &str) -> String {
    // The conversation is hashed: a JID pair is not a key segment.
    format!(
        "{PREFIX}{user}/{}/{device_id}",
        super::provider::web_push_topic(conversation)
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Coalescer {
    pub fn new(window_ms: u64) -> Self {
        Coalescer {
            window_ms,
            conversations: Mutex::new(HashMap::new()),
            calls: Default::default(),
        }
    }

    pub fn is_on(&self) -> bool {
        self.window_ms > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Conversation>> {
        self.conversations.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What was stored (`stored_key` → ms as decimal text) and is still
    /// inside a window: taken back. Returns the stale keys, to delete.
    pub fn load(&self, rows: &[(String, Vec<u8>)]) -> Vec<String> {
        let now = now_ms();
        let mut stale = Vec::new();
        let mut map = self.lock();
        for (key, value) in rows {
            let Some(rest) = key.strip_prefix(PREFIX) else { continue };
            let at: Option<u64> = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            // user / conversation hash / device id (the device id may hold '/').
            let mut parts = rest.splitn(3, '/');
            let (Some(user), Some(conv), Some(device), Some(at)) = (parts.next(), parts.next(), parts.next(), at)
            else {
                stale.push(key.clone());
                continue;
            };
            if !self.is_on() || at + self.window_ms <= now {
                stale.push(key.clone());
                continue;
            }
            // Keyed by the hash: `decide` looks the hash up too.
            map.entry((user.to_owned(), device.to_owned(), conv.to_owned()))
                .or_default()
                .last_sent_ms = at;
        }
        stale
    }

    /// Decide for one queue item (`seq`, `event`) to `device_id` of `user`
    /// in `conversation`. The second value, when set, is the stored key and
    /// value to write now (the time of a notification about to be sent).
    pub fn decide(
        &self,
        user: &str,
        device_id: &str,
        conversation: &str,
        event: &Event,
        seq: u64,
    ) -> (Step, Option<(String, Vec<u8>)>) {
        if !self.is_on() {
            return (Step::SendNow, None);
        }
        let now = now_ms();
        let key = (
            user.to_owned(),
            device_id.to_owned(),
            super::provider::web_push_topic(conversation),
        );
        let mut map = self.lock();
        self.prune(&mut map, now);
        let conv = map.entry(key).or_default();
        if conv.covered.remove(&event.id) {
            return (Step::Covered, None);
        }
        if let Some(g) = &mut conv.group {
            g.members.insert(event.id.clone());
            if seq > g.latest.0 {
                g.latest = (seq, event.clone());
            }
            if g.sending {
                return (Step::Wait(SENDING_POLL), None);
            }
            if now >= g.closes_at_ms {
                g.sending = true;
                let latest = match &conv.last_shown {
                    Some((seq, shown)) if *seq > g.latest.0 => shown,
                    _ => &g.latest.1,
                };
                let step = Step::SendTrailing {
                    latest: Box::new(latest.clone()),
                    count: g.members.len(),
                };
                return (step, None);
            }
            return (Step::Wait(Duration::from_millis(g.closes_at_ms - now)), None);
        }
        // Accepted within the window of the last notification: it trails.
        // By when it was accepted, so a backlog after a restart (or an
        // outage) still coalesces, gathered briefly.
        let window_end = conv.last_sent_ms + self.window_ms;
        if conv.last_sent_ms > 0 && event.accepted_at_ms() < window_end {
            let gather = GATHER.min(Duration::from_millis(self.window_ms)).as_millis() as u64;
            let closes_at_ms = window_end.max(now + gather);
            conv.group = Some(Group {
                closes_at_ms,
                latest: (seq, event.clone()),
                members: BTreeSet::from([event.id.clone()]),
                sending: false,
            });
            return (Step::Wait(Duration::from_millis(closes_at_ms - now)), None);
        }
        // The first: at once. Counted as sent now, so the others that
        // arrive meanwhile trail it (if it fails, it trails too).
        conv.last_sent_ms = now;
        conv.last_shown = Some((seq, event.clone()));
        (
            Step::SendNow,
            Some((stored_key(user, device_id, conversation), now.to_string().into_bytes())),
        )
    }

    /// The outcome of a [`Step::SendTrailing`]: on success its members are
    /// covered (acked as they come back) and the window starts again; on
    /// failure another member tries when it comes back. Returns the stored
    /// key and value to write on success.
    pub fn sent(
        &self,
        user: &str,
        device_id: &str,
        conversation: &str,
        sender: &Event,
        ok: bool,
    ) -> Option<(String, Vec<u8>)> {
        let key = (
            user.to_owned(),
            device_id.to_owned(),
            super::provider::web_push_topic(conversation),
        );
        let mut map = self.lock();
        let conv = map.get_mut(&key)?;
        if !ok {
            if let Some(g) = &mut conv.group {
                g.sending = false;
            }
            return None;
        }
        let now = now_ms();
        let group = conv.group.take()?;
        conv.covered
            .extend(group.members.into_iter().filter(|id| *id != sender.id));
        conv.last_sent_ms = now;
        Some((stored_key(user, device_id, conversation), now.to_string().into_bytes()))
    }

    /// Forget a user's conversations (erasure); the stored keys to delete.
    pub fn forget(&self, user: &str) -> Vec<String> {
        let mut map = self.lock();
        let mut keys = Vec::new();
        map.retain(|(u, device, conv), _| {
            if u == user {
                keys.push(format!("{PREFIX}{u}/{conv}/{device}"));
                false
            } else {
                true
            }
        });
        keys
    }

    /// Now and then, drop conversations with nothing pending whose window
    /// is over.
    fn prune(&self, map: &mut HashMap<Key, Conversation>, now: u64) {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % 1024 != 1023 {
            return;
        }
        let window = self.window_ms;
        for c in map.values_mut() {
            // Covered members come back within moments of the send; one
            // that never does (dead-lettered meanwhile) is not waited for.
            if c.last_sent_ms + 2 * window + 60_000 < now {
                c.covered.clear();
            }
        }
        map.retain(|_, c| c.group.is_some() || !c.covered.is_empty() || c.last_sent_ms + window > now);
    }
}

#[cfg(test)]
mod tests {
    use event_pusher_core::HookTranslator;
    use serde_json::json;

    use super::*;

    fn chat(body: &str) -> Event {
        HookTranslator
            .translate(
                &json!({"hook": "filter_local_packet", "from": "alice@x/a", "to": "bob@x",
                "type": "chat", "body": body}),
            )
            .unwrap()
    }

    #[test]
    fn a_burst_is_the_first_at_once_and_one_trailing_notification() {
        let c = Coalescer::new(60_000);
        let events: Vec<Event> = (0..20).map(|i| chat(&format!("m{i}"))).collect();
        let seq = |e: &Event| events.iter().position(|x| x.id == e.id).unwrap() as u64 + 1;
        let (first, stored) = c.decide("bob@x", "d1", "bob@x alice@x", &events[0], 1);
        assert_eq!(first, Step::SendNow);
        assert!(stored.is_some());
        for e in &events[1..] {
            let (step, _) = c.decide("bob@x", "d1", "bob@x alice@x", e, seq(e));
            assert!(matches!(step, Step::Wait(_)), "{step:?}");
        }
        // Another device and another conversation are not held.
        assert_eq!(c.decide("bob@x", "d2", "bob@x alice@x", &events[1], 2).0, Step::SendNow);
        assert_eq!(c.decide("bob@x", "d1", "bob@x carol@x", &events[1], 2).0, Step::SendNow);
        // Close the window by hand; the next member to come back sends.
        {
            let mut map = c.lock();
            for conv in map.values_mut() {
                if let Some(g) = &mut conv.group {
                    g.closes_at_ms = 0;
                }
            }
        }
        let (step, _) = c.decide("bob@x", "d1", "bob@x alice@x", &events[5], 6);
        let Step::SendTrailing { latest, count } = step else {
            panic!("{step:?}");
        };
        assert_eq!((latest.id.as_str(), count), (events[19].id.as_str(), 19));
        assert!(matches!(
            c.decide("bob@x", "d1", "bob@x alice@x", &events[6], 7).0,
            Step::Wait(_)
        ));
        assert!(c.sent("bob@x", "d1", "bob@x alice@x", &events[5], true).is_some());
        for e in events[1..].iter().filter(|e| e.id != events[5].id) {
            assert_eq!(c.decide("bob@x", "d1", "bob@x alice@x", e, seq(e)).0, Step::Covered);
        }
    }

    #[test]
    fn after_a_restart_the_backlog_trails_the_stored_notification() {
        let c = Coalescer::new(60_000);
        let e = chat("late");
        let at = e.accepted_at_ms().saturating_sub(10);
        let key = stored_key("bob@x", "d/1", "bob@x alice@x");
        assert!(c.load(&[(key, at.to_string().into_bytes())]).is_empty());
        assert!(matches!(
            c.decide("bob@x", "d/1", "bob@x alice@x", &e, 1).0,
            Step::Wait(_)
        ));
        // Off: every item goes at once, stored times are stale.
        let off = Coalescer::new(0);
        assert_eq!(off.decide("bob@x", "d1", "k", &e, 1).0, Step::SendNow);
    }
}
