//! `[outgoing_pools.http.*]` and `[outgoing_pools.rabbit.*]`: the
//! connections MongooseIM's event pusher backends send through.
//!
//! A pool's worker-pool tuning has no equivalent here (event-pusher queues
//! each backend's events in its spool and sends `concurrency` at a time), so
//! those settings come back as comments for the section that uses the pool.

use super::output::Line;
use super::reader::{Result, Table, Val};

const WPOOL_KEYS: [&str; 5] = ["scope", "workers", "strategy", "call_timeout", "max_worker_queue_len"];
const SCOPE_WHY: &str = "event-pusher's backends serve every host of the chat server";
const WPOOL_WHY: &str =
    "worker-pool tuning: event-pusher queues each backend's events in its spool and sends `concurrency` at a time";
const TLS_WHY: &str = "TLS client options have no equivalent: the system's trusted roots verify the server";

/// `[outgoing_pools.http.NAME]`
pub struct HttpPool {
    /// `host` + `path_prefix`, exactly as MongooseIM joins them (no `/` added).
    pub host: Val<String>,
    pub path_prefix: String,
    /// `request_timeout` in ms, when set and above 0.
    pub request_timeout_ms: Option<i64>,
    pub workers: Option<i64>,
    /// Settings without an equivalent, as comments.
    pub unmapped: Vec<Line>,
}

/// The pool `outgoing_pools.KIND.NAME`, if the file defines it.
pub fn find<'a, 'i>(root: &Table<'a, 'i>, kind: &str, name: &str) -> Result<Option<Table<'a, 'i>>> {
    let Some(pools) = root.table("outgoing_pools")? else {
        return Ok(None);
    };
    let Some(of_kind) = pools.table(kind)? else {
        return Ok(None);
    };
    of_kind.table(name)
}

fn wpool(pool: &Table<'_, '_>, unmapped: &mut Vec<Line>) -> Result<Option<i64>> {
    unmapped.extend(pool.unmapped("scope", SCOPE_WHY));
    for key in &WPOOL_KEYS[2..] {
        unmapped.extend(pool.unmapped(key, WPOOL_WHY));
    }
    Ok(pool.int("workers")?.map(|w| w.value))
}

pub fn http(pool: &Table<'_, '_>) -> Result<HttpPool> {
    let mut keys = WPOOL_KEYS.to_vec();
    keys.push("connection");
    pool.check_keys(&keys)?;
    let mut unmapped = Vec::new();
    let workers = wpool(pool, &mut unmapped)?;
    let Some(conn) = pool.table("connection")? else {
        return Err(pool.error("an http pool needs a [connection] table with `host`"));
    };
    conn.check_keys(&["host", "path_prefix", "request_timeout", "tls"])?;
    let Some(host) = conn.str("host")? else {
        return Err(conn.error("`host` is required (e.g. \"https://server.com:8000\")"));
    };
    match url::Url::parse(&host.value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
        _ => {
            return Err(conn.error_at(
                "host",
                host.span.clone(),
                format!("\"{}\" is not an http:// or https:// URL with a host", host.value),
            ))
        }
    }
    let path_prefix = conn.str("path_prefix")?.map(|p| p.value).unwrap_or_else(|| "/".into());
    let mut request_timeout_ms = Some(2000);
    if let Some(t) = conn.int("request_timeout")? {
        if t.value > 0 {
            request_timeout_ms = Some(t.value);
        } else {
            request_timeout_ms = None;
            unmapped.extend(conn.unmapped(
                "request_timeout",
                "a timeout must be at least 1 ms here; the backend's default (5000) applies",
            ));
        }
    }
    unmapped.extend(conn.unmapped("tls", TLS_WHY));
    Ok(HttpPool {
        host,
        path_prefix,
        request_timeout_ms,
        workers,
        unmapped,
    })
}

/// `[outgoing_pools.rabbit.event_pusher]`
pub struct RabbitPool {
    /// `amqp[s]://user:password@host:port/vhost`, each part percent-encoded.
    pub url: String,
    pub unmapped: Vec<Line>,
}

pub fn rabbit(pool: &Table<'_, '_>) -> Result<RabbitPool> {
    let mut keys = WPOOL_KEYS.to_vec();
    keys.push("connection");
    pool.check_keys(&keys)?;
    let mut unmapped = Vec::new();
    let _ = wpool(pool, &mut unmapped)?;
    unmapped.extend(pool.unmapped(
        "workers",
        "publishing runs on `pool_size` channels (default 2), each with many confirms in flight",
    ));
    let conn = pool.table("connection")?;
    if let Some(c) = &conn {
        c.check_keys(&[
            "host",
            "port",
            "username",
            "password",
            "virtual_host",
            "confirms_enabled",
            "tls",
            "reconnect",
        ])?;
    }
    // MongooseIM's defaults, for a pool without some (or all) of these.
    let get = |key: &str, default: &str| -> Result<String> {
        Ok(match &conn {
            Some(c) => c.str(key)?.map(|v| v.value),
            None => None,
        }
        .unwrap_or_else(|| default.to_owned()))
    };
    let host = get("host", "localhost")?;
    let username = get("username", "guest")?;
    let password = get("password", "guest")?;
    let vhost = get("virtual_host", "/")?;
    let mut port = 5672;
    let mut tls = false;
    if let Some(c) = &conn {
        if let Some(p) = c.int("port")? {
            if !(1..=65535).contains(&p.value) {
                return Err(c.error_at("port", p.span, format!("port {} is not between 1 and 65535", p.value)));
            }
            port = p.value;
        }
        tls = c.contains("tls");
        unmapped.extend(c.unmapped(
            "confirms_enabled",
            "event-pusher always waits for the broker to confirm each publish",
        ));
        unmapped.extend(c.unmapped("tls", TLS_WHY));
        unmapped.extend(c.unmapped(
            "reconnect",
            "event-pusher reconnects by itself, with backoff, and keeps events in its spool meanwhile",
        ));
    }
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let url = format!(
        "{}://{}:{}@{host}:{port}/{}",
        if tls { "amqps" } else { "amqp" },
        encode(&username),
        encode(&password),
        encode(&vhost)
    );
    Ok(RabbitPool { url, unmapped })
}

/// Percent-encode a URL part: everything but unreserved characters, so
/// the vhost `/` becomes `%2F` and a password may hold `@` or `:`.
fn encode(s: &str) -> String {
    const PART: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, PART).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_vhost_and_credentials() {
        assert_eq!(encode("/"), "%2F");
        assert_eq!(encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
        assert_eq!(encode("prod-1.x_y~"), "prod-1.x_y~");
    }
}
