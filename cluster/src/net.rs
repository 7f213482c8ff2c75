//! The net effect of a relayed batch's presence and badge changes, per
//! user: what the store must do so that applying it once equals applying
//! every change in order.
//!
//! A busy sidecar relays thousands of presence changes per batch; written
//! one statement per change, the store spends its time parsing and
//! planning tiny statements (and, on a shared box, takes the cores the
//! sidecar needs). Folded per user, a batch becomes five array statements
//! whatever its size. The fold is exact because the changes are
//! operations on a set and a counter:
//!
//! - presence: `online(r)` adds `r`, `offline(r)` removes it, `offline("")`
//!   clears the set: in order they reduce to "clear or not, then the final
//!   state of each resource touched after the last clear";
//! - the badge: `online` resets it, `count` adds one: they reduce to "set
//!   to n" (a reset happened; n counts after the last one) or "add n".
//!
//! The user's `counts` row is locked for the whole transaction, so no other
//! batch interleaves with the folded operations.

use std::collections::BTreeMap;

use event_pusher_core::StateChange;

/// One user's folded changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct UserNet<'a> {
    /// Every resource went offline at some point.
    pub clear: bool,
    /// Each resource touched after the last clear: online (true) or not.
    pub resources: BTreeMap<&'a str, bool>,
    /// The badge was reset (an online) at some point.
    pub reset: bool,
    /// Messages counted after the last reset.
    pub add: i64,
}

impl<'a> UserNet<'a> {
    fn fold(&mut self, change: &'a StateChange) {
        match change {
            StateChange::Presence {
                resource, online: true, ..
            } => {
                self.resources.insert(resource.as_str(), true);
                self.reset = true;
                self.add = 0;
            }
            StateChange::Presence {
                resource,
                online: false,
                ..
            } => {
                if resource.is_empty() {
                    self.clear = true;
                    self.resources.clear();
                } else {
                    self.resources.insert(resource.as_str(), false);
                }
            }
            StateChange::Count { .. } => self.add += 1,
            StateChange::DevicePut { .. } | StateChange::DeviceRemove { .. } => {}
        }
    }

    fn counts_change(&self) -> bool {
        self.reset || self.add != 0
    }
}

/// A batch's presence and badge changes folded per (scope, user), in key
/// order, as the columns of the store's array statements.
#[derive(Debug, Default)]
pub(crate) struct BatchNet<'a> {
    pub users: BTreeMap<(&'a str, &'a str), UserNet<'a>>,
}

/// Column arrays for one statement: (scope, user, resource).
pub(crate) type Triples<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>);

impl<'a> BatchNet<'a> {
    pub(crate) fn fold<'c>(changes: impl IntoIterator<Item = &'c &'a StateChange>) -> Self
    where
        'a: 'c,
    {
        let mut net = BatchNet::default();
        for change in changes {
            if matches!(change, StateChange::Presence { .. } | StateChange::Count { .. }) {
                net.users
                    .entry((change.scope(), change.user()))
                    .or_default()
                    .fold(change);
            }
        }
        net
    }

    /// The users touched, as (scopes, jids) columns.
    pub(crate) fn user_columns(&self) -> (Vec<&'a str>, Vec<&'a str>) {
        self.users.keys().copied().unzip()
    }

    /// Users whose every resource goes offline (before the per-resource
    /// changes).
    pub(crate) fn clears(&self) -> (Vec<&'a str>, Vec<&'a str>) {
        self.users.iter().filter(|(_, n)| n.clear).map(|(k, _)| *k).unzip()
    }

