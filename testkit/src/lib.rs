//! One test support for the whole workspace: what the end-to-end tests
//! (`tests/support` re-exports all of it), the backend tests
//! (`backends/tests`) and the benchmarks (`bench/`) need to drive and
//! observe the real thing.
//!
//! - [`sidecar`]: the `event-pusher` binary as a child process (config,
//!   readiness, HTTP and admin calls, restart, kill -9, SIGTERM);
//! - [`receiver`]: a webhook receiver that records what it gets and
//!   answers as the test scripts;
//! - [`gateway`]: a raw gateway client (JSON frames over a bare WebSocket);
//! - [`broker`]: the shared RabbitMQ broker (URL, channel, stop / start);
//! - [`proxy`]: a TCP proxy whose connections a test cuts (outages);
//! - [`faults`]: disk faults (a tmpfs that fills up, an immutable file);
//! - [`metrics`]: `/metrics` samples;
//! - [`process`]: a process's CPU time and resident set;
//! - a free port, here.
//!
//! Nothing here knows where the binary is: callers pass its path (the
//! root crate's tests have it from Cargo, the benchmarks from the command
//! line).

pub mod broker;
pub mod faults;
pub mod gateway;
pub mod metrics;
pub mod process;
pub mod proxy;
pub mod receiver;
pub mod sidecar;

pub use broker::{amqp_url, broker_start, broker_stop, rabbit_channel, AMQP};
pub use faults::{Immutable, Tmpfs};
pub use gateway::{gateway_backend, Next, RawGateway};
pub use metrics::{metric, scrape, sum_of};
pub use process::{cpu_secs, cpu_ticks, rss_of, Rss, CLOCK_TICKS_PER_SEC};
pub use proxy::TcpProxy;
pub use receiver::{Answer, Received, Receiver};
pub use sidecar::{check_config, http_backend, Options, Sidecar};

pub mod postgres;

use std::net::TcpListener;

/// A port nobody listens on right now, or why none could be had.
pub fn try_free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// A port nobody listens on right now; panics (in a test) when the machine
/// has none to give.
pub fn free_port() -> u16 {
    try_free_port().expect("no free port")
}

#[cfg(test)]
mod tests {
    #[test]
    fn there_is_a_free_port() {
        assert_ne!(super::free_port(), 0);
    }
}
