//! `event-pusher webhooks list|add|pause|restart|remove`: webhook
//! subscriptions of a running sidecar, over its admin API (`/v1/webhooks`).

use std::fmt::Write;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::target::Target;
use super::{check, client, CommandError};

/// What to do.
#[derive(Debug, Clone)]
pub enum Action {
    List {
        json: bool,
    },
    Add {
        url: String,
        id: Option<String>,
        events: Vec<String>,
        secret: Option<String>,
        /// `NAME=VALUE`.
        headers: Vec<String>,
    },
    Pause {
        id: String,
    },
    Restart {
        id: String,
    },
    Remove {
        id: String,
        /// Wait up to this long for the queue to empty first.
        drain: Option<u64>,
    },
}

#[derive(Deserialize)]
struct Row {
    id: String,
    url: String,
    events: Vec<String>,
    state: String,
    queued: u64,
    delivered: u64,
    failed: u64,
    dead_letters: u64,
}

pub async fn run(target: Target, action: Action) -> Result<String, CommandError> {
    let http = client(target.token.as_deref())?;
    let base = format!("{}/v1/webhooks", target.url);
    let (req, url) = match &action {
        Action::List { .. } => (http.get(&base), base.clone()),
        Action::Add {
            url,
            id,
            events,
            secret,
            headers,
        } => {
            let mut body = Map::new();
            body.insert("url".into(), json!(url));
            if let Some(id) = id {
                body.insert("id".into(), json!(id));
            }
            if !events.is_empty() {
                body.insert("events".into(), json!(events));
            }
            if let Some(s) = secret {
                body.insert("secret".into(), json!(s));
            }
            if !headers.is_empty() {
                body.insert("headers".into(), Value::Object(parse_headers(headers)?));
            }
            (http.post(&base).json(&body), base.clone())
        }
        Action::Pause { id } => {
            let url = format!("{base}/{}/pause", segment(id));
            (http.post(&url), url)
        }
        Action::Restart { id } => {
            let url = format!("{base}/{}/restart", segment(id));
            (http.post(&url), url)
        }
        Action::Remove { id, drain } => {
            let mut url = format!("{base}/{}", segment(id));
            let mut req = http.delete(&url);
            if let Some(secs) = drain {
                url.push_str(&format!("?drain=true&timeout_s={secs}"));
                // The answer comes once the queue is empty.
                req = http.delete(&url).timeout(Duration::from_secs(secs + 10));
            }
            (req, url)
        }
    };
    let resp = req
        .send()
        .await
        .map_err(|e| CommandError(format!("cannot reach {url}: {e}")))?;
    let answer: Value = check(resp)
        .await?
        .json()
        .await
        .map_err(|e| CommandError(format!("unexpected answer from {url}: {e}")))?;
    match action {
        Action::List { json: false } => {
            let rows: Vec<Row> = serde_json::from_value(answer)
                .map_err(|e| CommandError(format!("unexpected answer from {url}: {e}")))?;
            Ok(table(&rows))
        }
        Action::Remove { .. } => Ok(format!(
            "removed {}; {} queued events discarded\n",
            answer["id"].as_str().unwrap_or_default(),
            answer["discarded"]
        )),
        // The attach answer carries the secret: shown once, as JSON.
        _ => Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        )),
    }
}

/// An id as one path segment (ids are `[A-Za-z0-9_-]`; anything else is
/// sent escaped and answered 404).
fn segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

fn parse_headers(headers: &[String]) -> Result<Map<String, Value>, CommandError> {
    headers
        .iter()
        .map(|h| {
            h.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), json!(v.trim())))
                .ok_or_else(|| CommandError(format!("--header \"{h}\": expected NAME=VALUE")))
        })
        .collect()
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let w = rows.iter().map(|r| r.id.len()).max().unwrap_or(2).max(2);
    let _ = writeln!(
        out,
        "{:<w$}  {:<7}  {:>9}  {:>10}  {:>8}  {:>12}  {:<24}  URL",
        "ID", "STATE", "QUEUED", "DELIVERED", "FAILED", "DEAD LETTERS", "EVENTS"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<w$}  {:<7}  {:>9}  {:>10}  {:>8}  {:>12}  {:<24}  {}",
            r.id,
            r.state,
            r.queued,
            r.delivered,
            r.failed,
            r.dead_letters,
            r.events.join(","),
            r.url
        );
    }
    out
}
