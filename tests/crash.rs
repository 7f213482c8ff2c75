//! Nothing accepted is lost: kill -9 right after 202, or SIGTERM in the
//! middle of traffic, then a restart delivers every accepted event.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::{free_port, http_backend, Options, Receiver, Sidecar};

const WAIT: Duration = Duration::from_secs(30);

/// An HTTP backend posting to a port nobody listens on yet, retrying fast
/// and (for the length of a test) forever.
fn down_backend(port: u16) -> String {
    http_backend("notify", &format!("http://127.0.0.1:{port}/hook"), "")
        + "[backends.http.notify.retry]\nmax_attempts = 10000\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n"
}

fn ids_of(answer: &Value) -> Vec<String> {
    answer["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Wait until the receiver has every id in `want`; panic listing the missing.
async fn expect_all_delivered(rx: &Receiver, want: &HashSet<String>, sc: &Sidecar) {
    let ok = support::eventually(WAIT, || {
        let got: HashSet<String> = rx
            .received()
            .iter()
            .filter_map(|r| r.json()["id"].as_str().map(str::to_owned))
            .collect();
        want.is_subset(&got)
    })
    .await;
    let got: HashSet<String> = rx
        .received()
        .iter()
        .filter_map(|r| r.json()["id"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = want.difference(&got).collect();
    assert!(
        ok,
        "{} of {} accepted events never arrived: {missing:?}\n{}",
        missing.len(),
        want.len(),
        sc.stderr()
    );
    // Nothing arrives that was never accepted.
    assert!(
        got.is_subset(want),
        "unexpected deliveries: {:?}",
        got.difference(want).collect::<Vec<_>>()
    );
    for r in rx.received() {
        assert_eq!(
            r.header("webhook-id").as_deref(),
            r.json()["id"].as_str(),
            "a stable id through the restart"
        );
    }
}

#[tokio::test]
async fn kill_9_right_after_202_loses_nothing() {
    let port = free_port();
    let mut sc = Sidecar::start(Options {
        body: down_backend(port),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;

    let mut accepted = Vec::new();
    for i in 0..5 {
        let (status, answer) = sc
            .post(
                &json!({"hook":"user_send_message","from":format!("u{i}@localhost/r"),"to":"bob@localhost",
                          "type":"chat","body":format!("single {i}"),"id":format!("s-{i}")}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        accepted.extend(ids_of(&answer));
    }
    let array: Vec<Value> = (0..20)
        .map(|i| json!({"hook":"user_available","jid":format!("p{i}@localhost/r")}))
        .collect();
    let (status, answer) = sc.post(&json!(array)).await;
    assert_eq!(status, 202, "{answer}");
    accepted.extend(ids_of(&answer));
    let ndjson: String = (0..10)
        .map(|i| format!("{{\"hook\":\"unacknowledged_message\",\"to\":\"q{i}@localhost/r\"}}\n"))
        .collect();
    let (status, answer, _) = sc.post_raw("application/x-ndjson", ndjson.into_bytes()).await;
    assert_eq!(status, 202, "{answer}");
    accepted.extend(ids_of(&answer));
    sc.kill9();

    let want: HashSet<String> = accepted.into_iter().collect();
    assert_eq!(want.len(), 35);
    sc.spawn().await;
    // Up after the sidecar, so the restarted queues meet a refusing
    // endpoint first and must retry.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rx = Receiver::start_on(port).await;
    expect_all_delivered(&rx, &want, &sc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_0_and_keeps_every_accepted_event() {
    let port = free_port();
    let mut sc = Sidecar::start(Options {
        body: down_backend(port),
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;

    // Posters keep sending while SIGTERM arrives; whatever got a 202 must be
    // delivered later, whatever did not may be lost.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let url = format!("{}/v1/events", sc.url);
    let mut posters = Vec::new();
    for p in 0..4 {
        let accepted = accepted.clone();
        let url = url.clone();
        posters.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut refused = 0;
            for i in 0.. {
                let call = json!({"hook":"user_send_message","from":format!("p{p}@localhost"),"to":"bob@localhost",
                                  "body":format!("{p}-{i}")});
                match client.post(&url).json(&call).send().await {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let v: Value = r.json().await.expect("202 body");
                        accepted.lock().unwrap().extend(ids_of(&v));
                    }
                    Ok(r) => {
                        let status = r.status().as_u16();
                        assert_eq!(
                            status,
                            503,
                            "while shutting down: {}",
                            r.text().await.unwrap_or_default()
                        );
                        refused += 1;
                    }
                    Err(_) => refused += 1,
                }
                if refused > 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    support::eventually(Duration::from_secs(5), || accepted.lock().unwrap().len() >= 20).await;
    let before = accepted.lock().unwrap().len();
    assert!(before > 0, "nothing was accepted before SIGTERM");
    let code = tokio::task::block_in_place(|| sc.sigterm());
    assert_eq!(code, Some(0), "SIGTERM exit code\n{}", sc.stderr());
    for p in posters {
        p.await.expect("poster");
    }

    let want: HashSet<String> = accepted.lock().unwrap().iter().cloned().collect();
    eprintln!("{before} accepted before SIGTERM, {} in all", want.len());
    let rx = Receiver::start_on(port).await;
    sc.spawn().await;
    expect_all_delivered(&rx, &want, &sc).await;
}
