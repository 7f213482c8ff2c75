//! What a notification says, from the event, the backend's `content`
//! setting and the recipient's message count; providers only map it to
//! their wire format.

use std::collections::BTreeMap;

use event_pusher_core::{jid, Event, EventBody};

use super::config::Content;
use super::provider::Notification;

/// What `sender`/`none` content shows instead of the message.
pub const NEW_MESSAGE: &str = "New message";

/// Who a notification goes to: bare `to` of a chat being delivered to a
/// local user (`out`), or of an unacked message. `None` for other events.
pub fn recipient(event: &Event) -> Option<&str> {
    match &event.body {
        EventBody::Chat(c) => Some(jid::bare(&c.to)),
        EventBody::Unacked(u) => Some(jid::bare(&u.to)),
        EventBody::Presence(_) | EventBody::Operational(_) => None,
    }
}

/// The notification for one device.
pub fn build(event: &Event, content: Content, message_count: u64, silent: bool) -> Notification {
    let (sender, body, message_id, kind) = match &event.body {
        EventBody::Chat(c) => (
            Some(c.from.as_str()),
            c.body.as_deref(),
            c.message_id.as_deref(),
            c.chat_type.as_str(),
        ),
        EventBody::Unacked(u) => (u.from.as_deref(), u.body.as_deref(), u.message_id.as_deref(), "unacked"),
        EventBody::Presence(_) => (None, None, None, "presence"),
        EventBody::Operational(_) => (None, None, None, "operational"),
    };
    let sender_bare = sender.map(jid::bare);
    let collapse_key = collapse_key(event);
    let last_sender = match &event.body {
        EventBody::Chat(c) if c.chat_type == event_pusher_core::ChatType::Groupchat => Some(c.from.clone()),
        _ => sender_bare.map(str::to_owned),
    };
    let (title, text) = match content {
        Content::Full => (sender_bare.map(str::to_owned), body.map(str::to_owned)),
        Content::Sender => (sender_bare.map(str::to_owned), Some(NEW_MESSAGE.to_owned())),
        Content::None => (Some(NEW_MESSAGE.to_owned()), None),
    };
    // Metadata first: the fixed keys win over a filter's key of the same name.
    let mut data: BTreeMap<String, String> = event.metadata.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    data.insert("event_id".into(), event.id.clone());
    if let Some(m) = message_id {
        data.insert("message_id".into(), m.to_owned());
    }
    if let Some(f) = sender_bare {
        data.insert("from".into(), f.to_owned());
    }
    data.insert("type".into(), kind.to_owned());
    data.insert("message_count".into(), message_count.to_string());
    Notification {
        event_id: event.id.clone(),
        title: if silent { None } else { title },
        body: if silent { None } else { text },
        badge: message_count,
        data,
        silent,
        collapse_key,
        last_sender,
    }
}

/// The conversation of a notification: the recipient's bare JID and the
/// peer's (chat) or the room's (groupchat), both the bare `from` (a
/// groupchat's full `from` is room/nick). `None` without a sender.
pub fn collapse_key(event: &Event) -> Option<String> {
    let from = match &event.body {
        EventBody::Chat(c) => Some(c.from.as_str()),
        EventBody::Unacked(u) => u.from.as_deref(),
        _ => None,
    }?;
    Some(format!("{} {}", recipient(event)?, jid::bare(from)))
}

/// Whether a message is worth a notification: as MongooseIM, a chat or
/// groupchat message without a body (a chat state, a receipt) is not.
pub fn has_body(event: &Event) -> bool {
    match &event.body {
        EventBody::Chat(c) => c.body.as_deref().is_some_and(|b| !b.is_empty()),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use event_pusher_core::HookTranslator;
    use serde_json::json;

    use super::*;

    fn chat() -> Event {
        HookTranslator
            .translate(
                &json!({"hook": "filter_local_packet", "from": "alice@x/phone", "to": "bob@x",
                "type": "chat", "body": "hi", "id": "m1", "metadata": {"tier": 2}}),
            )
            .unwrap()
    }

    #[test]
    fn content_settings_and_silence_shape_what_is_shown() {
        let e = chat();
        let full = build(&e, Content::Full, 3, false);
        assert_eq!(
            (full.title.as_deref(), full.body.as_deref()),
            (Some("alice@x"), Some("hi"))
        );
        assert_eq!(full.data["message_count"], "3");
        assert_eq!(full.data["tier"], "2");
        assert_eq!(full.data["message_id"], "m1");
        let sender = build(&e, Content::Sender, 1, false);
        assert_eq!(sender.body.as_deref(), Some(NEW_MESSAGE));
        let none = build(&e, Content::None, 1, false);
        assert_eq!((none.title.as_deref(), none.body), (Some(NEW_MESSAGE), None));
        let silent = build(&e, Content::Full, 1, true);
        assert_eq!((silent.title, silent.body), (None, None));
        assert_eq!(recipient(&e), Some("bob@x"));
        assert_eq!(full.collapse_key.as_deref(), Some("bob@x alice@x"));
        assert_eq!(full.last_sender.as_deref(), Some("alice@x"));
    }
}
