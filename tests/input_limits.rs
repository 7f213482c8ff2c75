//! Input the binary must refuse or accept clearly: JIDs beyond RFC 7622
//! (two `@`, parts over 1023 bytes) get 400 naming the field, and
//! `listen = "localhost:PORT"` is a valid address.

mod support;

use serde_json::json;
use support::{free_port, run_cli, Options, Sidecar};

#[tokio::test]
async fn jids_beyond_rfc_7622_get_400_naming_the_field() {
    let sc = Sidecar::start(Options::default()).await;
    let long_local = format!("{}@localhost", "a".repeat(1024));
    let long_resource = format!("alice@localhost/{}", "r".repeat(1024));
    for (call, field) in [
        (json!({"hook":"user_available","jid":"alice@evil@localhost"}), "jid"),
        (
            json!({"hook":"user_send_message","from":"a@b@localhost","to":"bob@localhost","type":"chat"}),
            "from",
        ),
        (
            json!({"hook":"user_send_message","from":"alice@localhost","to":long_local,"type":"chat"}),
            "to",
        ),
        (json!({"hook":"unset_presence","jid":long_resource}), "jid"),
    ] {
        let (status, answer) = sc.post(&call).await;
        assert_eq!(status, 400, "{call} -> {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(&format!("field `{field}`")), "{error}");
        assert!(error.len() < 300, "the refused value is not echoed whole: {error}");
    }
    // A resource may hold '@' and exactly 1023 bytes.
    let ok = json!({"hook":"user_available","jid":format!("alice@localhost/me@home{}", "r".repeat(1023 - 7))});
    let (status, answer) = sc.post(&ok).await;
    assert_eq!(status, 202, "{answer}");
}

#[test]
fn listen_takes_a_host_name_or_says_what_it_expects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, listen: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("[server]\nlisten = \"{listen}\"\n")).expect("write config");
        path.display().to_string()
    };
    let good = write("good.toml", &format!("localhost:{}", free_port()));
    let out = run_cli(&["check-config", &good], &[]);
    assert_eq!(out.code, Some(0), "{out:?}");

    let bad = write("bad.toml", "localhost");
    let out = run_cli(&["check-config", &bad], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("bad.toml:2:10")
            && out.stderr.contains("server.listen")
            && out.stderr.contains("HOST:PORT"),
        "{}",
        out.stderr
    );
}
