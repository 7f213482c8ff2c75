//! Per-event cost of a script filter against the declarative filters doing
//! the same work: stop chat messages whose body matches a spam pattern, tag
//! users of a VIP domain. The script is the shipped example
//! (`examples/filters/moderation.rhai`).
//!
//! Ends with `ratio script/declarative <x>` (time per event, the event
//! clone included in both).

use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use event_pusher_core::{Event, Filter, HookTranslator, Verdict};
use event_pusher_filters::script::Limits;
use event_pusher_filters::{DeclarativeFilter, FilterConfig, OnError, ScriptFilter};
use serde_json::json;

const SCRIPT: &str = include_str!("../../examples/filters/moderation.rhai");

fn events() -> Vec<Event> {
    let calls = [
        json!({"hook":"user_send_message","from":"alice@example.org/phone","to":"bob@example.org","type":"chat","body":"see you at eight"}),
        json!({"hook":"user_send_message","from":"eve@example.org/x","to":"bob@example.org","type":"chat","body":"free money at the casino"}),
        json!({"hook":"user_send_message","from":"boss@vip.example.com/desk","to":"bob@example.org","type":"chat","body":"status?"}),
        json!({"hook":"user_available","jid":"carol@vip.example.com/phone"}),
        json!({"hook":"unset_presence","jid":"dave@example.org/pc"}),
    ];
    calls
        .iter()
        .map(|c| HookTranslator.translate(c).expect("valid hook call"))
        .collect()
}

/// The declarative equivalent of the script: a stop filter and a tag
/// filter (chat `from` only: the declarative filter has no "from or jid").
fn declarative() -> Vec<DeclarativeFilter> {
    let spam: FilterConfig = toml::from_str(
        "name='spam'\nmatch={event='chat', body_regex='(?i)\\b(viagra|casino|free money)\\b'}\naction='stop'",
    )
    .expect("spam filter");
    let vip: FilterConfig =
        toml::from_str("name='vip'\nmatch={from_domain='vip.example.com'}\nmetadata={tier=1, vip=true}")
            .expect("vip filter");
    vec![DeclarativeFilter::new(&spam), DeclarativeFilter::new(&vip)]
}

fn run_declarative(filters: &[DeclarativeFilter], e: &mut Event) -> Verdict {
    for f in filters {
        if f.apply(e) == Verdict::Stop {
            return Verdict::Stop;
        }
    }
    Verdict::Continue
}

fn benches(c: &mut Criterion) {
    let events = events();
    let script = ScriptFilter::compile(
        "moderation",
        SCRIPT,
        Limits::default(),
        OnError::Continue,
        Arc::new(AtomicU64::new(0)),
    )
    .expect("example script compiles");
    let decl = declarative();
    let mut g = c.benchmark_group("filter");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("declarative", |b| {
        b.iter(|| {
            i = (i + 1) % events.len();
            let mut e = events[i].clone();
            black_box(run_declarative(&decl, &mut e));
        })
    });
    g.bench_function("script", |b| {
        b.iter(|| {
            i = (i + 1) % events.len();
            let mut e = events[i].clone();
            black_box(script.apply(&mut e));
        })
    });
    g.finish();

    // A plain timed loop over the same mix, for the ratio line. Only under
    // `cargo bench` (which passes `--bench`): `cargo test` and nextest run
    // bench targets once as a smoke test, and nextest's `--list` must see
    // nothing but the benchmark names.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let per_event = |f: &dyn Fn(&mut Event) -> Verdict| {
        let n = 100_000;
        let started = Instant::now();
        for k in 0..n {
            let mut e = events[k % events.len()].clone();
            black_box(f(&mut e));
        }
        started.elapsed().as_nanos() as f64 / n as f64
    };
    let d = per_event(&|e| run_declarative(&decl, e));
    let s = per_event(&|e| script.apply(e));
    println!("per event: declarative {d:.0} ns, script {s:.0} ns");
    println!("ratio script/declarative {:.1}", s / d);
    assert_eq!(script.errors(), 0, "the script failed during the benchmark");
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
