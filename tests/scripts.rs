//! Script filters through the real binary: a script that stops spam and
//! tags VIP users (the shipped example), check-config pointing into a
//! script at file:line:column, and a runaway script that must not stall
//! ingest.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{http_backend, path_str, run_cli, Options, Receiver, Sidecar};

fn example_script() -> String {
    path_str(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/filters/moderation.rhai"))
}

#[tokio::test]
async fn example_script_stops_spam_and_tags_vip_users() {
    let rx = Receiver::start().await;
    let body = format!(
        "[[filters]]\nname = \"moderation\"\npriority = 15\nscript = \"{}\"\n\n{}",
        example_script(),
        http_backend("hook", &rx.url("/events"), "")
    );
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    let (status, _) = sc
        .post(&json!([
            {"hook":"user_send_message","from":"eve@example.org/x","to":"bob@example.org","type":"chat","body":"Cheap VIAGRA here"},
            {"hook":"user_send_message","from":"boss@vip.example.com/desk","to":"bob@example.org","type":"chat","body":"hello"},
            {"hook":"user_available","jid":"carol@example.org/phone"}
        ]))
        .await;
    assert_eq!(status, 202);
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    // Give a wrongly delivered spam message time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events: Vec<_> = rx.received().iter().map(|r| r.json()).collect();
    assert_eq!(got.len(), 2, "{events:?}");
    assert_eq!(events.len(), 2, "spam was delivered: {events:?}");
    let vip = events
        .iter()
        .find(|e| e["event"] == "chat")
        .expect("vip chat delivered");
    assert_eq!(vip["from"], "boss@vip.example.com/desk");
    assert_eq!(vip["metadata"]["tier"], 1);
    assert_eq!(vip["metadata"]["vip"], true);
    let presence = events
        .iter()
        .find(|e| e["event"] == "presence")
        .expect("presence delivered");
    assert!(presence["metadata"].get("tier").is_none(), "{presence}");
    let (_, metrics) = sc.get_text("/metrics").await;
    assert!(
        metrics.contains("event_pusher_filter_errors_total{filter=\"moderation\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn runaway_script_does_not_stall_ingest() {
    let rx = Receiver::start().await;
    let body = format!(
        r#"[[filters]]
name = "runaway"
max_operations = 200000
on_error = "continue"
source = '''
fn filter(event) {{
    if event.body == "spin" {{ loop {{ }} }}
    event.metadata.checked = true;
}}
'''

{}"#,
        http_backend("hook", &rx.url("/events"), "")
    );
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let spins = 20;
    for i in 0..spins {
        let (status, _) = sc
            .post(&json!({"hook":"user_send_message","from":"a@x","to":"b@x","body":"spin","id":format!("s{i}")}))
            .await;
        assert_eq!(status, 202);
    }
    let (status, _) = sc
        .post(&json!({"hook":"user_send_message","from":"a@x","to":"b@x","body":"fine"}))
        .await;
    assert_eq!(status, 202);
    // Every event still goes on (on_error = "continue"), the good one tagged.
    let got = rx.wait_for(spins + 1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), spins + 1);
    let fine = got
        .iter()
        .map(|r| r.json())
        .find(|e| e["body"] == "fine")
        .expect("fine delivered");
    assert_eq!(fine["metadata"]["checked"], true);
    assert!(
        got.iter()
            .all(|r| r.json()["body"] != "spin" || r.json()["metadata"].get("checked").is_none()),
        "a failed call must leave the event untouched"
    );
    // A generous bound: the point is that the loop was cut, not how fast.
    assert!(started.elapsed() < Duration::from_secs(60));
    let (_, metrics) = sc.get_text("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "event_pusher_filter_errors_total{{filter=\"runaway\"}} {spins}"
        )),
        "{metrics}"
    );
    // Logged, but not once per event.
    let logged = sc.stderr().matches("script filter failed").count();
    assert!((1..spins).contains(&logged), "{logged} log lines for {spins} errors");
}

fn check(files: &[(&str, &str)]) -> (String, support::CliOutput) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let config = path_str(&dir.path().join(files[0].0));
    let out = run_cli(&["check-config", &config], &[]);
    (path_str(dir.path()), out)
}

const HEAD: &str = "[spool]\ndir = \"./data\"\n\n[backends.log.console]\npath = \"/dev/null\"\n\n";

#[test]
fn check_config_points_into_a_script_file() {
    let config = format!("{HEAD}[[filters]]\nname = \"mod\"\nscript = \"filters/mod.rhai\"\n");
    let script = "fn filter(event) {\n    let x = 1;\n    let y = ;\n}\n";
    let (dir, out) = check(&[("sidecar.toml", &config), ("filters/mod.rhai", script)]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let want = format!("{dir}/filters/mod.rhai:3:13: ");
    assert!(out.stderr.contains(&want), "want {want} in:\n{}", out.stderr);
    assert!(out.stderr.contains("filter \"mod\""), "{}", out.stderr);

    // The same script, fixed, is accepted and listed.
    let fixed = script.replace("let y = ;", "let y = x;");
    let (_, out) = check(&[("sidecar.toml", &config), ("filters/mod.rhai", &fixed)]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("mod"), "{}", out.stdout);

    // A missing file is named, at the `script` key.
    let (_, out) = check(&[("sidecar.toml", &config)]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("sidecar.toml:9:10: "), "{}", out.stderr);
    assert!(out.stderr.contains("cannot read script"), "{}", out.stderr);
}

#[test]
fn check_config_points_into_an_inline_source() {
    let config = format!(
        "{HEAD}[[filters]]\nname = \"inline\"\nsource = '''\nfn filter(event) {{\n    event.metadata.x = ;\n}}\n'''\n"
    );
    let (dir, out) = check(&[("sidecar.toml", &config)]);
    assert_eq!(out.code, Some(1), "{out:?}");
    // Line 11 of the config file is the script's line 2; column 24 is `;`.
    let want = format!("{dir}/sidecar.toml:11:24: ");
    assert!(out.stderr.contains(&want), "want {want} in:\n{}", out.stderr);
}

#[test]
fn check_config_refuses_mixed_keys_by_name() {
    for (keys, want) in [
        (
            "script = \"a.rhai\"\nmatch = { event = \"chat\" }",
            "`match` does not apply to a script filter",
        ),
        ("script = \"a.rhai\"\nsource = \"fn filter(e) {}\"", "either `script`"),
        (
            "match = { event = \"chat\" }\non_error = \"stop\"",
            "`on_error` applies only to script filters",
        ),
        ("source = \"fn filter(e) {}\"\nmax_operations = 0", "must be at least 1"),
        (
            "source = \"fn filter(e) {}\"\non_error = \"ignore\"",
            "unknown variant `ignore`",
        ),
        ("source = \"fn check(e) {}\"", "defines no `fn filter(event)`"),
    ] {
        let config = format!("{HEAD}[[filters]]\nname = \"f\"\n{keys}\n");
        let (_, out) = check(&[("sidecar.toml", &config), ("a.rhai", "fn filter(event) {}")]);
        assert_eq!(out.code, Some(1), "{keys}: {out:?}");
        assert!(out.stderr.contains(want), "{keys}: want {want} in:\n{}", out.stderr);
        let line: String = out
            .stderr
            .split("sidecar.toml:")
            .nth(1)
            .unwrap_or("")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        assert!(
            line.parse::<usize>().is_ok_and(|l| l >= 7),
            "{keys}: no position in:\n{}",
            out.stderr
        );
    }
}

/// Scripts that run long hold their own requests only: with eight requests
/// busy in a script that runs to its wall-clock budget (a high
/// `max_operations`), `/health` and a request the script passes quickly
/// still answer at once. Before, the script ran on the async workers and
/// both waited for the scripts (up to 20 s measured).
#[tokio::test]
async fn slow_scripts_leave_health_and_other_requests_answering() {
    let body = r#"[[filters]]
name = "slow"
max_operations = 1000000000
on_error = "continue"
source = '''
fn filter(event) {
    if event.body == "slow" { let n = 0; loop { n += 1; } }
}
'''

[backends.log.audit]
"#
    .to_owned();
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    let url = format!("{}/v1/events", sc.url);
    let slow: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(&url)
                    .json(
                        &json!({"hook":"user_send_message","from":"a@x","to":"b@x","body":"slow","id":format!("s{i}")}),
                    )
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    // Let the slow requests reach the script.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t = Instant::now();
    let (status, _) = sc.get("/health").await;
    let health = t.elapsed();
    assert_eq!(status, 200);
    // The budget is 500 ms per call: a /health that waited for eight of
    // them (two at a time on two cores) would take two seconds (the bound leaves room for a loaded machine).
    assert!(
        health < Duration::from_secs(1),
        "/health took {health:?} while scripts ran"
    );
    for s in slow {
        assert_eq!(s.await.expect("join").expect("request"), 202);
    }
}
