//! Hook commands: hook calls that change state instead of producing an
//! event (`push_enable`, `push_disable`).
//!
//! A backend kind registers a [`CommandHook`] for the hook names it owns.
//! [`Pipeline::accept`](crate::Pipeline::accept) sends each call whose hook
//! is registered to it instead of the translator; the command checks the
//! call and returns what it changes as data ([`StateChange`]s) plus a report
//! for the answer. The changes are stored in the same fsync'd transaction as
//! the request's events and applied in request order, so every source —
//! HTTP, MongooseIM form posts, the AMQP partitions, a library user — gets
//! commands with the same all-or-nothing rules as events.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::state_change::{Changes, StateChange};

/// What a command did: its state changes and what to report about it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome {
    pub changes: Vec<StateChange>,
    /// One entry of the answer's report list (the HTTP 202's `"push"`
    /// array); the pipeline adds `"index"`, the call's place in the request.
    pub report: Value,
}

/// Why a command call was refused: the message names the field (it is
/// the call's 400 answer, or its dead-letter reason).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    /// A field the command needs is absent.
    #[error("{field}: required")]
    Missing { field: &'static str },
    /// A field that must be a JSON string is something else.
    #[error("{field}: must be a string")]
    NotAString { field: &'static str },
    /// The `jid` field is not a JID.
    #[error("jid: {0}")]
    InvalidJid(#[source] crate::jid::JidError),
    /// The backend kind refused the call: its own error, which names the
    /// field. Shared, so that the request's error stays `Clone`.
    #[error("{0}")]
    Refused(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl CommandError {
    /// The backend kind's own reason for refusing a call.
    pub fn refused(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        CommandError::Refused(Arc::new(source))
    }
}

/// The commands of one backend kind.
pub trait CommandHook: Send + Sync + 'static {
    /// The hook names it handles.
    fn hooks(&self) -> &'static [&'static str];

    /// Under which key of the answer its reports are listed (`"push"`).
    fn report_key(&self) -> &'static str;

    /// Check one call (its whole JSON object) and say what it changes.
    /// Pure: nothing is applied here. `pending` holds the changes the
    /// request made before this call.
    fn command(&self, hook: &str, call: &Value, pending: &Changes) -> Result<CommandOutcome, CommandError>;
}

/// Every registered command hook, by hook name.
#[derive(Clone, Default)]
pub struct CommandHooks {
    by_hook: HashMap<&'static str, Arc<dyn CommandHook>>,
}

impl CommandHooks {
    pub fn new() -> Self {
        CommandHooks::default()
    }

    /// Register a kind's commands (a later registration of a hook name
    /// replaces an earlier one).
    pub fn with(mut self, hook: Arc<dyn CommandHook>) -> Self {
        for name in hook.hooks() {
            self.by_hook.insert(name, hook.clone());
        }
        self
    }

    /// The command for a hook name, if it is one.
    pub fn get(&self, hook: &str) -> Option<&Arc<dyn CommandHook>> {
        self.by_hook.get(hook)
    }

    pub fn is_empty(&self) -> bool {
        self.by_hook.is_empty()
    }
}

/// One command's report, as the answer lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandReport {
    /// The report list it goes in (`"push"`).
    pub key: &'static str,
    pub report: Value,
}
