//! Filter reload without a restart, through the real binary: an edited
//! script takes effect after `POST /v1/filters/reload` or `SIGHUP`; a broken
//! one is refused with file:line:column and the running filters stay;
//! events posted while reloads happen are all accepted and delivered. One
//! test runs the sidecar in process, to show that filters added in Rust
//! survive a reload.

mod support;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{eventually, free_port, http_backend, Options, Receiver, Sidecar};

/// A script that tags every event with `version = N`.
fn script_text(version: i64) -> String {
    format!("fn filter(event) {{\n    event.metadata.version = {version};\n    true\n}}\n")
}

/// The script file (outside the sidecar's directory, so it exists before
/// the process reads its config) and the sidecar using it.
struct Setup {
    _scripts: tempfile::TempDir,
    script: PathBuf,
    sc: Sidecar,
}

impl Setup {
    /// A sidecar whose only filter is `tag.rhai` (version 1), posting to `rx`.
    async fn start(rx: &Receiver) -> Setup {
        let scripts = tempfile::tempdir().expect("tempdir");
        let script = scripts.path().join("tag.rhai");
        std::fs::write(&script, script_text(1)).expect("write script");
        let body = format!(
            "[[filters]]\nname = \"tag\"\npriority = 10\nscript = \"{}\"\n\n{}",
            script.display(),
            http_backend("hook", &rx.url("/events"), "")
        );
        let sc = Sidecar::start(Options {
            body,
            ..Default::default()
        })
        .await;
        Setup {
            _scripts: scripts,
            script,
            sc,
        }
    }

    fn write_script(&self, text: &str) {
        std::fs::write(&self.script, text).expect("write script");
    }
}

fn chat(n: usize) -> Value {
    json!({"hook":"user_send_message","from":"alice@localhost/phone","to":"bob@localhost","type":"chat","body":format!("m{n}")})
}

async fn reload(sc: &Sidecar) -> (u16, Value) {
    sc.admin_post("/v1/filters/reload", &json!({})).await
}

