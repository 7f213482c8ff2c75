//! `event-pusher status`: the backend table of a running sidecar.

use std::fmt::Write;

use serde::Deserialize;

use super::target::Target;
use super::{check, client, CommandError};

#[derive(Deserialize)]
struct Row {
    name: String,
    kind: String,
    paused: bool,
    #[serde(default)]
    ready: bool,
    queued: u64,
    in_flight: u64,
    delivered: u64,
    failed: u64,
    dead_letters: u64,
    #[serde(default)]
    circuit_open: bool,
}

pub async fn run(target: Target) -> Result<String, CommandError> {
    let url = format!("{}/v1/backends", target.url);
    let resp = client(target.token.as_deref())?
        .get(&url)
        .send()
        .await
        .map_err(|e| CommandError(format!("cannot reach {url}: {e}")))?;
    let rows: Vec<Row> = check(resp)
        .await?
        .json()
        .await
        .map_err(|e| CommandError(format!("unexpected answer from {url}: {e}")))?;
    Ok(table(&rows))
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    // `KIND.NAME`: names are unique per kind only.
    let ids: Vec<String> = rows
        .iter()
        .map(|r| event_pusher_core::BackendId::new(&r.kind, &r.name).to_string())
        .collect();
    let w = ids.iter().map(String::len).max().unwrap_or(4).max(7);
    let _ = writeln!(
        out,
        "{:<w$}  {:<7}  {:<7}  {:>9}  {:>9}  {:>10}  {:>8}  {:>12}",
        "BACKEND", "KIND", "STATE", "QUEUED", "IN FLIGHT", "DELIVERED", "FAILED", "DEAD LETTERS"
    );
    for (r, id) in rows.iter().zip(&ids) {
        let state = if r.paused {
            "paused"
        } else if !r.ready {
            "down"
        } else if r.circuit_open {
            "failing"
        } else {
            "ready"
        };
        let _ = writeln!(
            out,
            "{:<w$}  {:<7}  {:<7}  {:>9}  {:>9}  {:>10}  {:>8}  {:>12}",
            id, r.kind, state, r.queued, r.in_flight, r.delivered, r.failed, r.dead_letters
        );
    }
    out
}