    /// Resources ending online (`true`) or offline (`false`).
    pub(crate) fn resources(&self, online: bool) -> Triples<'a> {
        let mut out: Triples<'a> = Default::default();
        for ((scope, user), n) in &self.users {
            for (resource, state) in &n.resources {
                // After a clear, "offline" is already done.
                let done_by_clear = n.clear && !online;
                if *state == online && !done_by_clear {
                    out.0.push(scope);
                    out.1.push(user);
                    out.2.push(resource);
                }
            }
        }
        out
    }

    /// Badge changes: (scopes, jids, reset, add).
    pub(crate) fn counts(&self) -> (Vec<&'a str>, Vec<&'a str>, Vec<bool>, Vec<i64>) {
        let mut out: (Vec<&str>, Vec<&str>, Vec<bool>, Vec<i64>) = Default::default();
        for ((scope, user), n) in self.users.iter().filter(|(_, n)| n.counts_change()) {
            out.0.push(scope);
            out.1.push(user);
            out.2.push(n.reset);
            out.3.push(n.add);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn presence(user: &str, resource: &str, online: bool) -> StateChange {
        StateChange::Presence {
            scope: "push.m".into(),
            user: user.into(),
            resource: resource.into(),
            online,
        }
    }

    fn count(user: &str) -> StateChange {
        StateChange::Count {
            scope: "push.m".into(),
            user: user.into(),
        }
    }

    /// The state (resources, badge) after applying changes one by one, as
    /// the per-change statements did, from `start`.
    fn one_by_one(start: (BTreeSet<String>, i64), changes: &[StateChange]) -> (BTreeSet<String>, i64) {
        let (mut set, mut badge) = start;
        for c in changes {
            match c {
                StateChange::Presence {
                    resource, online: true, ..
                } => {
                    set.insert(resource.clone());
                    badge = 0;
                }
                StateChange::Presence {
                    resource,
                    online: false,
                    ..
                } if resource.is_empty() => set.clear(),
                StateChange::Presence { resource, .. } => {
                    set.remove(resource);
                }
                StateChange::Count { .. } => badge += 1,
                _ => {}
            }
        }
        (set, badge)
    }

    /// The same, through the fold and the five array statements' meaning.
    fn folded(start: (BTreeSet<String>, i64), changes: &[StateChange]) -> (BTreeSet<String>, i64) {
        let refs: Vec<&StateChange> = changes.iter().collect();
        let net = BatchNet::fold(&refs);
        let (mut set, mut badge) = start;
        if !net.clears().0.is_empty() {
            set.clear();
        }
        for r in net.resources(false).2 {
            set.remove(r);
        }
        for r in net.resources(true).2 {
            set.insert(r.to_owned());
        }
        let (_, _, reset, add) = net.counts();
        if let (Some(reset), Some(add)) = (reset.first(), add.first()) {
            badge = if *reset { *add } else { badge + add };
        }
        (set, badge)
    }

    #[test]
    fn folding_equals_applying_in_order_for_every_short_sequence() {
        let alphabet = [
            presence("u", "a", true),
            presence("u", "a", false),
            presence("u", "b", true),
            presence("u", "", false),
            count("u"),
        ];
        let starts = [
            (BTreeSet::new(), 0),
            (["a".to_owned()].into_iter().collect(), 3),
            (["a".to_owned(), "c".to_owned()].into_iter().collect(), 7),
        ];
        // Every sequence of up to 5 changes from the alphabet.
        let mut sequences: Vec<Vec<StateChange>> = vec![Vec::new()];
        let mut frontier = sequences.clone();
        for _ in 0..5 {
            frontier = frontier
                .iter()
                .flat_map(|s| {
                    alphabet.iter().map(move |c| {
                        let mut s = s.clone();
                        s.push(c.clone());
                        s
                    })
                })
                .collect();
            sequences.extend(frontier.iter().cloned());
        }
        assert!(sequences.len() > 3000, "{}", sequences.len());
        for start in &starts {
            for s in &sequences {
                assert_eq!(
                    one_by_one(start.clone(), s),
                    folded(start.clone(), s),
                    "{s:?} from {start:?}"
                );
            }
        }
    }

    #[test]
    fn users_are_folded_apart_and_devices_ignored() {
        let changes = [
            presence("a", "r", true),
            count("b"),
            count("b"),
            StateChange::DeviceRemove {
                scope: "push.m".into(),
                user: "c".into(),
                device_id: "d".into(),
            },
        ];
        let refs: Vec<&StateChange> = changes.iter().collect();
        let net = BatchNet::fold(&refs);
        assert_eq!(net.user_columns(), (vec!["push.m", "push.m"], vec!["a", "b"]));
        assert_eq!(
            net.counts(),
            (vec!["push.m", "push.m"], vec!["a", "b"], vec![true, false], vec![0, 2])
        );
        assert_eq!(net.resources(true), (vec!["push.m"], vec!["a"], vec!["r"]));
    }
}
