//! The push backend's hook commands, `push_enable` and `push_disable`
//! (XEP-0357's enable/disable, as hook calls from any ingest source).
//!
//! A command is checked and turned into a registry change here — pure, as
//! the chain is — and stored by the pipeline with the rest of its request;
//! the change reaches the registry once committed. Each command is
//! reported in the answer under `"push"`:
//! `{"index", "hook", "jid", "device_id", "result": "created" | "replaced" |
//! "removed" | "absent"}`. Both are idempotent, so a retry after a 503 does
//! no harm.

use std::sync::Arc;

use event_pusher_core::{Changes, CommandError, CommandHook, CommandOutcome};
use serde_json::{json, Value};

use super::devices::Put;
use super::registration::{check_device_id, Registration};
use super::PushBackend;

/// `push_enable` / `push_disable` over every push backend of the sidecar.
pub struct PushCommands {
    backends: Vec<Arc<PushBackend>>,
}

impl PushCommands {
    pub fn new(backends: Vec<Arc<PushBackend>>) -> Self {
        PushCommands { backends }
    }

    /// The named push backend, or the only one.
    pub fn pick(&self, name: Option<&str>) -> Result<&Arc<PushBackend>, Refused> {
        match (name, self.backends.as_slice()) {
            (_, []) => Err(Refused::NoBackend),
            (Some(n), all) => all
                .iter()
                .find(|b| b.name() == n)
                .ok_or_else(|| Refused::UnknownBackend { name: n.to_owned() }),
            (None, [only]) => Ok(only),
            (None, all) => Err(Refused::BackendRequired {
                configured: all.iter().map(|b| b.name()).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// The named push backend, or all of them.
    pub fn chosen(&self, name: Option<&str>) -> Result<Vec<&Arc<PushBackend>>, Refused> {
        match name {
            Some(_) => self.pick(name).map(|b| vec![b]),
            None if self.backends.is_empty() => Err(Refused::NoBackend),
            None => Ok(self.backends.iter().collect()),
        }
    }

    pub fn backends(&self) -> &[Arc<PushBackend>] {
        &self.backends
    }
}

/// Why no push backend was chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no push backend is configured")]
    NoBackend,
    #[error("backend: no push backend named \"{name}\"")]
    UnknownBackend { name: String },
    /// Several are configured and the call names none of them.
    #[error("backend: required when several push backends are configured ({configured})")]
    BackendRequired { configured: String },
}

impl CommandHook for PushCommands {
    fn hooks(&self) -> &'static [&'static str] {
        &["push_enable", "push_disable"]
    }

    fn report_key(&self) -> &'static str {
        "push"
    }

    fn command(&self, hook: &str, call: &Value, pending: &Changes) -> Result<CommandOutcome, CommandError> {
        let text = |field: &'static str| -> Result<String, CommandError> {
            match call.get(field) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(CommandError::NotAString { field }),
                None => Err(CommandError::Missing { field }),
            }
        };
        let jid = text("jid")?;
        event_pusher_core::jid::validate(&jid).map_err(CommandError::InvalidJid)?;
        let device_id = text("device_id")?;
        check_device_id(&device_id).map_err(CommandError::refused)?;
        let (changes, result) = if hook == "push_enable" {
            let reg = Registration::parse(call, true).map_err(CommandError::refused)?;
            let backend = self.pick(reg.backend.as_deref()).map_err(CommandError::refused)?;
            let (change, put) = backend
                .registration_change(&jid, &device_id, &reg, pending)
                .map_err(CommandError::refused)?;
            let result = match put {
                Put::Created => "created",
                Put::Replaced => "replaced",
            };
            (vec![change], result)
        } else {
            let name = match call.get("backend") {
                Some(Value::String(s)) => Some(s.as_str()),
                Some(_) => return Err(CommandError::NotAString { field: "backend" }),
                None => None,
            };
            let mut changes = Vec::new();
            for b in self.chosen(name).map_err(CommandError::refused)? {
                if let Some(c) = b
                    .removal_change(&jid, &device_id, pending)
                    .map_err(CommandError::refused)?
                {
                    changes.push(c);
                }
            }
            let result = if changes.is_empty() { "absent" } else { "removed" };
            (changes, result)
        };
        Ok(CommandOutcome {
            changes,
            report: json!({
                "hook": hook,
                "jid": event_pusher_core::jid::bare(&jid),
                "device_id": device_id,
                "result": result,
            }),
        })
    }
}
