//! How the benchmarks start the sidecar: the workspace's one driver
//! (`event_pusher_testkit::Sidecar`) on the binary named on the command
//! line, with the filters every benchmark runs, a body limit for large
//! batches, quiet logs (`BENCH_SIDECAR_LOG` to change), and the spool on
//! the disk the run chose.

use std::path::Path;

use event_pusher_testkit::Options;
pub use event_pusher_testkit::{cpu_secs, rss_of, Rss, Sidecar};

/// A port nobody listens on right now (18088 if none could be had: the
/// start then fails naming the port).
pub fn free_port() -> u16 {
    event_pusher_testkit::try_free_port().unwrap_or(18088)
}

/// The bench config: the bench filters, then `body`; `spool` limits;
/// temporary dir in `tmp`.
pub fn options(tmp: &Path, spool: &str, body: &str) -> Options {
    Options {
        server: "max_body_bytes = 16777216".into(),
        spool: spool.into(),
        body: format!("{}\n{body}", crate::scenario::FILTERS_TOML),
        env: vec![(
            "RUST_LOG".into(),
            std::env::var("BENCH_SIDECAR_LOG").unwrap_or_else(|_| "warn".into()),
        )],
        tmp: Some(tmp.to_owned()),
        token: None,
    }
}

/// Start `bin` on the bench config; returns once `/health` answers.
pub async fn start(bin: &Path, tmp: &Path, spool: &str, body: &str) -> Result<Sidecar, String> {
    Sidecar::launch(bin, options(tmp, spool, body)).await
}

/// Ask the binary whether it accepts the bench config with `body` (e.g.
/// whether it was built with the rabbit backend). `Err` carries its
/// message.
pub fn check_config(bin: &Path, tmp: &Path, body: &str) -> Result<(), String> {
    event_pusher_testkit::check_config(bin, &options(tmp, "", body))
}
