//! The top-level sections of the config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// A whole config file. `F` is the filter entry type and `B` the backends
/// table, both defined by the modules that own them.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    bound(deserialize = "F: Deserialize<'de>, B: Deserialize<'de> + Default")
)]
pub struct Document<F, B> {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default = "Vec::new")]
    pub filters: Vec<F>,
    #[serde(default)]
    pub backends: B,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the ingest and admin listener (a host name is resolved
    /// when the config is read).
    #[serde(deserialize_with = "crate::listen::listen_addr")]
    pub listen: SocketAddr,
    /// When set (non-empty), every request needs `Authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// Requests with larger bodies get 413.
    pub max_body_bytes: usize,
    /// On SIGTERM, how long in-flight deliveries may take to finish.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
            auth_token: None,
            max_body_bytes: 1 << 20,
            shutdown_grace_ms: 10_000,
        }
    }
}

impl ServerConfig {
    /// The token, if auth is on (an empty string, e.g. from an empty
    /// variable, means off).
    pub fn token(&self) -> Option<&str> {
        self.auth_token.as_deref().filter(|t| !t.is_empty())
    }
}

/// `[spool]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory of the embedded store.
    pub dir: PathBuf,
    /// Events waiting per backend before ingest answers 503.
    pub max_queue: u64,
    /// Bytes of event data held (queues and dead letters) before ingest
    /// answers 503.
    pub max_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: PathBuf::from("./data"),
            max_queue: 1_000_000,
            max_bytes: 1 << 30,
        }
    }
}
