//! A filter plugin written in Rust: build your own sidecar binary with
//! event-pusher as a library, add filters to the chain, run it.
//!
//! ```sh
//! cargo run --example custom_filter -- examples/custom_filter.toml
//! ```
//!
//! A filter is anything implementing `event_pusher::Filter` (a closure
//! `Fn(&mut Event) -> Verdict` will do). It runs on the ingest path, so it
//! must be quick and must not block: no I/O.

use std::path::PathBuf;
use std::process::ExitCode;

use event_pusher::core::event::EventBody;
use event_pusher::{Event, Filter, MetaValue, Sidecar, Verdict};

/// Drops chat messages containing a blocked word, and tags the rest with
/// their length so subscribers can route long messages differently.
struct Moderation {
    blocked: Vec<String>,
}

impl Filter for Moderation {
    fn apply(&self, event: &mut Event) -> Verdict {
        let EventBody::Chat(chat) = &event.body else {
            return Verdict::Continue;
        };
        let Some(body) = chat.body.as_deref() else {
            return Verdict::Continue;
        };
        let lower = body.to_lowercase();
        if self.blocked.iter().any(|w| lower.contains(w.as_str())) {
            return Verdict::Stop;
        }
        let len = body.chars().count() as i64;
        event.metadata.insert("body_length".into(), MetaValue::Int(len));
        Verdict::Continue
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let config = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| "examples/custom_filter.toml".into());
    let sidecar = match Sidecar::from_file(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sidecar = sidecar
        .with_filter(
            "moderation",
            15,
            Moderation {
                blocked: vec!["spam".into()],
            },
        )
        // A closure works too.
        .with_filter("only-localhost", 5, |e: &mut Event| {
            if e.user().ends_with("@localhost") {
                Verdict::Continue
            } else {
                Verdict::Stop
            }
        });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sidecar.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
