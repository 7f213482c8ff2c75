//! The OpenAPI document: what the binary serves at `/openapi.json` is the
//! checked-in `docs/openapi.json`; every route the router serves is in it
//! and in `docs/http-api.md`; and schemathesis, driving the release binary
//! with the token, finds no 5xx and no answer that breaks the document.
//!
//! `UPDATE_OPENAPI=1 cargo nextest run --test openapi` rewrites
//! `docs/openapi.json` from the binary.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Options, Sidecar};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn checked_in() -> Value {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docs/openapi.json")).expect("docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

#[tokio::test]
async fn the_served_document_is_the_checked_in_one() {
    let sc = Sidecar::start(Options {
        server: "auth_token = \"t\"".into(),
        ..Default::default()
    })
    .await;
    // Open like /health: no token.
    let resp = reqwest::get(format!("{}/openapi.json", sc.url))
        .await
        .expect("GET /openapi.json");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("application/json")),
        "{:?}",
        resp.headers()
    );
    let text = resp.text().await.expect("body");
    let served: Value = serde_json::from_str(&text).expect("served document is JSON");
    assert_eq!(served["openapi"], "3.1.0");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(Path::new(ROOT).join("docs/openapi.json"), &text).expect("write docs/openapi.json");
    }
    assert!(
        served == checked_in(),
        "docs/openapi.json differs from what the binary serves at /openapi.json; \
         regenerate it: UPDATE_OPENAPI=1 cargo nextest run --test openapi"
    );
}

/// `(METHOD, /path)` of every `.route(...)` in `src/server/`: axum's
/// router cannot list its routes, so they are read where they are written.
/// `{*rest}` is written `{rest}` as in OpenAPI.
fn served_routes() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let dir = Path::new(ROOT).join("src/server");
    for entry in std::fs::read_dir(&dir).expect("read src/server") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let call = balanced(rest);
            let (Some(quote), Some(raw)) = (call.find('"'), call.split('"').nth(1)) else {
                continue;
            };
            if !raw.starts_with('/') {
                continue;
            }
            let after_path = &call[quote + raw.len() + 2..];
            let route = raw.replace("{*", "{");
            for method in methods(after_path) {
                out.insert((method, route.clone()));
            }
        }
    }
    out
}

/// The text of a call's arguments, up to its closing parenthesis.
fn balanced(text: &str) -> &str {
    let mut depth = 1;
    let mut in_string = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return &text[..i];
                }
            }
            _ => {}
        }
    }
    text
}

/// The HTTP methods named by axum's method routers in `args`
/// (`get(h).patch(h)`, `axum::routing::put(h)`).
fn methods(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    for method in ["get", "post", "put", "patch", "delete"] {
        let call = format!("{method}(");
        let mut rest = args;
        while let Some(at) = rest.find(&call) {
            let before = rest[..at].chars().last();
            if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
                out.push(method.to_uppercase());
                break;
            }
            rest = &rest[at + call.len()..];
        }
    }
    out
}

/// `(METHOD, /path)` rows of the routes table in `docs/http-api.md`.
fn documented_routes() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docs/http-api.md")).expect("docs/http-api.md");
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let method = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let path = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            path.starts_with('/').then(|| (method.to_owned(), path.to_owned()))
        })
        .collect()
}

#[test]
fn every_served_route_is_in_http_api_md_and_the_document() {
    let served = served_routes();
    // The reader must work, or this test could never fail.
    for known in [
        ("POST", "/v1/events"),
        ("PATCH", "/v1/webhooks/{id}"),
        ("GET", "/health"),
    ] {
        assert!(
            served.contains(&(known.0.to_owned(), known.1.to_owned())),
            "the route reader missed {known:?}: {served:#?}"
        );
    }
    let documented = documented_routes();
    let spec = checked_in();
    let mut missing = Vec::new();
    for (method, path) in &served {
        if !documented.contains(&(method.clone(), path.clone())) {
            missing.push(format!("docs/http-api.md lacks the row | `{method}` | `{path}` |"));
        }
        if spec["paths"][path][method.to_lowercase()].is_null() {
            missing.push(format!(
                "docs/openapi.json lacks {method} {path} (a #[utoipa::path] on its handler, named in server/openapi.rs)"
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The release binary: what users run, and what the issue asks
/// schemathesis to drive. `scripts/test.sh` builds it first.
fn release_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("target"));
    let bin = target.join("release/event-pusher");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --release --bin event-pusher` \
         (scripts/test.sh does) before running this test",
        bin.display()
    );
    bin
}

/// Kills the child on drop, whatever the test's outcome.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let bin = release_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = event_pusher_testkit::free_port();
    let token = "schemathesis-token";
    let config = dir.path().join("sidecar.toml");
    // Every kind of route has something to act on: a log backend (to a
    // file: stdout is not read), a push backend with a provider (its
    // registry routes answer), filters to reload.
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
auth_token = "{token}"
shutdown_grace_ms = 1000

[spool]
dir = "{spool}"

[[filters]]
name = "tag"
match = {{ event = "presence" }}
metadata = {{ tier = 1 }}

[backends.log.file]
path = "{log}"

[backends.push.mobile]
[backends.push.mobile.mongoosepush]
url = "http://127.0.0.1:9"
"#,
            spool = dir.path().join("spool").display(),
            log = dir.path().join("events.jsonl").display(),
        ),
    )
    .expect("write config");
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
    let _sidecar = Running(
        Command::new(&bin)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the release binary"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the sidecar did not listen:\n{}",
            std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new("schemathesis")
        .arg("run")
        .arg(Path::new(ROOT).join("docs/openapi.json"))
        .args(["--url", &url])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", "40"])
        .args(["--generation-database", "none"])
        .args(["--generation-with-security-parameters", "false"])
        .args(["--request-timeout", "20"])
        .args(["--max-redirects", "0"])
        // One request at a time: answers must conform to the document, and
        // a race between requests (a detach while a listing reads) is not
        // what this test looks for; it would make it flaky.
        .args(["--workers", "1"])
        .arg("--no-color")
        .current_dir(dir.path())
        .output()
        .expect("run schemathesis (installed by scripts/setup.sh)");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found answers outside docs/openapi.json:\n{report}\nsidecar stderr:\n{}",
        std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
    );
    // It did test: an empty run passes too, and proves nothing.
    assert!(report.contains("/v1/events"), "schemathesis tested nothing:\n{report}");
}
