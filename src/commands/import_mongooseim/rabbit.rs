//! `mod_event_pusher`'s rabbit backend → `[backends.rabbit.mongooseim]`.
//!
//! The exchanges keep their names, types and topics, and their durability
//! explicitly: MongooseIM declares them transient by default while
//! event-pusher's default is durable, and RabbitMQ refuses to re-declare an
//! existing exchange with another durability. The connection comes from the
//! pool MongooseIM requires for it, `[outgoing_pools.rabbit.event_pusher]`.

use super::output::{Line, Section, Value};
use super::pools;
use super::reader::{Result, Table};

pub const NAME: &str = "mongooseim";
const TYPES: [&str; 4] = ["topic", "direct", "fanout", "headers"];

/// `module`: the `rabbit` table (5.1+: exchanges are opt-in) or, with
/// `legacy`, the older `backend.rabbit` (all three exchanges always on).
pub fn import(root: &Table<'_, '_>, module: &Table<'_, '_>, legacy: bool) -> Result<Vec<Section>> {
    const EXCHANGES: [&str; 3] = ["presence_exchange", "chat_msg_exchange", "groupchat_msg_exchange"];
    module.check_keys(&EXCHANGES)?;
    // A mistyped exchange setting is reported before a missing pool.
    for ex in EXCHANGES {
        if let Some(t) = module.table(ex)? {
            t.check_keys(&exchange_keys(ex))?;
        }
    }
    let Some(pool_table) = pools::find(root, "rabbit", "event_pusher")? else {
        return Err(module.error(
            "mod_event_pusher's rabbit backend publishes through [outgoing_pools.rabbit.event_pusher], \
             which this file does not define",
        ));
    };
    let pool = pools::rabbit(&pool_table)?;
    let mut main = Section::new(format!("backends.rabbit.{NAME}"));
    main.notes
        .push(format!("From [{}] and [{}].", module.path(), pool_table.path()));
    main.lines.push(Line::set_noted(
        "url",
        Value::Str(pool.url),
        "from the pool's connection; to keep the password out of this file, write \"${RABBIT_URL}\"",
    ));
    main.lines.extend(pool.unmapped);
    let mut sections = vec![main];
    let mut any = false;
    for ex in EXCHANGES {
        let table = module.table(ex)?;
        if table.is_none() && !legacy {
            continue;
        }
        any = true;
        let mut s = Section::new(format!("backends.rabbit.{NAME}.{ex}"));
        let defaults = match ex {
            "presence_exchange" => ["presence", "", ""],
            "chat_msg_exchange" => ["chat_msg", "chat_msg_sent", "chat_msg_recv"],
            _ => ["groupchat_msg", "groupchat_msg_sent", "groupchat_msg_recv"],
        };
        let read = |key: &str, default: &str| -> Result<String> {
            Ok(match &table {
                Some(t) => t.str(key)?.map(|v| v.value),
                None => None,
            }
            .unwrap_or_else(|| default.to_owned()))
        };
        if let Some(t) = &table {
            if let Some(kind) = t.str("type")? {
                if !TYPES.contains(&kind.value.as_str()) {
                    return Err(t.error_at(
                        "type",
                        kind.span,
                        format!(
                            "exchange type \"{}\" is not supported by event-pusher (expected {})",
                            kind.value,
                            TYPES.join(", ")
                        ),
                    ));
                }
            }
        }
        s.lines.push(Line::set("name", Value::Str(read("name", defaults[0])?)));
        s.lines.push(Line::set("type", Value::Str(read("type", "topic")?)));
        let durable = match &table {
            Some(t) => t.bool("durable")?.map(|d| d.value),
            None => None,
        };
        s.lines.push(match durable {
            Some(d) => Line::set("durable", Value::Bool(d)),
            None => Line::set_noted(
                "durable",
                Value::Bool(false),
                "MongooseIM's default; RabbitMQ refuses to re-declare an exchange with another durability",
            ),
        });
        if ex != "presence_exchange" {
            s.lines
                .push(Line::set("sent_topic", Value::Str(read("sent_topic", defaults[1])?)));
            s.lines
                .push(Line::set("recv_topic", Value::Str(read("recv_topic", defaults[2])?)));
        }
        sections.push(s);
    }
    if !any {
        sections[0].lines.push(Line::Note(
            "MongooseIM enables no exchange here, so nothing is published: add presence_exchange, chat_msg_exchange or groupchat_msg_exchange".into(),
        ));
    }
    Ok(sections)
}

/// The settings an exchange table may hold.
fn exchange_keys(exchange: &str) -> Vec<&'static str> {
    let mut keys = vec!["name", "type", "durable"];
    if exchange != "presence_exchange" {
        keys.extend(["sent_topic", "recv_topic"]);
    }
    keys
}
