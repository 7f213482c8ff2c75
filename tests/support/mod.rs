//! Test support for end-to-end tests. The drivers are the workspace's
//! one test support, `event_pusher_testkit` (the sidecar driver, the
//! webhook receiver, the raw gateway client, the broker helpers, the TCP
//! fault proxy, disk faults, `/metrics` and CPU readings); this module
//! re-exports all of it and adds what only the root crate's tests have:
//! the binary Cargo built for them (`sidecar`: `Sidecar::start(Options)`),
//! one-shot CLI runs (`cli`), hook-call builders and delivery counting
//! (`events`) and the push peers (`push`).
//!
//! Each test file does `mod support;` and uses what it needs; everything is
//! re-exported here, so `support::NAME` works for every helper.
#![allow(dead_code)]

mod cli;
mod events;
mod push;
mod scale_out;
mod sidecar;

// Each test binary uses only some helpers; the rest must not warn.
#[allow(unused_imports)]
pub use {cli::*, events::*, push::*, scale_out::*, sidecar::*};

// The shared drivers, under the names the tests have always used. Not
// `Sidecar`: the root crate's own (above) knows the binary.
#[allow(unused_imports)]
pub use event_pusher_testkit::{
    amqp_url, broker_start, broker_stop, cpu_secs, cpu_ticks, gateway_backend, http_backend, metric, rabbit_channel,
    rss_of, scrape, sum_of, Answer, Immutable, Next, Options, RawGateway, Received, Receiver, Rss, TcpProxy, Tmpfs,
    AMQP,
};

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
