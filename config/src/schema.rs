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
    /// `[cluster]`: devices, presence and webhook subscriptions shared with
    /// the other sidecars through PostgreSQL. Absent: all of it stays in the
    /// embedded spool.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// `[egress]`: where API-chosen URLs may point.
    #[serde(default)]
    pub egress: crate::EgressConfig,
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

/// `[cluster]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// PostgreSQL connection string (URL or `key=value` form). It may carry
    /// a password: never print it, print [`ClusterConfig::redacted_postgres`].
    pub postgres: String,
    /// Connections in the pool.
    #[serde(
        default = "ClusterConfig::default_pool_size",
        deserialize_with = "crate::types::positive"
    )]
    pub pool_size: usize,
    /// This sidecar's name in status and metrics (default: host name and
    /// listen port).
    #[serde(default)]
    pub node: Option<String>,
}

impl ClusterConfig {
    fn default_pool_size() -> usize {
        8
    }

    /// The connection string with its password replaced by `***`, for logs,
    /// status and `check-config`.
    pub fn redacted_postgres(&self) -> String {
        redact_conninfo(&self.postgres)
    }
}

/// Debug without the password: configs end up in logs.
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("postgres", &self.redacted_postgres())
            .field("pool_size", &self.pool_size)
            .field("node", &self.node)
            .finish()
    }
}

/// Hide the password of a libpq connection string, in either form:
/// `postgres://user:PASSWORD@host/db` or `... password=PASSWORD ...`
/// (also the `?password=` URL parameter).
fn redact_conninfo(conninfo: &str) -> String {
    let mut out = conninfo.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        // The userinfo ends at the last '@' before the path.
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@').map(|i| rest + i) {
            if let Some(colon) = out[rest..at].find(':').map(|i| rest + i) {
                out.replace_range(colon + 1..at, "***");
            }
        }
    }
    redact_password_param(&out)
}

/// `password=VALUE` as a URL query parameter or a `key=value` pair
/// (a quoted value may contain spaces).
fn redact_password_param(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("password=") {
        let at_boundary = i == 0 || matches!(rest.as_bytes()[i - 1], b' ' | b'?' | b'&' | b'\t');
        let value_start = i + "password=".len();
        out.push_str(&rest[..value_start]);
        if !at_boundary {
            rest = &rest[value_start..];
            continue;
        }
        let value = &rest[value_start..];
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            // Up to the closing quote (backslash escapes a quote).
            let mut chars = quoted.char_indices();
            let mut end = value.len();
            while let Some((j, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '\'' => {
                        end = j + 2;
                        break;
                    }
                    _ => {}
                }
            }
            end
        } else {
            value.find([' ', '&', '\t']).unwrap_or(value.len())
        };
        out.push_str("***");
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_every_form() {
        for (input, want) in [
            (
                "postgres://ep:s3cret@10.0.0.5:5432/ep",
                "postgres://ep:***@10.0.0.5:5432/ep",
            ),
            ("postgresql://ep:p@ss@host/db", "postgresql://ep:***@host/db"),
            ("postgres://ep@host/db", "postgres://ep@host/db"),
            (
                "postgres://host/db?user=ep&password=s3cret&x=1",
                "postgres://host/db?user=ep&password=***&x=1",
            ),
            (
                "host=h user=ep password=s3cret dbname=ep",
                "host=h user=ep password=*** dbname=ep",
            ),
            ("host=h password='a b\\' c' dbname=ep", "host=h password=*** dbname=ep"),
            ("host=h user=nopassword=x", "host=h user=nopassword=x"),
        ] {
            assert_eq!(redact_conninfo(input), want, "{input}");
        }
    }

    type Doc = Document<toml::Table, toml::Table>;

    fn parse(text: &str) -> Result<Doc, crate::ConfigError> {
        crate::parse::<Doc>("t.toml", text, |name| {
            (name == "PG").then(|| "postgres://ep:pw@h/db".to_owned())
        })
        .map(|(doc, _)| doc)
    }

    #[test]
    fn the_cluster_table_is_optional_and_has_defaults() {
        assert!(parse("").unwrap().cluster.is_none());
        let c = parse("[cluster]\npostgres = \"${PG}\"\n").unwrap().cluster.unwrap();
        assert_eq!(
            (c.postgres.as_str(), c.pool_size, c.node),
            ("postgres://ep:pw@h/db", 8, None)
        );
        let c = parse("[cluster]\npostgres = \"x\"\npool_size = 2\nnode = \"chat-1\"\n")
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!((c.pool_size, c.node.as_deref()), (2, Some("chat-1")));
    }

    #[test]
    fn cluster_errors_have_position_and_key() {
        let e = parse("[cluster]\npostgres = \"x\"\npool = 3\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        assert!(e.message.contains("unknown field `pool`"), "{e}");
        let e = parse("[cluster]\npostgres = \"x\"\npool_size = 0\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert_eq!(e.key.as_deref(), Some("cluster.pool_size"), "{e}");
        let e = parse("[cluster]\nnode = \"a\"\n").unwrap_err();
        assert!(e.message.contains("missing field `postgres`"), "{e}");
    }

    #[test]
    fn debug_does_not_show_the_password() {
        let c = ClusterConfig {
            postgres: "postgres://ep:s3cret@h/db".into(),
            pool_size: 8,
            node: None,
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
