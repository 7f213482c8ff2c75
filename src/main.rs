//! The `event-pusher` binary: parse arguments, load config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use event_pusher::commands::target::TargetArgs;
use event_pusher::commands::{self, dlq, webhooks};
use event_pusher::Sidecar;

#[derive(Parser)]
#[command(
    name = "event-pusher",
    version,
    about = "Durable event-pushing sidecar for chat servers",
    after_help = "`status`, `webhooks` and `dlq` talk to a running sidecar over its admin API \
(--url, --token / EVENT_PUSHER_TOKEN, or both from --config FILE). \
`dlq` reads the spool directly only when --config is given and no sidecar answers."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar (the default). Without --config: the embedded default.
    Run {
        /// The config file (TOML) [default: the embedded default: listen
        /// 127.0.0.1:8088, spool ./data, a log backend on stdout]
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log lines as JSON or text; wins over EVENT_PUSHER_LOG_FORMAT
        /// [default: EVENT_PUSHER_LOG_FORMAT, else text]
        #[arg(long, value_enum, value_name = "FORMAT")]
        log_format: Option<LogFormat>,
    },
    /// Validate a config file and print the handler chain.
    CheckConfig {
        /// The config file to check.
        file: PathBuf,
    },
    /// Write an event-pusher config from a MongooseIM config's mod_event_pusher.
    ImportMongooseim {
        /// MongooseIM's mongooseim.toml.
        file: PathBuf,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Overwrite the --output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// List or replay dead letters (talks to a running sidecar; with
    /// --config and none answering, reads that config's spool directly).
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Show each backend's queue, deliveries and dead letters (talks to a
    /// running sidecar).
    Status {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Publish hook calls (NDJSON on stdin) to the scale-out exchange, routed
    /// by user, persistent, with publisher confirms.
    #[cfg(feature = "rabbit")]
    Publish {
        /// amqp://user:password@host:5672/vhost
        #[arg(long)]
        url: String,
        /// The scale-out exchange to publish to.
        #[arg(long, default_value = event_pusher::sources::amqp::DEFAULT_EXCHANGE)]
        exchange: String,
        /// Up to this many calls of one user per message (a JSON array);
        /// 1 publishes each call as a message of its own.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch: u32,
    },
    /// Declare the scale-out exchange, partition queues and dead-letter queue
    /// (what a sidecar with `declare = true` does at start).
    #[cfg(feature = "rabbit")]
    DeclareTopology {
        /// amqp://user:password@host:5672/vhost
        #[arg(long)]
        url: String,
        /// The scale-out exchange (also the prefix of the queue names).
        #[arg(long, default_value = event_pusher::sources::amqp::DEFAULT_EXCHANGE)]
        exchange: String,
        /// Partition queues (the source's `partitions`).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
        partitions: u64,
    },
    /// Webhook subscriptions of a running sidecar: list, add, pause,
    /// restart, remove.
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
    },
    /// Erase everything held about a user (bare JID) in a running sidecar:
    /// queued events, dead letters, push devices, presence, badge counts
    EraseUser {
        /// The user's bare JID (e.g. alice@localhost).
        jid: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Inspect a spool
    Spool {
        #[command(subcommand)]
        action: SpoolAction,
    },
    /// Print a shell completion script: `event-pusher completions bash >
    /// /etc/bash_completion.d/event-pusher`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the man page (roff): `event-pusher man > event-pusher.1`.
    Man,
}

/// `--log-format`: how log lines on stderr look.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines.
    Text,
}

