//! One identified session: its sequence counter, its resume buffer, and the
//! connection it is attached to (if any).
//!
//! A session outlives its connection: when the socket drops it is
//! *detached*, keeps buffering for `resume_timeout_ms`, and a Resume on a
//! new connection attaches it again. Everything that changes the sequence,
//! the buffer or the attachment happens under the one mutex, which is what
//! makes a resume gap-free: the replay is taken and the new connection
//! attached in the same critical section as any concurrent push.

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
    state: Mutex<SessionState>,
}

struct SessionState {
    last_seq: u64,
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
        Session {
            id,
            client,
            intents,
            state: Mutex::new(SessionState {
                last_seq: 0,
                buffer: VecDeque::new(),
                capacity,
                link: None,
                detached_at: Some(Instant::now()),
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
        st.detach(Some(super::protocol::close::QUEUE_OVERFLOW));
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

    /// Detached for longer than `timeout`: cannot be resumed any more.
    pub fn expired(&self, timeout: Duration) -> bool {
        self.lock().expired(timeout)
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
