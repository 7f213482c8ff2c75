//! The deploy files validate with real validators, and say what the sidecar
//! does:
//! - `deploy/kubernetes/*.yaml` pass `kubernetes-validate --strict`
//!   (offline: the package ships the Kubernetes schemas), and the
//!   StatefulSet has what a sidecar needs (a volume claim per replica,
//!   probes on /health and /ready, a grace period above
//!   `shutdown_grace_ms`, the config from the ConfigMap, the token from the
//!   Secret), and the ConfigMap's config passes `check-config`;
//! - `deploy/prometheus/alerts.yml` passes `promtool check rules`, and its
//!   unit tests (`alerts.test.yml`) pass `promtool test rules`;
//! - every metric the Grafana dashboard queries is on a running sidecar's
//!   `/metrics`, and every metric on `/metrics` is in `docs/operations.md`.
//!
//! Each validator is also shown a broken file, so a validator that accepts
//! anything (or is not installed) fails the test instead of passing it.
//! The tools are installed by `scripts/setup.sh`.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::{Options, Sidecar};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Run a tool; `(success, stdout + stderr)`.
fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (scripts/setup.sh installs it): {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The manifests as JSON, read by PyYAML (which kubernetes-validate
/// depends on), one value per document.
fn manifests() -> Vec<Value> {
    let script = "import json, sys, glob, yaml\n\
                  docs = [d for f in sorted(glob.glob('deploy/kubernetes/*.yaml')) \
                  for d in yaml.safe_load_all(open(f)) if d]\n\
                  json.dump(docs, sys.stdout)";
    let (ok, out) = run("python3", &["-c", script]);
    assert!(ok, "cannot read the manifests: {out}");
    serde_json::from_str(&out).expect("manifests as JSON")
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("deploy/kubernetes has no {kind}"))
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let files: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    let mut args = vec!["--strict"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out) = run("kubernetes-validate", &args);
    assert!(ok, "kubernetes-validate refused deploy/kubernetes:\n{out}");

    // The validator does refuse: a StatefulSet with a misspelt field.
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(Path::new(ROOT).join("deploy/kubernetes/statefulset.yaml"))
        .expect("statefulset.yaml")
        .replace("serviceName:", "serviceNmae:");
    std::fs::write(&broken, text).expect("write");
    let (ok, out) = run("kubernetes-validate", &["--strict", &broken.display().to_string()]);
    assert!(!ok, "kubernetes-validate accepted a misspelt field:\n{out}");
}

#[test]
fn the_statefulset_runs_the_sidecar_the_way_the_docs_say() {
    let docs = manifests();
    let set = kind(&docs, "StatefulSet");
    let spec = &set["spec"];
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];

    // One spool per replica, mounted where the pod's working directory is.
    let claim = spec["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .expect("a volume claim template");
    let workdir = container["workingDir"].as_str().expect("workingDir");
    assert!(
        container["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .any(|m| m["name"] == claim && m["mountPath"] == workdir),
        "the claim {claim} is not mounted at the working directory {workdir}"
    );

    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");

    // The config comes from the ConfigMap, the token from the Secret.
    let configmap = kind(&docs, "ConfigMap");
    let secret = kind(&docs, "Secret");
    assert!(
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["configMap"]["name"] == configmap["metadata"]["name"]),
        "no volume from the ConfigMap"
    );
    let token = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "EVENT_PUSHER_TOKEN")
        .expect("EVENT_PUSHER_TOKEN in env");
    assert_eq!(token["valueFrom"]["secretKeyRef"]["name"], secret["metadata"]["name"]);

    // The ConfigMap's config is valid, uses the token, and the kubelet
    // waits longer than it drains.
    let (file, text) = configmap["data"]
        .as_object()
        .and_then(|d| d.iter().next())
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .expect("a config file in the ConfigMap");
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.iter().any(|a| a.ends_with(&format!("/{file}"))),
        "the container does not run with {file}: {args:?}"
    );
    assert!(
        text.contains("${EVENT_PUSHER_TOKEN}"),
        "the config does not use the token:\n{text}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(&file);
    std::fs::write(&path, &text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_event-pusher"))
        .arg("check-config")
        .arg(&path)
        .env("EVENT_PUSHER_TOKEN", "t")
        .output()
        .expect("check-config");
    assert!(
        out.status.success(),
        "the ConfigMap's config is refused:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: toml::Table = text.parse().expect("the ConfigMap's config is TOML");
    let grace_ms = config
        .get("server")
        .and_then(|s| s.get("shutdown_grace_ms"))
        .and_then(toml::Value::as_integer)
        .unwrap_or(10_000);
    let period = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        period * 1000 > grace_ms,
        "terminationGracePeriodSeconds ({period} s) must be above shutdown_grace_ms ({grace_ms} ms)"
    );
}

#[test]
fn prometheus_alerts_pass_promtool() {
    let (ok, out) = run("promtool", &["check", "rules", "deploy/prometheus/alerts.yml"]);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = run("promtool", &["test", "rules", "deploy/prometheus/alerts.test.yml"]);
    assert!(ok, "promtool test rules:\n{out}");

    // promtool does refuse: an expression that does not parse.
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("alerts.yml");
    let text = std::fs::read_to_string(Path::new(ROOT).join("deploy/prometheus/alerts.yml"))
        .expect("alerts.yml")
        .replace("event_pusher_circuit_open == 1", "event_pusher_circuit_open == == 1");
    std::fs::write(&broken, text).expect("write");
    let (ok, _) = run("promtool", &["check", "rules", &broken.display().to_string()]);
    assert!(!ok, "promtool accepted a broken expression");

    // Every alert the issue asks for is there.
    let rules = std::fs::read_to_string(Path::new(ROOT).join("deploy/prometheus/alerts.yml")).expect("alerts.yml");
    for metric in [
        "event_pusher_backend_ready",
        "event_pusher_circuit_open",
        "event_pusher_dead_lettered_total",
        "event_pusher_queue_depth",
        "event_pusher_spool_bytes",
        "event_pusher_cluster_store_up",
    ] {
        assert!(rules.contains(metric), "alerts.yml has no rule on {metric}");
    }
}

/// Metric names in a PromQL expression (`event_pusher_...`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("event_pusher_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        out.insert(name);
    }
    out
}

