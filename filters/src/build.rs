//! Turning the config's `[[filters]]` into filters, all or nothing: every
//! script is read and compiled, and the first error is returned as
//! `file:line:column: message` (the script file's position for
//! `script = "path"`, the config file's for an inline `source`).
//!
//! This is the one function both startup and a reload call.

use std::path::Path;
use std::sync::Arc;

use event_pusher_config::{ConfigError, Source};
use event_pusher_core::Filter;

use crate::entry::{FilterKind, ScriptOrigin};
use crate::script::{Limits, OnError, ScriptFilter};
use crate::{metrics, DeclarativeFilter, FilterConfig};

/// One filter ready for the chain.
pub struct BuiltFilter {
    pub name: String,
    pub priority: i64,
    /// Byte offset of its entry in the config file, to keep file order
    /// among equal priorities.
    pub position: usize,
    pub filter: Arc<dyn Filter>,
}

/// Build every filter of a config loaded from `source`. Script paths are
/// relative to the config file's directory.
pub fn build(configs: &[FilterConfig], source: &Source) -> Result<Vec<BuiltFilter>, ConfigError> {
    let base = Path::new(source.file()).parent().unwrap_or(Path::new(""));
    configs
        .iter()
        .enumerate()
        .map(|(i, config)| build_one(config, i, source, base))
        .collect()
}

fn build_one(config: &FilterConfig, index: usize, source: &Source, base: &Path) -> Result<BuiltFilter, ConfigError> {
    let name = config.name.get_ref().clone();
    let filter: Arc<dyn Filter> = match config.kind(source, index)? {
        FilterKind::Declarative => Arc::new(DeclarativeFilter::new(config)),
        FilterKind::Script {
            origin,
            max_operations,
            on_error,
        } => {
            let limits = Limits {
                max_operations,
                ..Limits::default()
            };
            Arc::new(compile(&name, origin, limits, on_error, index, source, base)?)
        }
    };
    Ok(BuiltFilter {
        name,
        priority: config.priority.0,
        position: config.name.span().start,
        filter,
    })
}

fn compile(
    name: &str,
    origin: ScriptOrigin<'_>,
    limits: Limits,
    on_error: OnError,
    index: usize,
    source: &Source,
    base: &Path,
) -> Result<ScriptFilter, ConfigError> {
    let counter = metrics::error_counter(name);
    match origin {
        ScriptOrigin::File(path) => {
            let file = base.join(path.get_ref());
            let code = std::fs::read_to_string(&file).map_err(|e| {
                source.error_at_span(
                    path.span(),
                    Some(format!("filters[{index}].script")),
                    format!("cannot read script {}: {e}", file.display()),
                )
            })?;
            ScriptFilter::compile(name, &code, limits, on_error, counter).map_err(|e| ConfigError {
                file: file.display().to_string(),
                line: e.line,
                column: e.column,
                key: None,
                message: format!("filter \"{name}\": {}", e.message),
            })
        }
        ScriptOrigin::Inline(code) => {
            ScriptFilter::compile(name, code.get_ref(), limits, on_error, counter).map_err(|e| {
                source.error_in_string(
                    code.span(),
                    e.line,
                    e.column,
                    Some(format!("filters[{index}].source")),
                    format!("filter \"{name}\": {}", e.message),
                )
            })
        }
    }
}
