//! What gets published: the topic an event goes to, its MongooseIM-shaped
//! body, its message attributes, and the FIFO ids.
//!
//! Bodies follow MongooseIM's `mod_event_pusher_sns` so existing consumers
//! keep working: presence `{"user_id", "present"}`, messages
//! `{"from_user_id", "to_user_id", "message"}`, every id a lower-case bare
//! JID. The body is a plain `Message` (no `MessageStructure=json`, which
//! AWS rejects without a `default` key).
//!
//! Metadata becomes message attributes, so subscribers can use SNS filter
//! policies on it. Nothing here may fail on odd metadata: an attribute SNS
//! would reject (a bad name, an empty value) is left out rather than let it
//! turn the whole event into a dead letter.

use std::collections::HashMap;

use aws_sdk_sns::types::MessageAttributeValue;
use event_pusher_core::event::{ChatType, Direction, EventBody, MetaValue, PresenceStatus};
use event_pusher_core::{jid, Event, EventClass};
use sha2::{Digest, Sha256};

/// Largest message SNS accepts: body plus attribute names, types and values.
pub const MAX_MESSAGE_BYTES: usize = 262_144;
/// Largest `PublishBatch` request: all entries together.
pub const MAX_BATCH_BYTES: usize = 262_144;
/// Most entries in one `PublishBatch` call.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// Attributes every message carries; metadata with these names is dropped
/// so that the event's own id and class cannot be overwritten.
pub const EVENT_ID_ATTRIBUTE: &str = "event_id";
pub const EVENT_CLASS_ATTRIBUTE: &str = "event_class";

/// Which configured topic an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    Presence,
    Pm,
    Muc,
}

/// The topic an event is published to, before looking at which topics are
/// configured: presence changes, and incoming chat or groupchat messages
/// with a non-empty body (SNS rejects an empty `Message`). Everything else
/// (outgoing copies, headlines, unacked) is not published, as in MongooseIM.
pub fn topic_kind(event: &Event) -> Option<TopicKind> {
    match &event.body {
        EventBody::Presence(_) => Some(TopicKind::Presence),
        EventBody::Chat(c) if c.direction == Direction::In && c.body.as_deref().is_some_and(|b| !b.is_empty()) => {
            match c.chat_type {
                ChatType::Chat => Some(TopicKind::Pm),
                ChatType::Groupchat => Some(TopicKind::Muc),
                ChatType::Headline | ChatType::Normal => None,
            }
        }
        _ => None,
    }
}

/// One message ready to publish.
#[derive(Debug, Clone)]
pub struct Publication {
    pub message: String,
    pub attributes: HashMap<String, MessageAttributeValue>,
    /// For FIFO topics: the user the event is about, so that each user's
    /// events stay in order while different users' go in parallel.
    pub group_id: String,
    /// For FIFO topics: the event id, stable across retries, so SNS drops
    /// a retry of a publish that had in fact succeeded.
    pub deduplication_id: String,
    /// What SNS counts against its size limits.
    pub size: usize,
}

