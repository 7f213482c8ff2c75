//! The bearer scheme is case-insensitive (RFC 9110), and `/ready` names
//! the backends it waits for as `KIND.NAME` (names are unique per kind
//! only).

mod support;

use support::{free_port, Options, Sidecar};

#[tokio::test]
async fn any_case_of_the_bearer_scheme_is_accepted() {
    let sc = Sidecar::start(Options {
        server: "auth_token = \"s3cret\"".into(),
        ..Default::default()
    })
    .await;
    let http = reqwest::Client::new();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = http
            .get(format!("{}/v1/backends", sc.url))
            .header("authorization", format!("{scheme} s3cret"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200, "scheme {scheme}");
    }
    let r = http
        .get(format!("{}/v1/backends", sc.url))
        .header("authorization", "BEARER wrong")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn ready_names_waiting_backends_by_kind_and_name() {
    // A broker nobody listens on: rabbit.main never becomes ready, while
    // a log backend of the same name does.
    let port = free_port();
    let sc = Sidecar::start(Options {
        body: format!(
            "[backends.rabbit.main]\nurl = \"amqp://guest:guest@127.0.0.1:{port}/%2f\"\n\n[backends.log.main]\npath = \"/dev/null\"\n"
        ),
        ..Default::default()
    })
    .await;
    let (status, v) = sc.get("/ready").await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["backends"], serde_json::json!(["rabbit.main"]), "{v}");
}
