//! The redb table names of a slot: its queue and its dead letters, by the
//! slot's spool name (`KIND.NAME`). Every table family opens a slot's
//! tables through these.

/// The name of slot `name`'s queue table.
pub(crate) fn queue_table(name: &str) -> String {
    format!("queue/{name}")
}

/// The name of slot `name`'s dead-letter table.
pub(crate) fn dead_table(name: &str) -> String {
    format!("dead/{name}")
}
