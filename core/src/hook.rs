//! Hook translators: the chat server's hook calls in, standard event records
//! out.
//!
//! A hook call is a JSON object named after the MongooseIM hook it reports
//! (`user_send_message`, `filter_local_packet`, `user_available`,
//! `unset_presence`, `unacknowledged_message`). Translation is strict: any
//! missing or ill-typed field is an error that names the field, so that a
//! request is either wholly valid or wholly refused.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::event::{
    timestamp_millis, Chat, ChatType, Direction, Event, EventBody, Metadata, Presence, PresenceStatus, Unacked,
};
pub use crate::hook_call::{CallItem, Field, HookCall, MetaField};
use crate::jid;

pub use crate::hook_error::{HookError, HookProblem};

/// The hooks we understand.
pub const HOOKS: [&str; 5] = [
    "user_send_message",
    "filter_local_packet",
    "user_available",
    "unset_presence",
    "unacknowledged_message",
];

/// Anything a hook call can be read from: a typed [`CallItem`] borrowed
/// from a request body (the ingest fast path) or a `serde_json::Value`
/// (form input, tests, library users). Both translate through
/// [`HookTranslator::translate_call`], so they accept and refuse the same.
pub trait HookInput {
    /// The call's fields, or the type name of what it is instead.
    fn call(&self) -> Result<Cow<'_, CallItem<'_>>, HookError>;

    /// The whole call as JSON, when the input keeps it (hook commands read
    /// fields events do not have). Typed calls do not.
    fn json(&self) -> Option<&Value> {
        None
    }
}

impl HookInput for CallItem<'_> {
    fn call(&self) -> Result<Cow<'_, CallItem<'_>>, HookError> {
        Ok(Cow::Borrowed(self))
    }
}

impl HookInput for Value {
    fn call(&self) -> Result<Cow<'_, CallItem<'_>>, HookError> {
        // A `&Value` deserializer lends its strings, so nothing is copied.
        CallItem::deserialize(self)
            .map(Cow::Owned)
            .map_err(|e| HookProblem::Fields(Arc::new(e)).into())
    }

    fn json(&self) -> Option<&Value> {
        Some(self)
    }
}

/// Translates hook calls into events. Stateless; one per process is enough.
#[derive(Debug, Default, Clone, Copy)]
pub struct HookTranslator;

impl HookTranslator {
    /// Translate one hook call, giving the event a fresh id and, unless the
    /// call carries its own, the current time.
    pub fn translate(&self, call: &impl HookInput) -> Result<Event, HookError> {
        self.translate_at(call, SystemTime::now())
    }

    /// [`translate`](Self::translate) with the clock read once by the
    /// caller (one read per request, not per event): the id's time and the
    /// default timestamp both come from `now`.
    pub fn translate_at(&self, call: &impl HookInput, now: SystemTime) -> Result<Event, HookError> {
        match call.call()?.as_ref() {
            CallItem::Call(c) => self.translate_call(c, ulid::Ulid::from_datetime(now).to_string(), now),
            CallItem::NotObject(kind) => Err(HookProblem::NotAnObject { kind }.into()),
        }
    }

    pub fn translate_with_id(&self, call: &impl HookInput, id: String) -> Result<Event, HookError> {
        match call.call()?.as_ref() {
            CallItem::Call(c) => self.translate_call(c, id, SystemTime::now()),
            CallItem::NotObject(kind) => Err(HookProblem::NotAnObject { kind }.into()),
        }
    }

    /// Translate typed fields: `id` becomes the event id, `now` the
    /// timestamp when the call has none.
    pub fn translate_call(&self, call: &HookCall<'_>, id: String, now: SystemTime) -> Result<Event, HookError> {
        let hook = match &call.hook {
            Field::Str(h) => h.as_ref(),
            Field::Absent | Field::Null => return Err(HookProblem::MissingHook.into()),
            Field::Other(kind) => return Err(HookProblem::NotAString { field: "hook", kind }.into()),
        };
        let body = match hook {
            "user_send_message" => chat(call, hook, Direction::In)?,
            "filter_local_packet" => chat(call, hook, Direction::Out)?,
            "user_available" => presence(call, hook, PresenceStatus::Online)?,
            "unset_presence" => presence(call, hook, PresenceStatus::Offline)?,
            "unacknowledged_message" => unacked(call, hook)?,
            other => {
                return Err(HookProblem::UnknownHook {
                    hook: other.to_owned(),
                    expected: &HOOKS,
                }
                .into())
            }
        };
        let timestamp = match &call.timestamp {
            Field::Absent | Field::Null => OffsetDateTime::from(now),
            Field::Str(s) => timestamp_millis::parse(s).map_err(|source| HookProblem::BadTimestamp {
                value: s.as_ref().to_owned(),
                source,
            })?,
            Field::Other(kind) => return Err(HookProblem::TimestampNotAString { kind }.into()),
        };
        Ok(Event {
            id,
            body,
            timestamp,
            metadata: metadata(&call.metadata)?,
        })
    }
}