/// Post one event and return the `version` it was delivered with.
async fn delivered_version(sc: &Sidecar, rx: &Receiver, n: usize) -> Value {
    let (status, answer) = sc.post(&chat(n)).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["ids"][0].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = rx.received().iter().map(|r| r.json()).find(|e| e["id"] == id) {
            return e["metadata"]["version"].clone();
        }
        assert!(Instant::now() < deadline, "event {id} not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

#[tokio::test]
async fn reload_applies_an_edited_script_to_new_events() {
    let rx = Receiver::start().await;
    let s = Setup::start(&rx).await;
    assert_eq!(delivered_version(&s.sc, &rx, 1).await, 1);

    s.write_script(&script_text(2));
    let (status, answer) = reload(&s.sc).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reloaded"], true, "{answer}");
    assert_eq!(answer["filters"], json!(["tag"]), "{answer}");
    let kinds: Vec<&str> = answer["chain"]
        .as_array()
        .map(|c| c.iter().filter_map(|h| h["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(kinds, ["filter", "http"], "{answer}");
    assert!(
        answer.get("not_applied").is_none(),
        "nothing but filters changed: {answer}"
    );
    assert_eq!(delivered_version(&s.sc, &rx, 2).await, 2);

    let (_, metrics) = s.sc.get_text("/metrics").await;
    assert_eq!(
        metric(&metrics, "event_pusher_filter_reloads_total{result=\"ok\"}"),
        Some(1),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_syntax_error_is_refused_with_its_position_and_the_old_script_stays() {
    let rx = Receiver::start().await;
    let s = Setup::start(&rx).await;
    // Line 2, column 28: the `;` where an expression must come.
    s.write_script("fn filter(event) {\n    event.metadata.version = ;\n}\n");
    let (status, answer) = reload(&s.sc).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["reloaded"], false, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    let expected = format!("{}:2:", s.script.display());
    assert!(error.starts_with(&expected), "want {expected}..., got {answer}");
    assert!(error.contains("filter \"tag\""), "{answer}");
    assert_eq!(
        delivered_version(&s.sc, &rx, 1).await,
        1,
        "the old script must keep running"
    );

    // A broken config file is refused the same way, at its own position.
    let config = std::fs::read_to_string(&s.sc.config).expect("read config");
    s.write_script(&script_text(3));
    std::fs::write(&s.sc.config, config.replace("priority = 10", "priority = \"high\"")).expect("write config");
    let (status, answer) = reload(&s.sc).await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!("{}:", s.sc.config.display())) && error.contains("priority"),
        "{answer}"
    );
    assert_eq!(delivered_version(&s.sc, &rx, 2).await, 1);

    let (_, metrics) = s.sc.get_text("/metrics").await;
    assert_eq!(
        metric(&metrics, "event_pusher_filter_reloads_total{result=\"error\"}"),
        Some(2),
        "{metrics}"
    );
    assert!(s.sc.stderr().contains("filter reload failed"), "{}", s.sc.stderr());
}

#[tokio::test]
async fn sighup_reloads_and_a_bad_script_on_sighup_is_logged() {
    let rx = Receiver::start().await;
    let s = Setup::start(&rx).await;
    // The exact child pid, never a group or -1.
    let pid = s.sc.pid().expect("running") as libc::pid_t;
    assert!(pid > 1);

    s.write_script(&script_text(2));
    // SAFETY: kill(2) on one positive pid, our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert!(
        eventually(Duration::from_secs(10), || s.sc.stderr().contains("filters reloaded")).await,
        "{}",
        s.sc.stderr()
    );
    assert_eq!(delivered_version(&s.sc, &rx, 1).await, 2);

    s.write_script("fn filter(event) {\n    event.metadata.version = ;\n}\n");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let position = format!("{}:2:", s.script.display());
    assert!(
        eventually(Duration::from_secs(10), || s.sc.stderr().contains(&position)).await,
        "the log must name {position}: {}",
        s.sc.stderr()
    );
    assert_eq!(delivered_version(&s.sc, &rx, 2).await, 2, "still the last good script");
    let (status, _) = s.sc.get("/health").await;
    assert_eq!(status, 200, "SIGHUP must not end the process");
}

#[tokio::test]
async fn changed_backends_in_the_file_are_named_and_not_applied() {
    let rx = Receiver::start().await;
    let other = Receiver::start().await;
    let s = Setup::start(&rx).await;
    let config = std::fs::read_to_string(&s.sc.config).expect("read config");
    std::fs::write(&s.sc.config, config.replace(&rx.url("/events"), &other.url("/events"))).expect("write config");
    s.write_script(&script_text(2));
    let (status, answer) = reload(&s.sc).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["not_applied"], json!(["backends"]), "{answer}");
    assert!(
        answer["warning"].as_str().unwrap_or_default().contains("restart"),
        "{answer}"
    );
    assert_eq!(
        delivered_version(&s.sc, &rx, 1).await,
        2,
        "filters applied, old backend kept"
    );
    assert!(other.received().is_empty());
}

#[tokio::test]
async fn events_posted_during_reloads_are_all_accepted_and_delivered() {
    let rx = Receiver::start().await;
    let s = Setup::start(&rx).await;
    let sc = std::sync::Arc::new(s.sc);
    const POSTERS: usize = 4;
    const PER_POSTER: usize = 50;
    let mut posters = Vec::new();
    for p in 0..POSTERS {
        let sc = sc.clone();
        posters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..PER_POSTER {
                let (status, answer) = sc.post(&chat(p * PER_POSTER + i)).await;
                assert_eq!(status, 202, "post during reloads: {answer}");
                ids.push(answer["ids"][0].as_str().unwrap_or_default().to_owned());
            }
            ids
        }));
    }
    // Reloads, some of them at once (they serialize), while events flow.
    let mut reloads = 0;
    for v in 2..12 {
        std::fs::write(&s.script, script_text(v)).expect("write script");
        let (a, b) = tokio::join!(reload(&sc), reload(&sc));
        assert_eq!(a.0, 200, "{}", a.1);
        assert_eq!(b.0, 200, "{}", b.1);
        reloads += 2;
    }
    let mut ids = HashSet::new();
    for p in posters {
        ids.extend(p.await.expect("poster"));
    }
    assert_eq!(ids.len(), POSTERS * PER_POSTER);
    let got = rx.wait_for(ids.len(), Duration::from_secs(30)).await;
    let delivered: HashSet<String> = got
        .iter()
        .filter_map(|r| r.json()["id"].as_str().map(str::to_owned))
        .collect();
    assert!(ids.is_subset(&delivered), "missing: {:?}", ids.difference(&delivered));
    // Every event ran through one whole chain: tagged by some version.
    assert!(got.iter().all(|r| r.json()["metadata"]["version"].is_i64()));
    let (_, metrics) = sc.get_text("/metrics").await;
    assert_eq!(
        metric(&metrics, "event_pusher_filter_reloads_total{result=\"ok\"}"),
        Some(reloads),
        "{metrics}"
    );
}

/// In process: a filter added with `with_filter` is still in the chain
/// after the file's filters are reloaded.
#[tokio::test]
async fn filters_added_in_rust_survive_a_reload() {
    use event_pusher::{Event, MetaValue, Verdict};

    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("tag.rhai");
    std::fs::write(&script, script_text(1)).expect("write script");
    let port = free_port();
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[spool]\ndir = \"{}\"\n\n[[filters]]\nname = \"tag\"\npriority = 10\nscript = \"tag.rhai\"\n\n{}",
            dir.path().join("spool").display(),
            http_backend("hook", &rx.url("/events"), "")
        ),
    )
    .expect("write config");
    let sidecar =
        event_pusher::Sidecar::from_file(&config)
            .expect("config")
            .with_filter("rust-plugin", 20, |e: &mut Event| {
                e.metadata.insert("plugin".into(), MetaValue::Bool(true));
                Verdict::Continue
            });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(sidecar.run_until(async {
        let _ = stopped.await;
    }));
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let up = Instant::now();
    while client.get(format!("{url}/health")).send().await.is_err() {
        assert!(
            up.elapsed() < Duration::from_secs(10),
            "in-process sidecar did not come up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    std::fs::write(&script, script_text(2)).expect("write script");
    let answer: Value = client
        .post(format!("{url}/v1/filters/reload"))
        .send()
        .await
        .expect("reload")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["filters"], json!(["tag", "rust-plugin"]), "{answer}");
    let status = client
        .post(format!("{url}/v1/events"))
        .json(&chat(1))
        .send()
        .await
        .expect("post")
        .status();
    assert_eq!(status, 202);
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    let event = got.first().map(|r| r.json()).unwrap_or(Value::Null);
    assert_eq!(event["metadata"]["version"], 2, "{event}");
    assert_eq!(event["metadata"]["plugin"], true, "{event}");
    let _ = stop.send(());
    run.await.expect("join").expect("sidecar ran");
}
