//! `[backends.rabbit.NAME]` and its three opt-in exchange tables.
//!
//! Every value is checked while it is deserialized, so a mistake is
//! reported at its own line and column: the URI, exchange names and topics
//! (AMQP short strings, at most 255 bytes) and the numeric limits.

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::common::backend_config;
pub use crate::transport::amqp::AmqpUrl;

/// AMQP short strings (exchange names, routing keys, property values) hold
/// at most this many bytes.
pub const MAX_SHORT_STRING: usize = 255;

backend_config! {
pub struct RabbitConfig {
    /// `amqp://user:password@host:5672/vhost` (or `amqps://`).
    pub url: AmqpUrl,
    /// Publishing channels, each on its own connection.
    #[serde(
        default = "default_pool_size",
        deserialize_with = "event_pusher_config::types::positive"
    )]
    pub pool_size: usize,
    /// How long to wait for the broker's ack of one publish.
    #[serde(
        default = "default_confirm_timeout_ms",
        deserialize_with = "event_pusher_config::types::positive_ms"
    )]
    pub confirm_timeout_ms: u64,
    /// Unconfirmed publishes kept in flight per channel.
    #[serde(
        default = "default_max_in_flight",
        deserialize_with = "event_pusher_config::types::positive"
    )]
    pub max_in_flight: usize,
    /// Publish with the `mandatory` flag: a message no queue is bound to
    /// receive comes back and ends in dead letters instead of vanishing.
    #[serde(default)]
    pub mandatory: bool,
    #[serde(default, deserialize_with = "presence_exchange")]
    pub presence_exchange: Option<Exchange>,
    #[serde(default, deserialize_with = "chat_msg_exchange")]
    pub chat_msg_exchange: Option<MessageExchange>,
    #[serde(default, deserialize_with = "groupchat_msg_exchange")]
    pub groupchat_msg_exchange: Option<MessageExchange>,
}
}

fn default_pool_size() -> usize {
    2
}

fn default_confirm_timeout_ms() -> u64 {
    10_000
}

fn default_max_in_flight() -> usize {
    256
}

/// The exchange types RabbitMQ ships with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    #[default]
    Topic,
    Direct,
    Fanout,
    Headers,
}

impl ExchangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeType::Topic => "topic",
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Headers => "headers",
        }
    }

    pub(crate) fn to_lapin(self) -> lapin::ExchangeKind {
        match self {
            ExchangeType::Topic => lapin::ExchangeKind::Topic,
            ExchangeType::Direct => lapin::ExchangeKind::Direct,
            ExchangeType::Fanout => lapin::ExchangeKind::Fanout,
            ExchangeType::Headers => lapin::ExchangeKind::Headers,
        }
    }
}

impl fmt::Display for ExchangeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One exchange we declare and publish to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub name: String,
    pub kind: ExchangeType,
    pub durable: bool,
}

/// A message exchange, with the topics that end its routing keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageExchange {
    pub exchange: Exchange,
    /// Routing key suffix for messages a user sent (direction `in`).
    pub sent_topic: String,
    /// Routing key suffix for messages delivered to a user (direction `out`).
    pub recv_topic: String,
}

/// `[backends.rabbit.NAME.presence_exchange]`, as written. Every key is
/// optional: an empty table turns the exchange on with MongooseIM's defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceTable {
    name: Option<String>,
    #[serde(rename = "type", default)]
    kind: ExchangeType,
    durable: Option<bool>,
}

/// `[backends.rabbit.NAME.chat_msg_exchange]` or `groupchat_msg_exchange`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageTable {
    name: Option<String>,
    #[serde(rename = "type", default)]
    kind: ExchangeType,
    durable: Option<bool>,
    sent_topic: Option<String>,
    recv_topic: Option<String>,
}

fn presence_exchange<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Exchange>, D::Error> {
    let t = PresenceTable::deserialize(d)?;
    let name = checked("name", t.name.unwrap_or_else(|| "presence".into())).map_err(serde::de::Error::custom)?;
    Ok(Some(Exchange {
        name,
        kind: t.kind,
        durable: t.durable.unwrap_or(true),
    }))
}

fn chat_msg_exchange<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MessageExchange>, D::Error> {
    message_exchange(
        MessageTable::deserialize(d)?,
        ["chat_msg", "chat_msg_sent", "chat_msg_recv"],
    )
    .map(Some)
    .map_err(serde::de::Error::custom)
}

fn groupchat_msg_exchange<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MessageExchange>, D::Error> {
    message_exchange(
        MessageTable::deserialize(d)?,
        ["groupchat_msg", "groupchat_msg_sent", "groupchat_msg_recv"],
    )
    .map(Some)
    .map_err(serde::de::Error::custom)
}