/// Why an event has no publication.
#[derive(Debug, thiserror::Error)]
pub enum NoPublication {
    #[error("event is not one SNS publishes (presence, or an incoming chat/groupchat with a body)")]
    NotPublished,
    #[error("cannot encode the message body: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Build the publication for an event, or say why it has none.
pub fn publication(event: &Event) -> Result<Publication, NoPublication> {
    let body = body(event).ok_or(NoPublication::NotPublished)?;
    let message = serde_json::to_string(&body).map_err(NoPublication::Encode)?;
    let attributes = attributes(event);
    let size = message.len()
        + attributes
            .iter()
            .map(|(k, v)| k.len() + v.data_type().len() + v.string_value().map_or(0, str::len))
            .sum::<usize>();
    Ok(Publication {
        message,
        attributes,
        group_id: fifo_id(&event.user().to_lowercase()),
        deduplication_id: fifo_id(&event.id),
        size,
    })
}

/// MongooseIM's body for an event, with lower-case bare JIDs.
pub fn body(event: &Event) -> Option<serde_json::Value> {
    let id = |j: &str| jid::bare(j).to_lowercase();
    topic_kind(event)?;
    match &event.body {
        EventBody::Presence(p) => Some(serde_json::json!({
            "user_id": id(&p.jid),
            "present": p.status == PresenceStatus::Online,
        })),
        EventBody::Chat(c) => Some(serde_json::json!({
            "from_user_id": id(&c.from),
            "to_user_id": id(&c.to),
            "message": c.body.as_deref().unwrap_or_default(),
        })),
        EventBody::Unacked(_) | EventBody::Operational(_) => None,
    }
}

/// `event_id`, `event_class`, then each metadata entry SNS can carry:
/// strings as `String`, numbers as `Number`, booleans as `String`
/// `"true"`/`"false"` (SNS has no boolean type; filter policies match them
/// as strings).
pub fn attributes(event: &Event) -> HashMap<String, MessageAttributeValue> {
    let mut out = HashMap::with_capacity(event.metadata.len() + 2);
    for (name, value) in &event.metadata {
        if name == EVENT_ID_ATTRIBUTE || name == EVENT_CLASS_ATTRIBUTE {
            continue;
        }
        if !valid_attribute_name(name) {
            tracing::debug!(id = %event.id, attribute = %name, "metadata key is not a valid SNS attribute name; left out");
            continue;
        }
        let (data_type, text) = match value {
            MetaValue::String(s) => ("String", s.clone()),
            MetaValue::Bool(b) => ("String", b.to_string()),
            MetaValue::Int(i) => ("Number", i.to_string()),
            // SNS numbers hold 38 digits between 1e-128 and 1e126; Rust
            // prints floats without an exponent, so keep Number for the
            // range that prints short and exact, String beyond it.
            MetaValue::Float(f) if *f == 0.0 || (1e-15..1e15).contains(&f.abs()) => ("Number", f.to_string()),
            MetaValue::Float(f) => ("String", f.to_string()),
        };
        if text.is_empty() || !text.chars().all(valid_xml_char) {
            tracing::debug!(id = %event.id, attribute = %name, "metadata value is empty or has characters SNS rejects; left out");
            continue;
        }
        insert(&mut out, name, data_type, text);
    }
    insert(&mut out, EVENT_ID_ATTRIBUTE, "String", event.id.clone());
    insert(
        &mut out,
        EVENT_CLASS_ATTRIBUTE,
        "String",
        EventClass::of(event).name().to_owned(),
    );
    out
}

fn insert(out: &mut HashMap<String, MessageAttributeValue>, name: &str, data_type: &str, value: String) {
    // `build` only fails when the data type is missing, and it never is.
    if let Ok(v) = MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
    {
        out.insert(name.to_owned(), v);
    }
}

/// SNS attribute names: up to 256 of `A-Za-z0-9_-.`, no leading, trailing
/// or doubled `.`, and not starting with the reserved `AWS.` or `Amazon.`.
pub fn valid_attribute_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !lower.starts_with("aws.")
        && !lower.starts_with("amazon.")
}

