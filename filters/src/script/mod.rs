//! Script filters: a Rhai script in the chain, sandboxed and limited.
//!
//! The script defines `fn filter(event)`; it is compiled once when the
//! chain is built ([`ScriptFilter::compile`]) and called for each event with
//! the canonical record as an `Event` object whose fields are read-only
//! except `metadata`. See `docs/plugins.md` for the contract.

mod config;
mod deadline;
mod event;
mod filter;
mod helpers;
mod log_limit;
mod regex_cache;
mod sandbox;

pub use config::{Limits, OnError};
pub use filter::{CompileError, ScriptError, ScriptFilter};
pub use regex_cache::RegexCache;

#[cfg(test)]
mod tests;
