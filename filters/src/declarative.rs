//! The declarative filter: `match` on fields, then add `metadata` and
//! `continue` or `stop`.
//!
//! ```toml
//! [[filters]]
//! name = "drop-headlines"
//! priority = 20
//! match = { event = "chat", type = "headline" }
//! action = "stop"
//! ```
//!
//! All `match` keys must hold for the filter to act (AND); a key given a
//! list matches any of its values (OR). JIDs match either the full or the
//! bare JID, ignoring ASCII case. An event that does not match passes on
//! untouched.

use event_pusher_core::event::{Direction, EventBody};
use event_pusher_core::{jid, Event, Filter, MetaValue, Metadata, Verdict};
use regex::Regex;
use serde::{Deserialize, Deserializer};

use crate::FilterConfig;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Continue,
    Stop,
}

/// One value or a list of values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected a string or a list of strings"))? {
            Raw::One(s) => Ok(OneOrMany(vec![s])),
            Raw::Many(v) if v.is_empty() => Err(serde::de::Error::custom("empty list matches nothing")),
            Raw::Many(v) => Ok(OneOrMany(v)),
        }
    }
}

fn one_of<'de, D: Deserializer<'de>>(d: D, allowed: &[&str], what: &str) -> Result<Option<OneOrMany>, D::Error> {
    let v = OneOrMany::deserialize(d)?;
    for s in &v.0 {
        if !allowed.contains(&s.as_str()) {
            return Err(serde::de::Error::custom(format!(
                "unknown {what} \"{s}\" (expected {})",
                allowed.join(", ")
            )));
        }
    }
    Ok(Some(v))
}

fn event_kind<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OneOrMany>, D::Error> {
    one_of(d, &["chat", "presence", "unacked"], "event")
}

fn chat_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OneOrMany>, D::Error> {
    one_of(d, &["chat", "groupchat", "headline", "normal"], "type")
}

fn direction<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OneOrMany>, D::Error> {
    one_of(d, &["in", "out"], "direction")
}

fn regex<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Regex>, D::Error> {
    let s = String::deserialize(d)?;
    Regex::new(&s)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid regular expression: {e}")))
}

/// `metadata = { ... }`: values are strings, numbers or booleans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataTable(pub Metadata);

impl<'de> Deserialize<'de> for MetadataTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = std::collections::BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                MetaValue::from_json(&v).map(|m| (k.clone(), m)).ok_or_else(|| {
                    serde::de::Error::custom(format!("metadata `{k}` must be a string, number or boolean"))
                })
            })
            .collect::<Result<Metadata, _>>()
            .map(MetadataTable)
    }
}

/// `match = { ... }`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    #[serde(default, deserialize_with = "event_kind")]
    pub event: Option<OneOrMany>,
    #[serde(default, rename = "type", deserialize_with = "chat_type")]
    pub chat_type: Option<OneOrMany>,
    #[serde(default, deserialize_with = "direction")]
    pub direction: Option<OneOrMany>,
    #[serde(default)]
    pub from: Option<OneOrMany>,
    #[serde(default)]
    pub to: Option<OneOrMany>,
    #[serde(default)]
    pub jid: Option<OneOrMany>,
    #[serde(default)]
    pub from_domain: Option<OneOrMany>,
    #[serde(default)]
    pub to_domain: Option<OneOrMany>,
    #[serde(default, deserialize_with = "regex")]
    pub body_regex: Option<Regex>,
}

impl MatchConfig {
    /// The event kinds that carry every key this match uses, narrowed by
    /// `event`. Empty means the filter can never match.
    fn possible_kinds(&self) -> Vec<&'static str> {
        // Which kinds have each field (see `fields` below).
        let keys: [(&str, bool, &[&str]); 8] = [
            ("type", self.chat_type.is_some(), &["chat"]),
            ("direction", self.direction.is_some(), &["chat"]),
            ("from", self.from.is_some(), &["chat", "unacked"]),
            ("to", self.to.is_some(), &["chat", "unacked"]),
            ("from_domain", self.from_domain.is_some(), &["chat", "unacked"]),
            ("to_domain", self.to_domain.is_some(), &["chat", "unacked"]),
            ("body_regex", self.body_regex.is_some(), &["chat", "unacked"]),
            ("jid", self.jid.is_some(), &["presence"]),
        ];
        ["chat", "presence", "unacked"]
            .into_iter()
            .filter(|kind| self.event.as_ref().is_none_or(|e| e.0.iter().any(|k| k == kind)))
            .filter(|kind| keys.iter().all(|(_, used, on)| !used || on.contains(kind)))
            .collect()
    }

    fn used_keys(&self) -> Vec<&'static str> {
        [
            ("event", self.event.is_some()),
            ("type", self.chat_type.is_some()),
            ("direction", self.direction.is_some()),
            ("from", self.from.is_some()),
            ("to", self.to.is_some()),
            ("jid", self.jid.is_some()),
            ("from_domain", self.from_domain.is_some()),
            ("to_domain", self.to_domain.is_some()),
            ("body_regex", self.body_regex.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, used)| used.then_some(k))
        .collect()
    }
}

