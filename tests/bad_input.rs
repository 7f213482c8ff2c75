//! Bad input gets its status and a JSON error naming the problem, never
//! half-accepts a request, and never takes the process down.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{http_backend, Options, Receiver, Sidecar};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "s3cret-token";
const MAX_BODY: usize = 4096;

async fn start(rx: &Receiver) -> Sidecar {
    let sc = Sidecar::start(Options {
        server: format!("auth_token = \"${{EP_TEST_TOKEN}}\"\nmax_body_bytes = {MAX_BODY}"),
        body: http_backend("notify", &rx.url("/hook"), "")
            + "[backends.http.notify.retry]\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n",
        env: vec![("EP_TEST_TOKEN".into(), TOKEN.into())],
        token: Some(TOKEN.into()),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    sc
}

/// The answer is `{"error": "..."}` (plus `index` where given), and the
/// message contains every one of `needles`.
fn assert_error(what: &str, status: u16, body: &Value, want_status: u16, needles: &[&str]) -> String {
    assert_eq!(status, want_status, "{what}: {body}");
    let msg = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no JSON error message in {body}"));
    for n in needles {
        assert!(msg.contains(n), "{what}: error {msg:?} does not mention {n:?}");
    }
    let extra: Vec<&String> = body
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "error" && *k != "index")
        .collect();
    assert!(extra.is_empty(), "{what}: unexpected keys {extra:?} in {body}");
    msg.to_owned()
}

async fn alive(sc: &Sidecar) {
    let (status, _) = sc.get("/health").await;
    assert_eq!(status, 200, "the process must survive bad input\n{}", sc.stderr());
}

const GOOD: &str = r#"{"hook":"user_available","jid":"a@localhost/r"}"#;

/// What is sent, as what content type, the item index the answer must
/// name, and words its error must contain.
type BadCase = (&'static str, String, &'static str, Option<usize>, Vec<&'static str>);

#[tokio::test]
async fn bad_requests_are_refused_whole_with_a_clear_error() {
    let rx = Receiver::start().await;
    let sc = start(&rx).await;

    // (what, body, content type, expected index, words the error must have)
    let cases: Vec<BadCase> = vec![
        (
            "malformed JSON",
            r#"{"hook":"user_available","jid":"#.into(),
            "application/json",
            None,
            vec!["malformed JSON"],
        ),
        (
            "empty body",
            String::new(),
            "application/json",
            None,
            vec!["empty body"],
        ),
        ("not an object", "42".into(), "application/json", None, vec!["a number"]),
        ("empty array", "[]".into(), "application/json", None, vec!["empty"]),
        (
            "a bad item inside an array",
            format!(r#"[{GOOD},{GOOD},{{"hook":"user_available"}},{GOOD}]"#),
            "application/json",
            Some(2),
            vec!["missing field", "jid"],
        ),
        (
            "a non-object item",
            format!("[{GOOD}, 7]"),
            "application/json",
            Some(1),
            vec!["object"],
        ),
        (
            "unknown hook",
            format!(r#"[{GOOD},{{"hook":"user_login","jid":"a@localhost"}}]"#),
            "application/json",
            Some(1),
            vec!["unknown hook", "user_login"],
        ),
        (
            "unknown message type",
            r#"{"hook":"user_send_message","from":"a@localhost","to":"b@localhost","type":"shout","body":"x"}"#.into(),
            "application/json",
            Some(0),
            vec!["shout", "type"],
        ),
        (
            "missing `to`",
            r#"{"hook":"user_send_message","from":"a@localhost","body":"x"}"#.into(),
            "application/json",
            Some(0),
            vec!["missing field", "`to`"],
        ),
        (
            "missing `from`",
            r#"{"hook":"filter_local_packet","to":"a@localhost","body":"x"}"#.into(),
            "application/json",
            Some(0),
            vec!["missing field", "`from`"],
        ),
        (
            "missing `to` for unacked",
            r#"{"hook":"unacknowledged_message"}"#.into(),
            "application/json",
            Some(0),
            vec!["missing field", "`to`"],
        ),
        (
            "missing `hook`",
            r#"{"jid":"a@localhost"}"#.into(),
            "application/json",
            Some(0),
            vec!["missing field", "`hook`"],
        ),
        (
            "ill-typed field",
            r#"{"hook":"user_send_message","from":5,"to":"b@localhost"}"#.into(),
            "application/json",
            Some(0),
            vec!["`from`"],
        ),
        (
            "empty jid",
            r#"{"hook":"user_available","jid":""}"#.into(),
            "application/json",
            Some(0),
            vec!["`jid`"],
        ),
        (
            "bad timestamp",
            r#"{"hook":"user_available","jid":"a@localhost","timestamp":"yesterday"}"#.into(),
            "application/json",
            Some(0),
            vec!["`timestamp`", "yesterday"],
        ),
        (
            "nested metadata",
            r#"{"hook":"user_available","jid":"a@localhost","metadata":{"deep":{"x":1}}}"#.into(),
            "application/json",
            Some(0),
            vec!["metadata", "deep"],
        ),
        (
            "malformed NDJSON line",
            format!("{GOOD}\n{{oops\n{GOOD}\n"),
            "application/x-ndjson",
            Some(1),
            vec!["malformed JSON", "line 2"],
        ),
        (
            // the index counts hook calls, the message counts lines
            "malformed NDJSON after blank lines",
            format!("\n{GOOD}\n\n{{oops\n"),
            "application/x-ndjson",
            Some(1),
            vec!["malformed JSON", "line 4"],
        ),
        (
            "NDJSON sent as application/json",
            format!("{GOOD}\n{GOOD}\n"),
            "application/json",
            None,
            vec!["malformed JSON", "application/x-ndjson"],
        ),
        (
            "whitespace-only body",
            " \n ".into(),
            "application/x-ndjson",
            None,
            vec!["empty body"],
        ),
        (
            "bad NDJSON item",
            format!("{GOOD}\n{GOOD}\n{{\"hook\":\"unset_presence\"}}\n"),
            "application/x-ndjson",
            Some(2),
            vec!["missing field", "jid"],
        ),
    ];
    for (what, body, ct, index, needles) in &cases {
        let (status, answer, _) = sc.post_raw(ct, body.clone().into_bytes()).await;
        assert_error(what, status, &answer, 400, needles);
        assert_eq!(
            answer.get("index").and_then(Value::as_u64),
            index.map(|i| i as u64),
            "{what}: index in {answer}"
        );
        alive(&sc).await;
    }

    // Nothing of any refused request may be delivered, not even its good
    // items. Give the delivery queues time to show a mistake.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        rx.attempts().is_empty(),
        "refused requests were delivered: {:#?}",
        rx.attempts()
    );

    // And the sidecar still works.
    let (status, answer) = sc.post(&serde_json::from_str(GOOD).unwrap()).await;
    assert_eq!(status, 202, "{answer}");
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["id"], answer["ids"][0]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.attempts().len(), 1, "only the good request was delivered");
}

#[tokio::test]
async fn a_token_is_required_when_configured() {
    let rx = Receiver::start().await;
    let sc = start(&rx).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/events", sc.url);
    let good: Value = serde_json::from_str(GOOD).unwrap();

    let r = client.post(&url).json(&good).send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(
        r.headers().get("www-authenticate").and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_error("missing token", status, &r.json().await.unwrap(), 401, &["token"]);

    for (what, auth) in [
        ("wrong token", format!("Bearer {TOKEN}x")),
        ("token prefix", "Bearer s3cret".to_owned()),
        ("empty bearer", "Bearer ".to_owned()),
        ("basic auth", "Basic czNjcmV0LXRva2Vu".to_owned()),
        ("bare token", TOKEN.to_owned()),
    ] {
        let r = client
            .post(&url)
            .header("authorization", auth)
            .json(&good)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert_error(what, status, &r.json().await.unwrap(), 401, &["token"]);
    }
    alive(&sc).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.attempts().is_empty(), "an unauthorized request was delivered");

    let r = client.post(&url).bearer_auth(TOKEN).json(&good).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(rx.wait_for(1, Duration::from_secs(10)).await.len(), 1);
}

/// Send a chunked request (no Content-Length) over a raw connection and
/// read the status line and body of the answer.
async fn post_chunked(sc: &Sidecar, chunks: &[Vec<u8>]) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", sc.port)).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for c in chunks {
        // The server may answer and close before reading everything.
        if s.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await.is_err()
            || s.write_all(c).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {text}"));
    // The body may itself be chunked: take the JSON object in it.
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, json)
}

