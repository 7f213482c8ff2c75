//! `event-pusher check-config FILE`: validate and print the chain.

use std::fmt::Write;
use std::path::Path;

use crate::runtime::Sidecar;

use super::CommandError;

/// The summary printed on success.
pub fn run(path: &Path) -> Result<String, CommandError> {
    let sidecar = Sidecar::from_file(path)?;
    let crate::runtime::Assembly { chain, backends, .. } = sidecar.build()?;
    let cfg = sidecar.config();
    let mut out = String::new();
    let _ = writeln!(out, "{}: OK", path.display());
    let _ = writeln!(
        out,
        "listen {} · spool {} · auth {} · max body {} bytes",
        cfg.server.listen,
        cfg.spool.dir.display(),
        if cfg.server.token().is_some() { "on" } else { "off" },
        cfg.server.max_body_bytes
    );
    let s = &cfg.server;
    let _ = writeln!(
        out,
        "connections ≤ {} · header timeout {} ms · body timeout {} ms · shutdown grace {} ms · idempotency keys {}",
        s.max_connections,
        s.header_timeout_ms,
        s.body_timeout_ms,
        s.shutdown_grace_ms,
        if s.idempotency_window_s == 0 {
            "off".to_owned()
        } else {
            format!("{} s, at most {}", s.idempotency_window_s, s.idempotency_max_keys)
        }
    );
    match &cfg.cluster {
        // The connection string is shown without its password.
        Some(c) => {
            let node = match &c.node {
                Some(n) => n.clone(),
                None => format!(
                    "{} (default: host name and listen port)",
                    event_pusher_cluster::default_node_name(cfg.server.listen.port())
                ),
            };
            let _ = writeln!(
                out,
                "cluster store {} · pool {} connections · node {node}",
                c.redacted_postgres(),
                c.pool_size
            );
        }
        None => {
            let _ = writeln!(
                out,
                "cluster off (devices, presence and subscriptions stay in this spool)"
            );
        }
    }
    let _ = writeln!(
        out,
        "chain ({} handlers, lowest priority first):",
        chain.describe().len()
    );
    for (name, priority, what) in chain.describe() {
        let detail = match backends
            .iter()
            .map(|(_, b)| b)
            .find(|b| b.name == name && b.backend.kind == what)
        {
            Some(b) => {
                let classes: Vec<&str> = event_pusher_core::EventClass::ALL
                    .iter()
                    .filter(|c| b.classes.contains(**c))
                    .map(|c| c.name())
                    .collect();
                format!(
                    "  events={} concurrency={} max_attempts={}",
                    classes.join(","),
                    b.options.concurrency,
                    b.options.retry.max_attempts
                )
            }
            None => String::new(),
        };
        let _ = writeln!(out, "  {priority:>6}  {what:<8} {name}{detail}");
    }
    for source in cfg.sources.ids() {
        let _ = writeln!(out, "source {source}");
    }
    if backends.is_empty() {
        let _ = writeln!(out, "warning: no backends configured: accepted events go nowhere");
    }
    Ok(out)
}