impl MatchConfig {
    /// Refuse a `match` that no event can satisfy (e.g. `jid`, which only
    /// presence events have, with `event = "chat"`): such a filter silently
    /// does nothing.
    pub fn check_satisfiable(&self) -> Result<(), Unsatisfiable> {
        if self.possible_kinds().is_empty() {
            return Err(Unsatisfiable {
                keys: self.used_keys().join(", "),
            });
        }
        Ok(())
    }
}

/// A `match` no event can satisfy; `keys` lists the keys it uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this match can never hold: no event has all of {keys} (`jid` is on presence events only; \
     `type`, `direction` on chat; `from`, `to`, the domains and `body_regex` on chat and unacked)"
)]
pub struct Unsatisfiable {
    pub keys: String,
}

/// The filter built from a [`FilterConfig`].
#[derive(Debug, Clone)]
pub struct DeclarativeFilter {
    matcher: MatchConfig,
    stop: bool,
    metadata: Metadata,
}

impl DeclarativeFilter {
    pub fn new(config: &FilterConfig) -> Self {
        DeclarativeFilter {
            matcher: lowercase(config.matcher.as_ref().map(|m| m.get_ref().clone()).unwrap_or_default()),
            stop: config.action.as_ref().is_some_and(|a| *a.get_ref() == Action::Stop),
            metadata: config
                .metadata
                .as_ref()
                .map(|m| m.get_ref().0.clone())
                .unwrap_or_default(),
        }
    }

    pub fn matches(&self, event: &Event) -> bool {
        let m = &self.matcher;
        let (kind, chat_type, direction, from, to, jid_field, body) = fields(event);
        check(&m.event, Some(kind), str::eq)
            && check(&m.chat_type, chat_type, str::eq)
            && check(&m.direction, direction, str::eq)
            && check(&m.from, from, jid_eq)
            && check(&m.to, to, jid_eq)
            && check(&m.jid, jid_field, jid_eq)
            && check(&m.from_domain, from.map(jid::domain), str::eq_ignore_ascii_case)
            && check(&m.to_domain, to.map(jid::domain), str::eq_ignore_ascii_case)
            && m.body_regex
                .as_ref()
                .is_none_or(|re| body.is_some_and(|b| re.is_match(b)))
    }
}

impl Filter for DeclarativeFilter {
    fn apply(&self, event: &mut Event) -> Verdict {
        if !self.matches(event) {
            return Verdict::Continue;
        }
        for (k, v) in &self.metadata {
            event.metadata.insert(k.clone(), v.clone());
        }
        if self.stop {
            Verdict::Stop
        } else {
            Verdict::Continue
        }
    }
}

type Fields<'a> = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

fn fields(event: &Event) -> Fields<'_> {
    match &event.body {
        EventBody::Chat(c) => (
            "chat",
            Some(c.chat_type.as_str()),
            Some(match c.direction {
                Direction::In => "in",
                Direction::Out => "out",
            }),
            Some(c.from.as_str()),
            Some(c.to.as_str()),
            None,
            c.body.as_deref(),
        ),
        EventBody::Presence(p) => ("presence", None, None, None, None, Some(p.jid.as_str()), None),
        EventBody::Unacked(u) => (
            "unacked",
            None,
            None,
            u.from.as_deref(),
            Some(u.to.as_str()),
            None,
            u.body.as_deref(),
        ),
        // `type` matchers name chat types only.
        EventBody::Operational(_) => ("operational", None, None, None, None, None, None),
    }
}

/// A missing matcher key matches anything; a present one needs a value
/// equal to one of its entries.
fn check(want: &Option<OneOrMany>, have: Option<&str>, eq: impl Fn(&str, &str) -> bool) -> bool {
    match want {
        None => true,
        Some(list) => have.is_some_and(|h| list.0.iter().any(|w| eq(h, w))),
    }
}

/// `want` is already lower-case; equal to the full or the bare JID.
fn jid_eq(have: &str, want: &str) -> bool {
    have.eq_ignore_ascii_case(want) || jid::bare(have).eq_ignore_ascii_case(want)
}