#[tokio::test]
async fn bodies_over_max_body_bytes_get_413() {
    let rx = Receiver::start().await;
    let sc = start(&rx).await;
    let big: Vec<Value> = (0..200)
        .map(|i| json!({"hook":"user_available","jid":format!("user{i}@localhost/r")}))
        .collect();
    let big = serde_json::to_vec(&big).unwrap();
    assert!(big.len() > MAX_BODY);

    // Declared length over the limit.
    let (status, answer, _) = sc.post_raw("application/json", big.clone()).await;
    assert_error(
        "Content-Length over the limit",
        status,
        &answer,
        413,
        &["max_body_bytes"],
    );
    alive(&sc).await;

    // No declared length: the limit is enforced while reading.
    let chunks: Vec<Vec<u8>> = big.chunks(1000).map(<[u8]>::to_vec).collect();
    let (status, answer) = post_chunked(&sc, &chunks).await;
    assert_error("chunked body over the limit", status, &answer, 413, &["max_body_bytes"]);
    alive(&sc).await;

    // A chunked body under the limit is fine.
    let (status, answer) = post_chunked(&sc, &[GOOD.as_bytes().to_vec()]).await;
    assert_eq!(status, 202, "{answer}");

    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.attempts().len(), 1, "only the small request was delivered: {got:#?}");
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let rx = Receiver::start().await;
    let sc = start(&rx).await;
    let (status, body) = sc.get("/v2/nothing").await;
    assert_error("unknown path", status, &body, 404, &[]);
    let r = reqwest::Client::new()
        .get(format!("{}/v1/events", sc.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers().get("allow").and_then(|v| v.to_str().ok()), Some("POST"));
    assert_error(
        "GET on the ingest endpoint",
        status,
        &r.json().await.unwrap(),
        405,
        &["GET", "/v1/events"],
    );
    alive(&sc).await;
}

