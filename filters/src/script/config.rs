//! The settings of one script filter: what a failing event gets, and the
//! sandbox's limits.

use serde::Deserialize;

/// `on_error`: what an event gets when its script throws or runs over a
/// limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The event goes on as it came in (metadata the script set before
    /// failing is dropped).
    #[default]
    Continue,
    /// The event stops here.
    Stop,
}

/// Bounds on what one call of `fn filter(event)` may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rhai operations per event (`max_operations`).
    pub max_operations: u64,
    /// Nested function calls: 8 in debug builds (as Rhai's own default:
    /// their frames are large), 32 in release, so a deep recursion ends in an
    /// error, not in overflowing a worker thread's stack, which nothing
    /// could catch.
    pub max_call_levels: usize,
    /// Bytes in one string. At least as large as an ingest body, so any
    /// field of an accepted event can be read.
    pub max_string_size: usize,
    /// Elements of one array (nested ones counted).
    pub max_array_size: usize,
    /// Entries of one object map (nested ones counted).
    pub max_map_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: crate::entry::DEFAULT_MAX_OPERATIONS,
            max_call_levels: if cfg!(debug_assertions) { 8 } else { 32 },
            max_string_size: 1 << 20,
            max_array_size: 10_000,
            max_map_size: 10_000,
        }
    }
}