fn chat(call: &HookCall<'_>, hook: &str, direction: Direction) -> Result<EventBody, HookError> {
    let from = required_jid(&call.from, hook, "from")?;
    let to = required_jid(&call.to, hook, "to")?;
    let chat_type = match optional_str(&call.r#type, "type")? {
        None => ChatType::Normal,
        Some(t) => ChatType::parse(t).ok_or_else(|| HookProblem::UnknownChatType { value: t.to_owned() })?,
    };
    Ok(EventBody::Chat(Chat {
        chat_type,
        direction,
        from,
        to,
        body: optional_str(&call.body, "body")?.map(str::to_owned),
        message_id: optional_str(&call.id, "id")?.map(str::to_owned),
    }))
}

fn presence(call: &HookCall<'_>, hook: &str, status: PresenceStatus) -> Result<EventBody, HookError> {
    Ok(EventBody::Presence(Presence {
        jid: required_jid(&call.jid, hook, "jid")?,
        status,
    }))
}

fn unacked(call: &HookCall<'_>, hook: &str) -> Result<EventBody, HookError> {
    let from = match optional_str(&call.from, "from")? {
        Some(f) => {
            check_jid("from", f)?;
            Some(f.to_owned())
        }
        None => None,
    };
    Ok(EventBody::Unacked(Unacked {
        to: required_jid(&call.to, hook, "to")?,
        from,
        body: optional_str(&call.body, "body")?.map(str::to_owned),
        message_id: optional_str(&call.id, "id")?.map(str::to_owned),
    }))
}

/// Validate a JID field; the error names the field and quotes at most the
/// start of the value (a refused JID may be kilobytes long).
fn check_jid(field: &'static str, value: &str) -> Result<(), HookError> {
    const SHOWN: usize = 64;
    jid::validate(value).map_err(|reason| {
        let shown = match value.char_indices().nth(SHOWN) {
            Some((cut, _)) => format!("{}…", &value[..cut]),
            None => value.to_owned(),
        };
        HookProblem::InvalidJid { field, reason, shown }.into()
    })
}

fn required_jid(value: &Field<'_>, hook: &str, field: &'static str) -> Result<String, HookError> {
    match value {
        Field::Absent | Field::Null => Err(HookProblem::MissingJid {
            field,
            hook: hook.to_owned(),
        }
        .into()),
        Field::Str(s) => {
            check_jid(field, s)?;
            Ok(s.as_ref().to_owned())
        }
        Field::Other(kind) => Err(HookProblem::JidNotAString { field, kind }.into()),
    }
}

fn optional_str<'a>(value: &'a Field<'_>, field: &'static str) -> Result<Option<&'a str>, HookError> {
    match value {
        Field::Absent | Field::Null => Ok(None),
        Field::Str(s) => Ok(Some(s)),
        Field::Other(kind) => Err(HookProblem::NotAString { field, kind }.into()),
    }
}

fn metadata(field: &MetaField<'_>) -> Result<Metadata, HookError> {
    let mut out = Metadata::new();
    match field {
        MetaField::Absent => {}
        MetaField::Entries(entries) => {
            for (k, v) in entries {
                let value = v.clone().map_err(|kind| HookProblem::MetadataValue {
                    key: k.as_ref().to_owned(),
                    kind,
                })?;
                out.insert(k.as_ref().to_owned(), value);
            }
        }
        MetaField::Other(kind) => return Err(HookProblem::MetadataNotAnObject { kind }.into()),
    }
    Ok(out)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How a request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One object or an array of objects.
    Json,
    /// One object per line.
    NdJson,
}

/// Split a request body into hook calls. Any JSON error names where it is;
/// nothing is returned unless the whole body parses.
pub fn parse_body(body: &[u8], framing: Framing) -> Result<Vec<Value>, HookError> {
    split(body, framing)
}

/// Split a request body into typed hook calls borrowed from it, in one
/// pass and without a `Value` tree: the ingest fast path. Accepts and
/// refuses exactly what [`parse_body`] does, with the same messages.
pub fn parse_calls(body: &[u8], framing: Framing) -> Result<Vec<CallItem<'_>>, HookError> {
    split(body, framing)
}

