//! The workload: a deterministic mix of hook calls.
//!
//! `standard` is what a chat server reports: presence on and off, one-to-one
//! chat sent (`in`) and delivered (`out`), groupchat sent and delivered.
//! `chat` is one-to-one chat with a body only: every event of it is claimed
//! by a RabbitMQ backend with a chat exchange, so a preload of N calls queues
//! exactly N events there.
//!
//! Users are spread over 10,000 accounts so that per-user delivery ordering
//! never limits parallelism.

use bytes::Bytes;
use serde_json::{json, Value};

/// Which calls to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    Standard,
    Chat,
}

impl std::str::FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "standard" => Ok(Mix::Standard),
            "chat" => Ok(Mix::Chat),
            _ => Err(format!("unknown mix \"{s}\" (expected standard or chat)")),
        }
    }
}

/// Placeholder in stamped calls' metadata, replaced with the send time in
/// microseconds (16 digits) just before a request goes out.
pub const STAMP_PLACEHOLDER: &[u8; 16] = b"SENTAT0000000000";
/// The metadata key carrying the stamp.
pub const STAMP_KEY: &str = "sent_at_us";

const USERS: u64 = 10_000;
const ROOMS: u64 = 200;

const BODIES: [&str; 8] = [
    "hi",
    "are you coming tonight?",
    "ok, see you at eight then. bring the charger please",
    "Did you see the new build? The latency graphs finally look flat after the spool change.",
    "lol",
    "meeting moved to 3pm, room B",
    "Here is the summary of yesterday's incident: the broker ran out of disk, publishers were blocked, nothing was lost.",
    "thanks!",
];

/// A deterministic generator of hook calls.
pub struct MixGen {
    state: u64,
    n: u64,
    mix: Mix,
    stamp: bool,
}

impl MixGen {
    pub fn new(seed: u64, mix: Mix) -> Self {
        MixGen {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            n: 0,
            mix,
            stamp: false,
        }
    }

    /// Add `metadata.sent_at_us` (a placeholder to fill in at send time).
    pub fn stamped(mut self, stamp: bool) -> Self {
        self.stamp = stamp;
        self
    }

    fn rand(&mut self) -> u64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next hook call.
    pub fn next_call(&mut self) -> Value {
        self.n += 1;
        let roll = match self.mix {
            Mix::Standard => self.rand() % 100,
            Mix::Chat => 25 + self.rand() % 55,
        };
        let u = self.rand() % USERS;
        let v = self.rand() % USERS;
        let res = self.rand() % 3;
        let room = self.rand() % ROOMS;
        let body = BODIES[(self.rand() % BODIES.len() as u64) as usize];
        let id = format!("m-{}", self.n);
        let me = format!("user{u}@localhost/res{res}");
        let mut call = match roll {
            0..=14 => json!({"hook": "user_available", "jid": me}),
            15..=24 => json!({"hook": "unset_presence", "jid": me}),
            25..=54 => json!({"hook": "user_send_message", "from": me, "to": format!("user{v}@localhost"),
                              "type": "chat", "body": body, "id": id}),
            55..=79 => json!({"hook": "filter_local_packet", "from": format!("user{v}@localhost/res{res}"), "to": me,
                              "type": "chat", "body": body, "id": id}),
            80..=89 => json!({"hook": "user_send_message", "from": me, "to": format!("room{room}@muc.localhost"),
                              "type": "groupchat", "body": body, "id": id}),
            _ => json!({"hook": "filter_local_packet", "from": format!("room{room}@muc.localhost/user{v}"), "to": me,
                        "type": "groupchat", "body": body, "id": id}),
        };
        if self.stamp {
            let ph = std::str::from_utf8(STAMP_PLACEHOLDER).unwrap_or_default();
            call["metadata"] = json!({ STAMP_KEY: ph });
        }
        call
    }

    /// A request body: one object for `batch == 1`, else a JSON array.
    pub fn next_body(&mut self, batch: usize) -> Bytes {
        let v = if batch == 1 {
            self.next_call()
        } else {
            Value::Array((0..batch).map(|_| self.next_call()).collect())
        };
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }

    pub fn calls(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.next_call()).collect()
    }
}

/// Replace every stamp placeholder in `body` with `us` (16 digits).
pub fn fill_stamp(body: &[u8], us: u64) -> Bytes {
    let digits = format!("{us:016}");
    let mut out = body.to_vec();
    let ph = STAMP_PLACEHOLDER;
    let mut i = 0;
    while i + ph.len() <= out.len() {
        if &out[i..i + ph.len()] == ph {
            out[i..i + ph.len()].copy_from_slice(digits.as_bytes());
            i += ph.len();
        } else {
            i += 1;
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_valid() {
        let a = MixGen::new(7, Mix::Standard).calls(500);
        let b = MixGen::new(7, Mix::Standard).calls(500);
        assert_eq!(a, b);
        for c in &a {
            event_pusher_core::HookTranslator.translate(c).unwrap();
        }
        let chat = MixGen::new(7, Mix::Chat).calls(200);
        assert!(chat.iter().all(|c| c["type"] == "chat"));
    }

    #[test]
    fn stamps() {
        let body = MixGen::new(1, Mix::Standard).stamped(true).next_body(3);
        let filled = fill_stamp(&body, 42);
        let v: Value = serde_json::from_slice(&filled).unwrap();
        assert_eq!(v[2]["metadata"][STAMP_KEY], "0000000000000042");
    }
}
