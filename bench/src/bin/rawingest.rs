//! `rawingest`: the raw HTTP ingest baseline as a process of its own (see
//! `event_pusher_bench::raw_ingest`): a bare hyper server that parses each
//! request's JSON and group-commits one record per call, answering 202
//! once it is on disk.
//!
//! ```text
//! rawingest --listen 127.0.0.1:9100 --dir /tmp
//! ```

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "rawingest",
    about = "Bare hyper + redb group commit: the raw HTTP ingest baseline"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: String,
    /// Directory for the database (default: the temp dir).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> Result<(), String> {
    let dir = tempfile::tempdir_in(a.dir.unwrap_or_else(std::env::temp_dir)).map_err(|e| e.to_string())?;
    // Tokio's default: one worker per core, as the sidecar runs.
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
        eprintln!("rawingest listening on {}", a.listen);
        event_pusher_bench::raw_ingest::serve(listener, &dir.path().join("raw.redb")).await
    })
}
