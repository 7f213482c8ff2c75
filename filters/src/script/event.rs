//! The `event` a script sees: the canonical record as an object whose
//! fields read like the JSON form (`event.from`, `event.body`, ...; a field
//! the record lacks reads as `()`), all read-only but `metadata`.
//!
//! The record is moved in and out rather than copied: the filter lends it
//! for the call and takes it back. Metadata writes are validated as they
//! happen (so an error names the script line) and kept apart until the call
//! succeeds, so a script that fails halfway leaves the event untouched.
//!
//! A field is read straight from the record when the script asks for it;
//! nothing is converted up front. The enumerated fields (`event`, `type`,
//! `direction`, `status`) read as strings made once per process.

use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use event_pusher_core::event::{EventBody, PresenceStatus};
use event_pusher_core::{Event, MetaValue, Metadata};
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map};

/// The fields a script can read, in canonical order.
const FIELDS: [&str; 12] = [
    "id",
    "event",
    "timestamp",
    "type",
    "direction",
    "from",
    "to",
    "jid",
    "status",
    "body",
    "message_id",
    "metadata",
];

/// Every value an enumerated field can have, as the script sees it.
const WORDS: [&str; 11] = [
    "chat",
    "presence",
    "unacked",
    "operational",
    "groupchat",
    "headline",
    "normal",
    "in",
    "out",
    "online",
    "offline",
];

/// [`WORDS`] as Rhai strings, allocated once: reading `event.event` then
/// costs a reference count, not an allocation.
static SHARED_WORDS: LazyLock<[ImmutableString; 11]> = LazyLock::new(|| WORDS.map(ImmutableString::from));

/// `w` as a Rhai string, shared when it is one of [`WORDS`].
fn word(w: &'static str) -> Dynamic {
    match WORDS.iter().position(|x| *x == w) {
        Some(i) => Dynamic::from(SHARED_WORDS[i].clone()),
        None => Dynamic::from(ImmutableString::from(w)),
    }
}

/// Why a metadata value a script assigned cannot be kept.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata `{key}` must be a finite number, not {value}")]
    NotFinite { key: String, value: f64 },
    #[error("metadata `{key}` must be a string, integer, float or boolean, not {type_name}")]
    WrongType { key: String, type_name: &'static str },
}

impl From<MetadataError> for Box<EvalAltResult> {
    /// Raised inside the script: Rhai reports it with the script position.
    fn from(e: MetadataError) -> Self {
        e.to_string().into()
    }
}

/// The script's handle on one event. Clones share the event, so
/// `let e = event; e.metadata.x = 1` writes to it too.
#[derive(Clone)]
pub struct ScriptEvent {
    inner: Arc<Lent>,
}

struct Lent {
    event: Event,
    /// `Some` once the script assigned metadata: the whole new table.
    metadata: Mutex<Option<Metadata>>,
}

impl ScriptEvent {
    /// Lend `event` to a script call.
    pub fn lend(event: Event) -> Self {
        ScriptEvent {
            inner: Arc::new(Lent {
                event,
                metadata: Mutex::new(None),
            }),
        }
    }

