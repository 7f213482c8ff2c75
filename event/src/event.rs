//! The standard event record and its canonical JSON form.
//!
//! This one shape is what the `log` backend prints, what the HTTP backend's
//! `json` format posts, what the spool stores and what the admin API shows,
//! so it is defined once, here, with serde.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::jid;

/// Metadata added by the chat server or by filters. Values are strings,
/// numbers or booleans, never nested.
pub type Metadata = BTreeMap<String, MetaValue>;

/// One metadata value (read back by `event_de.rs`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MetaValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl MetaValue {
    /// Convert a JSON value; `None` for null, arrays and objects.
    pub fn from_json(value: &serde_json::Value) -> Option<MetaValue> {
        match value {
            serde_json::Value::Bool(b) => Some(MetaValue::Bool(*b)),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(MetaValue::Int)
                .or_else(|| n.as_f64().map(MetaValue::Float)),
            serde_json::Value::String(s) => Some(MetaValue::String(s.clone())),
            _ => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            MetaValue::Bool(b) => serde_json::Value::Bool(*b),
            MetaValue::Int(i) => serde_json::Value::from(*i),
            MetaValue::Float(f) => serde_json::Value::from(*f),
            MetaValue::String(s) => serde_json::Value::String(s.clone()),
        }
    }

    pub fn is_number(&self) -> bool {
        matches!(self, MetaValue::Int(_) | MetaValue::Float(_))
    }
}

impl fmt::Display for MetaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::Bool(b) => write!(f, "{b}"),
            MetaValue::Int(i) => write!(f, "{i}"),
            MetaValue::Float(x) => write!(f, "{x}"),
            MetaValue::String(s) => f.write_str(s),
        }
    }
}

impl From<&str> for MetaValue {
    fn from(s: &str) -> Self {
        MetaValue::String(s.to_owned())
    }
}
impl From<i64> for MetaValue {
    fn from(i: i64) -> Self {
        MetaValue::Int(i)
    }
}
impl From<bool> for MetaValue {
    fn from(b: bool) -> Self {
        MetaValue::Bool(b)
    }
}

/// `type` of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatType {
    Chat,
    Groupchat,
    Headline,
    Normal,
}

impl ChatType {
    pub fn parse(s: &str) -> Option<ChatType> {
        match s {
            "chat" => Some(ChatType::Chat),
            "groupchat" => Some(ChatType::Groupchat),
            "headline" => Some(ChatType::Headline),
            "normal" => Some(ChatType::Normal),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChatType::Chat => "chat",
            ChatType::Groupchat => "groupchat",
            ChatType::Headline => "headline",
            ChatType::Normal => "normal",
        }
    }
}

/// `in`: the user sent it; `out`: it is being delivered to a local user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    Online,
    Offline,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chat {
    #[serde(rename = "type")]
    pub chat_type: ChatType,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub jid: String,
    pub status: PresenceStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unacked {
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// What the sidecar reports on itself (class `operational`): `type` is
/// `backend.failing`, `backend.recovered`, `delivery.dead_lettered`,
/// `webhook.disabled`, `spool.refusing` or `spool.accepting`; `backend` the
/// `KIND.NAME` it is about (none for the spool's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operational {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default)]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// What happened, by kind; serialized with an `event` tag next to the
/// record's common fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum EventBody {
    Chat(Chat),
    Presence(Presence),
    Unacked(Unacked),
    Operational(Operational),
}

/// One standard event record.
///
/// Serialized by hand (below) so the canonical JSON keeps the field order
/// docs/http-api.md shows: `id`, `event`, `timestamp`, the kind's fields, `metadata`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Assigned at ingest; the delivery id and idempotency key.
    pub id: String,
    pub body: EventBody,
    pub timestamp: OffsetDateTime,
    pub metadata: Metadata,
}

impl Event {
    /// A fresh unique id, sortable by time (a ULID).
    pub fn new_id() -> String {
        ulid::Ulid::generate().to_string()
    }

    /// The user this event is about, as a bare JID: the sender of an
    /// outgoing message, the recipient of an incoming one, the subject of a
    /// presence change. Per-user delivery order is kept on this key.
    pub fn user(&self) -> &str {
        match &self.body {
            EventBody::Chat(c) => match c.direction {
                Direction::In => jid::bare(&c.from),
                Direction::Out => jid::bare(&c.to),
            },
            EventBody::Presence(p) => jid::bare(&p.jid),
            EventBody::Unacked(u) => jid::bare(&u.to),
            // One "user" per backend reported on: its events stay in order.
            EventBody::Operational(o) => o.backend.as_deref().unwrap_or_default(),
        }
    }

    pub fn chat(&self) -> Option<&Chat> {
        match &self.body {
            EventBody::Chat(c) => Some(c),
            _ => None,
        }
    }

    pub fn presence(&self) -> Option<&Presence> {
        match &self.body {
            EventBody::Presence(p) => Some(p),
            _ => None,
        }
    }

    /// Milliseconds since the epoch at which the event was accepted, read
    /// back from its ULID (falls back to the record timestamp).
    pub fn accepted_at_ms(&self) -> u64 {
        match ulid::Ulid::from_string(&self.id) {
            Ok(u) => u.timestamp_ms(),
            Err(_) => (self.timestamp.unix_timestamp_nanos() / 1_000_000) as u64,
        }
    }

