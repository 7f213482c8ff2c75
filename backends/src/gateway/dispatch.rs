//! A dispatch encoded once for every session.
//!
//! Fan-out to many sessions must not serialize the event once per session.
//! A [`Payload`] holds everything of a dispatch frame after its sequence
//! number, `,"t":"...","d":{...}}`, built once per event from the spool's
//! canonical JSON; each session only writes `{"op":0,"s":N` in front of it
//! when the frame goes out ([`Payload::frame`]).
//!
//! An event's payload also carries its place in the gateway's dispatch log
//! (`persist.rs`), which is what lets the sessions' resume buffers be
//! rebuilt after a restart.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_pusher_core::{ChatType, Event, EventBody, EventClass};

use super::protocol::dispatch;

/// The part of a dispatch frame shared by every session.
#[derive(Debug)]
pub struct Payload {
    /// `,"t":"TYPE","d":DATA}`.
    tail: String,
    /// Its index in the dispatch log, set when it is fanned out; 0 for
    /// what is not logged (READY is per session).
    index: AtomicU64,
}

impl Payload {
    /// A dispatch of type `t` whose `d` is the JSON text `d`.
    pub fn new(t: &str, d: &str) -> Arc<Payload> {
        let mut tail = String::with_capacity(t.len() + d.len() + 16);
        tail.push_str(",\"t\":\"");
        tail.push_str(t);
        tail.push_str("\",\"d\":");
        tail.push_str(d);
        tail.push('}');
        Payload::from_tail(tail, 0)
    }

    /// A payload read back from the dispatch log.
    pub fn from_tail(tail: String, index: u64) -> Arc<Payload> {
        Arc::new(Payload {
            tail,
            index: AtomicU64::new(index),
        })
    }

    /// `,"t":...,"d":...}`: what the dispatch log stores.
    pub fn tail(&self) -> &str {
        &self.tail
    }

    pub fn index(&self) -> u64 {
        self.index.load(Ordering::Relaxed)
    }

    /// Number it in the dispatch log (once, before any session has it).
    pub fn set_index(&self, index: u64) {
        self.index.store(index, Ordering::Relaxed);
    }

    /// The frame one session sends: `{"op":0,"s":seq,"t":...,"d":...}`.
    pub fn frame(&self, seq: u64) -> String {
        let mut out = String::with_capacity(self.tail.len() + 32);
        out.push_str("{\"op\":0,\"s\":");
        let _ = write!(out, "{seq}");
        out.push_str(&self.tail);
        out
    }
}

/// The dispatch type of an operational event (intent bit 1<<6).
pub const OPERATIONAL_EVENT: &str = "OPERATIONAL_EVENT";

/// The dispatch type of an event, by its class (contract: "Dispatch types").
pub fn dispatch_type(event: &Event) -> &'static str {
    match &event.body {
        EventBody::Presence(_) => dispatch::PRESENCE_UPDATE,
        EventBody::Unacked(_) => dispatch::MESSAGE_UNACKED,
        EventBody::Chat(c) if c.chat_type == ChatType::Chat => dispatch::DM_MESSAGE_CREATE,
        EventBody::Chat(_) => dispatch::MESSAGE_CREATE,
        EventBody::Operational(_) => OPERATIONAL_EVENT,
    }
}

/// The intent bit a session needs to receive `event`.
pub fn intent_of(event: &Event) -> u64 {
    u64::from(EventClass::of(event).bit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_json_with_the_sessions_sequence() {
        let p = Payload::new("MESSAGE_CREATE", r#"{"id":"x","body":"hi"}"#);
        let v: serde_json::Value = serde_json::from_str(&p.frame(42)).expect("json");
        assert_eq!(v["op"], 0);
        assert_eq!(v["s"], 42);
        assert_eq!(v["t"], "MESSAGE_CREATE");
        assert_eq!(v["d"]["body"], "hi");
    }
}