/// The characters SNS (an XML service) accepts in attribute values.
fn valid_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// A FIFO group or deduplication id: up to 128 printable ASCII characters.
/// A value that does not fit (a JID with non-ASCII letters, a very long one)
/// is replaced by a digest of itself, which keeps it stable and distinct.
pub fn fifo_id(value: &str) -> String {
    if !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic()) {
        return value.to_owned();
    }
    let digest = Sha256::digest(value.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256-");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_pusher_core::HookTranslator;

    fn event(v: serde_json::Value) -> Event {
        HookTranslator.translate(&v).unwrap()
    }

    #[test]
    fn routes_like_mongooseim() {
        let chat = |ty: &str, hook: &str, body: Option<&str>| {
            let mut v = serde_json::json!({"hook": hook, "from": "a@x/r", "to": "b@x", "type": ty});
            if let Some(b) = body {
                v["body"] = b.into();
            }
            topic_kind(&event(v))
        };
        assert_eq!(chat("chat", "user_send_message", Some("hi")), Some(TopicKind::Pm));
        assert_eq!(chat("groupchat", "user_send_message", Some("hi")), Some(TopicKind::Muc));
        assert_eq!(chat("chat", "filter_local_packet", Some("hi")), None);
        assert_eq!(chat("headline", "user_send_message", Some("hi")), None);
        assert_eq!(chat("normal", "user_send_message", Some("hi")), None);
        assert_eq!(chat("chat", "user_send_message", None), None);
        assert_eq!(chat("chat", "user_send_message", Some("")), None);
        let p = event(serde_json::json!({"hook": "user_available", "jid": "a@x/r"}));
        assert_eq!(topic_kind(&p), Some(TopicKind::Presence));
        let u = event(serde_json::json!({"hook": "unacknowledged_message", "to": "a@x/r"}));
        assert_eq!(topic_kind(&u), None);
    }

    #[test]
    fn bodies_use_lower_case_bare_jids() {
        let p = event(serde_json::json!({"hook": "unset_presence", "jid": "Alice@LocalHost/Phone"}));
        assert_eq!(
            body(&p).unwrap(),
            serde_json::json!({"user_id": "alice@localhost", "present": false})
        );
        let c = event(
            serde_json::json!({"hook": "user_send_message", "from": "Alice@LocalHost/Phone",
            "to": "BOB@localhost/x", "type": "chat", "body": "Hi \"Bob\""}),
        );
        assert_eq!(
            body(&c).unwrap(),
            serde_json::json!({"from_user_id": "alice@localhost", "to_user_id": "bob@localhost", "message": "Hi \"Bob\""})
        );
        let pb = publication(&c).unwrap();
        assert_eq!(pb.group_id, "alice@localhost");
        assert_eq!(pb.deduplication_id, c.id);
    }

    #[test]
    fn metadata_becomes_typed_attributes() {
        let e = event(serde_json::json!({"hook": "user_available", "jid": "a@x",
            "metadata": {"source": "sidecar", "tier": 2, "vip": true, "ratio": 0.25, "huge": 1e30,
                         "empty": "", "bad name": "x", "AWS.thing": "x", "event_id": "forged"}}));
        let a = attributes(&e);
        let get = |k: &str| {
            a.get(k)
                .map(|v| (v.data_type().to_owned(), v.string_value().unwrap_or("").to_owned()))
        };
        let pair = |t: &str, v: &str| Some((t.to_owned(), v.to_owned()));
        assert_eq!(get("source"), pair("String", "sidecar"));
        assert_eq!(get("tier"), pair("Number", "2"));
        assert_eq!(get("vip"), pair("String", "true"));
        assert_eq!(get("ratio"), pair("Number", "0.25"));
        assert_eq!(get("huge").map(|p| p.0), Some("String".to_owned()));
        assert_eq!(get("event_id"), pair("String", &e.id));
        assert_eq!(get("event_class"), pair("String", "presence"));
        for gone in ["empty", "bad name", "AWS.thing"] {
            assert!(!a.contains_key(gone), "{gone}");
        }
        assert_eq!(a.len(), 7);
    }

    #[test]
    fn attribute_names() {
        assert!(valid_attribute_name("tier.level-2_x"));
        for bad in ["", ".a", "a.", "a..b", "a b", "aws.x", "Amazon.y", "é"] {
            assert!(!valid_attribute_name(bad), "{bad}");
        }
    }

    #[test]
    fn fifo_ids_fit_sns_rules() {
        assert_eq!(fifo_id("alice@localhost"), "alice@localhost");
        let odd = fifo_id("jörg@localhost");
        assert!(odd.starts_with("sha256-") && odd.len() == 71, "{odd}");
        assert_eq!(odd, fifo_id("jörg@localhost"));
        assert_ne!(odd, fifo_id("jorg@localhost"));
        assert!(fifo_id(&"a".repeat(200)).len() <= 128);
    }

    #[test]
    fn size_counts_body_and_attributes() {
        let e = event(serde_json::json!({"hook": "user_available", "jid": "a@x", "metadata": {"k": "vv"}}));
        let p = publication(&e).unwrap();
        let attrs: usize = [
            ("k", "String", "vv"),
            ("event_id", "String", e.id.as_str()),
            ("event_class", "String", "presence"),
        ]
        .iter()
        .map(|(a, b, c)| a.len() + b.len() + c.len())
        .sum();
        assert_eq!(p.size, p.message.len() + attrs);
    }
}
