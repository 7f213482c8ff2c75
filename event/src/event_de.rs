//! Reading an event record back from its canonical JSON, in one pass.
//!
//! Every delivery attempt starts by reading the stored record. The derived
//! reader (`#[serde(flatten)]` over an internally tagged enum, untagged
//! metadata values) buffered each record into serde's intermediate
//! `Content` tree twice before building it; this one reads the fields as
//! they come and builds the record at the end. It accepts what the derived
//! one did: fields in any order, unknown fields ignored, a missing required
//! field or an unknown `event` kind refused by name.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::event::{
    timestamp_millis, Chat, ChatType, Direction, Event, EventBody, MetaValue, Metadata, Operational, Presence,
    PresenceStatus, Unacked,
};

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EventVisitor)
    }
}

/// The record's fields as they are read, before the kind decides which
/// are required.
#[derive(Default)]
struct Fields {
    id: Option<String>,
    kind: Option<String>,
    timestamp: Option<OffsetDateTime>,
    /// A chat's type, or an operational event's (read before `event` may be).
    kind_type: Option<TypeField>,
    backend: Option<String>,
    detail: Option<serde_json::Map<String, serde_json::Value>>,
    direction: Option<Direction>,
    from: Option<String>,
    to: Option<String>,
    body: Option<String>,
    message_id: Option<String>,
    jid: Option<String>,
    status: Option<PresenceStatus>,
    metadata: Option<Metadata>,
}

fn required<T, E: de::Error>(v: Option<T>, field: &'static str) -> Result<T, E> {
    v.ok_or_else(|| E::missing_field(field))
}

/// `type`: a chat type (read without allocating), or anything else (an
/// operational event's type).
enum TypeField {
    Chat(ChatType),
    Other(String),
}

impl<'de> Deserialize<'de> for TypeField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(d)?;
        Ok(match ChatType::parse(&s) {
            Some(t) => TypeField::Chat(t),
            None => TypeField::Other(s.into_owned()),
        })
    }
}

struct Timestamp(OffsetDateTime);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        timestamp_millis::deserialize(d).map(Timestamp)
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let mut f = Fields::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "id" => f.id = Some(map.next_value()?),
                "event" => f.kind = Some(map.next_value()?),
                "timestamp" => f.timestamp = Some(map.next_value::<Timestamp>()?.0),
                "type" => f.kind_type = Some(map.next_value()?),
                "backend" => f.backend = map.next_value()?,
                "detail" => f.detail = map.next_value()?,
                "direction" => f.direction = Some(map.next_value()?),
                "from" => f.from = map.next_value()?,
                "to" => f.to = Some(map.next_value()?),
                "body" => f.body = map.next_value()?,
                "message_id" => f.message_id = map.next_value()?,
                "jid" => f.jid = Some(map.next_value()?),
                "status" => f.status = Some(map.next_value()?),
                "metadata" => f.metadata = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let body = match required(f.kind, "event")?.as_str() {
            "chat" => EventBody::Chat(Chat {
                chat_type: match required(f.kind_type, "type")? {
                    TypeField::Chat(t) => t,
                    TypeField::Other(t) => {
                        return Err(de::Error::unknown_variant(
                            &t,
                            &["chat", "groupchat", "headline", "normal"],
                        ))
                    }
                },
                direction: required(f.direction, "direction")?,
                from: required(f.from, "from")?,
                to: required(f.to, "to")?,
                body: f.body,
                message_id: f.message_id,
            }),
            "presence" => EventBody::Presence(Presence {
                jid: required(f.jid, "jid")?,
                status: required(f.status, "status")?,
            }),
            "unacked" => EventBody::Unacked(Unacked {
                to: required(f.to, "to")?,
                from: f.from,
                body: f.body,
                message_id: f.message_id,
            }),
            "operational" => EventBody::Operational(Operational {
                kind: match required(f.kind_type, "type")? {
                    TypeField::Chat(t) => t.as_str().to_owned(),
                    TypeField::Other(t) => t,
                },
                backend: f.backend,
                detail: f.detail.unwrap_or_default(),
            }),
            other => {
                return Err(de::Error::unknown_variant(
                    other,
                    &["chat", "presence", "unacked", "operational"],
                ))
            }
        };
        Ok(Event {
            id: required(f.id, "id")?,
            body,
            timestamp: required(f.timestamp, "timestamp")?,
            metadata: f.metadata.unwrap_or_default(),
        })
    }
}

/// A metadata value: a boolean, an integer (a float past `i64`), a float or
/// a string, as the untagged derive read it, without buffering.
impl<'de> Deserialize<'de> for MetaValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MetaValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_bool<E>(self, b: bool) -> Result<MetaValue, E> {
                Ok(MetaValue::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<MetaValue, E> {
                Ok(MetaValue::Int(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<MetaValue, E> {
                Ok(i64::try_from(n).map_or(MetaValue::Float(n as f64), MetaValue::Int))
            }
            fn visit_f64<E>(self, x: f64) -> Result<MetaValue, E> {
                Ok(MetaValue::Float(x))
            }
            fn visit_str<E>(self, s: &str) -> Result<MetaValue, E> {
                Ok(MetaValue::String(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<MetaValue, E> {
                Ok(MetaValue::String(s))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refuses_what_is_not_a_record_by_name() {
        let err = |v: serde_json::Value| serde_json::from_value::<Event>(v).unwrap_err().to_string();
        let ts = "2026-11-23T10:00:00.000Z";
        assert!(
            err(json!({"id":"1","event":"chat","timestamp":ts,"type":"chat","direction":"in","to":"b@x"}))
                .contains("`from`")
        );
        assert!(err(json!({"id":"1","event":"poke","timestamp":ts})).contains("unknown variant `poke`"));
        assert!(err(json!({"event":"presence","timestamp":ts,"jid":"a@x","status":"online"})).contains("`id`"));
        assert!(err(json!({"id":"1","event":"presence","timestamp":"soon","jid":"a@x","status":"online"})).len() > 5);
        assert!(err(json!({"id":"1","event":"presence","timestamp":ts,"jid":"a@x","status":"away"})).contains("away"));
        assert!(
            err(json!({"id":"1","event":"presence","timestamp":ts,"jid":"a@x","status":"online","metadata":{"k":[1]}}))
                .len()
                > 5
        );
        // Unknown fields are ignored, as before.
        let ok: Event = serde_json::from_value(
            json!({"id":"1","event":"presence","timestamp":ts,"jid":"a@x","status":"online","extra":{"x":1}}),
        )
        .unwrap();
        assert_eq!(ok.metadata, Metadata::new());
    }
}
