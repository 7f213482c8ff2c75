//! One identified session: its sequence counter, its resume buffer, and the
//! connection it is attached to (if any).
//!
//! A session outlives its connection: when the socket drops it is
//! *detached*, keeps buffering for `resume_timeout_ms`, and a Resume on a
//! new connection attaches it again. Everything that changes the sequence,
//! the buffer or the attachment happens under the one mutex, which is what
//! makes a resume gap-free: the replay is taken and the new connection
//! attached in the same critical section as any concurrent push.
//!
//! For a restart, a session is written to the spool as a record
//! (`persist.rs`): who it is, and its *anchor*, the sequence number the
//! first logged dispatch at or after a log index got. With the dispatch
//! log that is enough to number its buffer again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::dispatch::Payload;

/// A frame waiting for a connection's writer: its sequence and payload.
pub type Outgoing = (u64, Arc<Payload>);

/// Why a connection was told to close by someone else.
pub type Kick = oneshot::Sender<u16>;

/// An identified session.
pub struct Session {
    pub id: String,
    /// Index of its client in the hub's client list.
    pub client: usize,
    pub intents: u64,
    /// When it identified (Unix ms).
    pub created_ms: u64,
    state: Mutex<SessionState>,
}

/// Where a session's numbering meets the dispatch log: the first logged
/// dispatch at or after log index `from_index` that it wants got
/// sequence `next_seq`, and every later one it wants the next number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub next_seq: u64,
    pub from_index: u64,
}

struct SessionState {
    last_seq: u64,
    anchor: Anchor,
    /// Dispatches after the oldest still kept, in sequence order.
    buffer: VecDeque<Outgoing>,
    capacity: usize,
    link: Option<Link>,
    detached_at: Option<Instant>,
}

/// The connection a session is attached to.
struct Link {
    outbox: mpsc::Sender<Outgoing>,
    kick: Kick,
}

/// What pushing one dispatch did.
pub enum Pushed {
    /// Queued for the connection (with the queue depth after it), or
    /// buffered for a later resume when detached.
    Queued(usize),
    Detached,
    /// The connection's queue was full: it was told to close with 4000.
    Overflowed,
}

/// What a resume can do.
pub enum ResumeCheck {
    /// Replay these, then go live on the attached outbox.
    Replay(Vec<Outgoing>),
    /// `seq` is after the last dispatch sent.
    InvalidSeq,
    /// Expired, or `seq` is older than the buffer.
    Gone,
}

impl Session {
    pub fn new(id: String, client: usize, intents: u64, capacity: usize) -> Session {
        Session::restored(
            id,
            client,
            intents,
            event_pusher_core::spool::now_ms(),
            Restored::new(capacity),
        )
    }

