//! Every hook, every body framing, the filter chain and the log backend,
//! end to end: the real binary, a real webhook receiver.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{http_backend, is_ulid, Options, Received, Receiver, Sidecar};

const WAIT: Duration = Duration::from_secs(15);
const FAST_RETRY: &str =
    "[backends.http.notify.retry]\nmax_attempts = 20\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n";

async fn start(body: String) -> Sidecar {
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    sc
}

/// Events a receiver got, by their `id`.
fn by_id(got: &[Received]) -> HashMap<String, Value> {
    got.iter()
        .map(|r| {
            let v = r.json();
            (v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_owned(), v)
        })
        .collect()
}

/// `2026-11-23T10:00:00.123Z`: UTC, exactly milliseconds.
fn is_canonical_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}

/// A 202 answer has exactly `accepted` and `ids`, with `n` unique ULIDs.
fn accepted_ids(status: u16, answer: &Value, n: usize) -> Vec<String> {
    assert_eq!(status, 202, "{answer}");
    let obj = answer
        .as_object()
        .unwrap_or_else(|| panic!("202 body is not an object: {answer}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["accepted", "ids"], "{answer}");
    assert_eq!(answer["accepted"], json!(n), "{answer}");
    let ids: Vec<String> = answer["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("ids is not an array: {answer}"))
        .iter()
        .map(|v| v.as_str().expect("id is a string").to_owned())
        .collect();
    assert_eq!(ids.len(), n, "{answer}");
    for id in &ids {
        assert!(is_ulid(id), "id {id} is not a ULID");
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), n, "ids not unique: {answer}");
    ids
}

#[tokio::test]
async fn every_hook_arrives_with_its_canonical_fields() {
    let rx = Receiver::start().await;
    let sc = start(http_backend("notify", &rx.url("/hook"), "") + FAST_RETRY).await;

    // (hook call, what the webhook must get apart from `id` and, where the
    // call gives none, `timestamp`)
    let cases: Vec<(Value, Value)> = vec![
        (
            json!({"hook":"user_send_message","from":"alice@localhost/phone","to":"bob@localhost","type":"chat",
                   "body":"hi","id":"m-1","timestamp":"2026-11-23T10:00:00.123Z",
                   "metadata":{"source":"mim","n":3,"ratio":1.5,"vip":true}}),
            json!({"event":"chat","type":"chat","direction":"in","from":"alice@localhost/phone","to":"bob@localhost",
                   "body":"hi","message_id":"m-1","timestamp":"2026-11-23T10:00:00.123Z",
                   "metadata":{"source":"mim","n":3,"ratio":1.5,"vip":true}}),
        ),
        (
            json!({"hook":"filter_local_packet","from":"room@muc.localhost/carol","to":"bob@localhost/tablet",
                   "type":"groupchat","body":"hello room","id":"m-2"}),
            json!({"event":"chat","type":"groupchat","direction":"out","from":"room@muc.localhost/carol",
                   "to":"bob@localhost/tablet","body":"hello room","message_id":"m-2","metadata":{}}),
        ),
        (
            // no type: normal; no body, no id: absent
            json!({"hook":"user_send_message","from":"alice@localhost","to":"bob@localhost"}),
            json!({"event":"chat","type":"normal","direction":"in","from":"alice@localhost","to":"bob@localhost",
                   "metadata":{}}),
        ),
        (
            json!({"hook":"filter_local_packet","from":"news.localhost","to":"bob@localhost","type":"headline",
                   "body":"breaking"}),
            json!({"event":"chat","type":"headline","direction":"out","from":"news.localhost","to":"bob@localhost",
                   "body":"breaking","metadata":{}}),
        ),
        (
            json!({"hook":"user_available","jid":"alice@localhost/phone"}),
            json!({"event":"presence","jid":"alice@localhost/phone","status":"online","metadata":{}}),
        ),
        (
            // an offset timestamp is passed through, normalised to UTC ms
            json!({"hook":"unset_presence","jid":"alice@localhost/phone","timestamp":"2026-11-23T11:00:00.5+01:00",
                   "metadata":{"reason":"timeout"}}),
            json!({"event":"presence","jid":"alice@localhost/phone","status":"offline",
                   "timestamp":"2026-11-23T10:00:00.500Z","metadata":{"reason":"timeout"}}),
        ),
        (
            json!({"hook":"unacknowledged_message","to":"bob@localhost/phone"}),
            json!({"event":"unacked","to":"bob@localhost/phone","metadata":{}}),
        ),
    ];

    let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
    let mut expected: Vec<(String, Value)> = Vec::new();
    for (call, want) in &cases {
        let (status, answer) = sc.post(call).await;
        let ids = accepted_ids(status, &answer, 1);
        expected.push((ids[0].clone(), want.clone()));
    }
    let after = time::OffsetDateTime::now_utc() + time::Duration::seconds(5);

    let got = rx.wait_for(cases.len(), WAIT).await;
    assert_eq!(got.len(), cases.len(), "not every hook arrived: {got:#?}");
    let events = by_id(&got);
    for r in &got {
        let id = r.json()["id"].as_str().unwrap().to_owned();
        assert_eq!(r.header("webhook-id"), Some(id.clone()), "webhook-id is the event id");
        assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
        assert_eq!(r.path, "/hook");
    }
    for (id, want) in expected {
        let mut ev = events
            .get(&id)
            .unwrap_or_else(|| panic!("event {id} never arrived"))
            .clone();
        let ts = ev["timestamp"]
            .as_str()
            .unwrap_or_else(|| panic!("no timestamp in {ev}"))
            .to_owned();
        assert_eq!(ev.as_object_mut().unwrap().remove("id"), Some(json!(id)));
        assert!(is_canonical_time(&ts), "timestamp {ts} is not canonical");
        if want.get("timestamp").is_none() {
            // none given: the time of ingest
            let t = time::OffsetDateTime::parse(&ts, &time::format_description::well_known::Rfc3339).unwrap();
            assert!(t >= before && t <= after, "timestamp {ts} is not the time of ingest");
            ev.as_object_mut().unwrap().remove("timestamp");
        }
        assert_eq!(ev, want, "event {id}");
    }
}

#[tokio::test]
async fn json_arrays_and_ndjson_are_accepted_item_by_item() {
    let rx = Receiver::start().await;
    let sc = start(http_backend("notify", &rx.url("/hook"), "") + FAST_RETRY).await;

    let array = json!([
        {"hook":"user_available","jid":"a@localhost/1"},
        {"hook":"user_send_message","from":"a@localhost/1","to":"b@localhost","type":"chat","body":"one","id":"x-1"},
        {"hook":"unacknowledged_message","to":"b@localhost/2"},
    ]);
    let (status, answer) = sc.post(&array).await;
    let array_ids = accepted_ids(status, &answer, 3);

    let ndjson = concat!(
        "{\"hook\":\"unset_presence\",\"jid\":\"a@localhost/1\"}\r\n",
        "\n",
        "{\"hook\":\"filter_local_packet\",\"from\":\"b@localhost\",\"to\":\"a@localhost/1\",\"body\":\"two\",\"id\":\"x-2\"}\n",
    );
    // Media types are case-insensitive and may carry parameters.
    let (status, answer, _) = sc
        .post_raw("Application/X-NDJSON; charset=utf-8", ndjson.as_bytes().to_vec())
        .await;
    let nd_ids = accepted_ids(status, &answer, 2);

    let got = rx.wait_for(5, WAIT).await;
    assert_eq!(got.len(), 5, "{got:#?}");
    let events = by_id(&got);
    // ids are given in the order of the items
    assert_eq!(events[&array_ids[0]]["event"], "presence");
    assert_eq!(events[&array_ids[0]]["status"], "online");
    assert_eq!(events[&array_ids[1]]["message_id"], "x-1");
    assert_eq!(events[&array_ids[1]]["direction"], "in");
    assert_eq!(events[&array_ids[2]]["event"], "unacked");
    assert_eq!(events[&nd_ids[0]]["status"], "offline");
    assert_eq!(events[&nd_ids[1]]["message_id"], "x-2");
    assert_eq!(events[&nd_ids[1]]["direction"], "out");
    assert_eq!(events[&nd_ids[1]]["type"], "normal");
    let all: HashSet<&String> = array_ids.iter().chain(&nd_ids).collect();
    assert_eq!(all.len(), 5, "ids unique across requests");
}

#[tokio::test]
async fn filters_stop_tag_and_backends_select_classes() {
    let rx = Receiver::start().await;
    let body = format!(
        r#"
[[filters]]
name = "tag-chat"
priority = 10
match = {{ event = "chat" }}
metadata = {{ source = "sidecar", tier = 2, vip = true, ratio = 0.5 }}

[[filters]]
name = "drop-headlines"
priority = 30
match = {{ type = "headline" }}
action = "stop"

[backends.http.late]
url = "{late}"
priority = 50
[backends.http.late.retry]
initial_backoff_ms = 50

[backends.http.early]
url = "{early}"
priority = 20
[backends.http.early.retry]
initial_backoff_ms = 50

[backends.http.presence_only]
url = "{presence}"
events = ["presence"]
[backends.http.presence_only.retry]
initial_backoff_ms = 50

[backends.http.muc]
url = "{muc}"
events = ["groupchat", "unacked"]
[backends.http.muc.retry]
initial_backoff_ms = 50
"#,
        late = rx.url("/late"),
        early = rx.url("/early"),
        presence = rx.url("/presence"),
        muc = rx.url("/muc"),
    );
    let sc = start(body).await;

    let calls = json!([
        {"hook":"user_send_message","from":"a@x","to":"b@x","type":"chat","body":"hi","metadata":{"origin":"mim"}},
        {"hook":"user_send_message","from":"a@x","to":"b@x","type":"headline","body":"news"},
        {"hook":"user_available","jid":"a@x/r"},
        {"hook":"filter_local_packet","from":"room@muc.x/a","to":"b@x","type":"groupchat","body":"all"},
        {"hook":"unacknowledged_message","to":"b@x/r"},
        {"hook":"user_send_message","from":"a@x","to":"b@x","body":"plain"},
    ]);
    let (status, answer) = sc.post(&calls).await;
    let ids = accepted_ids(status, &answer, 6);
    let [chat, headline, presence, groupchat, unacked, normal] = [0, 1, 2, 3, 4, 5].map(|i| ids[i].clone());

    // early: 6, late: 5 (no headline), presence_only: 1, muc: 2
    let settled = support::eventually(WAIT, || rx.received().len() >= 14).await;
    assert!(settled, "only {} deliveries: {:#?}", rx.received().len(), rx.received());
    // Give anything that should not come a chance to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = rx.received();
    let at = |path: &str| -> HashMap<String, Value> {
        by_id(&got.iter().filter(|r| r.path == path).cloned().collect::<Vec<_>>())
    };
    let set = |m: &HashMap<String, Value>| m.keys().cloned().collect::<HashSet<_>>();
    let ids_of = |v: &[&String]| v.iter().map(|s| (*s).clone()).collect::<HashSet<_>>();

    let early = at("/early");
    let late = at("/late");
    assert_eq!(
        set(&early),
        ids_of(&[&chat, &headline, &presence, &groupchat, &unacked, &normal]),
        "early"
    );
    assert_eq!(
        set(&late),
        ids_of(&[&chat, &presence, &groupchat, &unacked, &normal]),
        "late: the stop hides headlines"
    );
    assert_eq!(set(&at("/presence")), ids_of(&[&presence]), "presence_only");
    assert_eq!(set(&at("/muc")), ids_of(&[&groupchat, &unacked]), "muc");
    assert_eq!(got.len(), 14, "no duplicates or strays: {got:#?}");

    let tags = json!({"source":"sidecar","tier":2,"vip":true,"ratio":0.5});
    let mut with_origin = tags.clone();
    with_origin["origin"] = json!("mim");
    assert_eq!(
        early[&chat]["metadata"], with_origin,
        "filter metadata merges with the hook's"
    );
    assert_eq!(late[&chat]["metadata"], with_origin);
    assert_eq!(early[&headline]["metadata"], tags, "the tag ran before the stop");
    assert_eq!(late[&normal]["metadata"], tags);
    assert_eq!(late[&groupchat]["metadata"], tags);
    assert_eq!(late[&presence]["metadata"], json!({}), "the tag matches chat only");
    assert_eq!(late[&unacked]["metadata"], json!({}));
}

#[tokio::test]
async fn equal_priorities_keep_the_order_of_the_file() {
    let rx = Receiver::start().await;
    let body = format!(
        r#"
[backends.http.before]
url = "{before}"
[backends.http.before.retry]
initial_backoff_ms = 50

[[filters]]
name = "stop-all"
priority = 50
action = "stop"

[backends.http.after]
url = "{after}"
[backends.http.after.retry]
initial_backoff_ms = 50
"#,
        before = rx.url("/before"),
        after = rx.url("/after"),
    );
    let sc = start(body).await;
    let (status, answer) = sc.post(&json!({"hook":"user_available","jid":"a@localhost"})).await;
    let ids = accepted_ids(status, &answer, 1);
    let got = rx.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = if rx.attempts().len() > got.len() {
        rx.attempts()
    } else {
        got
    };
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        got[0].path, "/before",
        "the stop at the same priority comes after `before` in the file"
    );
    assert_eq!(got[0].json()["id"], json!(ids[0]));
}

#[tokio::test]
async fn log_backend_writes_one_canonical_line_per_event() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs").join("events.jsonl");
    let body = format!(
        "[backends.log.audit]\npath = \"{}\"\n\n{}{}",
        path.display(),
        http_backend("notify", &rx.url("/hook"), ""),
        FAST_RETRY
    );
    let sc = start(body).await;
    let (status, answer) = sc
        .post(&json!([
            {"hook":"user_send_message","from":"alice@localhost/phone","to":"bob@localhost","type":"chat","body":"line\nbreak \"quoted\"","id":"m-1"},
            {"hook":"user_available","jid":"alice@localhost/phone","metadata":{"k":1}},
            {"hook":"unacknowledged_message","to":"bob@localhost/phone"},
        ]))
        .await;
    let ids = accepted_ids(status, &answer, 3);

    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 3 || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(text.ends_with('\n'), "every line is terminated: {text:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let got = rx.wait_for(3, WAIT).await;
    let http_bodies: HashSet<Vec<u8>> = got.iter().map(|r| r.body.to_vec()).collect();
    let mut logged = HashSet::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        logged.insert(v["id"].as_str().unwrap().to_owned());
        // the same canonical record the webhook got, byte for byte
        assert!(
            http_bodies.contains(line.as_bytes()),
            "log line differs from the webhook body: {line}"
        );
    }
    assert_eq!(logged, ids.into_iter().collect::<HashSet<_>>());
    let chat: Value = serde_json::from_str(lines.iter().find(|l| l.contains("\"chat\"")).unwrap()).unwrap();
    assert_eq!(chat["body"], "line\nbreak \"quoted\"");
}

#[tokio::test]
async fn health_and_ready_answer_200() {
    let rx = Receiver::start().await;
    let sc = start(http_backend("notify", &rx.url("/hook"), "")).await;
    let (status, body) = sc.get("/health").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    let (status, body) = sc.get("/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
}
