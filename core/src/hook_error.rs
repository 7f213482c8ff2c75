//! Why a request body or one of its hook calls was refused: what is wrong
//! and, when the body held several calls, at which one. The message names
//! the field and is the request's 400 answer.

use std::fmt;
use std::sync::Arc;

/// Why a hook call could not be read or translated. `index` is the
/// position of the item in its request, when the request held several.
#[derive(Debug, Clone)]
pub struct HookError {
    pub index: Option<usize>,
    pub problem: HookProblem,
}

impl HookError {
    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }
}

impl From<HookProblem> for HookError {
    fn from(problem: HookProblem) -> Self {
        HookError { index: None, problem }
    }
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "item {i}: {}", self.problem),
            None => self.problem.fmt(f),
        }
    }
}

impl std::error::Error for HookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.problem)
    }
}

/// What is wrong with a body or a call. JSON errors are shared so that
/// the error stays `Clone` (a refused request's answer is kept).
#[derive(Debug, Clone, thiserror::Error)]
pub enum HookProblem {
    #[error("empty body: no hook calls")]
    EmptyBody,
    #[error("empty array: no hook calls")]
    EmptyArray,
    /// The body is not JSON; `ndjson_hint` when it looks like several
    /// objects one after another (the client meant NDJSON).
    #[error("malformed JSON: {source}{}", if *ndjson_hint { " (for one hook call per line, send Content-Type: application/x-ndjson)" } else { "" })]
    Malformed {
        source: Arc<serde_json::Error>,
        ndjson_hint: bool,
    },
    /// One NDJSON line is not JSON (`line` counts from 1).
    #[error("malformed JSON on line {line}: {source}")]
    MalformedLine {
        line: usize,
        source: Arc<serde_json::Error>,
    },
    #[error("the body must be a hook call object or an array of them, got {kind}")]
    NotCallOrArray { kind: &'static str },
    /// A call given as a JSON value whose fields have the wrong shape.
    #[error("{0}")]
    Fields(#[source] Arc<serde_json::Error>),
    #[error("a hook call must be a JSON object, got {kind}")]
    NotAnObject { kind: &'static str },
    #[error("missing field `hook`")]
    MissingHook,
    #[error("unknown hook \"{hook}\" (expected one of: {})", expected.join(", "))]
    UnknownHook {
        hook: String,
        /// The hooks understood (`hook::HOOKS`).
        expected: &'static [&'static str],
    },
    #[error("field `timestamp` is not an RFC 3339 time: \"{value}\" ({source})")]
    BadTimestamp { value: String, source: time::error::Parse },
    #[error("field `timestamp` must be an RFC 3339 string, got {kind}")]
    TimestampNotAString { kind: &'static str },
    #[error("unknown message type \"{value}\" in field `type` (expected chat, groupchat, headline or normal)")]
    UnknownChatType { value: String },
    #[error("missing field `{field}` (required by hook {hook})")]
    MissingJid { field: &'static str, hook: String },
    #[error("field `{field}` must be a JID string, got {kind}")]
    JidNotAString { field: &'static str, kind: &'static str },
    /// `shown` is at most the start of the value (a refused JID may be
    /// kilobytes long).
    #[error("field `{field}` {reason}: \"{shown}\"")]
    InvalidJid {
        field: &'static str,
        #[source]
        reason: crate::jid::JidError,
        shown: String,
    },
    #[error("field `{field}` must be a string, got {kind}")]
    NotAString { field: &'static str, kind: &'static str },
    #[error("metadata value `{key}` must be a string, number or boolean, got {kind}")]
    MetadataValue { key: String, kind: &'static str },
    #[error("field `metadata` must be an object, got {kind}")]
    MetadataNotAnObject { kind: &'static str },
}
