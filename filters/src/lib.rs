//! Built-in filters, configured as `[[filters]]` entries: the declarative
//! filter (match, add metadata, stop or continue) and script filters (a
//! sandboxed Rhai `fn filter(event)`). [`build`] turns a config's entries
//! into filters for the chain.

mod build;
pub mod declarative;
mod entry;
pub mod metrics;
pub mod script;

pub use build::{build, BuiltFilter};
pub use declarative::DeclarativeFilter;
pub use entry::{FilterConfig, FilterKind, ScriptOrigin, DEFAULT_MAX_OPERATIONS};
pub use script::{OnError, ScriptFilter};
