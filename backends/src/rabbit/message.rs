//! What gets published for an event: exchange, routing key, body and
//! properties, in MongooseIM's wire format so its consumers keep working.
//!
//! - presence → presence exchange, routing key the lower-case bare JID,
//!   body `{"user_id": "<full jid>", "present": true|false}`;
//! - chat message of type `chat` / `groupchat` with a body → chat /
//!   groupchat exchange, body `{"from_user_id", "to_user_id", "message"}`,
//!   routing key `<from bare>.<sent_topic>` when the user sent it (`in`),
//!   `<to bare>.<recv_topic>` when it is delivered to them (`out`);
//! - JIDs lower-case; event metadata merged at the top level of the body.
//!
//! Everything else (headline, normal, bodiless messages, unacked) is not
//! published, and [`Exchanges::route`] is the one place that decides it:
//! `wants()` and `deliver()` both ask it.

use event_pusher_core::event::{ChatType, Direction, EventBody, PresenceStatus};
use event_pusher_core::{jid, Event, EventClass};
use lapin::types::ShortString;
use lapin::BasicProperties;
use serde_json::{Map, Value};

use super::config::{Exchange, MessageExchange, RabbitConfig};

/// The configured exchanges, by what they carry.
#[derive(Debug, Clone)]
pub struct Exchanges {
    pub presence: Option<Exchange>,
    pub chat: Option<MessageExchange>,
    pub groupchat: Option<MessageExchange>,
}

/// Where an event goes.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    Presence(&'a Exchange),
    Message(&'a MessageExchange),
}

impl Exchanges {
    pub fn from_config(config: &RabbitConfig) -> Exchanges {
        Exchanges {
            presence: config.presence_exchange.clone(),
            chat: config.chat_msg_exchange.clone(),
            groupchat: config.groupchat_msg_exchange.clone(),
        }
    }

    /// The exchange an event is published to, or `None` when this backend
    /// does not publish it. Cheap: runs in the chain for every event.
    pub fn route(&self, event: &Event) -> Option<Route<'_>> {
        match &event.body {
            EventBody::Presence(_) => self.presence.as_ref().map(Route::Presence),
            EventBody::Chat(c) => {
                // MongooseIM skips messages without a body (chat states,
                // receipts, markers); an empty body is just as bodiless.
                if c.body.as_deref().is_none_or(str::is_empty) {
                    return None;
                }
                match c.chat_type {
                    ChatType::Chat => self.chat.as_ref().map(Route::Message),
                    ChatType::Groupchat => self.groupchat.as_ref().map(Route::Message),
                    ChatType::Headline | ChatType::Normal => None,
                }
            }
            EventBody::Unacked(_) | EventBody::Operational(_) => None,
        }
    }

    /// Every configured exchange with its config table name, in a fixed
    /// order, for declaring.
    pub fn all(&self) -> Vec<(&'static str, &Exchange)> {
        let mut out = Vec::new();
        if let Some(e) = &self.presence {
            out.push(("presence_exchange", e));
        }
        if let Some(m) = &self.chat {
            out.push(("chat_msg_exchange", &m.exchange));
        }
        if let Some(m) = &self.groupchat {
            out.push(("groupchat_msg_exchange", &m.exchange));
        }
        out
    }
}

/// One message ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub class: EventClass,
}

/// Build the message for an event; `None` when it is not published.
pub fn outgoing(exchanges: &Exchanges, event: &Event) -> Option<Outgoing> {
    let route = exchanges.route(event)?;
    // Metadata first, so the wire fields below win a name clash: consumers
    // written for MongooseIM rely on them.
    let mut body: Map<String, Value> = event.metadata.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
    let (exchange, routing_key) = match (&event.body, route) {
        (EventBody::Presence(p), Route::Presence(ex)) => {
            body.insert("user_id".into(), Value::String(p.jid.to_lowercase()));
            body.insert("present".into(), Value::Bool(p.status == PresenceStatus::Online));
            (ex, jid::bare(&p.jid).to_lowercase())
        }
        (EventBody::Chat(c), Route::Message(mx)) => {
            body.insert("from_user_id".into(), Value::String(c.from.to_lowercase()));
            body.insert("to_user_id".into(), Value::String(c.to.to_lowercase()));
            body.insert("message".into(), Value::String(c.body.clone().unwrap_or_default()));
            let key = match c.direction {
                Direction::In => format!("{}.{}", jid::bare(&c.from).to_lowercase(), mx.sent_topic),
                Direction::Out => format!("{}.{}", jid::bare(&c.to).to_lowercase(), mx.recv_topic),
            };
            (&mx.exchange, key)
        }
        // `route` only pairs presence with the presence exchange and chat
        // with a message exchange.
        _ => return None,
    };
    Some(Outgoing {
        exchange: exchange.name.clone(),
        routing_key,
        // A map of strings, numbers and booleans always serializes.
        body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
        class: EventClass::of(event),
    })
}

/// An event id too long for an AMQP `message_id` (a short string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event id is {len} bytes long; an AMQP message_id holds at most 255")]
pub struct IdTooLong {
    pub len: usize,
}

