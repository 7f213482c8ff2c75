//! What can go wrong talking to the cluster store, split by what the caller
//! does about it: `Unavailable` means "the store cannot be reached, try
//! later" (the admin API answers 503 `cluster store unavailable`), anything
//! else is a real problem with the request or the database.

use thiserror::Error;

/// The admin API's error text for [`ClusterError::Unavailable`]
/// (`503 {"error": "cluster store unavailable"}`).
pub const UNAVAILABLE: &str = "cluster store unavailable";

#[derive(Debug, Error)]
pub enum ClusterError {
    /// The store cannot be reached (connection refused or lost, pool
    /// timeout, the server shutting down). Nothing was committed, except
    /// possibly when the connection was lost during the commit itself.
    #[error("cluster store unavailable: {0}")]
    Unavailable(#[source] Unreachable),
    /// The `postgres` setting is not a connection string PostgreSQL's
    /// client understands.
    #[error("cluster.postgres: {0}")]
    Config(#[source] tokio_postgres::Error),
    /// The database refused a statement (not a connectivity problem).
    #[error("cluster store: {0}")]
    Database(#[source] tokio_postgres::Error),
    /// The database refused a change as invalid data (e.g. a NUL
    /// character in a string): retrying it cannot help.
    #[error("cluster store rejected the change: {0}")]
    Rejected(#[source] tokio_postgres::Error),
    /// A newer sidecar migrated the database: its schema may not be ours
    /// to read.
    #[error(
        "cluster store: unreadable schema: schema version {found} is newer than this build's {}; upgrade this sidecar",
        crate::migrate::SCHEMA_VERSION
    )]
    NewerSchema { found: i32 },
    /// An outbox sequence number beyond what the database column holds.
    #[error("cluster store: unreadable outbox sequence number: {0} is larger than {max}", max = i64::MAX)]
    SequenceTooLarge(u64),
}

/// Why the store could not be reached.
#[derive(Debug, Error)]
pub enum Unreachable {
    /// A connection failed, or the server cannot take one now.
    #[error(transparent)]
    Postgres(tokio_postgres::Error),
    /// No pooled connection could be had.
    #[error(transparent)]
    Pool(deadpool_postgres::PoolError),
    /// The connection pool could not be built.
    #[error(transparent)]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("timed out")]
    TimedOut,
    /// The connection that listens for other sidecars' notices ended.
    #[error("listening connection lost")]
    ListenerLost,
}

impl ClusterError {
    /// True when the store could not be reached: the caller answers 503
    /// and may retry; nothing changed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ClusterError::Unavailable(_))
    }
}

impl From<tokio_postgres::Error> for ClusterError {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(code) = e.code() else {
            // No SQLSTATE: an I/O error, a closed connection or a timeout.
            return ClusterError::Unavailable(Unreachable::Postgres(e));
        };
        let code = code.code();
        if code.starts_with("08") // connection exception
            || code.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
            || code == "53300" // too many connections
            || code == "3D000"
        // the database does not exist (yet, or was dropped)
        {
            ClusterError::Unavailable(Unreachable::Postgres(e))
        } else if code.starts_with("22") || code.starts_with("23") {
            ClusterError::Rejected(e)
        } else {
            ClusterError::Database(e)
        }
    }
}

impl From<deadpool_postgres::PoolError> for ClusterError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => ClusterError::Unavailable(Unreachable::Pool(other)),
        }
    }
}

impl From<tokio::time::error::Elapsed> for ClusterError {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        ClusterError::Unavailable(Unreachable::TimedOut)
    }
}
