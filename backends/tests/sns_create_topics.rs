//! `create_topics = true` against moto_server: the backend creates its
//! topics at start (plain and FIFO) and publishes to them; a topic that
//! would be created under another ARN than the configured one (wrong
//! account) stops the start with a message saying so.
//!
//! Needs `pip install 'moto[server]'`.

#![cfg(feature = "sns")]

mod sns_support;

use std::time::Duration;

use bytes::Bytes;
use event_pusher_backends::sns::{SnsBackend, SnsConfig};
use event_pusher_core::{Backend, Delivery, HookTranslator};
use serde_json::json;
use sns_support::*;

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn backend(account: &str, keys: &str) -> SnsBackend {
    let text = format!(
        "region = \"{REGION}\"\naccount_id = \"{account}\"\nendpoint_url = \"{}\"\naccess_key_id = \"AKIDTEST\"\n\
         secret_access_key = \"test\"\ntimeout_ms = 20000\n{keys}",
        moto().url()
    );
    let config: SnsConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("bad test config: {e}\n{text}"));
    SnsBackend::new("emu", &config).expect("backend builds")
}

fn delivery(call: serde_json::Value) -> Delivery {
    let event = HookTranslator.translate(&call).expect("valid hook call");
    Delivery {
        json: Bytes::from(event.to_json()),
        event,
        attempt: 1,
        seq: 0,
        target: None,
    }
}

async fn exists(arn: &str) -> bool {
    sns_admin()
        .await
        .get_topic_attributes()
        .topic_arn(arn)
        .send()
        .await
        .is_ok()
}

fn arn(name: &str) -> String {
    format!("arn:aws:sns:{REGION}:{ACCOUNT}:{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_missing_topics_at_start_then_publishes() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let pm = unique("created-pm");
        let presence = format!("{}.fifo", unique("created-presence"));
        assert!(!exists(&arn(&pm)).await && !exists(&arn(&presence)).await);
        let keys =
            format!("create_topics = true\npm_messages_topic = \"{pm}\"\npresence_updates_topic = \"{presence}\"\n");

        let b = backend(ACCOUNT, &keys);
        b.start().await.expect("start creates the topics");
        assert!(exists(&arn(&pm)).await, "{pm} not created");
        let fifo = sns_admin()
            .await
            .get_topic_attributes()
            .topic_arn(arn(&presence))
            .send()
            .await
            .expect("FIFO topic created");
        assert_eq!(
            fifo.attributes().and_then(|a| a.get("FifoTopic")).map(String::as_str),
            Some("true")
        );

        b.publish(&delivery(
            json!({"hook":"user_send_message","from":"a@localhost","to":"b@localhost","type":"chat","body":"hi"}),
        ))
        .await
        .expect("publishes to the created topic");
        b.publish(&delivery(json!({"hook":"user_available","jid":"a@localhost/r"})))
            .await
            .expect("publishes to the created FIFO topic");
        // A restart with the flag still on is harmless: CreateTopic is idempotent.
        backend(ACCOUNT, &keys).start().await.expect("second start");
    })
    .await
    .expect("test took longer than its time limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_under_another_arn_fails_the_start() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let pm = unique("other-account");
        // moto creates topics in its own account, not this one.
        let b = backend(
            "999999999999",
            &format!("create_topics = true\npm_messages_topic = \"{pm}\"\n"),
        );
        let err = b.start().await.expect_err("ARN mismatch");
        assert!(
            err.message().contains("sns.emu")
                && err.message().contains("999999999999")
                && err.message().contains("account_id"),
            "{err}"
        );
    })
    .await
    .expect("test took longer than its time limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_nothing_is_created() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let pm = unique("not-created");
        let b = backend(ACCOUNT, &format!("pm_messages_topic = \"{pm}\"\n"));
        b.start().await.expect("a missing topic is only logged");
        assert!(!exists(&arn(&pm)).await);
    })
    .await
    .expect("test took longer than its time limit")
}
