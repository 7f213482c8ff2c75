//! The egress guard end to end through the binary (`[egress]`): webhook
//! subscriptions and Web Push endpoints that point at private addresses,
//! in any spelling, are refused with the field named; `allow_hosts` and
//! `allow_private` open it; the check is repeated on the address actually
//! connected to; credentials in URLs, reserved headers and short secrets
//! are refused; reserved `[backends.http.*].headers` fail `check-config`
//! with their position.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use support::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

async fn sidecar(body: &str) -> Sidecar {
    Sidecar::start(Options {
        body: body.to_owned(),
        ..Default::default()
    })
    .await
}

async fn attach(sc: &Sidecar, body: Value) -> (u16, Value) {
    sc.admin(Method::POST, "/v1/webhooks", Some(&body)).await
}

/// The receiver's port (to reach it by name).
fn port_of(rx: &Receiver) -> String {
    let url = url::Url::parse(&rx.url("/")).expect("receiver URL");
    url.port().map(|p| p.to_string()).unwrap_or_default()
}

/// 400 naming `field`, with `why` in the message.
fn assert_refused(what: &str, (status, v): (u16, Value), field: &str, why: &str) {
    assert_eq!(status, 400, "{what}: {v}");
    assert_eq!(v["field"], field, "{what}: {v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.contains(why), "{what}: \"{why}\" not in {v}");
}

