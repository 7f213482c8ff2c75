//! `event-pusher check-config FILE`: the chain in priority order on a good
//! file; exit 1 with file:line:column and the key on a bad one.

mod support;

use support::{path_str, run_cli, CliOutput};

fn check(text: &str, env: &[(&str, &str)]) -> (String, CliOutput) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidecar.toml");
    std::fs::write(&file, text).unwrap();
    let file = path_str(&file);
    let out = run_cli(&["check-config", &file], env);
    // Keep the directory alive until the command ran.
    drop(dir);
    (file, out)
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:18088"
auth_token = "${EP_CHECK_TOKEN}"

[spool]
dir = "./data"

[[filters]]
name = "stop-headlines"
priority = 30
match = { type = "headline" }
action = "stop"

[[filters]]
name = "tag"
match = { event = "presence" }
metadata = { source = "sidecar", tier = 2 }

[backends.http.late]
url = "http://127.0.0.1:9000/late"
priority = 90
events = ["chat", "presence"]

[backends.log.console]
priority = 5

[backends.http.notify]
url = "http://127.0.0.1:9000/notifications"
format = "form"
headers = { "X-Api-Key" = "${EP_CHECK_KEY}" }
[backends.http.notify.retry]
max_attempts = 3
"#;

#[test]
fn a_good_file_prints_the_chain_in_priority_order() {
    let (file, out) = check(GOOD, &[("EP_CHECK_TOKEN", "t"), ("EP_CHECK_KEY", "k")]);
    assert_eq!(out.code, Some(0), "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&file), "names the file:\n{}", out.stdout);
    // Each handler once, lowest priority first: log@5, tag@10 (the filter
    // default), stop-headlines@30, notify@50 (the backend default), late@90.
    let order: Vec<(i64, String)> = out
        .stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let prio = w.next()?.parse::<i64>().ok()?;
            let _kind = w.next()?;
            Some((prio, w.next()?.to_owned()))
        })
        .collect();
    let want: Vec<(i64, String)> = [
        (5, "console"),
        (10, "tag"),
        (30, "stop-headlines"),
        (50, "notify"),
        (90, "late"),
    ]
    .into_iter()
    .map(|(p, n)| (p, n.to_owned()))
    .collect();
    assert_eq!(order, want, "chain as printed:\n{}", out.stdout);
    for line in out.stdout.lines() {
        if line.contains("stop-headlines") || line.contains(" tag") {
            assert!(line.contains("filter"), "{line}");
        }
        if line.contains("notify") || line.contains("late") {
            assert!(line.contains("http"), "{line}");
        }
    }
}

