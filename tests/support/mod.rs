//! Test support for end-to-end tests: the real `event-pusher` binary on a
//! free port with its own spool directory (`sidecar`), a real HTTP receiver
//! whose answers a test can script (`receiver`), one-shot CLI runs (`cli`),
//! `/metrics` and CPU-time readings (`metrics`), hook-call builders and
//! delivery counting (`events`), real disk faults (`faults`), and the shared
//! RabbitMQ broker (`broker`).
//!
//! Each test file does `mod support;` and uses what it needs; everything is
//! re-exported here, so `support::NAME` works for every helper.
#![allow(dead_code)]

mod broker;
mod cli;
mod events;
mod faults;
mod gateway;
mod metrics;
mod push;
mod receiver;
mod sidecar;

// Each test binary uses only some helpers; the rest must not warn.
#[allow(unused_imports)]
pub use {broker::*, cli::*, events::*, faults::*, gateway::*, metrics::*, push::*, receiver::*, sidecar::*};

use std::path::Path;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use event_pusher_testkit::free_port;
#[allow(unused_imports)]
pub use event_pusher_testkit::postgres::{Proxy, TestDb};

/// Poll `f` until it returns true or the timeout passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    f()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Whether `s` looks like a ULID: 26 Crockford base32 characters whose
/// first is at most `7` (128 bits).
pub fn is_ulid(s: &str) -> bool {
    const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    s.len() == 26 && s.chars().all(|c| ALPHABET.contains(c)) && s.as_bytes()[0] <= b'7'
}