    /// Take the event back: with the script's metadata when `keep_writes`,
    /// as it came in otherwise.
    pub fn give_back(self, keep_writes: bool) -> Event {
        // The script's scope, and with it every clone, is gone once the call
        // returns; the fallback copy is for a clone that somehow outlived it.
        let lent = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Lent {
            event: shared.event.clone(),
            metadata: Mutex::new(shared.metadata.lock().unwrap_or_else(PoisonError::into_inner).clone()),
        });
        let mut event = lent.event;
        if keep_writes {
            if let Some(m) = lent.metadata.into_inner().unwrap_or_else(PoisonError::into_inner) {
                event.metadata = m;
            }
        }
        event
    }

    fn field(&self, name: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        let e = &self.inner.event;
        let s = |v: &str| Dynamic::from(ImmutableString::from(v));
        let opt = |v: &Option<String>| v.as_deref().map_or(Dynamic::UNIT, s);
        Ok(match (name, &e.body) {
            ("id", _) => s(&e.id),
            ("event", EventBody::Chat(_)) => word("chat"),
            ("event", EventBody::Presence(_)) => word("presence"),
            ("event", EventBody::Unacked(_)) => word("unacked"),
            ("event", EventBody::Operational(_)) => word("operational"),
            ("type", EventBody::Operational(o)) => s(&o.kind),
            ("timestamp", _) => s(&event_pusher_core::event::timestamp_millis::format(&e.timestamp)),
            ("type", EventBody::Chat(c)) => word(c.chat_type.as_str()),
            ("direction", EventBody::Chat(c)) => word(c.direction.as_str()),
            ("from", EventBody::Chat(c)) => s(&c.from),
            ("from", EventBody::Unacked(u)) => opt(&u.from),
            ("to", EventBody::Chat(c)) => s(&c.to),
            ("to", EventBody::Unacked(u)) => s(&u.to),
            ("jid", EventBody::Presence(p)) => s(&p.jid),
            ("status", EventBody::Presence(p)) => word(match p.status {
                PresenceStatus::Online => "online",
                PresenceStatus::Offline => "offline",
            }),
            ("body", EventBody::Chat(c)) => opt(&c.body),
            ("body", EventBody::Unacked(u)) => opt(&u.body),
            ("message_id", EventBody::Chat(c)) => opt(&c.message_id),
            ("message_id", EventBody::Unacked(u)) => opt(&u.message_id),
            ("metadata", _) => Dynamic::from_map(self.metadata_map()),
            (name, _) if FIELDS.contains(&name) => Dynamic::UNIT,
            (name, _) => return Err(format!("event has no field `{name}` (fields: {})", FIELDS.join(", ")).into()),
        })
    }

    fn metadata_map(&self) -> Map {
        let written = self.inner.metadata.lock().unwrap_or_else(PoisonError::into_inner);
        let current = written.as_ref().unwrap_or(&self.inner.event.metadata);
        current
            .iter()
            .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
            .collect()
    }

    fn set_metadata(&mut self, map: Map) -> Result<(), Box<EvalAltResult>> {
        let metadata = map
            .into_iter()
            .map(|(k, v)| from_dynamic(&k, v).map(|v| (k.to_string(), v)))
            .collect::<Result<Metadata, MetadataError>>()?;
        *self.inner.metadata.lock().unwrap_or_else(PoisonError::into_inner) = Some(metadata);
        Ok(())
    }

    fn to_json(&self) -> String {
        let mut e = self.inner.event.clone();
        if let Some(m) = self
            .inner
            .metadata
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            e.metadata = m.clone();
        }
        String::from_utf8_lossy(&e.to_json()).into_owned()
    }
}

fn to_dynamic(v: &MetaValue) -> Dynamic {
    match v {
        MetaValue::Bool(b) => Dynamic::from_bool(*b),
        MetaValue::Int(i) => Dynamic::from_int(*i),
        MetaValue::Float(f) => Dynamic::from_float(*f),
        MetaValue::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
    }
}

fn from_dynamic(key: &str, v: Dynamic) -> Result<MetaValue, MetadataError> {
    if let Ok(b) = v.as_bool() {
        return Ok(MetaValue::Bool(b));
    }
    if let Ok(i) = v.as_int() {
        return Ok(MetaValue::Int(i));
    }
    if let Ok(f) = v.as_float() {
        return if f.is_finite() {
            Ok(MetaValue::Float(f))
        } else {
            Err(MetadataError::NotFinite {
                key: key.to_owned(),
                value: f,
            })
        };
    }
    if v.is_string() {
        return Ok(MetaValue::String(v.into_string().unwrap_or_default()));
    }
    Err(MetadataError::WrongType {
        key: key.to_owned(),
        type_name: v.type_name(),
    })
}

/// Make `Event` known to the engine: a getter per field, an error for
/// writing any of them but `metadata`.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ScriptEvent>("Event");
    for name in FIELDS {
        engine.register_get(name, move |e: &mut ScriptEvent| e.field(name));
        if name != "metadata" {
            engine.register_set(
                name,
                move |_: &mut ScriptEvent, _: Dynamic| -> Result<(), Box<EvalAltResult>> {
                    Err(format!("event.{name} is read-only: a script may change only event.metadata").into())
                },
            );
        }
    }
    engine.register_set("metadata", |e: &mut ScriptEvent, m: Map| e.set_metadata(m));
    engine.register_set(
        "metadata",
        |_: &mut ScriptEvent, v: Dynamic| -> Result<(), Box<EvalAltResult>> {
            Err(format!("event.metadata must be an object map, not {}", v.type_name()).into())
        },
    );
    engine.register_indexer_get(|e: &mut ScriptEvent, name: &str| e.field(name));
    engine.register_fn("to_string", |e: &mut ScriptEvent| e.to_json());
    engine.register_fn("to_debug", |e: &mut ScriptEvent| e.to_json());
}
