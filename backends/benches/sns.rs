//! Events per second into SNS (moto_server), one event per `Publish`
//! against up to ten per `PublishBatch`, in one run.
//!
//! `cargo bench -p event-pusher-backends --no-default-features --features sns --bench sns`
//!
//! Both modes run like the delivery engine does: 32 calls in flight (the
//! default `concurrency`), each a single event or a batch of `max_batch()`
//! events for distinct users. The topic has no subscribers, so what is
//! measured is the client, the wire and moto's intake. moto is a Python
//! server and is the bottleneck here; the ratio between the modes is the
//! useful number, not the absolute rates, which real SNS would raise.
//!
//! `SNS_BENCH_EVENTS` sets the number of events per mode (default 3000).

#[path = "../tests/sns_support/mod.rs"]
mod sns_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_pusher_backends::sns::{SnsBackend, SnsConfig};
use event_pusher_core::{Backend, Delivery, HookTranslator};
use sns_support::{create_topic, moto, sns_admin, unique, ACCOUNT, REGION};
use tokio::sync::Semaphore;

const IN_FLIGHT: usize = 32;

fn backend(topic: &str, batch: bool) -> Arc<SnsBackend> {
    let text = format!(
        "region = \"{REGION}\"\naccount_id = \"{ACCOUNT}\"\nendpoint_url = \"{}\"\naccess_key_id = \"bench\"\n\
         secret_access_key = \"bench\"\npm_messages_topic = \"{topic}\"\nbatch = {batch}\n",
        moto().url()
    );
    let config: SnsConfig = match toml::from_str(&text) {
        Ok(c) => c,
        Err(e) => panic!("bench config: {e}"),
    };
    match SnsBackend::new("bench", &config) {
        Ok(b) => Arc::new(b),
        Err(e) => panic!("bench backend: {e}"),
    }
}

fn deliveries(n: usize) -> Vec<Delivery> {
    (0..n)
        .map(|i| {
            let call = serde_json::json!({"hook": "user_send_message", "from": format!("user{i}@localhost/r"),
                "to": "peer@localhost", "type": "chat", "body": format!("message {i}"),
                "metadata": {"source": "bench", "n": i}});
            let event = match HookTranslator.translate(&call) {
                Ok(e) => e,
                Err(e) => panic!("bench event: {e}"),
            };
            let json = Bytes::from(event.to_json());
            Delivery {
                event,
                json,
                attempt: 1,
                seq: 0,
                target: None,
            }
        })
        .collect()
}

/// Deliver everything with `IN_FLIGHT` calls at once; returns the time taken
/// and how many events failed.
async fn run(backend: Arc<SnsBackend>, events: Vec<Delivery>) -> (Duration, usize) {
    let per_call = backend.max_batch();
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for chunk in events.chunks(per_call) {
        let chunk = chunk.to_vec();
        let b = backend.clone();
        let permit = match gate.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        tasks.spawn(async move {
            let results = b.deliver(&chunk).await;
            drop(permit);
            results.iter().filter(|r| r.is_err()).count()
        });
    }
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        failed += done.unwrap_or(per_call);
    }
    (start.elapsed(), failed)
}

fn main() {
    // `cargo bench` passes `--bench`. Test runners also start bench targets
    // (`cargo test --all-targets`, nextest's `--list`): there is nothing to
    // test here, and a 30-second run against moto does not belong in them.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("sns bench: skipped; run it with `cargo bench -p event-pusher-backends --bench sns`");
        return;
    }
    let n: usize = std::env::var("SNS_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    rt.block_on(async {
        let topic = unique("bench");
        create_topic(&sns_admin().await, &topic).await;
        println!(
            "sns bench: {n} events per mode, {IN_FLIGHT} calls in flight, moto_server on port {}",
            moto().port
        );
        for (label, batch) in [
            ("Publish (batch = false)", false),
            ("PublishBatch (batch = true)", true),
        ] {
            let b = backend(&topic, batch);
            if let Err(e) = b.start().await {
                panic!("start: {e}");
            }
            // Warm the connection pool and moto up.
            let _ = run(b.clone(), deliveries(IN_FLIGHT * b.max_batch())).await;
            let (took, failed) = run(b.clone(), deliveries(n)).await;
            let calls = n.div_ceil(b.max_batch());
            println!(
                "  {label:<28} {:>8.0} events/s  ({n} events, {calls} calls, {:.2} s, {failed} failed)",
                n as f64 / took.as_secs_f64(),
                took.as_secs_f64()
            );
        }
    });
}