#[tokio::test]
async fn a_full_spool_answers_503_with_retry_after_and_accepts_nothing_of_the_request() {
    // Nobody listens: everything accepted stays queued.
    let port = support::free_port();
    let sc = Sidecar::start(Options {
        spool: "max_queue = 3".into(),
        body: http_backend("notify", &format!("http://127.0.0.1:{port}/hook"), "")
            + "[backends.http.notify.retry]\nmax_attempts = 10000\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n",
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    let p = |i: usize| json!({"hook":"user_available","jid":format!("u{i}@localhost")});
    let (status, answer) = sc.post(&json!([p(0), p(1)])).await;
    assert_eq!(status, 202, "{answer}");
    // Two more would overflow: the whole request is refused.
    let (status, answer, headers) = sc
        .post_raw("application/json", serde_json::to_vec(&json!([p(2), p(3)])).unwrap())
        .await;
    assert_error("spool full", status, &answer, 503, &["notify"]);
    let retry_after = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "Retry-After in seconds: {headers:?}"
    );
    // One still fits.
    let (status, answer) = sc.post(&p(4)).await;
    assert_eq!(status, 202, "the refused request took no room: {answer}");
    let (status, _) = sc.post(&p(5)).await;
    assert_eq!(status, 503);

    // Once the endpoint is up, exactly the three accepted events arrive.
    let rx = Receiver::start_on(port).await;
    let got = rx.wait_for(3, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let jids: std::collections::BTreeSet<String> = rx
        .received()
        .iter()
        .map(|r| r.json()["jid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got.len(), 3, "{got:#?}");
    assert_eq!(
        jids.into_iter().collect::<Vec<_>>(),
        ["u0@localhost", "u1@localhost", "u4@localhost"]
    );
    alive(&sc).await;
}