/// Series that exist only with a part of the config this test does not
/// start: `[cluster]` needs a PostgreSQL store.
const NEEDS_CLUSTER: &[&str] = &["event_pusher_cluster_store_up"];

#[tokio::test]
async fn dashboard_metrics_are_served_and_every_served_metric_is_documented() {
    let broker = support::AMQP;
    let exchange = format!("deploy-test-{}", std::process::id());
    // Every kind of series: backends of each kind, a script filter, the
    // gateway with a client, push with a provider, an AMQP source.
    // The log file goes in a directory of the test's (a relative path would
    // land in the checkout, the sidecar's working directory).
    let logs = tempfile::tempdir().expect("tempdir");
    let log_path = logs.path().join("events.jsonl");
    let sc = Sidecar::start(Options {
        body: format!(
            r#"
[[filters]]
name = "script"
source = "fn filter(event) {{ true }}"

[backends.log.file]
path = "{log}"

[backends.http.notify]
url = "http://127.0.0.1:9/hook"

[backends.push.mobile]
[backends.push.mobile.mongoosepush]
url = "http://127.0.0.1:9"

[backends.gateway.live]
[backends.gateway.live.clients.bot]
token = "bot-token"
intents = 3

[sources.amqp.main]
url = "{broker}"
exchange = "{exchange}"
partitions = 2
"#,
            log = log_path.display()
        ),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    // Something of everything: an event through the chain and a delivery.
    let (status, _) = sc
        .post(&serde_json::json!({"hook": "user_available", "jid": "alice@localhost/phone"}))
        .await;
    assert_eq!(status, 202);
    let (status, metrics) = sc.get_text("/metrics").await;
    assert_eq!(status, 200);
    let served: BTreeSet<String> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(metric_names)
        .collect();

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("deploy/grafana/event-pusher.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut queried = BTreeSet::new();
    collect_exprs(&dashboard, &mut queried);
    assert!(queried.len() >= 10, "the dashboard queries only {queried:?}");
    let missing: Vec<&String> = queried
        .iter()
        .filter(|m| !served.contains(*m) && !NEEDS_CLUSTER.contains(&m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the sidecar does not serve: {missing:?}\nserved: {served:?}"
    );

    // docs/operations.md lists every series (histograms by their name).
    let ops = std::fs::read_to_string(Path::new(ROOT).join("docs/operations.md")).expect("operations.md");
    let undocumented: Vec<&String> = served
        .iter()
        .filter(|m| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| m.strip_suffix(s))
                .unwrap_or(m);
            !ops.contains(&format!("`{base}`")) && !ops.contains(&format!("`{m}`"))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "metrics served but not in docs/operations.md: {undocumented:?}"
    );
    drop(sc);
    // The source's queues and exchange are this test's: leave the broker clean.
    let (_conn, channel) = support::rabbit_channel().await;
    for suffix in ["0", "1", "dead", "members"] {
        let _ = channel
            .queue_delete(format!("{exchange}.{suffix}").as_str().into(), Default::default())
            .await;
    }
    let _ = channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
}

/// Metric names of every `expr` in the dashboard.
fn collect_exprs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "expr" {
                    out.extend(metric_names(v.as_str().unwrap_or_default()));
                } else {
                    collect_exprs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}