/// Both body parsers: a JSON object, a JSON array of them, or NDJSON, each
/// item read as `T`.
fn split<'a, T: Deserialize<'a>>(body: &'a [u8], framing: Framing) -> Result<Vec<T>, HookError> {
    let Some(first) = body.iter().position(|b| !b.is_ascii_whitespace()) else {
        return Err(HookProblem::EmptyBody.into());
    };
    match framing {
        Framing::Json => {
            let malformed = |e: serde_json::Error| -> HookError {
                // Several objects one after another: the client meant NDJSON.
                let ndjson_hint = e.to_string().starts_with("trailing characters");
                HookProblem::Malformed {
                    source: Arc::new(e),
                    ndjson_hint,
                }
                .into()
            };
            match body[first] {
                b'[' => {
                    let items: Vec<T> = serde_json::from_slice(body).map_err(malformed)?;
                    if items.is_empty() {
                        return Err(HookProblem::EmptyArray.into());
                    }
                    Ok(items)
                }
                b'{' => Ok(vec![serde_json::from_slice(body).map_err(malformed)?]),
                _ => {
                    // Not an object or array: parse it to name what it is
                    // (or to report the syntax error where it is).
                    let v: Value = serde_json::from_slice(body).map_err(malformed)?;
                    Err(HookProblem::NotCallOrArray { kind: kind_of(&v) }.into())
                }
            }
        }
        Framing::NdJson => {
            let mut out = Vec::new();
            for (n, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                // `index` counts hook calls (blank lines skipped); the
                // message gives the line of the body, which is what an
                // operator looks for.
                let index = out.len();
                let item: T = serde_json::from_slice(line).map_err(|e| {
                    HookError::from(HookProblem::MalformedLine {
                        line: n + 1,
                        source: Arc::new(e),
                    })
                    .at(index)
                })?;
                out.push(item);
            }
            if out.is_empty() {
                return Err(HookProblem::EmptyBody.into());
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MetaValue;
    use serde_json::json;

    fn tr(v: Value) -> Result<Event, HookError> {
        HookTranslator.translate(&v)
    }

    #[test]
    fn user_send_message_is_chat_in() {
        let e = tr(json!({"hook":"user_send_message","from":"alice@localhost/phone","to":"bob@localhost","type":"chat","body":"hi","id":"m-1"})).unwrap();
        let c = e.chat().unwrap();
        assert_eq!(c.direction, Direction::In);
        assert_eq!(c.chat_type, ChatType::Chat);
        assert_eq!(c.body.as_deref(), Some("hi"));
        assert_eq!(c.message_id.as_deref(), Some("m-1"));
        assert_eq!(e.id.len(), 26);
    }

    #[test]
    fn filter_local_packet_is_chat_out_and_type_defaults_to_normal() {
        let e = tr(json!({"hook":"filter_local_packet","from":"a@x","to":"b@x"})).unwrap();
        let c = e.chat().unwrap();
        assert_eq!(c.direction, Direction::Out);
        assert_eq!(c.chat_type, ChatType::Normal);
        assert_eq!(c.body, None);
    }

    #[test]
    fn presence_hooks() {
        let on = tr(json!({"hook":"user_available","jid":"alice@localhost/phone"})).unwrap();
        assert_eq!(on.presence().unwrap().status, PresenceStatus::Online);
        let off = tr(json!({"hook":"unset_presence","jid":"alice@localhost/phone"})).unwrap();
        assert_eq!(off.presence().unwrap().status, PresenceStatus::Offline);
    }

    #[test]
    fn unacked() {
        let e = tr(json!({"hook":"unacknowledged_message","to":"bob@localhost/phone"})).unwrap();
        assert!(matches!(e.body, EventBody::Unacked(ref u) if u.to == "bob@localhost/phone"));
    }

    #[test]
    fn timestamp_and_metadata() {
        let e = tr(json!({"hook":"user_available","jid":"a@x","timestamp":"2026-11-23T10:00:00.5+01:00","metadata":{"s":"x","n":2,"b":true,"f":1.5}})).unwrap();
        assert_eq!(timestamp_millis::format(&e.timestamp), "2026-11-23T09:00:00.500Z");
        assert_eq!(e.metadata["n"], MetaValue::Int(2));
        assert_eq!(e.metadata["f"], MetaValue::Float(1.5));
        assert_eq!(e.metadata["b"], MetaValue::Bool(true));
    }

    #[test]
    fn errors_name_the_problem() {
        let msg = |v| tr(v).unwrap_err().problem.to_string();
        assert!(msg(json!({"hook":"user_login","jid":"a@x"})).contains("unknown hook \"user_login\""));
        assert!(msg(json!({"hook":"user_send_message","to":"b@x"})).contains("missing field `from`"));
        assert!(
            msg(json!({"hook":"user_send_message","from":"a@x","to":"b@x","type":"weird"}))
                .contains("unknown message type \"weird\"")
        );
        assert!(msg(json!({"hook":"user_available"})).contains("missing field `jid`"));
        assert!(msg(json!({"hook":"user_available","jid":5})).contains("field `jid` must be a JID string"));
        assert!(msg(json!({"hook":"user_available","jid":"a@b@c"})).contains("field `jid` has more than one '@'"));
        let long = format!("{}@x", "a".repeat(1024));
        assert!(
            msg(json!({"hook":"user_send_message","from":"a@x","to":long,"type":"chat"}))
                .contains("field `to` has a local part over 1023 bytes")
        );
        assert!(msg(json!({"hook":"user_available","jid":format!("a@{}", "d".repeat(5000))})).len() < 200);
        assert!(msg(json!({"jid":"a@x"})).contains("missing field `hook`"));
        assert!(msg(json!({"hook":"user_available","jid":"a@x","timestamp":"yesterday"})).contains("`timestamp`"));
        assert!(msg(json!({"hook":"user_available","jid":"a@x","metadata":{"x":[1]}})).contains("metadata value `x`"));
        assert!(msg(json!([1])).contains("must be a JSON object"));
    }

    /// The typed fast path (`parse_calls`) and the `Value` path accept and
    /// refuse the same bodies, with the same messages.
    #[test]
    fn typed_and_value_paths_agree() {
        let bodies: [&[u8]; 12] = [
            br#"{"hook":"user_send_message","from":"a@x/r","to":"b@x","type":"chat","body":"h\u00e9","id":"1"}"#,
            br#"[{"hook":"user_available","jid":"a@x"},{"hook":"unset_presence","jid":"a@x/r","metadata":{"k":1,"f":2.5,"s":"v","b":true}}]"#,
            br#"{"hook":"unacknowledged_message","to":"b@x","from":"a@x","timestamp":"2026-11-23T10:00:00Z"}"#,
            br#"{"hook":"user_available","jid":7}"#,
            br#"{"hook":"user_available","jid":"a b@x"}"#,
            br#"{"hook":"user_available"}"#,
            br#"{"hook":["x"]}"#,
            br#"[{"hook":"user_available","jid":"a@x"}, 3]"#,
            br#"{"hook":"user_available","jid":"a@x","metadata":{"x":null}}"#,
            br#"{"hook":"user_available","jid":"a@x","metadata":5}"#,
            br#"{"hook":"user_available","jid":"a@x","timestamp":5}"#,
            br#""just a string""#,
        ];
        let outcome = |r: Result<Event, HookError>| r.map(|e| (e.body, e.metadata)).map_err(|e| e.to_string());
        for body in bodies {
            let typed = parse_calls(body, Framing::Json).map(|calls| {
                calls
                    .iter()
                    .map(|c| outcome(HookTranslator.translate(c)))
                    .collect::<Vec<_>>()
            });
            let value = parse_body(body, Framing::Json).map(|calls| {
                calls
                    .iter()
                    .map(|c| outcome(HookTranslator.translate(c)))
                    .collect::<Vec<_>>()
            });
            assert_eq!(
                typed.map_err(|e| e.to_string()),
                value.map_err(|e| e.to_string()),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn bodies_split() {
        assert_eq!(parse_body(br#"{"hook":"x"}"#, Framing::Json).unwrap().len(), 1);
        assert_eq!(parse_body(br#"[{"a":1},{"b":2}]"#, Framing::Json).unwrap().len(), 2);
        assert_eq!(
            parse_body(b"{\"a\":1}\n\n{\"b\":2}\r\n", Framing::NdJson)
                .unwrap()
                .len(),
            2
        );
        let e = parse_body(b"{\"a\":1}\n{oops\n", Framing::NdJson).unwrap_err();
        assert_eq!(e.index, Some(1));
        // blank lines are skipped for the index, not for the line number
        let e = parse_body(b"\n{\"a\":1}\n\n{oops\n", Framing::NdJson).unwrap_err();
        assert_eq!(e.index, Some(1));
        assert!(e.problem.to_string().contains("on line 4"), "{e}");
        assert!(parse_body(b"  \n", Framing::Json)
            .unwrap_err()
            .to_string()
            .contains("empty body"));
        let e = parse_body(b"{\"a\":1}\n{\"b\":2}\n", Framing::Json).unwrap_err();
        assert!(e.problem.to_string().contains("application/x-ndjson"), "{e}");
        assert!(parse_body(b"{oops", Framing::Json)
            .unwrap_err()
            .to_string()
            .starts_with("malformed JSON"));
        assert!(parse_body(b"[]", Framing::Json).is_err());
        assert!(parse_body(b"3", Framing::Json).is_err());
    }
}
