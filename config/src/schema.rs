//! The top-level sections of the config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// A whole config file. `F` is the filter entry type, `B` the backends
/// table and `S` the ingest sources table (`[sources.KIND.NAME]`), each
/// defined by the modules that own them.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    bound(deserialize = "F: Deserialize<'de>, B: Deserialize<'de> + Default, S: Deserialize<'de> + Default")
)]
pub struct Document<F, B, S = NoSources> {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    #[serde(default = "Vec::new")]
    pub filters: Vec<F>,
    #[serde(default)]
    pub backends: B,
    #[serde(default)]
    pub sources: S,
}

/// A `[sources]` table with no kinds: for documents whose program has no
/// ingest sources, so any `[sources.KIND]` is an unknown key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSources {}

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
    /// On SIGTERM, how long the whole shutdown may take: in-flight
    /// requests, then in-flight deliveries. Connections still open at the
    /// deadline are closed.
    pub shutdown_grace_ms: u64,
    /// A connection must send a request's headers within this long (from
    /// its first byte, or from the end of the previous request), else it
    /// is closed: slowloris and idle keep-alive connections do not pile up.
    pub header_timeout_ms: u64,
    /// A request's whole body must arrive within this long, else 408.
    pub body_timeout_ms: u64,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long an `Idempotency-Key` is remembered (0: keys are ignored).
    pub idempotency_window_s: u64,
    /// Most keys remembered at once; the oldest are forgotten first.
    pub idempotency_max_keys: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
            auth_token: None,
            max_body_bytes: 1 << 20,
            shutdown_grace_ms: 10_000,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_connections: 1024,
            idempotency_window_s: 24 * 3600,
            idempotency_max_keys: 1_000_000,
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
    /// Dead letters older than this many seconds are deleted (0: kept
    /// until replayed or the backend is removed).
    pub dead_letter_retention_s: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: PathBuf::from("./data"),
            max_queue: 1_000_000,
            max_bytes: 1 << 30,
            dead_letter_retention_s: 0,
        }
    }
}

/// `[webhooks]`: runtime webhook subscriptions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// A subscription whose deliveries fail without one success for this
    /// many seconds is disabled (0: never).
    pub disable_after_s: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            disable_after_s: 5 * 24 * 3600,
        }
    }
}
