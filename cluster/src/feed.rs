//! The change feed: every committed change is announced with PostgreSQL
//! `NOTIFY` in the same transaction (so it is sent exactly when, and only
//! if, the change commits), and every sidecar `LISTEN`s on one dedicated
//! connection. Nothing polls: an idle cluster costs one tiny query per
//! `PING_IDLE` per sidecar.
//!
//! A notice carries the new state of what changed (not the operation), so a
//! receiver just replaces its copy. States larger than [`INLINE_LIMIT`] are
//! announced by key and read back by the receiver. A lost `LISTEN`
//! connection can miss notices: after reconnecting, the receiver re-reads
//! everything and publishes [`Change::Reloaded`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

use crate::change::Change;
use crate::shared::{Shared, OP_TIMEOUT};
use crate::snapshot;
use crate::sql::params;
use crate::ClusterError;

/// The `LISTEN` / `NOTIFY` channel.
pub(crate) const CHANNEL: &str = "event_pusher_cluster";

/// Largest payload sent inline (PostgreSQL's limit is 8000 bytes).
pub const INLINE_LIMIT: usize = 7_000;

/// After this long without a notice, the listener checks its connection is
/// still alive (a silently dropped connection would otherwise stay unseen).
const PING_IDLE: Duration = Duration::from_secs(10);

/// Reconnect backoff bounds for the listening connection.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What travels in a NOTIFY payload: one notice (`change`), or several
/// committed together (`changes`, in order) so that a relayed batch
/// touching a thousand users costs a few dozen notifications, not a
/// thousand.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// Unix time (seconds) when the writer committed, for the apply lag.
    pub ts: f64,
    /// The writing sidecar.
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Notice>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Notice>,
}

