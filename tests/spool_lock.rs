//! Two sidecars on one spool directory: the second refuses to start and says
//! that another process holds the spool, and where.

mod support;

use support::{free_port, path_str, run_cli, Options, Sidecar};

#[tokio::test]
async fn a_second_sidecar_on_the_same_spool_names_the_holder_and_the_dir() {
    let first = Sidecar::start(Options::default()).await;
    let spool = first.spool_dir();
    let config = first.dir.path().join("second.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n\n[spool]\ndir = \"{}\"\n",
            free_port(),
            spool.display()
        ),
    )
    .expect("write second config");

    let out = run_cli(&["run", "--config", &path_str(&config)], &[]);

    assert_eq!(out.code, Some(1), "second sidecar should refuse to start: {out:?}");
    assert!(
        out.stderr.contains("another process holds the spool"),
        "no clear reason: {}",
        out.stderr
    );
    assert!(out.stderr.contains(&path_str(&spool)), "dir not named: {}", out.stderr);
    assert!(!out.stderr.contains("Database already open"), "{}", out.stderr);
    // The first one is unharmed.
    let (status, _) = first.get("/health").await;
    assert_eq!(status, 200);
}
