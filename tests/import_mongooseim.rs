//! `event-pusher import-mongooseim`: MongooseIM configs (shaped after
//! MongooseIM's documentation, in tests/fixtures/mongooseim/) become configs
//! that `check-config` accepts; bad input is an error at file:line:column;
//! an imported http handler really posts MongooseIM's form to its endpoint,
//! and an imported push backend really pushes through MongoosePush.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use support::{chat_to, path_str, run_cli, FakePush, Receiver};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mongooseim");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_fixture_imports_to_a_config_check_config_accepts() {
    let files = fixtures();
    assert!(files.len() >= 5, "fixtures: {files:?}");
    let dir = tempfile::tempdir().unwrap();
    for input in files {
        let out_file = dir.path().join(input.file_name().unwrap());
        let out = run_cli(
            &["import-mongooseim", &path_str(&input), "-o", &path_str(&out_file)],
            &[],
        );
        assert_eq!(out.code, Some(0), "{}: {}", input.display(), out.stderr);
        let text = std::fs::read_to_string(&out_file).unwrap();
        assert!(text.starts_with("# event-pusher config imported from"), "{text}");
        let check = run_cli(&["check-config", &path_str(&out_file)], &[]);
        assert_eq!(
            check.code,
            Some(0),
            "{} imported as:\n{text}\ncheck-config said:\n{}",
            input.display(),
            check.stderr
        );
    }
}

#[test]
fn fixtures_carry_their_settings_over() {
    let import = |name: &str| {
        let input = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/mongooseim")
            .join(name);
        let out = run_cli(&["import-mongooseim", &path_str(&input)], &[]);
        assert_eq!(out.code, Some(0), "{name}: {}", out.stderr);
        out.stdout
    };
    let all = import("all_backends.toml");
    for want in [
        "[backends.http.notifications]",
        "url = \"http://localhost:8000/webservice/notifications\"",
        "[backends.rabbit.mongooseim]",
        "[backends.sns.mongooseim]",
        "pm_messages_topic = \"user_message_sent\"",
        "\n[backends.push.mongooseim]\n",
        "\n[backends.push.mongooseim.mongoosepush]\n",
        "\nurl = \"https://localhost:8443\"",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    let http = import("http_handlers.toml");
    assert_eq!(http.matches("[backends.http.").count(), 3, "{http}");
    assert!(
        http.contains("url = \"https://alerts.example.com:8443/alerts\""),
        "{http}"
    );
    assert!(
        http.contains("callback_module = \"mod_event_pusher_http_alerts\"  # not carried over"),
        "{http}"
    );
    let rabbit = import("rabbit.toml");
    assert!(
        rabbit.contains("url = \"amqp://mongooseim:s3cr3t%40rabbit@rabbit.internal:5672/%2F\""),
        "{rabbit}"
    );
    assert!(
        rabbit.contains("reconnect.attempts = 5  # not carried over"),
        "{rabbit}"
    );
    let push = import("push_mongoosepush.toml");
    for want in [
        "\n[backends.push.mongooseim]\n",
        "\nconcurrency = 200",
        "\n[backends.push.mongooseim.mongoosepush]\n",
        "\nurl = \"https://localhost:8443\"",
    ] {
        assert!(push.contains(want), "missing {want:?} in:\n{push}");
    }
    assert!(
        !push.contains("# [backends.push"),
        "the push backend is written enabled:\n{push}"
    );
    assert!(
        push.contains("virtual_pubsub_hosts = [\"pubsub.@HOST@\"]  # not carried over"),
        "{push}"
    );
    // Every line is a section, a setting, a comment or blank: nothing half-written.
    for line in all
        .lines()
        .chain(http.lines())
        .chain(rabbit.lines())
        .chain(push.lines())
    {
        assert!(
            line.is_empty() || line.starts_with('#') || line.starts_with('[') || line.contains(" = "),
            "odd line {line:?}"
        );
    }
}

fn import_text(text: &str) -> (String, support::CliOutput) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mongooseim.toml");
    std::fs::write(&file, text).unwrap();
    let file = path_str(&file);
    let out = run_cli(&["import-mongooseim", &file], &[]);
    drop(dir);
    (file, out)
}

