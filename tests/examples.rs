//! The shipped example configs stay valid: `check-config` accepts each, and
//! the commented one really does use every backend kind.

use std::process::Command;

fn check_config(path: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_event-pusher"))
        .arg("check-config")
        .arg(path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run check-config");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sidecar_toml_is_accepted_and_uses_every_kind() {
    let (ok, stdout, stderr) = check_config("examples/sidecar.toml");
    assert!(ok, "check-config refused examples/sidecar.toml:\n{stderr}");
    for kind in ["filter", "log", "http", "rabbit", "sns", "push", "gateway"] {
        assert!(stdout.contains(kind), "summary lacks {kind}:\n{stdout}");
    }
    // Lowest priority first.
    let tag = stdout.find("tag-presence").expect("tag-presence listed");
    let notify = stdout.find("notify").expect("notify listed");
    assert!(tag < notify, "{stdout}");
}

#[test]
fn small_examples_are_accepted() {
    for f in ["examples/minimal.toml", "examples/custom_filter.toml"] {
        let (ok, _, stderr) = check_config(f);
        assert!(ok, "{f}: {stderr}");
    }
}

#[test]
fn script_example_compiles_its_script() {
    // The script path is relative to the config file, not to the cwd.
    let (ok, stdout, stderr) = check_config("examples/scripts.toml");
    assert!(ok, "check-config refused examples/scripts.toml:\n{stderr}");
    assert!(stdout.contains("moderation"), "{stdout}");
}
