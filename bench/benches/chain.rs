//! The chain on one core: hook call → event (translation, fresh ULID) →
//! three declarative filters → two backend claims. Target: ≥ 2,000,000
//! events/s. The hook call is the typed form the ingest handler reads from
//! the request bytes (`parse_calls`); `translate_value` is the same
//! translation from a `serde_json::Value` (form input, library users).
//!
//! Rows beside it break the path down, and `ingest_path` adds what the
//! ingest handler does around the chain for a single-call request (parse
//! the body, serialize the claimed event).
//!
//! Ends with `rate chain <events per second>` (the `full` case).

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput};
use event_pusher_bench::mix::{Mix, MixGen};
use event_pusher_bench::report::{table, thousands};
use event_pusher_bench::scenario::bench_chain;
use event_pusher_core::hook::{parse_calls, CallItem, Framing};
use event_pusher_core::HookTranslator;

const CASES: [(&str, &str); 5] = [
    ("full", "translate + 3 filters + 2 claims"),
    ("translate", "translate only"),
    ("translate_value", "translate only, from a serde_json::Value"),
    ("filters_claims", "clone event + 3 filters + 2 claims"),
    ("ingest_path", "parse body + translate + chain + to_json"),
];

fn benches(c: &mut Criterion) {
    let chain = bench_chain();
    let mut gen = MixGen::new(42, Mix::Standard);
    let calls = gen.calls(4096);
    let bodies: Vec<Vec<u8>> = calls.iter().map(|c| serde_json::to_vec(c).unwrap()).collect();
    let typed: Vec<CallItem<'_>> = bodies.iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
    let events: Vec<_> = calls.iter().map(|c| HookTranslator.translate(c).unwrap()).collect();
    let mut g = c.benchmark_group("chain");
    g.throughput(Throughput::Elements(1));

    let mut i = 0usize;
    g.bench_function("full", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let mut e = HookTranslator.translate(black_box(&typed[i])).unwrap();
            let out = chain.run(&mut e, &mut event_pusher_core::state_change::Changes::new());
            black_box((&e, out));
        })
    });
    g.bench_function("translate", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(HookTranslator.translate(black_box(&typed[i])).unwrap());
        })
    });
    g.bench_function("translate_value", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(HookTranslator.translate(black_box(&calls[i])).unwrap());
        })
    });
    g.bench_function("filters_claims", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let mut e = black_box(&events[i]).clone();
            let out = chain.run(&mut e, &mut event_pusher_core::state_change::Changes::new());
            black_box((&e, out));
        })
    });
    g.bench_function("ingest_path", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let parsed = parse_calls(black_box(&bodies[i]), Framing::Json).unwrap();
            for call in &parsed {
                let mut e = HookTranslator.translate(call).unwrap();
                let out = chain.run(&mut e, &mut event_pusher_core::state_change::Changes::new());
                if !out.claims.is_empty() {
                    black_box(e.to_json());
                }
            }
        })
    });
    g.finish();
}

fn criterion_home() -> PathBuf {
    std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("criterion")
        })
}

/// ns per event from criterion's saved estimates: the slope (what criterion
/// prints as `time`), else the mean.
fn mean_ns(case: &str) -> Option<f64> {
    let path = criterion_home()
        .join("chain")
        .join(case)
        .join("new")
        .join("estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| v["mean"]["point_estimate"].as_f64())
}

fn main() {
    // Pin where criterion keeps its results, so they can be read back.
    let home = criterion_home();
    std::env::set_var("CRITERION_HOME", &home);
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();

    // Only `cargo bench` (which passes --bench) measures; `--list` and test
    // mode (cargo test / nextest) must print nothing else.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        return;
    }
    let mut rows = Vec::new();
    for (case, what) in CASES {
        if let Some(ns) = mean_ns(case) {
            rows.push(vec![
                case.to_owned(),
                what.to_owned(),
                format!("{ns:.0}"),
                thousands(1e9 / ns),
            ]);
        }
    }
    if rows.is_empty() {
        return;
    }
    table(
        "chain: one core, events/s (criterion estimate)",
        &["case", "what", "ns/event", "events/s"],
        &rows,
    );
    println!("  targets: `full` >= 3,000,000 events/s, `ingest_path` >= 2,000,000");
    if let Some(ns) = mean_ns("full") {
        println!("rate chain {:.0}", 1e9 / ns);
    }
    if let Some(ns) = mean_ns("ingest_path") {
        println!("rate ingest-path {:.0}", 1e9 / ns);
    }
}
