//! MongooseIM's http backend posts as input, through the real binary: a
//! form post is stored and fans out to every backend; a missing field is
//! refused by name with nothing stored; the bearer token applies; form
//! decoding (`+`, `%26`); any path below `/v1/mongooseim/http`; the content
//! type and the body limit.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{eventually, http_backend, Options, Receiver, Sidecar};

const FORM: &str = "application/x-www-form-urlencoded";

/// A sidecar with an HTTP backend (JSON) posting to `rx` and a log backend
/// on stdout.
async fn start(rx: &Receiver, server: &str, token: Option<&str>) -> Sidecar {
    Sidecar::start(Options {
        server: server.to_owned(),
        body: format!(
            "{}\n[backends.log.console]\n",
            http_backend("hook", &rx.url("/events"), "format = \"json\"")
        ),
        token: token.map(str::to_owned),
        ..Default::default()
    })
    .await
}

/// POST `body` to `path` with `content_type`, with the sidecar's token if
/// it has one; returns status and JSON answer.
async fn post_form(sc: &Sidecar, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", sc.url))
        .header("content-type", content_type)
        .body(body.to_owned());
    if let Some(t) = &sc.token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("post");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A form post to `/v1/mongooseim/http` itself.
async fn post(sc: &Sidecar, body: &str) -> (u16, Value) {
    post_form(sc, "/v1/mongooseim/http", FORM, body).await
}

/// The log backend's line for event `id`, once it is written.
async fn logged(sc: &Sidecar, id: &str) -> Value {
    let find = || {
        sc.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["id"] == id)
    };
    assert!(
        eventually(Duration::from_secs(10), || find().is_some()).await,
        "event {id} not in the log backend's output: {}",
        sc.stdout()
    );
    find().unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_form_post_is_stored_and_delivered_to_every_backend() {
    let rx = Receiver::start().await;
    let sc = start(&rx, "", None).await;
    let (status, answer) = post(&sc, "author=alice&server=localhost&receiver=bob&message=hi+there").await;
    assert_eq!(status, 200, "MongooseIM needs a 2xx: {answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    let id = answer["ids"][0].as_str().unwrap_or_default().to_owned();

    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    let event = got.first().map(|r| r.json()).unwrap_or(Value::Null);
    for e in [event, logged(&sc, &id).await] {
        assert_eq!(e["id"], id.as_str(), "{e}");
        assert_eq!(e["event"], "chat", "{e}");
        assert_eq!(e["type"], "chat", "{e}");
        assert_eq!(e["direction"], "in", "{e}");
        assert_eq!(e["from"], "alice@localhost", "{e}");
        assert_eq!(e["to"], "bob@localhost", "{e}");
        assert_eq!(e["body"], "hi there", "{e}");
    }
    let (_, metrics) = sc.get_text("/metrics").await;
    assert!(
        metrics.contains("event_pusher_ingest_requests_total{status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("event_pusher_ingest_events_total 1"), "{metrics}");
}

#[tokio::test]
async fn a_missing_field_is_named_and_nothing_is_stored() {
    let rx = Receiver::start().await;
    let sc = start(&rx, "", None).await;
    let (status, answer) = post(&sc, "author=alice&server=localhost&message=hi").await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("missing field `receiver`"), "{answer}");

    let (status, answer) = post(&sc, "author=alice%40evil&server=localhost&receiver=bob&message=hi").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap_or_default().contains("field `author`"),
        "{answer}"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.attempts().is_empty(), "a refused post was delivered");
    for name in ["hook", "console"] {
        let row = sc.backend(name).await;
        assert_eq!(row["queued"], 0, "{row}");
        assert_eq!(row["delivered"], 0, "{row}");
    }
}

#[tokio::test]
async fn the_bearer_token_is_required_when_set() {
    let rx = Receiver::start().await;
    let mut sc = start(&rx, "auth_token = \"s3cret\"", Some("s3cret")).await;
    let body = "author=alice&server=localhost&receiver=bob&message=hi";
    let (status, _) = post_form(&sc, "/v1/mongooseim/http/notify", FORM, body).await;
    assert_eq!(status, 200);
    sc.token = None;
    let (status, answer) = post_form(&sc, "/v1/mongooseim/http/notify", FORM, body).await;
    assert_eq!(status, 401, "{answer}");
    sc.token = Some("wrong".into());
    let (status, _) = post(&sc, body).await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received().len(), 1, "only the post with the token");
}

#[tokio::test]
async fn plus_and_percent_escapes_decode() {
    let rx = Receiver::start().await;
    let sc = start(&rx, "", None).await;
    let (status, answer) = post_form(
        &sc,
        "/v1/mongooseim/http",
        // What MongooseIM's cow_qs:qs makes of "1 + 1 & café=2".
        &format!("{FORM}; charset=UTF-8"),
        "author=alice&server=localhost&receiver=bob&message=1+%2B+1+%26+caf%C3%A9%3D2",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    let event = got.first().map(|r| r.json()).unwrap_or(Value::Null);
    assert_eq!(event["body"], "1 + 1 & café=2", "{event}");
}

#[tokio::test]
async fn any_path_below_the_prefix_is_accepted() {
    let rx = Receiver::start().await;
    let sc = start(&rx, "", None).await;
    for path in [
        "/v1/mongooseim/http/",
        "/v1/mongooseim/http/notifications",
        "/v1/mongooseim/http/webservice/notifications",
        // A prefix ending in `/` joined to a path starting with one.
        "/v1/mongooseim/http//notifications",
    ] {
        let (status, answer) =
            post_form(&sc, path, FORM, "author=alice&server=localhost&receiver=bob&message=hi").await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    assert_eq!(rx.wait_for(4, Duration::from_secs(10)).await.len(), 4);
    let (status, _) = post_form(&sc, "/v1/mongooseimx", FORM, "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn other_content_types_and_oversized_bodies_are_refused() {
    let rx = Receiver::start().await;
    let sc = start(&rx, "max_body_bytes = 100", None).await;
    let (status, answer) = post_form(&sc, "/v1/mongooseim/http", "application/json", r#"{"author":"alice"}"#).await;
    assert_eq!(status, 415, "{answer}");
    assert!(
        answer["error"].as_str().unwrap_or_default().contains(FORM),
        "the answer names the expected type: {answer}"
    );
    let long = format!("author=alice&server=localhost&receiver=bob&message={}", "x".repeat(200));
    let (status, answer) = post(&sc, &long).await;
    assert_eq!(status, 413, "{answer}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.attempts().is_empty());
}
