//! `GET /v1/dead-letters` in pages: `limit`, `after`, `order`, the
//! `X-Next-After` and `Link` headers, and the 400s naming the bad
//! parameter; and `dlq list --limit/--after` printing the next cursor.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{chat, fast_retry, post_ok, wait_backend};
use support::{http_backend, run_cli, Answer, Options, Receiver, Sidecar};

async fn with_dead_letters(n: usize) -> (Sidecar, Receiver, Vec<String>) {
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(500));
    let body = format!(
        "{}{}",
        http_backend("notify", &rx.url("/hook"), ""),
        fast_retry("notify", 1)
    );
    let sc = Sidecar::start(Options {
        body,
        ..Default::default()
    })
    .await;
    sc.wait_ready().await;
    let mut ids = Vec::new();
    // One request per event: sequence numbers follow the posting order.
    for i in 0..n {
        ids.extend(post_ok(&sc, &chat("alice@localhost", &format!("m{i}"))).await);
    }
    let row = wait_backend(&sc, "notify", Duration::from_secs(30), |r| r["dead_letters"] == n).await;
    assert_eq!(row["dead_letters"], n, "{row}");
    (sc, rx, ids)
}

struct Answered {
    status: u16,
    body: Value,
    next: Option<String>,
    link: Option<String>,
}

async fn get(sc: &Sidecar, query: &str) -> Answered {
    let r = reqwest::get(format!("{}/v1/dead-letters?{query}", sc.url))
        .await
        .expect("get");
    let header = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (next, link) = (header("x-next-after"), header("link"));
    Answered {
        status: r.status().as_u16(),
        body: r.json().await.unwrap_or(Value::Null),
        next,
        link,
    }
}

fn ids_of(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Every page of a listing, following `X-Next-After`.
async fn all_pages(sc: &Sidecar, base: &str) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("{base}&after={a}"),
            None => base.to_owned(),
        };
        let a = get(sc, &q).await;
        assert_eq!(a.status, 200, "{q}: {}", a.body);
        let page = ids_of(&a.body);
        sizes.push(page.len());
        ids.extend(page);
        match a.next {
            Some(n) => {
                let link = a.link.expect("Link with X-Next-After");
                assert!(
                    link.contains("rel=\"next\"") && link.contains(&format!("after={n}")),
                    "{link}"
                );
                after = Some(n);
            }
            None => {
                assert!(a.link.is_none());
                return (ids, sizes);
            }
        }
    }
}

#[tokio::test]
async fn dead_letters_page_both_ways_and_refuse_bad_parameters() {
    let (sc, _rx, posted) = with_dead_letters(25).await;

    let (asc, sizes) = all_pages(&sc, "backend=http.notify&limit=10").await;
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(asc, posted, "oldest first by default");

    let (desc, sizes) = all_pages(&sc, "limit=10&order=desc").await;
    assert_eq!(sizes, [10, 10, 5]);
    let mut reversed = posted.clone();
    reversed.reverse();
    assert_eq!(desc, reversed, "newest first");

    // Exactly one page: no cursor.
    let a = get(&sc, "limit=25").await;
    assert_eq!(ids_of(&a.body).len(), 25);
    assert!(a.next.is_none());
    // Default limit holds all 25.
    assert_eq!(ids_of(&get(&sc, "").await.body), posted);

    for (q, names) in [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=ten", "limit"),
        ("order=sideways", "order"),
        ("after=01ARZ3NDEKTSV4RRFFQ69G5FAV", "after"),
    ] {
        let a = get(&sc, q).await;
        assert_eq!(a.status, 400, "{q}: {}", a.body);
        let msg = a.body["error"].as_str().unwrap_or_default();
        assert!(msg.starts_with(names), "{q}: {msg}");
    }

    // The CLI pages the same way and prints the cursor.
    let config = support::path_str(&sc.config);
    let out = run_cli(&["dlq", "list", "--config", &config, "--limit", "10"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains(&posted[0]) && !out.stdout.contains(&posted[10]),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&format!("--after {}", posted[9])), "{}", out.stdout);
    let out = run_cli(
        &[
            "dlq",
            "list",
            "--config",
            &config,
            "--limit",
            "10",
            "--after",
            &posted[19],
        ],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains(&posted[24]) && !out.stdout.contains(&posted[19]),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("--after"),
        "last page has no cursor: {}",
        out.stdout
    );
}
