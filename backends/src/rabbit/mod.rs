//! The `rabbit` backend: publish events to RabbitMQ exchanges, in
//! MongooseIM's `mod_event_pusher_rabbit` wire format, with publisher
//! confirms and reconnection so that nothing is lost while the broker is
//! away.
//!
//! ```toml
//! [backends.rabbit.main]
//! url = "amqp://guest:${RABBIT_PASSWORD}@127.0.0.1:5672/%2f"
//! [backends.rabbit.main.presence_exchange]      # each exchange is opt-in;
//! [backends.rabbit.main.chat_msg_exchange]      # an empty table takes
//! [backends.rabbit.main.groupchat_msg_exchange] # MongooseIM's defaults
//! ```
//!
//! - `config.rs`: the `[backends.rabbit.NAME]` keys and the AMQP URI.
//! - `message.rs`: which events are published, and their exchange, routing
//!   key, body and properties.
//! - `declare.rs`: declaring the exchanges, and explaining a refusal.
//! - `channels.rs`: the deadpool pool of confirm-mode channels, pipelining, reconnecting.
//! - `publish.rs`: the `Backend`: one publish, and what its confirm means.

mod channels;
mod config;
mod declare;
mod message;
mod publish;

pub use config::{checked, AmqpUrl, Exchange, ExchangeType, MessageExchange, RabbitConfig, MAX_SHORT_STRING};
pub use message::{outgoing, properties, Exchanges, Outgoing, Route};
pub use publish::RabbitBackend;
