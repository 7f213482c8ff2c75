//! Hook-call builders, posting with 503 handling, and counting what a
//! receiver got (ids, duplicates, per-user order).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

/// `[backends.http.NAME.retry]` with short backoffs, so tests stay fast.
pub fn fast_retry(name: &str, max_attempts: u32) -> String {
    format!(
        "[backends.http.{name}.retry]\nmax_attempts = {max_attempts}\ninitial_backoff_ms = 50\nmax_backoff_ms = 500\n"
    )
}

/// A chat message sent by `from` (a bare JID; a resource is added) with
/// `body`.
pub fn chat(from: &str, body: &str) -> Value {
    json!({"hook": "user_send_message", "from": format!("{from}/res"), "to": "peer@localhost", "type": "chat", "body": body})
}

/// POST /v1/events; status, answer and the `Retry-After` header.
pub async fn post(sc: &Sidecar, body: &Value) -> (u16, Value, Option<String>) {
    let (status, v, headers) = sc.post_raw("application/json", serde_json::to_vec(body).unwrap()).await;
    let retry_after = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, v, retry_after)
}

/// Ids of a 202 answer.
pub fn ids(answer: &Value) -> Vec<String> {
    answer["ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Post and insist on 202; returns the ids.
pub async fn post_ok(sc: &Sidecar, body: &Value) -> Vec<String> {
    let (status, v, _) = post(sc, body).await;
    assert_eq!(status, 202, "expected 202, got {status}: {v}");
    ids(&v)
}

/// Event ids of what a receiver got (2xx answers only).
pub fn received_ids(rx: &Receiver) -> Vec<String> {
    rx.received().iter().map(id_of).collect()
}

pub fn id_of(r: &Received) -> String {
    r.json()["id"].as_str().unwrap_or_default().to_owned()
}

/// Wait until every id in `want` was received at least once.
pub async fn wait_all(rx: &Receiver, want: &HashSet<String>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let got: HashSet<String> = received_ids(rx).into_iter().collect();
        if want.is_subset(&got) {
            return true;
        }
        if Instant::now() > deadline {
            let missing = want.difference(&got).count();
            eprintln!("still missing {missing} of {} ids", want.len());
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deliveries received beyond the first of each id.
pub fn duplicates(rx: &Receiver) -> usize {
    let all = received_ids(rx);
    let unique: HashSet<&String> = all.iter().collect();
    all.len() - unique.len()
}

/// The bodies each sender's messages arrived with, in arrival order.
pub fn bodies_by_user(got: &[Received]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for r in got {
        let v = r.json();
        let from = v["from"].as_str().unwrap_or_default();
        let bare = from.split('/').next().unwrap_or_default().to_owned();
        out.entry(bare)
            .or_default()
            .push(v["body"].as_str().unwrap_or_default().to_owned());
    }
    out
}
