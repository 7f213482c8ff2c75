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