#[tokio::test]
async fn subscriptions_to_private_addresses_are_refused_in_every_spelling() {
    let sc = sidecar("").await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://10.0.0.1/h",
        "http://192.168.1.1/h",
        "http://172.16.0.1/h",
        "http://100.64.0.1/h",
        "http://[::1]:8080/h",
        "http://0/h",
        "http://0.0.0.0/h",
        "http://2130706433/h",
        "http://0x7f000001/h",
        "http://[::ffff:127.0.0.1]/h",
        "http://[fe80::1]/h",
        "http://[fd00::1]/h",
        "http://localhost:9/h",
        "http://127.0.0.1:9/h",
    ] {
        assert_refused(url, attach(&sc, json!({"url": url})).await, "url", "private address");
    }
    // Nothing was attached.
    let (_, list) = sc.get("/v1/webhooks").await;
    assert_eq!(list, json!([]), "{list}");

    // Credentials in the URL: refused, and not echoed.
    let (status, v) = attach(&sc, json!({"url": "https://user:hunter2@example.com/h"})).await;
    assert_eq!((status, v["field"].as_str()), (400, Some("url")), "{v}");
    assert!(!v.to_string().contains("hunter2"), "{v}");

    // Reserved headers: framing and signatures are the sender's.
    for name in [
        "Host",
        "Content-Length",
        "Content-Type",
        "Transfer-Encoding",
        "Connection",
        "webhook-id",
        "Webhook-Signature",
    ] {
        let body = json!({"url": "https://example.com/h", "headers": {name: "5"}});
        assert_refused(name, attach(&sc, body).await, "headers", name);
    }
    // Secrets: whsec_ + base64 of 24 to 64 bytes.
    for secret in [
        "whsec_AA==",
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        &format!("whsec_{}", "A".repeat(88)),
    ] {
        assert_refused(
            secret,
            attach(&sc, json!({"url": "https://example.com/h", "secret": secret})).await,
            "secret",
            "24 to 64 bytes",
        );
    }

    // A public one attaches; a PATCH to a private one is refused and
    // changes nothing.
    let (status, v) = attach(
        &sc,
        json!({"id": "pub", "url": "https://203.0.113.7/h", "secret": SECRET}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let patch = json!({"url": "http://169.254.169.254/"});
    assert_refused(
        "patch",
        sc.admin(Method::PATCH, "/v1/webhooks/pub", Some(&patch)).await,
        "url",
        "private address",
    );
    let patch = json!({"headers": {"webhook-id": "forged"}});
    assert_refused(
        "patch headers",
        sc.admin(Method::PATCH, "/v1/webhooks/pub", Some(&patch)).await,
        "headers",
        "webhook-id",
    );
    let (_, one) = sc.get("/v1/webhooks/pub").await;
    assert_eq!(one["url"], "https://203.0.113.7/h", "{one}");
}

#[tokio::test]
async fn allow_hosts_lets_listed_hosts_through_and_nothing_else() {
    let rx = Receiver::start().await;
    let sc = sidecar("[egress]\nallow_hosts = [\"127.0.0.0/8\"]\n").await;
    let (status, v) = attach(
        &sc,
        json!({"id": "ok", "url": rx.url("/in"), "events": ["chat"], "secret": SECRET}),
    )
    .await;
    assert_eq!(status, 201, "a listed range attaches: {v}");
    // Listed by range, not by name: `localhost` and other ranges stay refused.
    let port = port_of(&rx);
    assert_refused(
        "localhost",
        attach(&sc, json!({"url": format!("http://localhost:{port}/in")})).await,
        "url",
        "private address",
    );
    assert_refused(
        "10/8",
        attach(&sc, json!({"url": "http://10.1.1.1/"})).await,
        "url",
        "private address",
    );
    post_ok(&sc, &chat("a@localhost", "hello")).await;
    assert_eq!(
        rx.wait_for(1, Duration::from_secs(10)).await.len(),
        1,
        "the listed receiver gets the event"
    );
}

/// A subscription attached while private addresses were allowed, under a
/// policy that no longer allows them: the address actually connected to is
/// checked at each attempt (the resolver for names, the sender for hosts
/// written as addresses), the receiver gets nothing, and the reason is the
/// dead letter's last error.
#[tokio::test]
async fn the_address_connected_to_is_checked_at_every_attempt() {
    let rx = Receiver::start().await;
    let mut sc = sidecar("[egress]\nallow_private = true\n").await;
    let port = port_of(&rx);
    let once = json!({"max_attempts": 1});
    for (id, url) in [
        ("byname", format!("http://localhost:{port}/n")),
        ("byaddr", rx.url("/a")),
    ] {
        let body = json!({"id": id, "url": url, "events": ["chat"], "secret": SECRET, "retry": once});
        let (status, v) = attach(&sc, body).await;
        assert_eq!(status, 201, "{v}");
    }
    // Open: both deliver.
    let ids = post_ok(&sc, &chat("a@localhost", "before")).await;
    assert_eq!(ids.len(), 1);
    assert_eq!(
        rx.wait_for(2, Duration::from_secs(10)).await.len(),
        2,
        "both deliver while open"
    );

    // The same subscriptions under the default policy.
    sc.sigterm();
    let text = std::fs::read_to_string(&sc.config)
        .unwrap()
        .replace("allow_private = true", "allow_private = false");
    std::fs::write(&sc.config, text).unwrap();
    sc.spawn().await;
    post_ok(&sc, &chat("a@localhost", "after")).await;
    for id in ["byname", "byaddr"] {
        let row = wait_sub(&sc, id, |v| v["dead_letters"] == 1).await;
        assert_eq!(
            row["dead_letters"], 1,
            "{id}: the attempt fails and dead-letters: {row}"
        );
        let (_, page) = sc.get(&format!("/v1/dead-letters?backend={id}")).await;
        assert!(page.to_string().contains("private address"), "{id}: {page}");
    }
    assert_eq!(rx.received().len(), 2, "nothing was sent after the policy closed");
}

/// The subscription's row once `f` holds (or after 15 s).
async fn wait_sub(sc: &Sidecar, id: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = sc.get(&format!("/v1/webhooks/{id}")).await;
        if f(&v) || std::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn webpush_backend() -> String {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/backends/tests/fixtures/push/vapid_test_sec1.pem"
    );
    format!(
        "[backends.push.wp]\n[backends.push.wp.webpush]\nvapid_private_key_file = \"{key}\"\nsubject = \"mailto:ops@example.com\"\n"
    )
}

fn webpush(endpoint: &str) -> Value {
    json!({"provider": "webpush", "subscription": {"endpoint": endpoint, "keys": {"p256dh": P256DH, "auth": AUTH}}})
}

#[tokio::test]
async fn web_push_endpoints_are_https_and_public() {
    let sc = sidecar(&webpush_backend()).await;
    for endpoint in [
        "https://169.254.169.254/push/x",
        "https://127.0.0.1/push/x",
        "https://[::ffff:127.0.0.1]/push/x",
        "https://2130706433/push/x",
        "https://localhost/push/x",
        "https://metadata.google.internal/x",
    ] {
        assert_refused(
            endpoint,
            put_device(&sc, "a@localhost", "d1", &webpush(endpoint)).await,
            "subscription.endpoint",
            "private address",
        );
    }
    assert_refused(
        "http",
        put_device(&sc, "a@localhost", "d1", &webpush("http://push.example.com/x")).await,
        "subscription.endpoint",
        "https://",
    );
    // The same through a push_enable hook call: refused, nothing stored.
    let (status, v) = sc
        .post(&json!({"hook": "push_enable", "jid": "a@localhost", "device_id": "d2",
            "provider": "webpush", "subscription": {"endpoint": "http://169.254.169.254/", "keys": {"p256dh": P256DH, "auth": AUTH}}}))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("subscription.endpoint:"),
        "{v}"
    );
    assert!(device_ids(&sc, "a@localhost").await.is_empty());
    let (status, v) = put_device(&sc, "a@localhost", "d1", &webpush("https://push.example.com/x")).await;
    assert_eq!(status, 201, "a public https endpoint registers: {v}");
}

