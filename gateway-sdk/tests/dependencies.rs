//! An SDK user compiles the SDK, not the sidecar: none of the sidecar's
//! heavy parts (spool database, HTTP server, broker client, cloud SDKs,
//! script engine) is among the SDK's normal dependencies, as `cargo tree`
//! resolves them.

use std::process::Command;

/// Crates of the sidecar that must never reach an SDK user.
const FORBIDDEN: &[&str] = &[
    "redb",
    "axum",
    "lapin",
    "aws-config",
    "aws-sdk-sns",
    "rhai",
    "event-pusher-core",
    "event-pusher-backends",
    "event-pusher",
];

#[test]
fn the_sdk_does_not_pull_the_sidecar() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--manifest-path",
            manifest,
            "-p",
            "event-pusher-gateway-sdk",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Lines are `name vX.Y.Z [(path)] [(*)]`.
    let names: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(
        names.contains(&"event-pusher-gateway-protocol") && names.contains(&"tokio-tungstenite"),
        "not the SDK's tree:\n{tree}"
    );
    let pulled: Vec<&&str> = FORBIDDEN.iter().filter(|f| names.contains(f)).collect();
    assert!(pulled.is_empty(), "the SDK pulls {pulled:?}:\n{tree}");
}
