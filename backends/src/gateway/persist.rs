//! The gateway's sessions in the spool, so they can be resumed across a
//! restart (SIGTERM or kill -9). Two kinds of keys, under the backend's own
//! scope (`gateway.NAME/`):
//!
//! - `log/{index}`: every event dispatched to at least one session, once,
//!   under its global log index: its intent bit, its event id, and its
//!   encoded payload. The id is what tells, after a kill -9, an event
//!   delivered again (its ack was not on disk yet) from a new one: it is
//!   not dispatched twice.
//!   Written (fsync'd group commit) before `deliver` returns, so a delivery
//!   counts as done only once what every matching session buffered is on
//!   disk.
//! - `session/{id}`: one record per session: its client, intents, when it
//!   identified and detached, and its [`Anchor`] (the sequence number of
//!   the first logged dispatch it wants at or after a log index).
//!
//! Nothing is written per session per event: a session's buffer after a
//! restart is the log from its anchor on, filtered by its intents,
//! numbered from the anchor's sequence, the last `resume_buffer` kept.
//! The log is trimmed below the oldest dispatch a session still keeps;
//! sessions whose anchors were older move theirs up in the same commit.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::dispatch::Payload;
use super::limits::{Client, Limits};
use super::session::{Anchor, Restored, Session};

/// One key to write (`Some`) or delete (`None`), without the scope.
pub type Write = (String, Option<Vec<u8>>);

const LOG: &str = "log/";
const SESSION: &str = "session/";

pub fn log_key(index: u64) -> String {
    // Zero-padded: key order is index order.
    format!("{LOG}{index:020}")
}

pub fn session_key(id: &str) -> String {
    format!("{SESSION}{id}")
}

/// A log entry: the intent bit (8 bytes, little endian), the event id's
/// length (2 bytes, little endian) and the id, then the payload tail
/// (`,"t":...,"d":...}`).
pub fn log_write(intent: u64, event_id: &str, payload: &Payload) -> Write {
    let tail = payload.tail().as_bytes();
    // Ids are ULIDs (26 bytes); anything longer is cut, which only costs
    // the duplicate check of that one event.
    let id = &event_id.as_bytes()[..event_id.len().min(usize::from(u16::MAX))];
    let mut value = Vec::with_capacity(10 + id.len() + tail.len());
    value.extend_from_slice(&intent.to_le_bytes());
    value.extend_from_slice(&(id.len() as u16).to_le_bytes());
    value.extend_from_slice(id);
    value.extend_from_slice(tail);
    (log_key(payload.index()), Some(value))
}

/// `session/{id}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The client's name in the config (tokens may change, names stay).
    pub client: String,
    pub intents: u64,
    pub created_ms: u64,
    /// When it detached (Unix ms); `None` while attached, and for
    /// sessions cut by a shutdown (resumable for `resume_timeout_ms` after
    /// the restart).
    pub detached_ms: Option<u64>,
    pub next_seq: u64,
    pub from_index: u64,
}

impl SessionRecord {
    pub fn of(session: &Session, client: &str, anchor: Anchor, detached_for: Option<Duration>) -> SessionRecord {
        let now = event_pusher_core::spool::now_ms();
        SessionRecord {
            client: client.to_owned(),
            intents: session.intents,
            created_ms: session.created_ms,
            detached_ms: detached_for.map(|d| now.saturating_sub(d.as_millis() as u64)),
            next_seq: anchor.next_seq,
            from_index: anchor.from_index,
        }
    }

    pub fn write(&self, id: &str) -> Write {
        // Serializing plain numbers and strings cannot fail.
        (session_key(id), serde_json::to_vec(self).ok())
    }
}

/// What a restart rebuilt from the spool.
pub struct Restore {
    pub sessions: Vec<Session>,
    /// Keys of sessions that cannot come back (expired, client gone,
    /// unreadable), to delete.
    pub dropped: Vec<Write>,
    /// The next log index to give out.
    pub next_index: u64,
    /// The log indexes kept, in order.
    pub kept: VecDeque<u64>,
    /// The ids of the logged events.
    pub delivered: HashSet<String>,
}

