//! The filters and backends the benchmarks share, and the records and wire
//! messages the sidecar produces for a mix, computed in-process so the raw
//! baselines move exactly the same bytes.

use async_trait::async_trait;
use bytes::Bytes;
use event_pusher_core::event::{ChatType, Direction, EventBody};
use event_pusher_core::{
    jid, AnyBackend, Backend, Chain, ChainBuilder, Delivery, DeliveryError, Event, EventClass, EventClasses,
    HookTranslator,
};
use event_pusher_filters::{DeclarativeFilter, FilterConfig};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::mix::{Mix, MixGen};

/// Three declarative filters: tag presence, tag groupchat, drop spam (a
/// body regex that runs on every chat message and never matches the mix).
pub const FILTERS_TOML: &str = r#"
[[filters]]
name = "tag-presence"
priority = 10
match = { event = "presence" }
metadata = { source = "sidecar", tier = 2 }

[[filters]]
name = "tag-muc"
priority = 20
match = { event = "chat", type = "groupchat" }
metadata = { muc = true }

[[filters]]
name = "drop-spam"
priority = 30
match = { event = "chat", body_regex = "(?i)^buy now" }
action = "stop"
"#;

#[derive(Deserialize)]
struct FiltersDoc {
    filters: Vec<FilterConfig>,
}

pub fn filter_configs() -> Vec<FilterConfig> {
    toml::from_str::<FiltersDoc>(FILTERS_TOML)
        .expect("bench filters parse")
        .filters
}

/// A backend that claims everything and delivers nothing (chain benches).
pub struct ClaimAll;

#[async_trait]
impl Backend for ClaimAll {
    const KIND: &'static str = "bench-all";
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        batch.iter().map(|_| Ok(())).collect()
    }
}

/// Claims what a RabbitMQ backend with all three exchanges would: presence,
/// and chat / groupchat messages with a body.
pub struct ClaimLikeRabbit;

#[async_trait]
impl Backend for ClaimLikeRabbit {
    const KIND: &'static str = "bench-rabbit";
    fn wants(&self, event: &Event) -> bool {
        match &event.body {
            EventBody::Presence(_) => true,
            EventBody::Chat(c) => {
                c.body.as_deref().is_some_and(|b| !b.is_empty())
                    && matches!(c.chat_type, ChatType::Chat | ChatType::Groupchat)
            }
            EventBody::Unacked(_) | EventBody::Operational(_) => false,
        }
    }
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        batch.iter().map(|_| Ok(())).collect()
    }
}

/// The chain of the chain benchmark: the three filters, then two backends
/// at priority 50 (one claims all, one claims like RabbitMQ).
pub fn bench_chain() -> Chain {
    let mut b = ChainBuilder::new();
    for f in filter_configs() {
        b = b.filter(f.name.get_ref().clone(), f.priority.0, DeclarativeFilter::new(&f));
    }
    let rabbit: EventClasses = [EventClass::Presence, EventClass::Chat, EventClass::Groupchat]
        .into_iter()
        .collect();
    b.backend("http", 50, EventClasses::ALL, AnyBackend::new(ClaimAll))
        .backend("rabbit", 50, rabbit, AnyBackend::new(ClaimLikeRabbit))
        .build()
}

/// The three filters and one backend claiming everything: what the e2e
/// sidecar configs run (one http or rabbit backend).
pub fn single_backend_chain() -> Chain {
    let mut b = ChainBuilder::new();
    for f in filter_configs() {
        b = b.filter(f.name.get_ref().clone(), f.priority.0, DeclarativeFilter::new(&f));
    }
    b.backend("one", 50, EventClasses::ALL, AnyBackend::new(ClaimAll))
        .build()
}

/// Events as the sidecar stores them for a backend that claims everything:
/// translated (fresh ids), through the filters, canonical JSON.
pub fn events(seed: u64, mix: Mix, n: usize) -> Vec<Event> {
    let chain = single_backend_chain();
    let mut gen = MixGen::new(seed, mix);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let call = gen.next_call();
        let mut e = HookTranslator.translate(&call).expect("mix calls are valid");
        let o = chain.run(&mut e, &mut event_pusher_core::state_change::Changes::new());
        if !o.claims.is_empty() {
            out.push(e);
        }
    }
    out
}

/// The canonical JSON records (spool values, HTTP bodies) of `events`.
pub fn records(events: &[Event]) -> Vec<Bytes> {
    events.iter().map(|e| Bytes::from(e.to_json())).collect()
}

/// One RabbitMQ message as the rabbit backend publishes it (MongooseIM wire
/// format), for the raw lapin baseline.
#[derive(Debug, Clone)]
pub struct RabbitMsg {
    pub routing_key: String,
    pub body: Vec<u8>,
    pub message_id: String,
    pub timestamp: u64,
    pub class: &'static str,
}

/// The chat-exchange message of a one-to-one chat event (`sent_topic` and
/// `recv_topic` as MongooseIM's defaults); `None` for anything else.
pub fn rabbit_chat_message(event: &Event) -> Option<RabbitMsg> {
    let EventBody::Chat(c) = &event.body else { return None };
    if c.chat_type != ChatType::Chat || c.body.as_deref().is_none_or(str::is_empty) {
        return None;
    }
    let mut body: Map<String, Value> = event.metadata.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
    body.insert("from_user_id".into(), Value::String(c.from.to_lowercase()));
    body.insert("to_user_id".into(), Value::String(c.to.to_lowercase()));
    body.insert("message".into(), Value::String(c.body.clone().unwrap_or_default()));
    let routing_key = match c.direction {
        Direction::In => format!("{}.chat_msg_sent", jid::bare(&c.from).to_lowercase()),
        Direction::Out => format!("{}.chat_msg_recv", jid::bare(&c.to).to_lowercase()),
    };
    Some(RabbitMsg {
        routing_key,
        body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
        message_id: event.id.clone(),
        timestamp: u64::try_from(event.timestamp.unix_timestamp()).unwrap_or(0),
        class: EventClass::of(event).name(),
    })
}

/// Mean and range of record sizes, for tables.
pub fn size_stats(records: &[Bytes]) -> (f64, usize, usize) {
    if records.is_empty() {
        return (0.0, 0, 0);
    }
    let total: usize = records.iter().map(Bytes::len).sum();
    let min = records.iter().map(Bytes::len).min().unwrap_or(0);
    let max = records.iter().map(Bytes::len).max().unwrap_or(0);
    (total as f64 / records.len() as f64, min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_claims_and_tags() {
        let chain = bench_chain();
        let mut gen = MixGen::new(3, Mix::Standard);
        let mut claims = 0;
        for _ in 0..1000 {
            let mut e = HookTranslator.translate(&gen.next_call()).unwrap();
            claims += chain
                .run(&mut e, &mut event_pusher_core::state_change::Changes::new())
                .claims
                .len();
        }
        assert!(claims > 1500, "{claims}");
        let ev = events(3, Mix::Standard, 100);
        assert!(ev.iter().any(|e| e.metadata.contains_key("tier")));
        assert!(ev.iter().any(|e| e.metadata.contains_key("muc")));
    }

    #[test]
    fn chat_mix_is_all_rabbit_chat() {
        let ev = events(5, Mix::Chat, 200);
        assert!(ev.iter().all(|e| rabbit_chat_message(e).is_some()));
    }
}
