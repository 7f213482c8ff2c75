//! `event-pusher erase-user JID` (through the running sidecar's admin API)
//! and `event-pusher spool check` (on a stopped sidecar's spool).

use std::fmt::Write;
use std::path::Path;

use event_pusher_core::spool::check::{check as check_spool, CheckReport};

use super::target::Target;
use super::{check, client, CommandError};
use crate::runtime::Sidecar;

/// `DELETE /v1/users/{jid}` on the running sidecar; prints the counts.
pub async fn erase_user(target: Target, jid: &str) -> Result<String, CommandError> {
    let http = client(target.token.as_deref())?;
    let encoded: String = url::form_urlencoded::byte_serialize(jid.as_bytes()).collect();
    let url = format!("{}/v1/users/{}", target.url, encoded.replace('+', "%20"));
    let resp = http
        .delete(&url)
        .send()
        .await
        .map_err(|e| CommandError(format!("cannot reach {}: {e}", target.url)))?;
    let v: serde_json::Value = check(resp)
        .await?
        .json()
        .await
        .map_err(|e| CommandError(format!("unexpected answer: {e}")))?;
    Ok(format!(
        "erased {jid}: {} queued events, {} dead letters, {} devices\n",
        v["queued"], v["dead_letters"], v["devices"]
    ))
}

/// Check the spool of `config` (its `spool.dir`) or in `dir`: the report,
/// or an error naming what is broken (exit 1).
pub fn spool_check(config: Option<&Path>, dir: Option<&Path>, json: bool) -> Result<String, CommandError> {
    let dir = match (config, dir) {
        (_, Some(d)) => d.to_path_buf(),
        (Some(c), None) => Sidecar::from_file(c)?.config().spool.dir.clone(),
        (None, None) => return Err(CommandError("say which spool: --config FILE or --dir DIR".into())),
    };
    if !dir.join("spool.redb").exists() {
        return Err(CommandError(format!("there is no spool in {}", dir.display())));
    }
    let report = check_spool(&dir).map_err(|e| CommandError(e.to_string()))?;
    let out = if json {
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
    } else {
        render(&report, &dir)
    };
    if report.is_ok() {
        Ok(out)
    } else {
        // The counts still help; the problems are the error.
        print!("{out}");
        Err(CommandError(format!(
            "spool {} is broken: {}",
            dir.display(),
            report.problems.join("; ")
        )))
    }
}

fn render(r: &CheckReport, dir: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "spool {} ({} bytes)", dir.join("spool.redb").display(), r.bytes);
    let _ = writeln!(out, "integrity: {}", if r.is_ok() { "ok" } else { "BROKEN" });
    for (backend, n) in &r.queued {
        let dead = r.dead_letters.iter().find(|(b, _)| b == backend).map_or(0, |(_, d)| *d);
        let _ = writeln!(out, "  {backend}: {n} queued, {dead} dead letters");
    }
    let dead: u64 = r.dead_letters.iter().map(|(_, d)| d).sum();
    let _ = writeln!(out, "dead letters: {dead}");
    let _ = writeln!(out, "idempotency keys: {}", r.idempotency_keys);
    let _ = writeln!(out, "devices: {}", r.devices);
    let _ = writeln!(out, "subscriptions: {}", r.subscriptions);
    let _ = writeln!(out, "shared events: {}", r.shared_events);
    if r.fanout_pending > 0 {
        // Written to their queues by the sidecar when it runs again.
        let _ = writeln!(out, "fan-out rows pending: {}", r.fanout_pending);
    }
    for p in &r.problems {
        let _ = writeln!(out, "problem: {p}");
    }
    out
}
