//! One `[[filters]]` entry of the config file, and which kind of filter it
//! describes: declarative (`match`/`action`/`metadata`) or script
//! (`script` or `source`, with `max_operations` and `on_error`).
//!
//! Every key is read in one struct so an unknown key is still refused by
//! name; which keys may go together is checked afterwards, with the span of
//! the offending key, by [`FilterConfig::kind`].

use event_pusher_config::{ConfigError, Priority, Source, Spanned};
use serde::Deserialize;

use crate::declarative::{Action, MatchConfig, MetadataTable};
use crate::script::OnError;

/// One `[[filters]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    pub name: Spanned<String>,
    #[serde(default = "filter_priority")]
    pub priority: Priority,
    // Declarative keys.
    #[serde(default, rename = "match")]
    pub matcher: Option<Spanned<MatchConfig>>,
    #[serde(default)]
    pub action: Option<Spanned<Action>>,
    #[serde(default)]
    pub metadata: Option<Spanned<MetadataTable>>,
    // Script keys.
    /// A Rhai file, relative to the config file.
    #[serde(default)]
    pub script: Option<Spanned<String>>,
    /// An inline Rhai script.
    #[serde(default)]
    pub source: Option<Spanned<String>>,
    #[serde(default)]
    pub max_operations: Option<Spanned<u64>>,
    #[serde(default)]
    pub on_error: Option<Spanned<OnError>>,
}

fn filter_priority() -> Priority {
    Priority(10)
}

/// Where a script filter's code comes from.
#[derive(Debug, Clone, Copy)]
pub enum ScriptOrigin<'a> {
    /// `script = "path"`, relative to the config file.
    File(&'a Spanned<String>),
    /// `source = '''...'''`.
    Inline(&'a Spanned<String>),
}

/// What an entry turned out to be.
#[derive(Debug, Clone, Copy)]
pub enum FilterKind<'a> {
    Declarative,
    Script {
        origin: ScriptOrigin<'a>,
        max_operations: u64,
        on_error: OnError,
    },
}

/// Per event, unless `max_operations` says otherwise.
pub const DEFAULT_MAX_OPERATIONS: u64 = 100_000;

impl FilterConfig {
    /// Which kind of filter this entry is, refusing keys of both kinds
    /// together (a script decides for itself what matches, stops and is
    /// tagged, so `match`, `action` and `metadata` would be ignored).
    pub fn kind(&self, source: &Source, index: usize) -> Result<FilterKind<'_>, ConfigError> {
        let key = |k: &str| Some(format!("filters[{index}].{k}"));
        let origin = match (&self.script, &self.source) {
            (Some(_), Some(inline)) => {
                return Err(source.error_at_span(
                    inline.span(),
                    key("source"),
                    "give either `script` (a file) or `source` (inline), not both",
                ))
            }
            (Some(file), None) => Some(ScriptOrigin::File(file)),
            (None, Some(inline)) => Some(ScriptOrigin::Inline(inline)),
            (None, None) => None,
        };
        let Some(origin) = origin else {
            let script_only = [
                ("max_operations", self.max_operations.as_ref().map(Spanned::span)),
                ("on_error", self.on_error.as_ref().map(Spanned::span)),
            ];
            if let Some((name, Some(span))) = script_only.into_iter().find(|(_, s)| s.is_some()) {
                return Err(source.error_at_span(
                    span,
                    key(name),
                    format!("`{name}` applies only to script filters (with `script` or `source`)"),
                ));
            }
            if let Some(m) = &self.matcher {
                m.get_ref()
                    .check_satisfiable()
                    .map_err(|e| source.error_at_span(m.span(), key("match"), e.to_string()))?;
            }
            return Ok(FilterKind::Declarative);
        };
        let declarative_only = [
            ("match", self.matcher.as_ref().map(Spanned::span)),
            ("action", self.action.as_ref().map(Spanned::span)),
            ("metadata", self.metadata.as_ref().map(Spanned::span)),
        ];
        if let Some((name, Some(span))) = declarative_only.into_iter().find(|(_, s)| s.is_some()) {
            return Err(source.error_at_span(
                span,
                key(name),
                format!(
                    "`{name}` does not apply to a script filter: the script decides in `fn filter(event)` \
                     what to stop and which metadata to set"
                ),
            ));
        }
        let max_operations = match &self.max_operations {
            Some(m) if *m.get_ref() == 0 => {
                return Err(source.error_at_span(m.span(), key("max_operations"), "must be at least 1"))
            }
            Some(m) => *m.get_ref(),
            None => DEFAULT_MAX_OPERATIONS,
        };
        Ok(FilterKind::Script {
            origin,
            max_operations,
            on_error: self.on_error.as_ref().map(|o| *o.get_ref()).unwrap_or_default(),
        })
    }
}