    /// The canonical JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing this struct cannot fail: every field is a string,
        // number, bool or map with string keys.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &self.id)?;
        let kind = match &self.body {
            EventBody::Chat(_) => "chat",
            EventBody::Presence(_) => "presence",
            EventBody::Unacked(_) => "unacked",
            EventBody::Operational(_) => "operational",
        };
        m.serialize_entry("event", kind)?;
        let mut ts = [0u8; timestamp_millis::LEN];
        m.serialize_entry("timestamp", timestamp_millis::format_into(&self.timestamp, &mut ts))?;
        match &self.body {
            EventBody::Chat(c) => {
                m.serialize_entry("type", &c.chat_type)?;
                m.serialize_entry("direction", &c.direction)?;
                m.serialize_entry("from", &c.from)?;
                m.serialize_entry("to", &c.to)?;
                if let Some(b) = &c.body {
                    m.serialize_entry("body", b)?;
                }
                if let Some(id) = &c.message_id {
                    m.serialize_entry("message_id", id)?;
                }
            }
            EventBody::Presence(p) => {
                m.serialize_entry("jid", &p.jid)?;
                m.serialize_entry("status", &p.status)?;
            }
            EventBody::Unacked(u) => {
                m.serialize_entry("to", &u.to)?;
                if let Some(f) = &u.from {
                    m.serialize_entry("from", f)?;
                }
                if let Some(b) = &u.body {
                    m.serialize_entry("body", b)?;
                }
                if let Some(id) = &u.message_id {
                    m.serialize_entry("message_id", id)?;
                }
            }
            EventBody::Operational(o) => {
                m.serialize_entry("type", &o.kind)?;
                if let Some(b) = &o.backend {
                    m.serialize_entry("backend", b)?;
                }
                m.serialize_entry("detail", &o.detail)?;
            }
        }
        m.serialize_entry("metadata", &self.metadata)?;
        m.end()
    }
}

/// RFC 3339 in UTC with exactly millisecond precision, e.g.
/// `2026-11-23T10:00:00.123Z`.
pub mod timestamp_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    pub fn format(t: &OffsetDateTime) -> String {
        let mut buf = [0u8; LEN];
        format_into(t, &mut buf).to_owned()
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` is 24 bytes.
    pub const LEN: usize = 24;

    /// Format into a stack buffer: serializing an event does this once, and
    /// `format!` here was 3.5% of ingest CPU. Years outside 0..=9999 (which
    /// RFC 3339 cannot write) are clamped.
    pub fn format_into<'b>(t: &OffsetDateTime, buf: &'b mut [u8; LEN]) -> &'b str {
        fn put(buf: &mut [u8], at: usize, value: u32, width: usize) {
            let mut v = value;
            for i in (0..width).rev() {
                buf[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        let t = t.to_offset(time::UtcOffset::UTC);
        buf.copy_from_slice(b"0000-00-00T00:00:00.000Z");
        put(buf, 0, t.year().clamp(0, 9999) as u32, 4);
        put(buf, 5, u8::from(t.month()) as u32, 2);
        put(buf, 8, t.day() as u32, 2);
        put(buf, 11, t.hour() as u32, 2);
        put(buf, 14, t.minute() as u32, 2);
        put(buf, 17, t.second() as u32, 2);
        put(buf, 20, t.millisecond() as u32, 3);
        // Only ASCII digits and separators were written.
        std::str::from_utf8(buf).unwrap_or("0000-00-00T00:00:00.000Z")
    }

    pub fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
        OffsetDateTime::parse(s, &Rfc3339)
    }

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; LEN];
        s.serialize_str(format_into(t, &mut buf))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sample() -> Event {
        let mut metadata = Metadata::new();
        metadata.insert("source".into(), "sidecar".into());
        metadata.insert("tier".into(), 2i64.into());
        Event {
            id: "01JDQ7W4Z3K8V6Y2N9T5R1M0AB".into(),
            body: EventBody::Chat(Chat {
                chat_type: ChatType::Chat,
                direction: Direction::In,
                from: "alice@localhost/phone".into(),
                to: "bob@localhost".into(),
                body: Some("hi".into()),
                message_id: Some("m-1".into()),
            }),
            timestamp: datetime!(2026-11-23 10:00:00.123 UTC),
            metadata,
        }
    }

    #[test]
    fn canonical_json_matches_design() {
        let v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        let expected = serde_json::json!({
            "id": "01JDQ7W4Z3K8V6Y2N9T5R1M0AB",
            "event": "chat",
            "timestamp": "2026-11-23T10:00:00.123Z",
            "type": "chat",
            "direction": "in",
            "from": "alice@localhost/phone",
            "to": "bob@localhost",
            "body": "hi",
            "message_id": "m-1",
            "metadata": {"source": "sidecar", "tier": 2}
        });
        assert_eq!(v, expected);
    }

    #[test]
    fn canonical_json_keeps_design_field_order() {
        let text = String::from_utf8(sample().to_json()).unwrap();
        let order: Vec<usize> = [
            "\"id\"",
            "\"event\"",
            "\"timestamp\"",
            "\"type\"",
            "\"direction\"",
            "\"from\"",
            "\"to\"",
            "\"body\"",
            "\"message_id\"",
            "\"metadata\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn round_trips() {
        let e = sample();
        let back: Event = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn user_key_follows_direction() {
        let mut e = sample();
        assert_eq!(e.user(), "alice@localhost");
        if let EventBody::Chat(c) = &mut e.body {
            c.direction = Direction::Out;
        }
        assert_eq!(e.user(), "bob@localhost");
    }

    #[test]
    fn ids_are_unique_and_time_sortable() {
        let a = Event::new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = Event::new_id();
        assert_ne!(a, b);
        assert!(a < b);
    }
}
