//! One hook call as typed fields borrowed from the request bytes.
//!
//! Translation used to go through a `serde_json::Value` tree: a map
//! allocation per call, a `String` per field, then about eight `BTreeMap`
//! lookups to read them back. [`HookCall`] is read in one pass straight from
//! the body (or from a `Value`, which is a `Deserializer` too), keeping each
//! string as a slice of the input unless it holds escapes.
//!
//! Every field is a [`Field`]: it accepts any JSON type and remembers which,
//! so translation can still refuse a number where a JID belongs with a
//! message naming the field ("field `jid` must be a JID string, got a
//! number") instead of serde's positional type error.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::event::MetaValue;

/// A hook-call field: absent, null, a string, or some other JSON type.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field<'a> {
    #[default]
    Absent,
    Null,
    Str(Cow<'a, str>),
    /// Any other type, by its name ("a number", "an object", ...).
    Other(&'static str),
}

impl<'a> Field<'a> {
    /// The string, if the field holds one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Absent and null mean the same to every hook.
    pub fn is_missing(&self) -> bool {
        matches!(self, Field::Absent | Field::Null)
    }
}

/// The `metadata` field: absent/null, an object of scalar values (a value
/// that is not a scalar is kept as its type name, for the error), or some
/// other type.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum MetaField<'a> {
    #[default]
    Absent,
    Entries(Vec<(Cow<'a, str>, Result<MetaValue, &'static str>)>),
    Other(&'static str),
}

/// A hook call's fields, or the type of a body item that is not an object.
#[derive(Debug, Clone, PartialEq)]
pub enum CallItem<'a> {
    Call(HookCall<'a>),
    NotObject(&'static str),
}

/// The fields translation reads; any other key is skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HookCall<'a> {
    pub hook: Field<'a>,
    pub from: Field<'a>,
    pub to: Field<'a>,
    pub jid: Field<'a>,
    pub r#type: Field<'a>,
    pub body: Field<'a>,
    pub id: Field<'a>,
    pub timestamp: Field<'a>,
    pub metadata: MetaField<'a>,
}

impl HookCall<'_> {
    /// Feed the call's content to a hasher, field by field, so two requests
    /// with the same calls hash the same however their JSON was spaced or
    /// ordered (the idempotency-key fingerprint).
    pub fn fingerprint(&self, h: &mut impl FnMut(&[u8])) {
        let fields = [
            (&self.hook, b'h'),
            (&self.from, b'f'),
            (&self.to, b't'),
            (&self.jid, b'j'),
            (&self.r#type, b'y'),
            (&self.body, b'b'),
            (&self.id, b'i'),
            (&self.timestamp, b's'),
        ];
        for (field, tag) in fields {
            match field {
                Field::Absent | Field::Null => {}
                Field::Str(s) => {
                    h(&[tag]);
                    h(&(s.len() as u64).to_le_bytes());
                    h(s.as_bytes());
                }
                Field::Other(kind) => {
                    h(&[tag, b'?']);
                    h(kind.as_bytes());
                }
            }
        }
        if let MetaField::Entries(entries) = &self.metadata {
            for (k, v) in entries {
                h(b"m");
                h(&(k.len() as u64).to_le_bytes());
                h(k.as_bytes());
                let v = match v {
                    Ok(v) => v.to_string(),
                    Err(kind) => format!("?{kind}"),
                };
                h(&(v.len() as u64).to_le_bytes());
                h(v.as_bytes());
            }
        }
        h(b"\n");
    }
}

/// The name of a JSON type as error messages say it.
pub(crate) mod kind {
    pub const NULL: &str = "null";
    pub const BOOL: &str = "a boolean";
    pub const NUMBER: &str = "a number";
    pub const STRING: &str = "a string";
    pub const ARRAY: &str = "an array";
    pub const OBJECT: &str = "an object";
}

/// Accepts any JSON value, skipping its content, and answers its type name.
struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = &'static str;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(kind::BOOL)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(kind::NUMBER)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(kind::NUMBER)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(kind::NUMBER)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(kind::STRING)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(kind::NULL)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(kind::NULL)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(kind::ARRAY)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(kind::OBJECT)
    }
}

/// Generates the scalar arms shared by the field visitors: numbers and
/// booleans become `Other(kind)`, containers are skipped as `Other(kind)`.
macro_rules! non_string_arms {
    ($out:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($out(kind::BOOL))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($out(kind::NUMBER))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($out(kind::NUMBER))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($out(kind::NUMBER))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            KindVisitor.visit_seq(seq).map($out)
        }
    };
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(s)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                KindVisitor.visit_map(map).map(Field::Other)
            }
            non_string_arms!(Field::Other);
        }
        d.deserialize_any(V)
    }
}