#[tokio::test]
async fn web_push_over_http_to_a_local_service_needs_allow_private() {
    let body = format!("{}\n[egress]\nallow_private = true\n", webpush_backend());
    let sc = sidecar(&body).await;
    let (status, v) = put_device(&sc, "a@localhost", "d1", &webpush("http://127.0.0.1:9/push")).await;
    assert_eq!(status, 201, "{v}");
}

#[test]
fn reserved_config_headers_fail_check_config_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidecar.toml");
    let text = "[spool]\ndir = \"./data\"\n\n[backends.http.crm]\nurl = \"http://127.0.0.1:9/\"\nheaders = { Authorization = \"Bearer x\", Content-Length = \"5\" }\n";
    std::fs::write(&file, text).unwrap();
    let file = path_str(&file);
    let out = run_cli(&["check-config", &file], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(&format!("{file}:6:")), "position: {}", out.stderr);
    assert!(
        out.stderr.contains("Content-Length") && out.stderr.contains("reserved"),
        "{}",
        out.stderr
    );
    // Config backends are the operator's: a private URL is fine there.
    let text = "[spool]\ndir = \"./data\"\n\n[backends.http.crm]\nurl = \"http://127.0.0.1:9/\"\n";
    std::fs::write(&file, text).unwrap();
    let out = run_cli(&["check-config", &file], &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
}

/// A Web Push endpoint whose *name* resolves into the sidecar's network
/// is refused at registration (not only at send time): the machine's own
/// host name, which resolves to a loopback address here.
#[tokio::test]
async fn web_push_endpoint_names_are_resolved_at_registration() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let private = match tokio::net::lookup_host((host.as_str(), 443)).await {
        Ok(addrs) => addrs.into_iter().any(|a| {
            let ip = a.ip();
            ip.is_loopback()
                || match ip {
                    std::net::IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
                    std::net::IpAddr::V6(_) => false,
                }
        }),
        Err(_) => false,
    };
    if host.is_empty() || !private {
        eprintln!("skipped: host name {host:?} does not resolve to a private address here");
        return;
    }
    let sc = sidecar(&webpush_backend()).await;
    let answer = put_device(&sc, "a@localhost", "d1", &webpush(&format!("https://{host}:1/push"))).await;
    assert_refused(
        "a name resolving to loopback",
        answer,
        "subscription.endpoint",
        "private address",
    );
    assert!(device_ids(&sc, "a@localhost").await.is_empty());
}