fn lowercase(mut m: MatchConfig) -> MatchConfig {
    for list in [&mut m.from, &mut m.to, &mut m.jid].into_iter().flatten() {
        for s in &mut list.0 {
            *s = s.to_ascii_lowercase();
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_pusher_core::HookTranslator;
    use serde_json::json;

    fn filter(toml_src: &str) -> DeclarativeFilter {
        let cfg: FilterConfig = toml::from_str(toml_src).unwrap();
        DeclarativeFilter::new(&cfg)
    }

    fn ev(v: serde_json::Value) -> Event {
        HookTranslator.translate(&v).unwrap()
    }

    #[test]
    fn matches_and_tags() {
        let f = filter("name='t'\nmatch={event='presence'}\nmetadata={source='sidecar', tier=2, vip=true}");
        let mut p = ev(json!({"hook":"user_available","jid":"a@x/r"}));
        assert_eq!(f.apply(&mut p), Verdict::Continue);
        assert_eq!(p.metadata["tier"], MetaValue::Int(2));
        assert_eq!(p.metadata["vip"], MetaValue::Bool(true));
        let mut c = ev(json!({"hook":"user_send_message","from":"a@x","to":"b@y"}));
        f.apply(&mut c);
        assert!(c.metadata.is_empty());
    }

    #[test]
    fn stops_on_match_only() {
        let f = filter("name='s'\nmatch={event='chat', type=['headline','normal'], to_domain='Y'}\naction='stop'");
        assert_eq!(
            f.apply(&mut ev(
                json!({"hook":"user_send_message","from":"a@x","to":"b@y","type":"headline"})
            )),
            Verdict::Stop
        );
        assert_eq!(
            f.apply(&mut ev(
                json!({"hook":"user_send_message","from":"a@x","to":"b@y","type":"chat"})
            )),
            Verdict::Continue
        );
        assert_eq!(
            f.apply(&mut ev(json!({"hook":"user_send_message","from":"a@x","to":"b@z"}))),
            Verdict::Continue
        );
    }

    #[test]
    fn jids_bare_or_full_and_body_regex() {
        let f = filter("name='j'\nmatch={from='Alice@X', direction='in', body_regex='^urgent'}\naction='stop'");
        let m = |from: &str, body: &str| {
            f.matches(&ev(
                json!({"hook":"user_send_message","from":from,"to":"b@x","body":body}),
            ))
        };
        assert!(m("alice@x/phone", "urgent: call me"));
        assert!(m("alice@x", "urgent"));
        assert!(!m("alice@x/phone", "not urgent"));
        assert!(!m("bob@x", "urgent"));
        let j = filter("name='p'\nmatch={jid='a@x'}");
        assert!(j.matches(&ev(json!({"hook":"unset_presence","jid":"a@x/r"}))));
    }

    #[test]
    fn bad_config_is_refused_with_reason() {
        let e = |s: &str| toml::from_str::<FilterConfig>(s).unwrap_err().to_string();
        assert!(e("name='x'\nmatch={event='gossip'}").contains("unknown event \"gossip\""));
        assert!(e("name='x'\nmatch={body_regex='('}").contains("invalid regular expression"));
        assert!(e("name='x'\nmatch={colour='red'}").contains("unknown field `colour`"));
        assert!(e("name='x'\naction='drop'").contains("unknown variant `drop`"));
        assert!(e("name='x'\nmetadata={a=[1]}").contains("metadata `a`"));
    }

    #[test]
    fn a_match_no_event_can_satisfy_is_refused() {
        let e = |s: &str| {
            let m: MatchConfig = toml::from_str(s).expect("a well-formed match table");
            m.check_satisfiable().expect_err(s).to_string()
        };
        // The old examples/sidecar.toml `vip` filter.
        let vip = e("event='chat'\nfrom='a@x'\njid='a@x'");
        assert!(
            vip.contains("can never hold") && vip.contains("event, from, jid"),
            "{vip}"
        );
        assert!(e("event='presence'\ndirection='in'").contains("can never hold"));
        assert!(e("jid='a@x'\nbody_regex='x'").contains("can never hold"));
        // Satisfiable ones still load.
        for ok in [
            "event='chat'\nfrom='a@x'\ndirection='in'",
            "event=['chat','presence']\njid='a@x'",
            "to='a@x'\nbody_regex='x'",
            "",
        ] {
            let m: MatchConfig = toml::from_str(ok).expect("a well-formed match table");
            assert!(m.check_satisfiable().is_ok(), "{ok}");
        }
    }
}
