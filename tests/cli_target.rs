//! `--url`, `--token` and `--config` mean the same on `status` and `dlq`:
//! the config supplies URL and token, flags and `EVENT_PUSHER_TOKEN` win,
//! `dlq` reads a spool directly only with `--config` and no sidecar
//! answering (and says so), and never falls back to the embedded default.

mod support;

use support::{free_port, path_str, run_cli, Options, Sidecar};

async fn with_token() -> Sidecar {
    Sidecar::start(Options {
        server: "auth_token = \"s3cret\"".into(),
        token: Some("s3cret".into()),
        body: "[backends.log.console]\n".into(),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn url_and_token_default_from_config_and_flags_work_on_every_command() {
    let sc = with_token().await;
    let config = path_str(&sc.config);

    // From the config alone: URL and token.
    for args in [
        vec!["status", "--config", &config],
        vec!["dlq", "list", "--config", &config],
    ] {
        let out = run_cli(&args, &[]);
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("reading the spool"), "{args:?}: {}", out.stderr);
    }
    let out = run_cli(&["status", "--config", &config], &[]);
    assert!(
        out.stdout.contains("log.console"),
        "KIND.NAME in status: {}",
        out.stdout
    );

    // --url with --token, or with the environment variable.
    let out = run_cli(&["dlq", "list", "--url", &sc.url, "--token", "s3cret"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = run_cli(&["status", "--url", &sc.url], &[("EVENT_PUSHER_TOKEN", "s3cret")]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // A wrong token is refused, not ignored.
    let out = run_cli(&["dlq", "list", "--url", &sc.url, "--token", "nope"], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("401"), "{}", out.stderr);
}

#[tokio::test]
async fn dlq_reads_the_spool_only_with_config_and_says_so() {
    let mut sc = with_token().await;
    let config = path_str(&sc.config);
    sc.sigterm();

    let out = run_cli(&["dlq", "list", "--config", &config], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let expected = format!(
        "no sidecar at {}; reading the spool at {} directly",
        sc.url,
        sc.spool_dir().display()
    );
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
    assert!(out.stdout.contains("0 dead letters"), "{}", out.stdout);

    // Without --config: an error naming what was tried, no embedded default.
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = run_cli(&["dlq", "list", "--url", &url], &[]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!("no sidecar at {url}")) && out.stderr.contains("--config"),
        "{}",
        out.stderr
    );
}

#[test]
fn help_says_which_commands_talk_to_a_running_sidecar() {
    let out = run_cli(&["--help"], &[]);
    assert!(out.stdout.contains("talk to a running sidecar"), "{}", out.stdout);
    for cmd in [vec!["status", "--help"], vec!["dlq", "list", "--help"]] {
        let out = run_cli(&cmd, &[]);
        for flag in ["--url", "--token", "--config"] {
            assert!(out.stdout.contains(flag), "{cmd:?} lacks {flag}: {}", out.stdout);
        }
    }
}