#[test]
fn malformed_input_exits_1_with_file_line_column() {
    let (file, out) =
        import_text("[modules.mod_event_pusher.sns]\nregion = \"eu-west-1\"\naccount_id = 123456789012\n");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{file}:3:14: key `modules.mod_event_pusher.sns.account_id`: expected a string"
        )),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);

    let (file, out) = import_text("[modules.mod_event_pusher.http]\nhandlers = [{path = \"/x\"}\n");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(&format!("{file}:2:")), "{}", out.stderr);

    let (file, out) = import_text("[modules.mod_event_pusher.rabbit]\n  presence_exchange.nmae = \"p\"\n");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{file}:2:21: key `modules.mod_event_pusher.rabbit.presence_exchange.nmae`"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("unknown MongooseIM setting `nmae`"),
        "{}",
        out.stderr
    );
}

#[test]
fn output_file_is_not_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("event-pusher.toml");
    std::fs::write(&target, "keep me").unwrap();
    let input = path_str(&fixtures()[0]);
    let target_s = path_str(&target);
    let out = run_cli(&["import-mongooseim", &input, "-o", &target_s], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("already exists") && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    let out = run_cli(&["import-mongooseim", &input, "-o", &target_s, "--force"], &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(std::fs::read_to_string(&target)
        .unwrap()
        .starts_with("# event-pusher config imported"));
}

/// The imported http handler posts MongooseIM's form body to
/// host + path_prefix + path, for messages a user sent only.
#[tokio::test]
async fn an_imported_http_handler_posts_forms_to_the_endpoint() {
    let rx = Receiver::start().await;
    let mim = format!(
        "[outgoing_pools.http.http_pool]\n  scope = \"global\"\n  workers = 4\n\
         [outgoing_pools.http.http_pool.connection]\n  host = \"http://{}\"\n  path_prefix = \"/webservice/\"\n  request_timeout = 2000\n\
         [modules.mod_event_pusher.http]\n  handlers = [{{pool_name = \"http_pool\", path = \"/notifications\"}}]\n",
        rx.addr
    );
    let (sc, imported) = support::start_imported_mongooseim(&mim).await;

    // Delivered to bob (direction out): MongooseIM's handler would not post it.
    let (status, answer) = sc
        .post(
            &json!({"hook":"filter_local_packet","from":"alice@localhost/phone","to":"bob@localhost/tab",
                      "type":"chat","body":"delivered copy","id":"m-0"}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = sc
        .post(
            &json!({"hook":"user_send_message","from":"alice@localhost/phone","to":"bob@localhost",
                      "type":"chat","body":"hi bob & co","id":"m-1"}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");

    let got = rx.wait_for(1, Duration::from_secs(15)).await;
    assert!(!got.is_empty(), "nothing posted; config was:\n{imported}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = rx.received();
    assert_eq!(got.len(), 1, "only the sent message is posted: {got:?}");
    assert_eq!(got[0].path, "/webservice/notifications");
    assert_eq!(
        got[0].header("content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        String::from_utf8_lossy(&got[0].body),
        "author=alice&server=localhost&receiver=bob&message=hi+bob+%26+co"
    );
}

/// The imported push backend sends through MongoosePush at the pool's
/// host: a device registered with a `push_enable` hook call gets the next
/// chat to its (offline) user.
#[tokio::test]
async fn an_imported_push_backend_pushes_through_mongoosepush() {
    let fake = FakePush::start().await;
    let mim = format!(
        "[outgoing_pools.http.mongoose_push_http]\n  scope = \"global\"\n  workers = 4\n\
         [outgoing_pools.http.mongoose_push_http.connection]\n  host = \"{}\"\n  path_prefix = \"/\"\n\
         [modules.mod_push_service_mongoosepush]\n  pool_name = \"mongoose_push_http\"\n  api_version = \"v3\"\n\
         [modules.mod_event_pusher.push]\n  backend = \"mnesia\"\n  wpool.workers = 10\n",
        fake.url()
    );
    let (sc, imported) = support::start_imported_mongooseim(&mim).await;
    let (status, answer) = sc
        .post(
            &json!({"hook": "push_enable", "jid": "bob@localhost", "device_id": "d1",
                      "provider": "mongoosepush", "service": "fcm", "mode": "prod"}),
        )
        .await;
    assert_eq!(status, 202, "{answer}\nconfig was:\n{imported}");
    assert_eq!(answer["push"][0]["result"], "created", "{answer}");
    let (status, answer) = sc.post(&chat_to("alice@localhost/a", "bob@localhost", "hello")).await;
    assert_eq!(status, 202, "{answer}");

    let got = fake.wait_delivered("d1", 1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1, "nothing pushed; config was:\n{imported}");
    assert_eq!(got[0].provider, "mongoosepush");
    assert_eq!(got[0].body["service"], "fcm");
    assert_eq!(got[0].body["alert"]["body"], "hello");
}
