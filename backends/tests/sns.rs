//! The SNS backend against moto_server, which speaks the real SNS and SQS
//! APIs: what is published is read back from SQS queues subscribed to each
//! topic. A recording proxy between the backend and moto counts API calls
//! and injects the failures moto cannot produce (throttling, 5xx, partial
//! batch failures).
//!
//! Needs `pip install 'moto[server]'`. Every test is bounded in time.

#![cfg(feature = "sns")]

mod sns_support;

use std::time::Duration;

use bytes::Bytes;
use event_pusher_backends::sns::{SnsBackend, SnsConfig};
use event_pusher_backends::BackendsConfig;
use event_pusher_config::Document;
use event_pusher_core::{Backend, Delivery, DeliveryError, Event, HookTranslator};
use serde_json::json;
use sns_support::*;

const TEST_TIMEOUT: Duration = Duration::from_secs(90);
const READ_TIMEOUT: Duration = Duration::from_secs(15);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test took longer than its time limit")
}

fn event(call: serde_json::Value) -> Event {
    HookTranslator.translate(&call).expect("valid hook call")
}

fn delivery(event: Event) -> Delivery {
    let json = Bytes::from(event.to_json());
    Delivery {
        event,
        json,
        attempt: 1,
        seq: 0,
        target: None,
    }
}

fn chat(from: &str, to: &str, ty: &str, body: &str) -> Event {
    event(json!({"hook": "user_send_message", "from": from, "to": to, "type": ty, "body": body}))
}

fn presence(jid: &str, online: bool) -> Event {
    let hook = if online { "user_available" } else { "unset_presence" };
    event(json!({"hook": hook, "jid": jid}))
}

/// A backend from TOML keys, with test credentials unless the text has its
/// own.
fn backend(endpoint: &str, keys: &str) -> SnsBackend {
    let creds = if keys.contains("access_key_id") {
        String::new()
    } else {
        "access_key_id = \"AKIDCONFIGTEST\"\nsecret_access_key = \"config-secret\"\n".to_owned()
    };
    let text = format!(
        "region = \"{REGION}\"\naccount_id = \"{ACCOUNT}\"\nendpoint_url = \"{endpoint}\"\ntimeout_ms = 20000\n{creds}{keys}"
    );
    let config: SnsConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("bad test config: {e}\n{text}"));
    SnsBackend::new("test", &config).expect("backend builds")
}

fn topics_keys(presence: &str, pm: &str, muc: &str) -> String {
    format!("presence_updates_topic = \"{presence}\"\npm_messages_topic = \"{pm}\"\nmuc_messages_topic = \"{muc}\"\n")
}

