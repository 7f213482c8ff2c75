//! The `sns` backend: publish presence and chat events to Amazon SNS topics
//! in MongooseIM's wire format, with metadata as message attributes.
//!
//! - `config.rs`: the `[backends.sns.NAME]` keys and their checks.
//! - `message.rs`: which topic an event goes to, its body, its message
//!   attributes and its FIFO ids.
//! - `publish.rs`: the AWS client, `Publish` and `PublishBatch`, and one
//!   result per event.
//! - `error.rs`: which AWS errors are retried and which are dead-lettered.
//! - `topics.rs`: checking (or, with `create_topics`, creating) the topics
//!   at start.

mod config;
mod error;
mod message;
mod publish;
mod topics;

pub use config::{Secret, SnsConfig};
pub use message::{
    attributes, body, fifo_id, topic_kind, valid_attribute_name, TopicKind, EVENT_CLASS_ATTRIBUTE, EVENT_ID_ATTRIBUTE,
    MAX_BATCH_ENTRIES, MAX_MESSAGE_BYTES,
};
pub use publish::SnsBackend;