    /// A session read back from the spool (detached; `restored.detached_at`).
    pub fn restored(id: String, client: usize, intents: u64, created_ms: u64, restored: Restored) -> Session {
        Session {
            id,
            client,
            intents,
            created_ms,
            state: Mutex::new(SessionState {
                last_seq: restored.last_seq,
                anchor: restored.anchor,
                buffer: restored.buffer,
                capacity: restored.capacity,
                link: None,
                detached_at: Some(restored.detached_at),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SessionState> {
        // A panic while holding the lock leaves only counters and a
        // buffer behind, both still consistent: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number the dispatch, keep it for resume, queue it for the
    /// connection.
    pub fn push(&self, payload: &Arc<Payload>) -> Pushed {
        let mut st = self.lock();
        st.last_seq += 1;
        let item = (st.last_seq, payload.clone());
        if st.buffer.len() == st.capacity {
            st.buffer.pop_front();
        }
        st.buffer.push_back(item.clone());
        let Some(link) = &st.link else {
            return Pushed::Detached;
        };
        match link.outbox.try_send(item) {
            Ok(()) => Pushed::Queued(link.outbox.max_capacity() - link.outbox.capacity()),
            Err(_) => {
                // Full (a stalled reader) or closed (its task ended):
                // either way this connection is done; the buffer still
                // has everything for a resume.
                st.detach(Some(super::protocol::close::QUEUE_OVERFLOW));
                Pushed::Overflowed
            }
        }
    }

    /// Attach a new connection (Identify).
    pub fn attach(&self, outbox: mpsc::Sender<Outgoing>, kick: Kick) {
        let mut st = self.lock();
        st.link = Some(Link { outbox, kick });
        st.detached_at = None;
    }

    /// Check a resume from `seq` and, when it can go ahead, attach the new
    /// connection (closing an old one that is still attached) and return
    /// what to replay.
    pub fn resume(&self, seq: u64, timeout: Duration, outbox: mpsc::Sender<Outgoing>, kick: Kick) -> ResumeCheck {
        let mut st = self.lock();
        if st.expired(timeout) {
            return ResumeCheck::Gone;
        }
        if seq > st.last_seq {
            return ResumeCheck::InvalidSeq;
        }
        // The buffer covers `seq` when the dispatch right after it is
        // still kept (or nothing came after it).
        let oldest = st.buffer.front().map_or(st.last_seq + 1, |(s, _)| *s);
        if seq + 1 < oldest {
            return ResumeCheck::Gone;
        }
        let replay = st.buffer.iter().filter(|(s, _)| *s > seq).cloned().collect();
        // The connection it was on (if still live) is closed with its own
        // code: the slow-client code would tell it to resume this session.
        st.detach(Some(super::extra_close::SESSION_REPLACED));
        st.link = Some(Link { outbox, kick });
        st.detached_at = None;
        ResumeCheck::Replay(replay)
    }

    /// The connection ended; keep buffering for a resume. Only detaches
    /// when `outbox` is still the attached one (a resume may have moved the
    /// session to another connection already).
    pub fn detach_if(&self, outbox: &mpsc::Sender<Outgoing>) {
        let mut st = self.lock();
        if st.link.as_ref().is_some_and(|l| l.outbox.same_channel(outbox)) {
            st.detach(None);
        }
    }

    pub fn is_attached(&self) -> bool {
        self.lock().link.is_some()
    }

    /// Anchor it at log index `next_index`: the next dispatch it gets
    /// there or later is `last_seq + 1` (when it joins the hub).
    pub fn anchor_at(&self, next_index: u64) -> Anchor {
        let mut st = self.lock();
        st.anchor = Anchor {
            next_seq: st.last_seq + 1,
            from_index: next_index,
        };
        st.anchor
    }

    /// Its anchor, and how long it has been detached (`None`: attached).
    pub fn anchor(&self) -> (Anchor, Option<Duration>) {
        let st = self.lock();
        (st.anchor, st.detached_at.map(|t| t.elapsed()))
    }

    /// The log index of the oldest logged dispatch it still keeps.
    pub fn oldest_index(&self) -> Option<u64> {
        self.lock().buffer.iter().map(|(_, p)| p.index()).find(|i| *i > 0)
    }

    /// The dispatch log is cut below `cut`: when its anchor is older, move
    /// it to the oldest dispatch it keeps (or, keeping none, to
    /// `next_index`). The new anchor, when it moved.
    pub fn reanchor(&self, cut: u64, next_index: u64) -> Option<Anchor> {
        let mut st = self.lock();
        if st.anchor.from_index >= cut {
            return None;
        }
        let oldest = st
            .buffer
            .iter()
            .find(|(_, p)| p.index() > 0)
            .map(|(s, p)| (*s, p.index()));
        st.anchor = match oldest {
            Some((next_seq, from_index)) => Anchor { next_seq, from_index },
            None => Anchor {
                next_seq: st.last_seq + 1,
                from_index: next_index,
            },
        };
        Some(st.anchor)
    }

    /// Detached for longer than `timeout`: cannot be resumed any more.
    pub fn expired(&self, timeout: Duration) -> bool {
        self.lock().expired(timeout)
    }
}

/// A session's numbering and buffer, as rebuilt from the spool.
pub struct Restored {
    pub last_seq: u64,
    pub anchor: Anchor,
    pub buffer: VecDeque<Outgoing>,
    pub capacity: usize,
    pub detached_at: Instant,
}

impl Restored {
    /// A new session's: nothing sent yet.
    pub fn new(capacity: usize) -> Restored {
        Restored {
            last_seq: 0,
            anchor: Anchor {
                next_seq: 1,
                from_index: 0,
            },
            buffer: VecDeque::new(),
            capacity,
            detached_at: Instant::now(),
        }
    }
}

impl SessionState {
    fn detach(&mut self, code: Option<u16>) {
        if let Some(link) = self.link.take() {
            if let Some(code) = code {
                let _ = link.kick.send(code);
            }
            self.detached_at = Some(Instant::now());
        }
    }

    fn expired(&self, timeout: Duration) -> bool {
        self.detached_at.is_some_and(|t| t.elapsed() > timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Arc<Payload> {
        Payload::new("MESSAGE_CREATE", "{}")
    }

    fn link(
        capacity: usize,
    ) -> (
        mpsc::Sender<Outgoing>,
        mpsc::Receiver<Outgoing>,
        Kick,
        oneshot::Receiver<u16>,
    ) {
        let (tx, rx) = mpsc::channel(capacity);
        let (kick, kicked) = oneshot::channel();
        (tx, rx, kick, kicked)
    }

    fn seqs(items: &[Outgoing]) -> Vec<u64> {
        items.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn resume_replays_after_seq_and_refuses_what_the_buffer_lost() {
        let session = Session::new("s".into(), 0, 1, 3);
        for _ in 0..5 {
            session.push(&payload());
        }
        let timeout = Duration::from_secs(60);
        // Buffer keeps 3..=5: resuming from 2 replays 3, 4, 5; from 1 it cannot.
        let (tx, _rx, kick, _k) = link(8);
        assert!(matches!(session.resume(6, timeout, tx, kick), ResumeCheck::InvalidSeq));
        let (tx, _rx, kick, _k) = link(8);
        assert!(matches!(session.resume(1, timeout, tx, kick), ResumeCheck::Gone));
        let (tx, _rx, kick, _k) = link(8);
        match session.resume(2, timeout, tx, kick) {
            ResumeCheck::Replay(r) => assert_eq!(seqs(&r), vec![3, 4, 5]),
            _ => panic!("resume from 2 replays"),
        }
        let (tx, _rx, kick, _k) = link(8);
        match session.resume(5, timeout, tx, kick) {
            ResumeCheck::Replay(r) => assert!(r.is_empty()),
            _ => panic!("resume from the last seq is empty"),
        }
    }

    #[test]
    fn a_full_queue_kicks_the_connection_with_4000_and_keeps_buffering() {
        let session = Session::new("s".into(), 0, 1, 10);
        let (tx, mut rx, kick, mut kicked) = link(2);
        session.attach(tx, kick);
        assert!(matches!(session.push(&payload()), Pushed::Queued(1)));
        assert!(matches!(session.push(&payload()), Pushed::Queued(2)));
        assert!(matches!(session.push(&payload()), Pushed::Overflowed));
        assert_eq!(kicked.try_recv(), Ok(4000));
        assert!(!session.is_attached());
        assert!(matches!(session.push(&payload()), Pushed::Detached));
        assert_eq!(rx.try_recv().map(|(s, _)| s), Ok(1));
        let (tx, _rx, kick, _k) = link(8);
        match session.resume(2, Duration::from_secs(60), tx, kick) {
            ResumeCheck::Replay(r) => assert_eq!(seqs(&r), vec![3, 4]),
            _ => panic!("resumable after overflow"),
        }
    }

    #[test]
    fn a_detached_session_expires_after_the_timeout() {
        let session = Session::new("s".into(), 0, 1, 10);
        let (tx, _rx, kick, _k) = link(2);
        session.attach(tx.clone(), kick);
        session.detach_if(&tx);
        assert!(!session.expired(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(session.expired(Duration::from_millis(1)));
        let (tx, _rx, kick, _k) = link(2);
        assert!(matches!(
            session.resume(0, Duration::from_millis(1), tx, kick),
            ResumeCheck::Gone
        ));
    }
}