/// One metadata value: a scalar, or the type name of what it was instead.
struct MetaEntry(Result<MetaValue, &'static str>);

impl<'de> Deserialize<'de> for MetaEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetaEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
                Ok(MetaEntry(Ok(MetaValue::Bool(b))))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
                Ok(MetaEntry(Ok(MetaValue::Int(n))))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
                // As `Value::as_i64` did: past i64 a number is a float.
                Ok(MetaEntry(Ok(match i64::try_from(n) {
                    Ok(i) => MetaValue::Int(i),
                    Err(_) => MetaValue::Float(n as f64),
                })))
            }
            fn visit_f64<E>(self, x: f64) -> Result<Self::Value, E> {
                Ok(MetaEntry(Ok(MetaValue::Float(x))))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(MetaEntry(Ok(MetaValue::String(s.to_owned()))))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(MetaEntry(Ok(MetaValue::String(s))))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MetaEntry(Err(kind::NULL)))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(MetaEntry(Err(kind::NULL)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                KindVisitor.visit_seq(seq).map(|k| MetaEntry(Err(k)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                KindVisitor.visit_map(map).map(|k| MetaEntry(Err(k)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for MetaField<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetaField<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MetaField::Absent)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(MetaField::Absent)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MetaField::Other(kind::STRING))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let MetaEntry(value) = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(MetaField::Entries(entries))
            }
            non_string_arms!(MetaField::Other);
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for CallItem<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CallItem<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a hook call object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut call = HookCall::default();
                // Keys are nearly always plain (borrowed); `Cow` covers
                // escaped ones. A repeated key is refused, as a typed
                // struct would refuse it.
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let slot = match key.as_ref() {
                        "hook" => &mut call.hook,
                        "from" => &mut call.from,
                        "to" => &mut call.to,
                        "jid" => &mut call.jid,
                        "type" => &mut call.r#type,
                        "body" => &mut call.body,
                        "id" => &mut call.id,
                        "timestamp" => &mut call.timestamp,
                        "metadata" => {
                            if call.metadata != MetaField::Absent {
                                return Err(de::Error::custom("duplicate field `metadata`"));
                            }
                            call.metadata = map.next_value()?;
                            continue;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if *slot != Field::Absent {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    *slot = map.next_value()?;
                }
                Ok(CallItem::Call(call))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(CallItem::NotObject(kind::STRING))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(CallItem::NotObject(kind::NULL))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(CallItem::NotObject(kind::NULL))
            }
            non_string_arms!(CallItem::NotObject);
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(v: &serde_json::Value) -> HookCall<'_> {
        match CallItem::deserialize(v).unwrap() {
            CallItem::Call(c) => c,
            CallItem::NotObject(k) => panic!("not an object: {k}"),
        }
    }

    #[test]
    fn strings_are_borrowed_from_the_input_unless_escaped() {
        let body = br#"{"hook":"user_available","jid":"a\u0040x","extra":[1,{"x":2}]}"#;
        let CallItem::Call(c) = serde_json::from_slice::<CallItem>(body).unwrap() else {
            panic!()
        };
        assert!(matches!(c.hook, Field::Str(Cow::Borrowed("user_available"))));
        assert!(matches!(c.jid, Field::Str(Cow::Owned(ref s)) if s == "a@x"));
        assert_eq!(c.from, Field::Absent);
    }

    #[test]
    fn other_types_keep_their_name() {
        let v = json!({"hook": 1, "from": null, "to": [1], "jid": {"a": 1}, "body": true});
        let c = call(&v);
        assert_eq!(c.hook, Field::Other(kind::NUMBER));
        assert_eq!(c.from, Field::Null);
        assert_eq!(c.to, Field::Other(kind::ARRAY));
        assert_eq!(c.jid, Field::Other(kind::OBJECT));
        assert_eq!(c.body, Field::Other(kind::BOOL));
        assert_eq!(
            CallItem::deserialize(&json!([1])).unwrap(),
            CallItem::NotObject(kind::ARRAY)
        );
    }

    #[test]
    fn metadata_keeps_scalars_and_names_the_rest() {
        let v = json!({"metadata": {"s": "x", "n": 2, "f": 1.5, "b": false, "bad": [1]}});
        let MetaField::Entries(e) = call(&v).metadata else {
            panic!()
        };
        let get = |k: &str| e.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("s"), Ok(MetaValue::String("x".into())));
        assert_eq!(get("n"), Ok(MetaValue::Int(2)));
        assert_eq!(get("f"), Ok(MetaValue::Float(1.5)));
        assert_eq!(get("b"), Ok(MetaValue::Bool(false)));
        assert_eq!(get("bad"), Err(kind::ARRAY));
        assert_eq!(call(&json!({"metadata": "x"})).metadata, MetaField::Other(kind::STRING));
    }

    #[test]
    fn repeated_keys_are_refused() {
        let e = serde_json::from_slice::<CallItem>(br#"{"jid":"a@x","jid":"b@x"}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate field `jid`"), "{e}");
    }

    #[test]
    fn fingerprints_ignore_spacing_order_and_unknown_keys() {
        let fp = |body: &[u8]| {
            let CallItem::Call(c) = serde_json::from_slice::<CallItem>(body).unwrap() else {
                panic!()
            };
            let mut out = Vec::new();
            c.fingerprint(&mut |b| out.extend_from_slice(b));
            out
        };
        let a = fp(br#"{"hook":"user_available","jid":"a@x","metadata":{"k":1}}"#);
        let b = fp(br#"{ "jid" : "a@x", "x": 5, "hook":"user_available", "metadata":{"k":1} }"#);
        let c = fp(br#"{"hook":"user_available","jid":"b@x","metadata":{"k":1}}"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