impl Envelope {
    /// Its notices, in order.
    fn notices(self) -> impl Iterator<Item = Notice> {
        self.change.into_iter().chain(self.changes)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub(crate) enum Notice {
    Device {
        scope: String,
        user: String,
        device_id: String,
        #[serde(default)]
        record: Option<Value>,
        /// The record was too large to send: read it from the store.
        #[serde(default)]
        fetch: bool,
    },
    Presence {
        scope: String,
        user: String,
        #[serde(default)]
        resources: Vec<String>,
        #[serde(default)]
        message_count: u64,
        #[serde(default)]
        fetch: bool,
    },
    Subscription {
        id: String,
        #[serde(default)]
        record: Option<Value>,
        #[serde(default)]
        paused: bool,
        #[serde(default)]
        fetch: bool,
    },
    /// Re-read everything (after a merge).
    Reload,
}

impl Notice {
    /// The same notice without its state: the receiver reads it back.
    fn by_key(&self) -> Notice {
        let mut n = self.clone();
        match &mut n {
            Notice::Device { record, fetch, .. } => {
                *record = None;
                *fetch = true;
            }
            Notice::Presence { resources, fetch, .. } => {
                *resources = Vec::new();
                *fetch = true;
            }
            Notice::Subscription { record, fetch, .. } => {
                *record = None;
                *fetch = true;
            }
            Notice::Reload => {}
        }
        n
    }
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The NOTIFY payload for `notice`, by key if the state is too large.
#[cfg(test)]
fn payload(node: &str, notice: Notice) -> String {
    let mut out = payloads(node, vec![notice]);
    out.pop().unwrap_or_default()
}

/// The NOTIFY payloads announcing `notices`, in order: as many notices per
/// payload as fit under [`INLINE_LIMIT`], a state too large for a payload
/// of its own announced by key. A payload of one notice keeps the
/// one-notice form (`change`), which sidecars of earlier versions read.
pub(crate) fn payloads(node: &str, notices: Vec<Notice>) -> Vec<String> {
    let head = serde_json::to_string(&Envelope {
        ts: unix_now(),
        node: node.to_owned(),
        change: None,
        changes: Vec::new(),
    })
    .unwrap_or_default();
    // `{"ts":..,"node":".."`, then `,"change":N}` or `,"changes":[N,..]}`.
    let head = head.trim_end_matches('}');
    let room = INLINE_LIMIT.saturating_sub(head.len() + 16);
    let mut out = Vec::new();
    let mut group: Vec<String> = Vec::new();
    let mut group_len = 0;
    let flush = |group: &mut Vec<String>, out: &mut Vec<String>| match group.len() {
        0 => {}
        1 => out.push(format!("{head},\"change\":{}}}", group[0])),
        _ => out.push(format!("{head},\"changes\":[{}]}}", group.join(","))),
    };
    for notice in notices {
        let mut text = serde_json::to_string(&notice).unwrap_or_default();
        if text.len() >= room {
            text = serde_json::to_string(&notice.by_key()).unwrap_or_default();
        }
        if group_len + text.len() + 1 >= room {
            flush(&mut group, &mut out);
            group.clear();
            group_len = 0;
        }
        group_len += text.len() + 1;
        group.push(text);
    }
    flush(&mut group, &mut out);
    out
}

/// Send `notices` inside the caller's transaction: delivered to listeners
/// when (and only if) it commits, in commit order.
pub(crate) async fn notify(
    tx: &deadpool_postgres::Transaction<'_>,
    node: &str,
    notices: Vec<Notice>,
) -> Result<(), ClusterError> {
    if notices.is_empty() {
        return Ok(());
    }
    let stmt = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
    let payloads = payloads(node, notices);
    // Pipelined: sent in order without waiting for each answer.
    futures::future::try_join_all(payloads.iter().map(|p| tx.execute_raw(&stmt, params(&[&CHANNEL, p])))).await?;
    Ok(())
}

/// A connection that LISTENs, its notifications forwarded to a channel
/// (closed when the connection ends), and the task driving it.
pub(crate) struct Listener {
    pub client: Client,
    notices: mpsc::UnboundedReceiver<Notification>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Listener {
    pub(crate) async fn connect(pg: &tokio_postgres::Config) -> Result<Listener, ClusterError> {
        let (client, mut connection) = pg.connect(NoTls).await?;
        let (tx, notices) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster store: listening connection lost");
                        return;
                    }
                }
            }
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        Ok(Listener {
            client,
            notices,
            driver,
        })
    }
}

/// The listening task: turns notices into [`Change`]s for the subscribers,
/// reconnecting with backoff (and publishing a reload) when the connection
/// is lost. `first` is the connection `connect()` opened, before its own
/// initial load, so nothing between the two is missed.
pub(crate) async fn listen(shared: Arc<Shared>, first: Listener) {
    let mut current = Some(first);
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut listener = match current.take() {
            Some(l) => l,
            None => match reconnect(&shared).await {
                Ok(l) => {
                    backoff = BACKOFF_MIN;
                    l
                }
                Err(e) => {
                    shared.health.failed(&e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        shared.health.ok();
        if let Err(e) = serve(&shared, &mut listener).await {
            shared.health.failed(&e);
        }
    }
}

/// Connect, LISTEN, then read everything (changes committed while the
/// connection was down were never announced to us).
async fn reconnect(shared: &Shared) -> Result<Listener, ClusterError> {
    let mut listener = tokio::time::timeout(OP_TIMEOUT, Listener::connect(&shared.pg)).await??;
    reload(shared, &mut listener.client).await?;
    tracing::info!("cluster store: listening again, state reloaded");
    Ok(listener)
}

async fn reload(shared: &Shared, client: &mut Client) -> Result<(), ClusterError> {
    let snap = tokio::time::timeout(OP_TIMEOUT, snapshot::load(client)).await??;
    shared.publish(Change::Reloaded(Arc::new(snap)), None);
    Ok(())
}

/// Handle notices until the connection fails.
async fn serve(shared: &Shared, listener: &mut Listener) -> Result<(), ClusterError> {
    loop {
        let next = tokio::time::timeout(PING_IDLE, listener.notices.recv()).await;
        let notification = match next {
            Ok(Some(n)) => n,
            Ok(None) => return Err(ClusterError::Unavailable(crate::error::Unreachable::ListenerLost)),
            Err(_idle) => {
                tokio::time::timeout(OP_TIMEOUT, listener.client.simple_query("SELECT 1")).await??;
                continue;
            }
        };
        let envelope: Envelope = match serde_json::from_str(notification.payload()) {
            Ok(e) => e,
            Err(e) => {
                // A notice from a newer version, or someone else's NOTIFY.
                tracing::warn!(error = %e, "cluster store: ignoring an unreadable notice");
                continue;
            }
        };
        let lag = (unix_now() - envelope.ts).max(0.0);
        for notice in envelope.notices() {
            let change = resolve(&mut listener.client, notice).await?;
            shared.publish(change, Some(lag));
        }
    }
}

/// The [`Change`] a notice announces, read from the store if it was sent by
/// key (or, for a reload notice, everything).
async fn resolve(client: &mut Client, notice: Notice) -> Result<Change, ClusterError> {
    Ok(match notice {
        Notice::Device {
            scope,
            user,
            device_id,
            record,
            fetch,
        } => {
            let record = if fetch {
                client
                    .query_opt(
                        "SELECT record FROM devices WHERE scope = $1 AND user_jid = $2 AND device_id = $3",
                        &[&scope, &user, &device_id],
                    )
                    .await?
                    .map(|r| r.get(0))
            } else {
                record
            };
            Change::Device {
                scope,
                user,
                device_id,
                record,
            }
        }
        Notice::Presence {
            scope,
            user,
            resources,
            message_count,
            fetch,
        } => {
            if fetch {
                let row = client
                    .query_opt(
                        snapshot::PRESENCE_OF_USERS,
                        &[&vec![scope.clone()], &vec![user.clone()]],
                    )
                    .await?;
                match row {
                    Some(row) => {
                        let p = snapshot::user_presence(&row);
                        Change::Presence {
                            scope,
                            user,
                            resources: p.resources,
                            message_count: p.message_count,
                        }
                    }
                    None => Change::Presence {
                        scope,
                        user,
                        resources: Vec::new(),
                        message_count: 0,
                    },
                }
            } else {
                Change::Presence {
                    scope,
                    user,
                    resources,
                    message_count,
                }
            }
        }
        Notice::Subscription {
            id,
            record,
            paused,
            fetch,
        } => {
            if fetch {
                let row = client
                    .query_opt(
                        "SELECT record, paused, deleted FROM subscriptions WHERE id = $1",
                        &[&id],
                    )
                    .await?;
                match row {
                    Some(r) if !r.get::<_, bool>(2) => Change::Subscription {
                        id,
                        record: r.get(0),
                        paused: r.get(1),
                    },
                    _ => Change::Subscription {
                        id,
                        record: None,
                        paused: false,
                    },
                }
            } else {
                Change::Subscription { id, record, paused }
            }
        }
        Notice::Reload => Change::Reloaded(Arc::new(snapshot::load(client).await?)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(record: Value) -> Notice {
        Notice::Device {
            scope: "push.mobile".into(),
            user: "bob@localhost".into(),
            device_id: "d1".into(),
            record: Some(record),
            fetch: false,
        }
    }

    #[test]
    fn small_states_travel_inline_and_large_ones_by_key() {
        let small = payload("a", device(serde_json::json!({"token": "t"})));
        let e: Envelope = serde_json::from_str(&small).unwrap();
        assert!(
            matches!(
                e.change,
                Some(Notice::Device {
                    record: Some(_),
                    fetch: false,
                    ..
                })
            ),
            "{small}"
        );
        assert_eq!(e.node, "a");
        assert!(e.ts > 0.0);

        let large = payload("a", device(serde_json::json!({"token": "x".repeat(INLINE_LIMIT)})));
        assert!(large.len() < INLINE_LIMIT, "{}", large.len());
        let e: Envelope = serde_json::from_str(&large).unwrap();
        assert!(
            matches!(
                e.change,
                Some(Notice::Device {
                    record: None,
                    fetch: true,
                    ..
                })
            ),
            "{large}"
        );
    }

    #[test]
    fn a_notice_from_a_newer_sidecar_with_unknown_fields_still_reads() {
        let text = r#"{"ts": 1.5, "node": "n", "extra": 1,
                       "change": {"k": "subscription", "id": "s1", "paused": true, "new_field": 2}}"#;
        let e: Envelope = serde_json::from_str(text).unwrap();
        assert!(matches!(
            e.change,
            Some(Notice::Subscription {
                record: None,
                paused: true,
                ..
            })
        ));
    }

    fn presence(i: usize) -> Notice {
        Notice::Presence {
            scope: "push.mobile".into(),
            user: format!("user{i}@localhost"),
            resources: vec!["phone".into()],
            message_count: i as u64,
            fetch: false,
        }
    }

    #[test]
    fn many_notices_share_payloads_in_order_each_under_the_limit() {
        let texts = payloads("a", (0..1000).map(presence).collect());
        assert!(texts.len() > 1 && texts.len() < 50, "{} payloads", texts.len());
        let mut seen = Vec::new();
        for t in &texts {
            assert!(t.len() < INLINE_LIMIT, "{}", t.len());
            let e: Envelope = serde_json::from_str(t).unwrap();
            assert_eq!(e.node, "a");
            for n in e.notices() {
                match n {
                    Notice::Presence { message_count, .. } => seen.push(message_count),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(seen, (0..1000).collect::<Vec<u64>>());
    }

    #[test]
    fn one_notice_keeps_the_one_notice_form_and_a_huge_one_goes_by_key_among_others() {
        let one = payloads("a", vec![presence(1)]);
        assert_eq!(one.len(), 1);
        assert!(one[0].contains("\"change\":{"), "{}", one[0]);

        let huge = device(serde_json::json!({"token": "x".repeat(INLINE_LIMIT)}));
        let texts = payloads("a", vec![presence(1), huge, presence(2)]);
        let notices: Vec<Notice> = texts
            .iter()
            .flat_map(|t| serde_json::from_str::<Envelope>(t).unwrap().notices())
            .collect();
        assert_eq!(notices.len(), 3);
        assert!(matches!(
            notices[1],
            Notice::Device {
                fetch: true,
                record: None,
                ..
            }
        ));
        assert!(texts.iter().all(|t| t.len() < INLINE_LIMIT));
    }
}
