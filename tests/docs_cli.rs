//! The command line follows the ecosystem's conventions, as
//! `docs/operations.md` describes: shell completions, a man page,
//! `--version` with the enabled features, `--log-format` on `run` (winning
//! over `EVENT_PUSHER_LOG_FORMAT`), and a help line for every option and
//! argument of every command.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::free_port;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_event-pusher"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn version_names_the_enabled_features() {
    let out = bin().arg("--version").output().expect("run");
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("event-pusher {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    for feature in ["rabbit", "sns", "push", "gateway"] {
        assert!(text.contains(feature), "--version does not name {feature}: {text}");
    }
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = bin().args(["completions", shell]).output().expect("run");
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = stdout(&out);
        for word in ["check-config", "dlq", "webhooks", "log-format"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    // The bash script is bash: `bash -n` parses it without running it.
    let out = bin().args(["completions", "bash"]).output().expect("run");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("event-pusher.bash");
    std::fs::write(&path, &out.stdout).expect("write");
    let check = Command::new("bash").arg("-n").arg(&path).output().expect("bash");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // Another shell is refused, naming the ones there are.
    let out = bin().args(["completions", "tcsh"]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}

#[test]
fn man_page_is_roff_and_lists_the_commands() {
    let out = bin().arg("man").output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = stdout(&out);
    assert!(page.starts_with(".ie") || page.contains(".TH event-pusher"), "{page}");
    for word in ["check\\-config", "completions", "webhooks"] {
        assert!(page.contains(word), "the man page lacks {word}");
    }
}

/// `--help` of a command path, e.g. `["dlq", "list"]`.
fn help(path: &[&str]) -> String {
    let out = bin().args(path).arg("--help").output().expect("run --help");
    assert!(out.status.success(), "{path:?} --help failed");
    stdout(&out)
}

/// Subcommand names listed under `Commands:` in a help text.
fn subcommands(help: &str) -> Vec<String> {
    section(help, "Commands:")
        .iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

/// The entry lines of a help section (`Options:`, `Arguments:`), each
/// joined with its continuation lines.
fn section<'a>(help: &'a str, title: &str) -> Vec<&'a str> {
    let mut lines = help.lines().skip_while(|l| *l != title);
    lines.next();
    lines
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("        "))
        .collect()
}

#[test]
fn every_option_and_argument_has_a_help_line() {
    let mut missing = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        seen += 1;
        let lines: Vec<&str> = text.lines().collect();
        for title in ["Options:", "Arguments:"] {
            let Some(start) = lines.iter().position(|l| *l == title) else {
                continue;
            };
            let entries = &lines[start + 1..];
            for (i, line) in entries.iter().enumerate() {
                if line.is_empty() {
                    break;
                }
                // An entry starts with two spaces; its help follows on the
                // same line after two or more spaces, or on the next,
                // indented further.
                if !line.starts_with("  ") || line.starts_with("   ") {
                    continue;
                }
                let entry = line.trim_start();
                let same_line = entry.split("  ").filter(|s| !s.trim().is_empty()).count() > 1;
                let next_line = entries.get(i + 1).is_some_and(|n| n.starts_with("          "));
                if !same_line && !next_line {
                    missing.push(format!("event-pusher {}: {entry}", path.join(" ")));
                }
            }
        }
        for sub in subcommands(&text) {
            let mut next = path.clone();
            next.push(sub);
            todo.push(next);
        }
    }
    assert!(seen > 10, "only {seen} commands found");
    assert!(
        missing.is_empty(),
        "options without a help line:\n{}",
        missing.join("\n")
    );
}

/// The first stderr line of a short `run` with the given flag and env.
async fn first_log_line(flag: Option<&str>, env: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[spool]\ndir = \"{}\"\n[backends.log.out]\npath = \"{}\"\n",
            dir.path().join("spool").display(),
            dir.path().join("events.jsonl").display()
        ),
    )
    .expect("write config");
    let mut cmd = bin();
    cmd.arg("run").arg("--config").arg(&config);
    if let Some(f) = flag {
        cmd.args(["--log-format", f]);
    }
    cmd.env_remove("EVENT_PUSHER_LOG_FORMAT");
    if let Some(e) = env {
        cmd.env("EVENT_PUSHER_LOG_FORMAT", e);
    }
    let err = dir.path().join("stderr.log");
    cmd.stderr(std::fs::File::create(&err).expect("log file"));
    cmd.stdout(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    // The first line is written at start; wait for it, however long.
    let line = loop {
        let text = std::fs::read_to_string(&err).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            break line.to_owned();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("run exited with {status} before logging");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    line
}

fn is_json(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object())
}

#[tokio::test]
async fn log_format_flag_wins_over_the_environment() {
    assert!(is_json(&first_log_line(Some("json"), None).await));
    assert!(is_json(&first_log_line(None, Some("json")).await));
    assert!(!is_json(&first_log_line(None, None).await));
    // The flag wins, both ways.
    assert!(is_json(&first_log_line(Some("json"), Some("text")).await));
    assert!(!is_json(&first_log_line(Some("text"), Some("json")).await));
    // An unknown format is refused, naming the choices.
    let out = bin().args(["run", "--log-format", "xml"]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("json"));
}