/// The AMQP properties: JSON, persistent, the event id as `message_id`
/// (stable across retries, so consumers can drop duplicates), the event
/// time in unix seconds, and the event class as `type`.
pub fn properties(event: &Event, class: EventClass) -> Result<BasicProperties, IdTooLong> {
    let id = ShortString::try_new(event.id.as_str()).map_err(|_| IdTooLong { len: event.id.len() })?;
    Ok(BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_message_id(id)
        .with_timestamp(u64::try_from(event.timestamp.unix_timestamp()).unwrap_or(0))
        .with_type(ShortString::from(class.name())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_pusher_core::HookTranslator;
    use serde_json::json;

    fn exchanges() -> Exchanges {
        let cfg: RabbitConfig = toml::from_str(
            "url = \"amqp://localhost\"\n[presence_exchange]\n[chat_msg_exchange]\n[groupchat_msg_exchange]\nname = \"gc\"\n",
        )
        .unwrap();
        Exchanges::from_config(&cfg)
    }

    fn event(call: Value) -> Event {
        HookTranslator.translate(&call).unwrap()
    }

    fn body(o: &Outgoing) -> Value {
        serde_json::from_slice(&o.body).unwrap()
    }

    #[test]
    fn presence() {
        let e = event(json!({"hook":"user_available","jid":"Alice@LocalHost/Phone"}));
        let o = outgoing(&exchanges(), &e).unwrap();
        assert_eq!(
            (o.exchange.as_str(), o.routing_key.as_str()),
            ("presence", "alice@localhost")
        );
        assert_eq!(body(&o), json!({"user_id": "alice@localhost/phone", "present": true}));
        let e = event(json!({"hook":"unset_presence","jid":"bob@x"}));
        assert_eq!(
            body(&outgoing(&exchanges(), &e).unwrap()),
            json!({"user_id": "bob@x", "present": false})
        );
    }

    #[test]
    fn chat_routing_follows_direction() {
        let sent = event(
            json!({"hook":"user_send_message","from":"Alice@Localhost/Phone","to":"Bob@Localhost","type":"chat","body":"Hi"}),
        );
        let o = outgoing(&exchanges(), &sent).unwrap();
        assert_eq!(
            (o.exchange.as_str(), o.routing_key.as_str()),
            ("chat_msg", "alice@localhost.chat_msg_sent")
        );
        assert_eq!(
            body(&o),
            json!({"from_user_id": "alice@localhost/phone", "to_user_id": "bob@localhost", "message": "Hi"})
        );
        assert_eq!(o.class, EventClass::Chat);
        let recv = event(
            json!({"hook":"filter_local_packet","from":"alice@localhost/phone","to":"Bob@Localhost/Tab","type":"groupchat","body":"x"}),
        );
        let o = outgoing(&exchanges(), &recv).unwrap();
        assert_eq!(
            (o.exchange.as_str(), o.routing_key.as_str()),
            ("gc", "bob@localhost.groupchat_msg_recv")
        );
        assert_eq!(o.class, EventClass::Groupchat);
    }

    #[test]
    fn metadata_is_merged_but_never_overrides_wire_fields() {
        let e = event(json!({"hook":"user_available","jid":"a@x","metadata":{"tier":2,"vip":true,"present":"no"}}));
        let o = outgoing(&exchanges(), &e).unwrap();
        assert_eq!(
            body(&o),
            json!({"user_id": "a@x", "present": true, "tier": 2, "vip": true})
        );
    }

    #[test]
    fn skips_what_mongooseim_skips() {
        let ex = exchanges();
        for call in [
            json!({"hook":"user_send_message","from":"a@x","to":"b@x","type":"headline","body":"x"}),
            json!({"hook":"user_send_message","from":"a@x","to":"b@x","type":"normal","body":"x"}),
            json!({"hook":"user_send_message","from":"a@x","to":"b@x","body":"x"}),
            json!({"hook":"user_send_message","from":"a@x","to":"b@x","type":"chat"}),
            json!({"hook":"user_send_message","from":"a@x","to":"b@x","type":"chat","body":""}),
            json!({"hook":"unacknowledged_message","to":"b@x/r"}),
        ] {
            assert!(ex.route(&event(call.clone())).is_none(), "{call}");
        }
        let only_chat = Exchanges {
            presence: None,
            groupchat: None,
            ..ex
        };
        assert!(only_chat
            .route(&event(json!({"hook":"user_available","jid":"a@x"})))
            .is_none());
        assert!(only_chat
            .route(&event(
                json!({"hook":"user_send_message","from":"a@x","to":"b@x","type":"groupchat","body":"x"})
            ))
            .is_none());
    }

    #[test]
    fn properties_carry_id_time_and_class() {
        let e = event(json!({"hook":"user_available","jid":"a@x","timestamp":"2026-11-23T10:00:00.123Z"}));
        let p = properties(&e, EventClass::Presence).unwrap();
        assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some(e.id.as_str()));
        assert_eq!(*p.timestamp(), Some(1_795_428_000));
        assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some("presence"));
    }
}