/// Rebuild the sessions from the stored rows (keys without the scope).
pub fn restore(rows: Vec<(String, Vec<u8>)>, clients: &[Client], limits: &Limits, now_ms: u64) -> Restore {
    let mut log: BTreeMap<u64, (u64, Arc<Payload>)> = BTreeMap::new();
    let mut records = Vec::new();
    let mut dropped = Vec::new();
    let mut delivered = HashSet::new();
    for (key, value) in rows {
        if let Some(index) = key.strip_prefix(LOG) {
            let entry = index.parse::<u64>().ok().and_then(|i| {
                let (intent, rest) = value.split_at_checked(8)?;
                let (id_len, rest) = rest.split_at_checked(2)?;
                let intent = u64::from_le_bytes(intent.try_into().ok()?);
                let (id, tail) = rest.split_at_checked(usize::from(u16::from_le_bytes(id_len.try_into().ok()?)))?;
                let id = String::from_utf8(id.to_vec()).ok()?;
                let tail = String::from_utf8(tail.to_vec()).ok()?;
                Some((i, id, (intent, Payload::from_tail(tail, i))))
            });
            match entry {
                Some((i, id, e)) => {
                    delivered.insert(id);
                    log.insert(i, e);
                }
                None => dropped.push((key, None)),
            }
        } else if let Some(id) = key.strip_prefix(SESSION) {
            match serde_json::from_slice::<SessionRecord>(&value) {
                Ok(r) => records.push((id.to_owned(), r)),
                Err(_) => dropped.push((key, None)),
            }
        }
    }
    let by_name: HashMap<&str, usize> = clients.iter().enumerate().map(|(i, c)| (c.name.as_str(), i)).collect();
    let mut next_index = log.keys().next_back().map_or(1, |i| i + 1);
    let mut sessions = Vec::with_capacity(records.len());
    for (id, r) in records {
        let client = by_name
            .get(r.client.as_str())
            .copied()
            .filter(|c| r.intents & !clients[*c].intents == 0);
        let detached_for = r
            .detached_ms
            .map(|t| Duration::from_millis(now_ms.saturating_sub(t)))
            .unwrap_or_default();
        let Some(client) = client.filter(|_| detached_for <= limits.resume_timeout) else {
            dropped.push((session_key(&id), None));
            continue;
        };
        next_index = next_index.max(r.from_index);
        let mut buffer = VecDeque::new();
        let mut seq = r.next_seq.saturating_sub(1);
        for (intent, payload) in log.range(r.from_index..).map(|(_, e)| e) {
            if intent & r.intents == 0 {
                continue;
            }
            seq += 1;
            if buffer.len() == limits.resume_buffer {
                buffer.pop_front();
            }
            buffer.push_back((seq, payload.clone()));
        }
        let restored = Restored {
            last_seq: seq,
            anchor: Anchor {
                next_seq: r.next_seq,
                from_index: r.from_index,
            },
            buffer,
            capacity: limits.resume_buffer,
            detached_at: Instant::now().checked_sub(detached_for).unwrap_or_else(Instant::now),
        };
        sessions.push(Session::restored(id, client, r.intents, r.created_ms, restored));
    }
    Restore {
        sessions,
        dropped,
        next_index,
        kept: log.into_keys().collect(),
        delivered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(resume_buffer: usize) -> Limits {
        Limits {
            heartbeat_interval: Duration::from_secs(1),
            resume_buffer,
            resume_timeout: Duration::from_secs(60),
            max_queued: 10,
            max_sessions: 10,
            max_pending: 10,
        }
    }

    fn entry(index: u64, intent: u64, body: &str) -> (String, Vec<u8>) {
        let p = Payload::from_tail(format!(",\"t\":\"MESSAGE_CREATE\",\"d\":\"{body}\"}}"), index);
        let (k, v) = log_write(intent, &format!("e{index}"), &p);
        (k, v.unwrap_or_default())
    }

    /// A session's buffer is the log from its anchor on, its intents only,
    /// numbered from the anchor, the last `resume_buffer` kept; a record
    /// past the resume timeout or of a client no longer configured is
    /// dropped.
    #[test]
    fn sessions_are_renumbered_from_their_anchor_and_bounded() {
        let clients = vec![Client {
            name: "a".into(),
            token: "t".into(),
            intents: 3,
        }];
        let now = 1_000_000;
        let record = |client: &str, detached_ms: Option<u64>| SessionRecord {
            client: client.into(),
            intents: 2,
            created_ms: 1,
            detached_ms,
            next_seq: 7,
            from_index: 3,
        };
        let mut rows: Vec<(String, Vec<u8>)> = vec![
            entry(2, 2, "old"),
            entry(3, 1, "presence"),
            entry(4, 2, "x4"),
            entry(5, 2, "x5"),
            entry(6, 2, "x6"),
            entry(9, 2, "x9"),
        ];
        for (id, r) in [
            ("live", record("a", None)),
            ("recent", record("a", Some(now - 1_000))),
            ("expired", record("a", Some(now - 61_000))),
            ("gone", record("b", None)),
        ] {
            let (k, v) = r.write(id);
            rows.push((k, v.unwrap_or_default()));
        }
        let r = restore(rows, &clients, &limits(3), now);
        assert_eq!(r.next_index, 10);
        assert!(r.delivered.contains("e9") && r.delivered.len() == 6);
        assert_eq!(r.kept, [2, 3, 4, 5, 6, 9]);
        let mut dropped: Vec<String> = r.dropped.into_iter().map(|(k, _)| k).collect();
        dropped.sort();
        assert_eq!(dropped, ["session/expired", "session/gone"]);
        assert_eq!(r.sessions.len(), 2);
        for s in &r.sessions {
            // x4, x5, x6, x9 are 7, 8, 9, 10; three kept.
            assert_eq!(s.oldest_index(), Some(5), "{}", s.id);
            let (tx, _rx) = tokio::sync::mpsc::channel(8);
            let (kick, _k) = tokio::sync::oneshot::channel();
            match s.resume(7, Duration::from_secs(60), tx, kick) {
                super::super::session::ResumeCheck::Replay(items) => {
                    let seqs: Vec<u64> = items.iter().map(|(s, _)| *s).collect();
                    assert_eq!(seqs, [8, 9, 10]);
                    assert!(items[2].1.tail().contains("x9"));
                }
                _ => panic!("{} resumes from 7", s.id),
            }
        }
    }
}
