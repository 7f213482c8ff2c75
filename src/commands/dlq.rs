//! `event-pusher dlq list|replay`: dead letters, through the running
//! sidecar's admin API. Only when `--config` names the sidecar's config and
//! no sidecar answers does it open that config's spool directly (the spool
//! file can only be open in one process at a time); without `--config` it
//! never guesses a spool.

use std::fmt::Write;

use event_pusher_core::delivery::dead_letters::{self, Page, PageError, PageRequest};
use event_pusher_core::spool::{DeadLetter, Spool, SpoolError, SpoolLimits};
use event_pusher_core::Slot;
use serde_json::json;

use super::target::Target;
use super::{check, client, CommandError};
use crate::runtime::Sidecar;

pub enum Action {
    List {
        json: bool,
        limit: usize,
        after: Option<String>,
    },
    Replay {
        ids: Vec<String>,
        /// RFC 3339: only what died at or after it / at or before it.
        since: Option<String>,
        until: Option<String>,
    },
}

pub async fn run(target: Target, backend: Option<&str>, action: Action) -> Result<String, CommandError> {
    let http = client(target.token.as_deref())?;
    match via_api(&http, &target.url, backend, &action).await {
        Ok(out) => Ok(out),
        Err(ApiError::Unreachable(why)) => match &target.sidecar {
            Some(sidecar) => {
                eprintln!(
                    "no sidecar at {}; reading the spool at {} directly",
                    target.url,
                    sidecar.config().spool.dir.display()
                );
                offline(sidecar, backend, &action).await
            }
            None => Err(CommandError(format!(
                "no sidecar at {} ({why}); start it, pass --url, or pass --config FILE to read that config's spool directly",
                target.url
            ))),
        },
        Err(ApiError::Failed(e)) => Err(e),
    }
}

enum ApiError {
    Unreachable(String),
    Failed(CommandError),
}

async fn via_api(
    http: &reqwest::Client,
    base: &str,
    backend: Option<&str>,
    action: &Action,
) -> Result<String, ApiError> {
    let sent = match action {
        Action::List { limit, after, .. } => {
            let mut req = http
                .get(format!("{base}/v1/dead-letters"))
                .query(&[("limit", limit.to_string())]);
            if let Some(b) = backend {
                req = req.query(&[("backend", b)]);
            }
            if let Some(a) = after {
                req = req.query(&[("after", a)]);
            }
            req.send().await
        }
        Action::Replay { ids, since, until } => {
            let mut body = json!({});
            if let Some(b) = backend {
                body["backend"] = json!(b);
            }
            if !ids.is_empty() {
                body["ids"] = json!(ids);
            }
            if let Some(s) = since {
                body["since"] = json!(s);
            }
            if let Some(u) = until {
                body["until"] = json!(u);
            }
            http.post(format!("{base}/v1/dead-letters/replay"))
                .json(&body)
                .send()
                .await
        }
    };
    let resp = match sent {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Err(ApiError::Unreachable(e.to_string())),
        Err(e) => return Err(ApiError::Failed(CommandError(format!("cannot reach {base}: {e}")))),
    };
    let resp = check(resp).await.map_err(ApiError::Failed)?;
    let bad = |e: reqwest::Error| ApiError::Failed(CommandError(format!("unexpected answer: {e}")));
    match action {
        Action::List { json, .. } => {
            let next_after = resp
                .headers()
                .get("x-next-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let records: Vec<DeadLetter> = resp.json().await.map_err(bad)?;
            Ok(render(&Page { records, next_after }, *json))
        }
        Action::Replay { .. } => {
            let v: serde_json::Value = resp.json().await.map_err(bad)?;
            Ok(format!("replayed {} dead letters\n", v["replayed"]))
        }
    }
}

async fn offline(sidecar: &Sidecar, backend: Option<&str>, action: &Action) -> Result<String, CommandError> {
    let mut slots = sidecar.build()?.slots;
    let names = slots.ids();
    let dir = sidecar.config().spool.dir.clone();
    if !dir.join("spool.redb").exists() {
        // An unknown name is still the first thing to report.
        slots.select(backend).map_err(|e| CommandError(e.to_string()))?;
        return Err(CommandError(format!("there is no spool in {}", dir.display())));
    }
    let spool = tokio::task::spawn_blocking(move || Spool::open(&dir, &names, SpoolLimits::default()))
        .await
        .map_err(|e| CommandError(e.to_string()))?
        .map_err(|e| CommandError(format!("sidecar not answering and {e}")))?;
    // Webhook subscriptions are in the spool, not the config: their slots
    // too, so their dead letters are listed and replayed like the rest.
    let result = match crate::webhooks::attach_stored(&spool, &mut slots).await {
        Ok(()) => match slots.select(backend) {
            Ok(chosen) => offline_action(&spool, chosen, action).await,
            Err(e) => Err(CommandError(e.to_string())),
        },
        Err(e) => Err(CommandError(e.to_string())),
    };
    // Close cleanly, so the sidecar's next start needs no repair.
    let closed = spool.close().await;
    let out = result?;
    closed.map_err(|e| CommandError(e.to_string()))?;
    Ok(out)
}

async fn offline_action(spool: &Spool, slots: Vec<Slot>, action: &Action) -> Result<String, CommandError> {
    let failed = |e: SpoolError| CommandError(e.to_string());
    match action {
        Action::List { json, limit, after } => {
            let req = PageRequest {
                after: after.clone(),
                limit: *limit,
                order: Default::default(),
            };
            let page = dead_letters::page(spool, slots, req).await.map_err(|e| match e {
                PageError::UnknownAfter(_) => CommandError(format!("--{e}")),
                PageError::Spool(e) => failed(e),
            })?;
            Ok(render(&page, *json))
        }
        Action::Replay { ids, since, until } => {
            let ids = (!ids.is_empty()).then(|| ids.clone());
            let window = crate::server::replay_window(since.as_deref(), until.as_deref())
                .map_err(|e| CommandError(format!("--{e}")))?;
            let n = dead_letters::replay_window(spool, slots, ids, window)
                .await
                .map_err(failed)?;
            Ok(format!(
                "replayed {n} dead letters (sidecar not running: they go out when it starts)\n"
            ))
        }
    }
}

/// The page, and how to get the next one. With `--json` the records are
/// the whole of stdout (so it stays parseable) and the cursor goes to stderr.
fn render(page: &Page, as_json: bool) -> String {
    let records = &page.records;
    if as_json {
        if let Some(next) = &page.next_after {
            eprintln!("more dead letters: next page with --after {next}");
        }
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
    match &page.next_after {
        Some(next) => {
            let _ = writeln!(
                out,
                "{} dead letters on this page; next page: --after {next}",
                records.len()
            );
        }
        None => {
            let _ = writeln!(out, "{} dead letters", records.len());
        }
    }
    out
}