fn assert_permanent(r: &Result<(), DeliveryError>) -> &DeliveryError {
    match r {
        Err(e) if !e.retryable => e,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

fn assert_retryable(r: &Result<(), DeliveryError>) -> &DeliveryError {
    match r {
        Err(e) if e.retryable => e,
        other => panic!("expected a retryable error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- config

type Doc = Document<toml::Table, BackendsConfig>;

#[test]
fn config_defaults_through_the_registry() {
    let text = r#"
[backends.sns.main]
region = "eu-west-1"
account_id = "123456789012"
access_key_id = "${AWS_KEY}"
secret_access_key = "${AWS_SECRET}"
pm_messages_topic = "user_message_sent"
"#;
    let env = |name: &str| match name {
        "AWS_KEY" => Some("AKIDFROMENV".to_owned()),
        "AWS_SECRET" => Some("very-secret".to_owned()),
        _ => None,
    };
    let (doc, source) = event_pusher_config::parse::<Doc>("t.toml", text, env).expect("config parses");
    let cfg = doc.backends.sns.get("main").expect("sns.main").get_ref();
    assert_eq!(cfg.access_key_id.as_deref(), Some("AKIDFROMENV"));
    assert_eq!(cfg.secret_access_key.as_ref().map(|s| s.expose()), Some("very-secret"));
    assert!(!format!("{cfg:?}").contains("very-secret"), "secret leaked into Debug");
    assert!(cfg.batch);
    let built = doc.backends.build(&source).expect("backend builds");
    assert_eq!(built.len(), 1);
    let b = &built[0];
    assert_eq!((b.name.as_str(), b.backend.kind, b.priority), ("main", "sns", 50));
    assert_eq!(b.options.concurrency, 32);
    assert_eq!(b.backend.deliver.max_batch(), 10);
}

#[test]
fn config_errors_name_the_problem() {
    let err = |keys: &str| {
        let text = format!("[backends.sns.main]\nregion = \"eu-west-1\"\naccount_id = \"123456789012\"\n{keys}");
        match event_pusher_config::parse::<Doc>("t.toml", &text, |_| None) {
            Err(e) => e.to_string(),
            Ok((doc, source)) => match doc.backends.build(&source) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("accepted: {keys}"),
            },
        }
    };
    assert!(err("topic = \"x\"").contains("topic"), "unknown key");
    assert!(err("pm_messages_topic = \"has space\"").contains("invalid topic"));
    assert!(err("pm_messages_topic = \"arn:aws:sqs:eu-west-1:123456789012:q\"").contains("\"sqs\""));
    assert!(err("pm_messages_topic = \"arn:aws:sns:us-east-1:123456789012:t\"").contains("region"));
    assert!(err("access_key_id = \"AKID\"").contains("secret_access_key"));
    assert!(err("concurrency = 0").contains("at least 1"));
    assert!(err("endpoint_url = \"ftp://x\"").contains("http"));
    let no_account = "[backends.sns.main]\nregion = \"eu-west-1\"\npm_messages_topic = \"t\"\n";
    let (doc, source) = event_pusher_config::parse::<Doc>("t.toml", no_account, |_| None).expect("parses");
    let e = doc.backends.build(&source).err().expect("needs account_id").to_string();
    assert!(e.contains("account_id") && e.contains("t.toml:"), "{e}");
}

#[test]
fn wants_only_what_it_publishes() {
    let b = backend("http://127.0.0.1:1", "pm_messages_topic = \"pm\"\nbatch = false\n");
    assert_eq!(b.max_batch(), 1);
    assert!(b.wants(&chat("a@x/r", "b@x", "chat", "hi")));
    assert!(
        !b.wants(&chat("a@x/r", "b@x", "groupchat", "hi")),
        "no muc topic configured"
    );
    assert!(!b.wants(&presence("a@x/r", true)), "no presence topic configured");
    assert!(!b.wants(&chat("a@x/r", "b@x", "headline", "hi")));
    assert!(!b.wants(&chat("a@x/r", "b@x", "chat", "")));
    let out = event(json!({"hook": "filter_local_packet", "from": "a@x/r", "to": "b@x", "type": "chat", "body": "hi"}));
    assert!(!b.wants(&out), "outgoing copies are not published");
    assert!(!b.wants(&event(json!({"hook": "unacknowledged_message", "to": "a@x/r"}))));
    assert_eq!(
        b.topic_arn(&chat("a@x/r", "b@x", "chat", "hi")),
        Some(format!("arn:aws:sns:{REGION}:{ACCOUNT}:pm").as_str())
    );
}

// ---------------------------------------------------------------- publishing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_reaches_its_topic_with_body_and_attributes() {
    bounded(async {
        let (sns, sqs) = (sns_admin().await, Sqs::new());
        let base = unique("kinds");
        let pres = watched_topic(&sns, &sqs, &format!("{base}-presence")).await;
        let pm = watched_topic(&sns, &sqs, &format!("{base}-pm")).await;
        let muc = watched_topic(&sns, &sqs, &format!("{base}-muc")).await;
        let b = backend(&moto().url(), &topics_keys(&pres.name, &pm.name, &muc.name));
        b.start().await.expect("starts");

        let online = presence("Alice@LocalHost/Phone", true);
        let offline = presence("alice@localhost/phone", false);
        let dm = event(
            json!({"hook": "user_send_message", "from": "Alice@LocalHost/Phone", "to": "BOB@localhost/pc",
            "type": "chat", "body": "hi \"bob\" ✓",
            "metadata": {"source": "sidecar", "tier": 2, "vip": true, "ratio": 0.5}}),
        );
        let room = chat("carol@localhost/x", "Room@muc.localhost", "groupchat", "hello room");
        for e in [&online, &offline, &dm, &room] {
            assert!(b.wants(e));
            b.publish(&delivery(e.clone()))
                .await
                .unwrap_or_else(|err| panic!("deliver {}: {err}", e.id));
        }

        let got = sqs.drain(&pres.queue, 2, READ_TIMEOUT).await;
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(got.iter().all(|n| n.topic_arn == pres.arn));
        let by_id = |id: &str| got.iter().find(|n| n.attr("event_id") == Some(("String", id))).cloned();
        let on = by_id(&online.id).expect("online presence arrived");
        assert_eq!(on.message, json!({"user_id": "alice@localhost", "present": true}));
        assert_eq!(on.attr("event_class"), Some(("String", "presence")));
        let off = by_id(&offline.id).expect("offline presence arrived");
        assert_eq!(off.message, json!({"user_id": "alice@localhost", "present": false}));

        let got = sqs.drain(&pm.queue, 1, READ_TIMEOUT).await;
        assert_eq!(got.len(), 1, "{got:#?}");
        let n = &got[0];
        assert_eq!(n.topic_arn, pm.arn);
        assert_eq!(
            n.message,
            json!({"from_user_id": "alice@localhost", "to_user_id": "bob@localhost", "message": "hi \"bob\" ✓"})
        );
        assert_eq!(n.attr("event_id"), Some(("String", dm.id.as_str())));
        assert_eq!(n.attr("event_class"), Some(("String", "chat")));
        assert_eq!(n.attr("source"), Some(("String", "sidecar")));
        assert_eq!(n.attr("tier"), Some(("Number", "2")));
        assert_eq!(n.attr("vip"), Some(("String", "true")));
        assert_eq!(n.attr("ratio"), Some(("Number", "0.5")));
        assert_eq!(n.attributes.len(), 6, "{:?}", n.attributes);

        let got = sqs.drain(&muc.queue, 1, READ_TIMEOUT).await;
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0].topic_arn, muc.arn);
        assert_eq!(
            got[0].message,
            json!({"from_user_id": "carol@localhost", "to_user_id": "room@muc.localhost", "message": "hello room"})
        );
        assert_eq!(got[0].attr("event_class"), Some(("String", "groupchat")));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_arn_and_fifo_topic_get_group_and_deduplication_ids() {
    bounded(async {
        let (sns, sqs) = (sns_admin().await, Sqs::new());
        let fifo = watched_topic(&sns, &sqs, &format!("{}.fifo", unique("fifo"))).await;
        let proxy = Proxy::start().await;
        // A full ARN is taken as it is.
        let b = backend(&proxy.url(), &format!("pm_messages_topic = \"{}\"\n", fifo.arn));
        b.start().await.expect("starts");

        let one = chat("Dave@LocalHost/a", "erin@localhost", "chat", "one");
        b.publish(&delivery(one.clone())).await.expect("publish to FIFO topic");
        // Two users in one batch: PublishBatch entries carry the ids too.
        let batch = [
            chat("dave@localhost/a", "erin@localhost", "chat", "two"),
            chat("frank@localhost/b", "erin@localhost", "chat", "three"),
        ];
        let results = b
            .deliver(&batch.iter().cloned().map(delivery).collect::<Vec<_>>())
            .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");

        let reqs = proxy.requests();
        let publish = reqs.iter().find(|r| r.action == "Publish").expect("a Publish call");
        assert_eq!(publish.params.get("TopicArn"), Some(&fifo.arn));
        assert_eq!(
            publish.params.get("MessageGroupId").map(String::as_str),
            Some("dave@localhost")
        );
        assert_eq!(publish.params.get("MessageDeduplicationId"), Some(&one.id));
        let pb = reqs
            .iter()
            .find(|r| r.action == "PublishBatch")
            .expect("a PublishBatch call");
        let entry = |i: usize, key: &str| {
            pb.params
                .get(&format!("PublishBatchRequestEntries.member.{}.{key}", i + 1))
                .cloned()
        };
        for (i, e) in batch.iter().enumerate() {
            assert_eq!(entry(i, "MessageDeduplicationId").as_ref(), Some(&e.id));
        }
        assert_eq!(entry(0, "MessageGroupId").as_deref(), Some("dave@localhost"));
        assert_eq!(entry(1, "MessageGroupId").as_deref(), Some("frank@localhost"));

        let got = sqs.drain(&fifo.queue, 3, READ_TIMEOUT).await;
        let mut texts: Vec<String> = got
            .iter()
            .map(|n| n.message["message"].as_str().unwrap_or("").to_owned())
            .collect();
        texts.sort();
        assert_eq!(texts, ["one", "three", "two"]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_deliver_every_event_once_with_fewer_calls() {
    bounded(async {
        let (sns, sqs) = (sns_admin().await, Sqs::new());
        let base = unique("batch");
        let pres = watched_topic(&sns, &sqs, &format!("{base}-presence")).await;
        let pm = watched_topic(&sns, &sqs, &format!("{base}-pm")).await;
        let muc = watched_topic(&sns, &sqs, &format!("{base}-muc")).await;
        let proxy = Proxy::start().await;
        let b = backend(&proxy.url(), &topics_keys(&pres.name, &pm.name, &muc.name));
        assert_eq!(b.max_batch(), 10);
        b.start().await.expect("starts");

        // 60 events, mixed kinds, handed over 10 at a time as the engine does.
        let events: Vec<Event> = (0..60)
            .map(|i| match i % 3 {
                0 => presence(&format!("user{i}@localhost/r"), i % 2 == 0),
                1 => chat(
                    &format!("user{i}@localhost/r"),
                    "peer@localhost",
                    "chat",
                    &format!("dm {i}"),
                ),
                _ => chat(
                    &format!("user{i}@localhost/r"),
                    "room@muc.localhost",
                    "groupchat",
                    &format!("muc {i}"),
                ),
            })
            .collect();
        let deliveries: Vec<Delivery> = events.iter().cloned().map(delivery).collect();
        for chunk in deliveries.chunks(b.max_batch()) {
            let results = b.deliver(chunk).await;
            assert_eq!(results.len(), chunk.len());
            assert!(results.iter().all(Result::is_ok), "{results:?}");
        }
        // More than 10 for one topic in one call is split, not rejected.
        let many: Vec<Delivery> = (0..23)
            .map(|i| delivery(chat(&format!("bulk{i}@localhost"), "peer@localhost", "chat", "bulk")))
            .collect();
        let results = b.deliver(&many).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");

        let calls = proxy.count("Publish") + proxy.count("PublishBatch");
        let sent = events.len() + many.len();
        // 6 calls of 10 mixed events over 3 topics: 3 calls each; then 10+10+3.
        assert_eq!(
            proxy.count("PublishBatch"),
            6 * 3 + 3,
            "{:?}",
            proxy.requests().iter().map(|r| &r.action).collect::<Vec<_>>()
        );
        assert!(calls < sent, "{calls} API calls for {sent} events");

        let mut seen = std::collections::HashMap::new();
        for (w, expect) in [(&pres, 20), (&pm, 20 + 23), (&muc, 20)] {
            let got = sqs.drain(&w.queue, expect, READ_TIMEOUT).await;
            assert_eq!(got.len(), expect, "topic {}", w.name);
            for n in got {
                let id = n.attr("event_id").expect("event_id attribute").1.to_owned();
                *seen.entry(id).or_insert(0) += 1;
            }
        }
        for e in events.iter().chain(many.iter().map(|d| &d.event)) {
            assert_eq!(seen.get(&e.id), Some(&1), "event {} must arrive exactly once", e.id);
        }
        assert_eq!(seen.len(), sent);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_entry_failures_are_reported_per_event() {
    bounded(async {
        let sns = sns_admin().await;
        let pm = unique("partial");
        create_topic(&sns, &pm).await;
        let proxy = Proxy::start().await;
        let b = backend(&proxy.url(), &format!("pm_messages_topic = \"{pm}\"\n"));
        let batch: Vec<Delivery> = (0..4)
            .map(|i| delivery(chat(&format!("u{i}@localhost"), "peer@localhost", "chat", "x")))
            .collect();

        // SNS answers per entry: 0 and 2 went out, 1 failed on SNS's side
        // (worth retrying), 3 was rejected (never will be accepted).
        proxy.inject(Fault::batch_result(
            &["0", "2"],
            &[("1", "InternalError", false), ("3", "InvalidParameter", true)],
        ));
        let r = b.deliver(&batch).await;
        assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
        assert!(assert_retryable(&r[1]).message.contains("InternalError"));
        let e = assert_permanent(&r[3]);
        assert!(
            e.message.contains("InvalidParameter") && e.message.contains(&pm),
            "{}",
            e.message
        );

        // An entry SNS does not mention is retried, not lost.
        proxy.inject(Fault::batch_result(&["0", "1", "2"], &[]));
        let r = b.deliver(&batch).await;
        assert!(r[..3].iter().all(Result::is_ok), "{r:?}");
        assert_retryable(&r[3]);

        // The engine then retries only the failed event: it goes out alone.
        let before = proxy.requests().len();
        let r = b.deliver(&batch[1..2]).await;
        assert!(r[0].is_ok(), "{r:?}");
        let after = proxy.requests();
        assert_eq!(after.len(), before + 1);
        assert_eq!(after[before].action, "Publish");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topic_is_permanent_and_names_the_arn() {
    bounded(async {
        let missing = unique("no-such-topic");
        let arn = format!("arn:aws:sns:{REGION}:{ACCOUNT}:{missing}");
        let b = backend(&moto().url(), &format!("pm_messages_topic = \"{missing}\"\n"));
        b.start().await.expect("a missing topic is logged at start, not fatal");

        let r = b
            .publish(&delivery(chat("a@localhost/r", "b@localhost", "chat", "hi")))
            .await;
        let e = assert_permanent(&r);
        assert!(e.message.contains(&arn), "{}", e.message);
        assert!(
            e.message.contains("NotFound") && e.message.contains("does not exist"),
            "{}",
            e.message
        );
        assert_eq!(e.status, Some(404));

        let batch: Vec<Delivery> = (0..3)
            .map(|i| delivery(chat(&format!("u{i}@localhost"), "b@localhost", "chat", "hi")))
            .collect();
        for r in b.deliver(&batch).await {
            assert!(assert_permanent(&r).message.contains(&arn));
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_server_errors_and_transport_failures_are_retryable() {
    bounded(async {
        let sns = sns_admin().await;
        let pm = unique("faults");
        create_topic(&sns, &pm).await;
        let proxy = Proxy::start().await;
        let b = backend(&proxy.url(), &format!("pm_messages_topic = \"{pm}\"\n"));
        let one = || delivery(chat("a@localhost/r", "b@localhost", "chat", "hi"));

        proxy.inject(Fault::error("Publish", 400, "Throttling", "Rate exceeded"));
        let r = b.publish(&one()).await;
        let e = assert_retryable(&r);
        assert!(e.message.contains("Throttling"), "{}", e.message);
        assert!(e.retry_after.is_some());

        proxy.inject(Fault::error("Publish", 500, "InternalError", "oops"));
        assert_eq!(assert_retryable(&b.publish(&one()).await).status, Some(500));

        proxy.inject(Fault::error("Publish", 503, "ServiceUnavailable", "later"));
        assert_retryable(&b.publish(&one()).await);

        proxy.inject(Fault::error(
            "Publish",
            403,
            "AuthorizationError",
            "not allowed to publish",
        ));
        let r = b.publish(&one()).await;
        let e = assert_permanent(&r);
        assert!(
            e.message.contains("AuthorizationError") && e.message.contains("not allowed"),
            "{}",
            e.message
        );

        proxy.inject(Fault::error("Publish", 400, "InvalidParameter", "bad attribute"));
        assert_permanent(&b.publish(&one()).await);

        // A whole PublishBatch throttled: every event in it is retryable.
        proxy.inject(Fault::error("PublishBatch", 400, "Throttling", "Rate exceeded"));
        let batch: Vec<Delivery> = (0..3)
            .map(|i| delivery(chat(&format!("u{i}@localhost"), "b@localhost", "chat", "hi")))
            .collect();
        for r in b.deliver(&batch).await {
            assert_retryable(&r);
        }

        // After all that, the real thing still works.
        b.publish(&one()).await.expect("publishes once the faults are gone");

        // Nobody listening.
        let closed = backend(
            &format!("http://127.0.0.1:{}", free_port()),
            &format!("pm_messages_topic = \"{pm}\"\n"),
        );
        let r = closed.publish(&one()).await;
        assert!(assert_retryable(&r).message.contains("cannot reach SNS"), "{r:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_is_permanent_without_a_call() {
    bounded(async {
        let proxy = Proxy::start().await;
        let b = backend(&proxy.url(), "pm_messages_topic = \"big\"\n");
        let huge = "x".repeat(300 * 1024);
        let r = b
            .publish(&delivery(chat("a@localhost", "b@localhost", "chat", &huge)))
            .await;
        assert!(assert_permanent(&r).message.contains("262144"), "{r:?}");
        assert_eq!(proxy.count("Publish") + proxy.count("PublishBatch"), 0);
    })
    .await
}

// ---------------------------------------------------------------- credentials

/// The access key id a SigV4 `Authorization` header was signed with.
fn signed_with(authorization: &str) -> &str {
    authorization
        .split("Credential=")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_config_sign_the_requests() {
    bounded(async {
        let sns = sns_admin().await;
        let pm = unique("creds");
        create_topic(&sns, &pm).await;
        let proxy = Proxy::start().await;
        let keys = format!(
            "access_key_id = \"AKIDFROMCONFIG\"\nsecret_access_key = \"s3cr3t\"\nsession_token = \"tok\"\npm_messages_topic = \"{pm}\"\n"
        );
        let b = backend(&proxy.url(), &keys);
        b.start().await.expect("starts");
        b.publish(&delivery(chat("a@localhost", "b@localhost", "chat", "hi"))).await.expect("publishes");
        let publish = proxy.requests().into_iter().find(|r| r.action == "Publish").expect("a Publish call");
        assert_eq!(signed_with(&publish.authorization), "AKIDFROMCONFIG", "{}", publish.authorization);
    })
    .await
}

/// Names the child test to run in a child process, see below.
const CHILD_ENV: &str = "SNS_TEST_CHILD";

/// Environment credentials are process-global, so they are tested in a
/// child process running one test of this same binary with its own
/// environment; this process's environment is never changed.
async fn run_child(test: &str, envs: &[(&str, &str)]) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .env(MOTO_PORT_ENV, moto().port.to_string())
        // Nothing but what the test gives: no profile files, no instance
        // metadata, no container or web-identity credentials.
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .kill_on_drop(true);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SNS",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("child test {test} took more than 60 s"))
        .expect("run child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed") && stdout.contains(&format!("child test ran: {test}")),
        "child test {test} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_environment() {
    bounded(async {
        run_child(
            "child_env_credentials",
            &[
                ("AWS_ACCESS_KEY_ID", "AKIDFROMENVIRONMENT"),
                ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ],
        )
        .await;
        run_child("child_no_credentials", &[]).await;
    })
    .await
}

/// Whether this process is the child running `test`; says so on stdout,
/// where the parent looks for it, so a child that skipped its body cannot
/// pass for one that ran it.
fn is_child(test: &str) -> bool {
    let me = std::env::var(CHILD_ENV).is_ok_and(|v| v == test);
    if me {
        println!("child test ran: {test}");
    }
    me
}

/// Runs only as the child of `credentials_from_the_environment`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_env_credentials() {
    if !is_child("child_env_credentials") {
        return;
    }
    bounded(async {
        let sns = sns_admin().await;
        let pm = unique("envcreds");
        create_topic(&sns, &pm).await;
        let proxy = Proxy::start().await;
        // No access_key_id in the config: the standard chain finds the env.
        let text = format!(
            "region = \"{REGION}\"\naccount_id = \"{ACCOUNT}\"\nendpoint_url = \"{}\"\npm_messages_topic = \"{pm}\"\n",
            proxy.url()
        );
        let config: SnsConfig = toml::from_str(&text).expect("config");
        let b = SnsBackend::new("env", &config).expect("builds");
        b.start().await.expect("finds credentials in the environment");
        b.publish(&delivery(chat("a@localhost", "b@localhost", "chat", "hi")))
            .await
            .expect("publishes");
        let publish = proxy
            .requests()
            .into_iter()
            .find(|r| r.action == "Publish")
            .expect("a Publish call");
        assert_eq!(signed_with(&publish.authorization), "AKIDFROMENVIRONMENT");
    })
    .await
}

/// Runs only as the child of `credentials_from_the_environment`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_no_credentials() {
    if !is_child("child_no_credentials") {
        return;
    }
    bounded(async {
        let proxy = Proxy::start().await;
        let text = format!(
            "region = \"{REGION}\"\naccount_id = \"{ACCOUNT}\"\nendpoint_url = \"{}\"\npm_messages_topic = \"t\"\n",
            proxy.url()
        );
        let config: SnsConfig = toml::from_str(&text).expect("config");
        let b = SnsBackend::new("none", &config).expect("builds");
        let err = b.start().await.expect_err("no credentials anywhere: start must fail");
        assert!(err.message().contains("no AWS credentials"), "{err}");
        // One short line, not the SDK's multi-kilobyte provider chain.
        assert!(
            err.message().len() < 700 && !err.message().contains('\n'),
            "{} bytes: {err}",
            err.message().len()
        );
        // Should it be called anyway, nothing is sent and the event stays retryable.
        let r = b
            .publish(&delivery(chat("a@localhost", "b@localhost", "chat", "hi")))
            .await;
        assert_retryable(&r);
        assert_eq!(proxy.count("Publish"), 0);
    })
    .await
}