/// The shells `completions` writes for.
#[derive(Clone, Copy, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for clap_complete::Shell {
    fn from(shell: CompletionShell) -> Self {
        match shell {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// `--version`: the version and the cargo features this binary was built
/// with (which backends and sources it has). Computed once: clap keeps a
/// `&'static str`.
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(version);

fn version() -> String {
    let features: Vec<&str> = [
        ("rabbit", cfg!(feature = "rabbit")),
        ("sns", cfg!(feature = "sns")),
        ("push", cfg!(feature = "push")),
        ("gateway", cfg!(feature = "gateway")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    format!("{} (features: {})", env!("CARGO_PKG_VERSION"), features.join(", "))
}

/// The command line as clap sees it, with the version string filled in.
fn command() -> clap::Command {
    Cli::command().version(VERSION.as_str())
}

#[derive(Subcommand)]
enum WebhooksAction {
    /// One row per subscription.
    List {
        #[command(flatten)]
        target: TargetArgs,
        /// Print the subscriptions as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Attach a subscription; prints it with its secret (shown only now).
    Add {
        /// Where to POST events (http:// or https://).
        #[arg(value_name = "ENDPOINT_URL")]
        endpoint: String,
        /// Its id [default: generated].
        #[arg(long)]
        id: Option<String>,
        /// An event class to receive (repeat; default: all).
        #[arg(long = "event")]
        events: Vec<String>,
        /// `whsec_` + base64 [default: generated].
        #[arg(long)]
        secret: Option<String>,
        /// A header sent with every delivery, NAME=VALUE (repeat).
        #[arg(long = "header")]
        headers: Vec<String>,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Stop sending; events keep queueing.
    Pause {
        /// The subscription's id.
        id: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Send again, the backlog first, in order.
    Restart {
        /// The subscription's id.
        id: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Detach: the subscription and its queue go.
    Remove {
        /// The subscription's id.
        id: String,
        /// Wait up to this many seconds for its queue to empty first.
        #[arg(long, value_name = "SECONDS")]
        drain: Option<u64>,
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// List dead letters, a page at a time.
    List {
        /// One backend: NAME, or KIND.NAME where kinds share a name.
        #[arg(long)]
        backend: Option<String>,
        #[command(flatten)]
        target: TargetArgs,
        /// Print the records as JSON.
        #[arg(long)]
        json: bool,
        /// Records per page (1 to 10000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
        /// Start after this event id (the cursor a previous page printed).
        #[arg(long)]
        after: Option<String>,
    },
    /// Move dead letters back into their delivery queue.
    Replay {
        /// One backend: NAME, or KIND.NAME where kinds share a name.
        #[arg(long)]
        backend: Option<String>,
        #[command(flatten)]
        target: TargetArgs,
        /// Only these event ids (default: all).
        #[arg(long = "id")]
        ids: Vec<String>,
        /// Only dead letters that died at or after this time (RFC 3339)
        #[arg(long)]
        since: Option<String>,
        /// Only dead letters that died at or before this time (RFC 3339)
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Subcommand)]
enum SpoolAction {
    /// Check a stopped sidecar's spool: integrity, counts per table, size;
    /// exits 1 naming what is broken
    Check {
        /// The sidecar's config file (its spool.dir)
        #[arg(long, short, conflicts_with = "dir")]
        config: Option<PathBuf>,
        /// The spool directory itself
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The report as JSON
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let log_format = match &cli.command {
        Some(Command::Run { log_format, .. }) => *log_format,
        _ => None,
    };
    init_tracing(log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<String, String> = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Run {
            config: None,
            log_format: None,
        }) {
            Command::Run { config, .. } => {
                let sidecar = match &config {
                    Some(p) => Sidecar::from_file(p),
                    None => Sidecar::embedded_default(),
                }
                .map_err(|e| e.to_string())?;
                sidecar.run().await.map(|_| String::new()).map_err(|e| e.to_string())
            }
            Command::Completions { shell } => {
                let mut out = Vec::new();
                clap_complete::generate(
                    clap_complete::Shell::from(shell),
                    &mut command(),
                    "event-pusher",
                    &mut out,
                );
                String::from_utf8(out).map_err(|e| e.to_string())
            }
            Command::Man => {
                let mut out = Vec::new();
                clap_mangen::Man::new(command())
                    .render(&mut out)
                    .map_err(|e| format!("cannot render the man page: {e}"))?;
                String::from_utf8(out).map_err(|e| e.to_string())
            }
            Command::CheckConfig { file } => commands::check_config::run(&file).map_err(|e| e.to_string()),
            Command::ImportMongooseim { file, output, force } => {
                commands::import_mongooseim::run(&file, output.as_deref(), force).map_err(|e| e.to_string())
            }
            Command::Status { target } => {
                let target = target.resolve().map_err(|e| e.to_string())?;
                commands::status::run(target).await.map_err(|e| e.to_string())
            }
            Command::Webhooks { action } => {
                let (target, action) = match action {
                    WebhooksAction::List { target, json } => (target, webhooks::Action::List { json }),
                    WebhooksAction::Add {
                        endpoint,
                        id,
                        events,
                        secret,
                        headers,
                        target,
                    } => (
                        target,
                        webhooks::Action::Add {
                            url: endpoint,
                            id,
                            events,
                            secret,
                            headers,
                        },
                    ),
                    WebhooksAction::Pause { id, target } => (target, webhooks::Action::Pause { id }),
                    WebhooksAction::Restart { id, target } => (target, webhooks::Action::Restart { id }),
                    WebhooksAction::Remove { id, drain, target } => (target, webhooks::Action::Remove { id, drain }),
                };
                let target = target.resolve().map_err(|e| e.to_string())?;
                webhooks::run(target, action).await.map_err(|e| e.to_string())
            }
            #[cfg(feature = "rabbit")]
            Command::Publish { url, exchange, batch } => commands::publish::run(&url, &exchange, batch as usize)
                .await
                .map_err(|e| e.to_string()),
            #[cfg(feature = "rabbit")]
            Command::DeclareTopology {
                url,
                exchange,
                partitions,
            } => commands::declare_topology::run(&url, &exchange, partitions as usize)
                .await
                .map_err(|e| e.to_string()),
            Command::EraseUser { jid, target } => {
                let target = target.resolve().map_err(|e| e.to_string())?;
                commands::operations::erase_user(target, &jid)
                    .await
                    .map_err(|e| e.to_string())
            }
            Command::Spool {
                action: SpoolAction::Check { config, dir, json },
            } => commands::operations::spool_check(config.as_deref(), dir.as_deref(), json).map_err(|e| e.to_string()),
            Command::Dlq { action } => {
                let (target, backend, action) = match action {
                    DlqAction::List {
                        backend,
                        target,
                        json,
                        limit,
                        after,
                    } => (
                        target,
                        backend,
                        dlq::Action::List {
                            json,
                            limit: limit as usize,
                            after,
                        },
                    ),
                    DlqAction::Replay {
                        backend,
                        target,
                        ids,
                        since,
                        until,
                    } => (target, backend, dlq::Action::Replay { ids, since, until }),
                };
                let target = target.resolve().map_err(|e| e.to_string())?;
                dlq::run(target, backend.as_deref(), action)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    });
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout carries the `log` backend's JSON lines);
/// `RUST_LOG` filters; JSON lines with `--log-format json` (run) or, without
/// the flag, `EVENT_PUSHER_LOG_FORMAT=json`: the flag wins.
fn init_tracing(flag: Option<LogFormat>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let json = match flag {
        Some(format) => format == LogFormat::Json,
        None => std::env::var("EVENT_PUSHER_LOG_FORMAT").is_ok_and(|v| v == "json"),
    };
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
