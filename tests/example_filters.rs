//! Every filter in the example configs (examples/*.toml), exactly as
//! written there, shown matching through the binary: a hook call goes in,
//! and the log backend's output shows the metadata it added or the event it
//! stopped. A filter that can never match fails here.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{eventually, Options, Sidecar};

/// The `[[filters]]` tables of an example config, verbatim.
fn example_filters(file: &str) -> String {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let mut out = String::new();
    let mut in_filter = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_filter = line.trim() == "[[filters]]";
        }
        if in_filter {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Start the binary with the example's filters and a log backend after
/// them writing JSON lines to a file; returns it, the file's directory
/// (removed when dropped) and the file's path.
async fn sidecar_with(file: &str) -> (Sidecar, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.jsonl");
    let body = format!(
        "{}\n[backends.log.out]\npriority = 100\npath = \"{}\"\n",
        example_filters(file),
        out.display()
    );
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    (sc, dir, out)
}

/// The records the log backend wrote, once `n` are there.
async fn logged(path: &std::path::Path, n: usize) -> Vec<Value> {
    let read = || -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    eventually(Duration::from_secs(15), || read().len() >= n).await;
    read()
}

fn by_message_id<'a>(records: &'a [Value], id: &str) -> Option<&'a Value> {
    records.iter().find(|r| r.to_string().contains(id))
}

#[tokio::test]
async fn every_filter_in_examples_sidecar_toml_matches() {
    let filters = example_filters("sidecar.toml");
    for name in ["tag-presence", "drop-headlines", "vip"] {
        assert!(
            filters.contains(&format!("name = \"{name}\"")),
            "{name} missing from:\n{filters}"
        );
    }
    let (sc, _dir, out) = sidecar_with("sidecar.toml").await;
    let calls = json!([
        // tag-presence: metadata on presence.
        {"hook":"user_available","jid":"dave@localhost/phone"},
        // drop-headlines: stopped, never reaches the log backend...
        {"hook":"user_send_message","from":"wire@news.localhost/bot","to":"bob@localhost","type":"headline",
         "body":"BREAKING: it matched","id":"dropped-1"},
        // ...while a headline it does not match goes through.
        {"hook":"user_send_message","from":"wire@news.localhost/bot","to":"bob@localhost","type":"headline",
         "body":"old news","id":"kept-1"},
        // vip: alice writing to bob is tagged...
        {"hook":"user_send_message","from":"alice@localhost/phone","to":"bob@localhost","type":"chat",
         "body":"hi","id":"vip-1"},
        // ...and dave writing to bob is not.
        {"hook":"user_send_message","from":"dave@localhost/phone","to":"bob@localhost","type":"chat",
         "body":"hi","id":"plain-1"},
    ]);
    let (status, answer) = sc.post(&calls).await;
    assert_eq!(status, 202, "{answer}");
    let records = logged(&out, 4).await;
    assert_eq!(records.len(), 4, "{records:#?}");

    let presence = records
        .iter()
        .find(|r| r.to_string().contains("dave@localhost/phone") && r.to_string().contains("presence"))
        .unwrap_or_else(|| panic!("no presence record in {records:#?}"));
    assert_eq!(presence["metadata"]["source"], "sidecar", "{presence}");
    assert_eq!(presence["metadata"]["tier"], 2, "{presence}");

    assert!(
        by_message_id(&records, "dropped-1").is_none(),
        "drop-headlines did not stop: {records:#?}"
    );
    assert!(by_message_id(&records, "kept-1").is_some(), "{records:#?}");

    let vip = by_message_id(&records, "vip-1").expect("vip-1 delivered");
    assert_eq!(vip["metadata"]["vip"], true, "vip filter did not match: {vip}");
    let plain = by_message_id(&records, "plain-1").expect("plain-1 delivered");
    assert!(plain["metadata"].get("vip").is_none(), "{plain}");
}

#[tokio::test]
async fn the_other_example_configs_have_no_declarative_filters() {
    // If one gains a filter, it needs a case in this file.
    for file in ["minimal.toml", "custom_filter.toml"] {
        assert_eq!(example_filters(file), "", "{file} has filters: add a test for them");
    }
}
