//! Built-in filters. Today: the declarative filter, configured as
//! `[[filters]]` entries that match events, add metadata and stop or let
//! them continue.

pub mod declarative;

pub use declarative::{DeclarativeFilter, FilterConfig};
