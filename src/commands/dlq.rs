//! `event-pusher dlq list|replay`: dead letters, through the running
//! sidecar's admin API, or straight from the spool when it is not running
//! (the spool file can only be open in one process at a time).

use std::fmt::Write;
use std::path::Path;

use event_pusher_core::delivery::dead_letters;
use event_pusher_core::spool::{DeadLetter, Spool, SpoolError, SpoolLimits};
use event_pusher_core::Slot;
use serde_json::json;

use super::{base_url, check, client, CommandError};
use crate::runtime::Sidecar;

pub enum Action {
    List { json: bool },
    Replay { ids: Vec<String> },
}

pub async fn run(config: Option<&Path>, backend: Option<&str>, action: Action) -> Result<String, CommandError> {
    let sidecar = match config {
        Some(p) => Sidecar::from_file(p)?,
        None => Sidecar::embedded_default()?,
    };
    let cfg = sidecar.config();
    let base = base_url(cfg.server.listen);
    let http = client(cfg.server.token())?;
    match via_api(&http, &base, backend, &action).await {
        Ok(out) => Ok(out),
        Err(ApiError::Unreachable) => offline(&sidecar, backend, &action).await,
        Err(ApiError::Failed(e)) => Err(e),
    }
}

enum ApiError {
    Unreachable,
    Failed(CommandError),
}

async fn via_api(
    http: &reqwest::Client,
    base: &str,
    backend: Option<&str>,
    action: &Action,
) -> Result<String, ApiError> {
    let sent = match action {
        Action::List { .. } => {
            let mut req = http.get(format!("{base}/v1/dead-letters"));
            if let Some(b) = backend {
                req = req.query(&[("backend", b)]);
            }
            req.send().await
        }
        Action::Replay { ids } => {
            let mut body = json!({});
            if let Some(b) = backend {
                body["backend"] = json!(b);
            }
            if !ids.is_empty() {
                body["ids"] = json!(ids);
            }
            http.post(format!("{base}/v1/dead-letters/replay"))
                .json(&body)
                .send()
                .await
        }
    };
    let resp = match sent {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Err(ApiError::Unreachable),
        Err(e) => return Err(ApiError::Failed(CommandError(format!("cannot reach {base}: {e}")))),
    };
    let resp = check(resp).await.map_err(ApiError::Failed)?;
    let bad = |e: reqwest::Error| ApiError::Failed(CommandError(format!("unexpected answer: {e}")));
    match action {
        Action::List { json } => {
            let records: Vec<DeadLetter> = resp.json().await.map_err(bad)?;
            Ok(render(&records, *json))
        }
        Action::Replay { .. } => {
            let v: serde_json::Value = resp.json().await.map_err(bad)?;
            Ok(format!("replayed {} dead letters\n", v["replayed"]))
        }
    }
}

async fn offline(sidecar: &Sidecar, backend: Option<&str>, action: &Action) -> Result<String, CommandError> {
    let slots = sidecar.build()?.slots;
    let names = slots.ids();
    let dir = sidecar.config().spool.dir.clone();
    let chosen = slots.select(backend).map_err(|e| CommandError(e.to_string()))?;
    if !dir.join("spool.redb").exists() {
        return Err(CommandError(format!(
            "the sidecar is not running at {} and there is no spool in {}",
            base_url(sidecar.config().server.listen),
            dir.display()
        )));
    }
    let spool = tokio::task::spawn_blocking(move || Spool::open(&dir, &names, SpoolLimits::default()))
        .await
        .map_err(|e| CommandError(e.to_string()))?
        .map_err(|e| CommandError(format!("sidecar not running and {e}")))?;
    let result = offline_action(&spool, chosen, action).await;
    // Close cleanly, so the sidecar's next start needs no repair.
    let closed = spool.close().await;
    let out = result?;
    closed.map_err(|e| CommandError(e.to_string()))?;
    Ok(out)
}

async fn offline_action(spool: &Spool, slots: Vec<Slot>, action: &Action) -> Result<String, CommandError> {
    let failed = |e: SpoolError| CommandError(e.to_string());
    match action {
        Action::List { json } => {
            let all = dead_letters::list(spool, slots).await.map_err(failed)?;
            Ok(render(&all, *json))
        }
        Action::Replay { ids } => {
            let ids = (!ids.is_empty()).then(|| ids.clone());
            let n = dead_letters::replay(spool, slots, ids).await.map_err(failed)?;
            Ok(format!(
                "replayed {n} dead letters (sidecar not running: they go out when it starts)\n"
            ))
        }
    }
}

fn render(records: &[DeadLetter], as_json: bool) -> String {
    if as_json {
        return serde_json::to_string_pretty(records).unwrap_or_default() + "\n";
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<26} {:>8}  {:<24} LAST ERROR",
        "BACKEND", "ID", "ATTEMPTS", "DEAD AT"
    );
    for r in records {
        let err = match r.last_error.status {
            Some(s) => format!("[{s}] {}", r.last_error.message),
            None => r.last_error.message.clone(),
        };
        let _ = writeln!(
            out,
            "{:<12} {:<26} {:>8}  {:<24} {}",
            r.backend, r.id, r.attempts, r.dead_at, err
        );
    }
    let _ = writeln!(out, "{} dead letters", records.len());
    out
}