/// The error goes to stderr as `FILE:LINE:COLUMN: key `KEY`: message`.
/// `key` is matched whole when given in backticks (`` `a.b` ``), else as
/// a substring of the error.
fn assert_bad(text: &str, env: &[(&str, &str)], line: usize, column: usize, key: &str, words: &[&str]) {
    let (file, out) = check(text, env);
    assert_eq!(
        out.code,
        Some(1),
        "exit code; stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let err = out.stderr.trim();
    let place = format!("{file}:{line}:{column}: ");
    assert!(err.contains(&place), "error does not point at {place}:\n{err}");
    assert!(err.contains(key), "error does not name the key {key}:\n{err}");
    for w in words {
        assert!(err.contains(w), "error does not say {w:?}:\n{err}");
    }
}

#[test]
fn an_unknown_key_is_named_with_its_position() {
    assert_bad(
        "[server]\nlisten = \"127.0.0.1:18088\"\ncolour = \"red\"\n",
        &[],
        3,
        1,
        "`server.colour`",
        &["unknown field", "colour"],
    );
    assert_bad(
        "[[filters]]\nname = \"f\"\nmatch = { event = \"chat\", colour = \"red\" }\n",
        &[],
        3,
        27,
        "`filters[0].match.colour`",
        &["unknown field"],
    );
    assert_bad(
        "[backends.http.notify]\nurl = \"http://127.0.0.1:9/x\"\n\n[backends.http.notify.retry]\nmax_attempt = 3\n",
        &[],
        5,
        1,
        "max_attempt",
        &["unknown field", "backends.http.notify"],
    );
}

#[test]
fn a_bad_value_is_named_with_its_position() {
    assert_bad(
        "[backends.http.notify]\nurl = \"http://127.0.0.1:9/x\"\ntimeout_ms = \"soon\"\n",
        &[],
        3,
        14,
        "timeout_ms",
        &["soon", "backends.http.notify"],
    );
    assert_bad(
        "[backends.http.notify]\nurl = \"http://127.0.0.1:9/x\"\nevents = [\"chat\", \"gossip\"]\n",
        &[],
        3,
        10,
        "events",
        &["gossip", "backends.http.notify"],
    );
    assert_bad("[server]\nlisten = \"somewhere\"\n", &[], 2, 10, "`server.listen`", &[]);
    assert_bad(
        "[[filters]]\nname = \"f\"\naction = \"drop\"\n",
        &[],
        3,
        10,
        "`filters[0].action`",
        &["drop"],
    );
}

#[test]
fn a_missing_variable_is_named_with_its_position() {
    assert_bad(
        "[server]\nlisten = \"127.0.0.1:18088\"\nauth_token = \"${EP_CHECK_SURELY_UNSET}\"\n",
        &[],
        3,
        15,
        "EP_CHECK_SURELY_UNSET",
        &["not set"],
    );
}

// Every error names the file, line, column and key: also under
// [backends.*] tables and for a missing ${VAR}.

#[test]
fn backend_keys_are_named_plainly() {
    assert_bad(
        "[backends.http.notify]\nurl = \"http://127.0.0.1:9/x\"\ntimeout_ms = \"soon\"\n",
        &[],
        3,
        14,
        "`backends.http.notify.timeout_ms`",
        &[],
    );
    assert_bad(
        "[backends.http.notify]\nurl = \"http://127.0.0.1:9/x\"\n\n[backends.http.notify.retry]\nmax_attempt = 3\n",
        &[],
        5,
        1,
        "`backends.http.notify.retry.max_attempt`",
        &[],
    );
}

#[test]
fn a_missing_variable_names_its_key() {
    assert_bad(
        "[server]\nlisten = \"127.0.0.1:18088\"\nauth_token = \"${EP_CHECK_SURELY_UNSET}\"\n",
        &[],
        3,
        15,
        "`server.auth_token`",
        &[],
    );
}

#[test]
fn a_missing_file_exits_1() {
    let out = run_cli(&["check-config", "/nonexistent/event-pusher.toml"], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("/nonexistent/event-pusher.toml"), "{}", out.stderr);
}

// `max_attempts` counts the first attempt: 0 used to become 1 silently.
#[test]
fn zero_retry_attempts_are_refused_at_the_key() {
    assert_bad(
        "[backends.http.notify]\nurl = \"http://127.0.0.1:9/x\"\n\n[backends.http.notify.retry]\nmax_attempts = 0\n",
        &[],
        5,
        16,
        "`backends.http.notify.retry.max_attempts`",
        &["at least 1"],
    );
}

// A first wait longer than the longest wait used to be clamped silently.
#[test]
fn an_initial_backoff_over_the_max_is_refused_at_the_table() {
    assert_bad(
        "[backends.log.console]\n\n[backends.log.console.retry]\ninitial_backoff_ms = 5000\nmax_backoff_ms = 100\n",
        &[],
        3,
        1,
        "`backends.log.console.retry`",
        &["initial_backoff_ms (5000)", "max_backoff_ms (100)"],
    );
}

/// `[cluster]` is shown without the password in the connection string, in
/// either form PostgreSQL accepts; without it, check-config says the state
/// stays in the spool.
#[test]
fn the_cluster_section_is_shown_without_its_password() {
    for (postgres, shown) in [
        (
            "postgres://event_pusher:s3cret-pw@10.0.0.5:5432/event_pusher",
            "postgres://event_pusher:***@10.0.0.5:5432/event_pusher",
        ),
        (
            "host=10.0.0.5 user=event_pusher password=s3cret-pw dbname=event_pusher",
            "password=***",
        ),
    ] {
        let text = format!(
            "[spool]\ndir = \"./data\"\n\n[cluster]\npostgres = \"{postgres}\"\npool_size = 3\nnode = \"chat-1\"\n\n[backends.log.console]\n"
        );
        let (_, out) = check(&text, &[]);
        assert_eq!(out.code, Some(0), "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with("cluster store"))
            .unwrap_or_else(|| panic!("no cluster line:\n{}", out.stdout));
        assert!(line.contains(shown), "{line}");
        assert!(line.contains("pool 3") && line.contains("node chat-1"), "{line}");
        assert!(!out.stdout.contains("s3cret-pw"), "password shown:\n{}", out.stdout);
    }
    let (_, out) = check("[spool]\ndir = \"./data\"\n\n[backends.log.console]\n", &[]);
    assert!(out.stdout.contains("cluster off"), "{}", out.stdout);
}

/// A gateway may not take a path the sidecar serves itself, the cluster and
/// erasure routes included: check-config names the key instead of the
/// sidecar panicking at start on overlapping routes.
#[test]
fn a_gateway_path_the_sidecar_serves_is_refused() {
    for path in ["/v1/cluster", "/v1/users", "/v1/webhooks/x"] {
        let text = format!(
            "[backends.gateway.live]\npath = \"{path}\"\n[backends.gateway.live.clients.bot]\ntoken = \"t\"\nintents = 1\n"
        );
        let (_, out) = check(&text, &[]);
        assert_eq!(
            out.code,
            Some(1),
            "{path}: stdout:\n{}\nstderr:\n{}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stderr.contains("backends.gateway.live.path") && out.stderr.contains("serves it itself"),
            "{path}: {}",
            out.stderr
        );
    }
}
