//! Typed, position-aware access to a MongooseIM TOML document.
//!
//! MongooseIM's file is parsed once with spans (`toml::de::DeTable`), then
//! read table by table: each getter checks the value's type and each table
//! checks its keys, so a wrong or unknown setting is reported as
//! ``file:line:column: key `modules.mod_event_pusher.sns.regoin`: ...``,
//! exactly like errors in our own config.

use std::ops::Range;

use event_pusher_config::{ConfigError, Source, Spanned};
use toml::de::{DeTable, DeValue};

use super::output::Line;

pub type Result<T> = std::result::Result<T, ConfigError>;

/// A value read from the file, with where it was written.
#[derive(Debug, Clone)]
pub struct Val<T> {
    pub value: T,
    pub span: Range<usize>,
}

/// The document being imported: its text (for error positions and for
/// quoting settings back in comments) and its root table.
pub struct Document<'i> {
    source: Source,
    text: &'i str,
    root: Spanned<DeTable<'i>>,
}

impl<'i> Document<'i> {
    pub fn parse(file: &str, text: &'i str) -> Result<Self> {
        let source = Source::plain(file, text);
        let root = DeTable::parse(text).map_err(|e| {
            let at = e.span().map(|s| s.start).unwrap_or(0);
            source.error_at(at, None, e.message().trim().to_owned())
        })?;
        Ok(Document { source, text, root })
    }

    pub fn root(&self) -> Table<'_, 'i> {
        Table {
            doc: self,
            path: String::new(),
            table: self.root.get_ref(),
            span: self.root.span(),
        }
    }
}

/// One table of the document and its dotted path (`outgoing_pools.http.http_pool`).
#[derive(Clone)]
pub struct Table<'a, 'i> {
    doc: &'a Document<'i>,
    path: String,
    table: &'a DeTable<'i>,
    span: Range<usize>,
}

impl<'a, 'i> Table<'a, 'i> {
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The dotted path of one of this table's keys.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// An error about the table itself (e.g. a missing setting).
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        let key = (!self.path.is_empty()).then(|| self.path.clone());
        self.doc.source.error_at(self.span.start, key, message)
    }

    /// An error about one key's value, pointing at the value.
    pub fn error_at(&self, key: &str, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        self.doc.source.error_at(span.start, Some(self.key_path(key)), message)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Keys in the order they were written.
    pub fn keys(&self) -> Vec<&'a str> {
        let mut keys: Vec<(&'a str, usize)> = self
            .table
            .iter()
            .map(|(k, _)| (k.get_ref().as_ref(), k.span().start))
            .collect();
        keys.sort_by_key(|(_, at)| *at);
        keys.into_iter().map(|(k, _)| k).collect()
    }

    /// Every key must be one of `known`; else an error at the first
    /// stranger, naming the keys this table may hold.
    pub fn check_keys(&self, known: &[&str]) -> Result<()> {
        for (key, _) in self.table.iter() {
            if !known.contains(&key.get_ref().as_ref()) {
                let name = key.get_ref().as_ref();
                return Err(self.doc.source.error_at(
                    key.span().start,
                    Some(self.key_path(name)),
                    format!(
                        "unknown MongooseIM setting `{name}` in [{}] (expected {})",
                        self.path,
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.table.get(key)
    }

    fn wrong_type(&self, key: &str, v: &Spanned<DeValue<'_>>, want: &str) -> ConfigError {
        self.error_at(
            key,
            v.span(),
            format!("expected {want}, found {}", v.get_ref().type_str()),
        )
    }

    pub fn str(&self, key: &str) -> Result<Option<Val<String>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.get_ref().as_str() {
                Some(s) => Ok(Some(Val {
                    value: s.to_owned(),
                    span: v.span(),
                })),
                None => Err(self.wrong_type(key, v, "a string")),
            },
        }
    }

    pub fn int(&self, key: &str) -> Result<Option<Val<i64>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                let n = v
                    .get_ref()
                    .as_integer()
                    .and_then(|i| i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok());
                match n {
                    Some(value) => Ok(Some(Val { value, span: v.span() })),
                    None => Err(self.wrong_type(key, v, "an integer")),
                }
            }
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<Val<bool>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.get_ref().as_bool() {
                Some(value) => Ok(Some(Val { value, span: v.span() })),
                None => Err(self.wrong_type(key, v, "true or false")),
            },
        }
    }

    pub fn table(&self, key: &str) -> Result<Option<Table<'a, 'i>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.get_ref().as_table() {
                Some(t) => Ok(Some(Table {
                    doc: self.doc,
                    path: self.key_path(key),
                    table: t,
                    span: v.span(),
                })),
                None => Err(self.wrong_type(key, v, "a table")),
            },
        }
    }

    /// An array of tables (`handlers = [{...}]` or `[[...handlers]]`); a
    /// single table is accepted as a list of one when `single_ok`.
    pub fn tables(&self, key: &str, single_ok: bool) -> Result<Vec<Table<'a, 'i>>> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        if single_ok && v.get_ref().is_table() {
            return Ok(self.table(key)?.into_iter().collect());
        }
        let Some(items) = v.get_ref().as_array() else {
            return Err(self.wrong_type(key, v, "an array of tables"));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item.get_ref().as_table() {
                Some(t) => Ok(Table {
                    doc: self.doc,
                    path: format!("{}[{i}]", self.key_path(key)),
                    table: t,
                    span: item.span(),
                }),
                None => Err(self.error_at(
                    key,
                    item.span(),
                    format!("expected a table, found {}", item.get_ref().type_str()),
                )),
            })
            .collect()
    }

    /// What is written for `key`, as TOML text, to quote it in a comment.
    fn raw(&self, v: &Spanned<DeValue<'_>>) -> String {
        let span = v.span();
        self.doc
            .text
            .get(span)
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    /// `key` (if set) as comment lines saying why it is not carried over.
    /// A table becomes one line per setting in it. Values of keys that
    /// look secret are not repeated.
    pub fn unmapped(&self, key: &str, why: &str) -> Vec<Line> {
        let Some(v) = self.get(key) else {
            return Vec::new();
        };
        if let Some(t) = v.get_ref().as_table() {
            let sub = Table {
                doc: self.doc,
                path: self.key_path(key),
                table: t,
                span: v.span(),
            };
            return sub.keys().into_iter().flat_map(|k| sub.unmapped(k, why)).collect();
        }
        let secret = ["password", "secret", "key"].iter().any(|s| key.contains(s));
        vec![Line::Unmapped {
            key: self.key_path(key),
            raw: if secret { "\"***\"".to_owned() } else { self.raw(v) },
            why: why.to_owned(),
        }]
    }
}