/// Fill in MongooseIM's defaults (`[name, sent_topic, recv_topic]`).
fn message_exchange(t: MessageTable, defaults: [&str; 3]) -> Result<MessageExchange, NameError> {
    let [name, sent, recv] = defaults;
    Ok(MessageExchange {
        exchange: Exchange {
            name: checked("name", t.name.unwrap_or_else(|| name.into()))?,
            kind: t.kind,
            durable: t.durable.unwrap_or(true),
        },
        sent_topic: checked("sent_topic", t.sent_topic.unwrap_or_else(|| sent.into()))?,
        recv_topic: checked("recv_topic", t.recv_topic.unwrap_or_else(|| recv.into()))?,
    })
}

/// An exchange name or topic that is not a usable AMQP short string;
/// `key` is its config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("`{key}` must not be empty")]
    Empty { key: String },
    #[error("`{key}` is {len} bytes long; AMQP allows at most {MAX_SHORT_STRING}")]
    TooLong { key: String, len: usize },
    #[error("`{key}` contains control characters")]
    ControlCharacters { key: String },
}

/// A name or topic must be a usable AMQP short string. An empty exchange
/// name would mean the default exchange, which cannot be declared. Also
/// used by the AMQP ingest source for its exchange name.
pub fn checked(key: &str, value: String) -> Result<String, NameError> {
    let key = || key.to_owned();
    if value.is_empty() {
        return Err(NameError::Empty { key: key() });
    }
    if value.len() > MAX_SHORT_STRING {
        return Err(NameError::TooLong {
            key: key(),
            len: value.len(),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(NameError::ControlCharacters { key: key() });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<RabbitConfig, toml::de::Error> {
        let text = format!("url = \"amqp://guest:secret@127.0.0.1:5672/%2f\"\n{extra}");
        toml::from_str::<RabbitConfig>(&text)
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.priority, event_pusher_config::Priority(50));
        assert_eq!(c.concurrency, 32);
        assert_eq!(c.pool_size, 2);
        assert_eq!(c.max_in_flight, 256);
        assert_eq!(c.confirm_timeout_ms, 10_000);
        assert!(!c.mandatory);
        assert!(c.presence_exchange.is_none() && c.chat_msg_exchange.is_none() && c.groupchat_msg_exchange.is_none());
    }

    #[test]
    fn empty_exchange_tables_take_mongooseim_defaults() {
        let c = parse("[presence_exchange]\n[chat_msg_exchange]\n[groupchat_msg_exchange]\n").unwrap();
        assert_eq!(
            c.presence_exchange,
            Some(Exchange {
                name: "presence".into(),
                kind: ExchangeType::Topic,
                durable: true
            })
        );
        let chat = c.chat_msg_exchange.unwrap();
        assert_eq!(chat.exchange.name, "chat_msg");
        assert_eq!(
            (chat.sent_topic.as_str(), chat.recv_topic.as_str()),
            ("chat_msg_sent", "chat_msg_recv")
        );
        let gc = c.groupchat_msg_exchange.unwrap();
        assert_eq!(gc.exchange.name, "groupchat_msg");
        assert_eq!(
            (gc.sent_topic.as_str(), gc.recv_topic.as_str()),
            ("groupchat_msg_sent", "groupchat_msg_recv")
        );
        assert!(gc.exchange.durable);
    }

    #[test]
    fn exchange_keys_are_read() {
        let c = parse(
            "[chat_msg_exchange]\nname = \"chats\"\ntype = \"direct\"\ndurable = false\nsent_topic = \"s\"\nrecv_topic = \"r\"\n",
        )
        .unwrap();
        let chat = c.chat_msg_exchange.unwrap();
        assert_eq!(
            chat.exchange,
            Exchange {
                name: "chats".into(),
                kind: ExchangeType::Direct,
                durable: false
            }
        );
        assert_eq!((chat.sent_topic.as_str(), chat.recv_topic.as_str()), ("s", "r"));
    }

    #[test]
    fn rejects_bad_values_with_a_reason() {
        let e = parse("[presence_exchange]\nsent_topic = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sent_topic"), "{e}");
        let e = parse("[presence_exchange]\ntype = \"fan\"\n").unwrap_err().to_string();
        assert!(e.contains("fan") && e.contains("topic"), "{e}");
        let e = parse("[chat_msg_exchange]\nname = \"\"\n").unwrap_err().to_string();
        assert!(e.contains("`name` must not be empty"), "{e}");
        let e = parse(&format!("[chat_msg_exchange]\nsent_topic = \"{}\"\n", "x".repeat(300)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 255"), "{e}");
        assert!(parse("pool_size = 0").unwrap_err().to_string().contains("at least 1"));
        assert!(parse("max_in_flight = 0")
            .unwrap_err()
            .to_string()
            .contains("at least 1"));
        assert!(parse("confirm_timeout_ms = 0")
            .unwrap_err()
            .to_string()
            .contains("at least 1"));
        assert!(parse("exchange = \"x\"").unwrap_err().to_string().contains("exchange"));
    }

    #[test]
    fn a_bad_uri_is_reported_at_the_key() {
        let e = toml::from_str::<RabbitConfig>("url = \"ftp://x/\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must start with amqp://"), "{e}");
    }
}
