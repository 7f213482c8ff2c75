//! Unit tests of script filters against real events and the real engine.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_pusher_core::{Event, Filter, HookTranslator, MetaValue, Verdict};
use serde_json::json;

use super::{Limits, OnError, ScriptFilter};

fn compile(code: &str) -> ScriptFilter {
    compile_with(code, Limits::default(), OnError::Continue)
}

fn compile_with(code: &str, limits: Limits, on_error: OnError) -> ScriptFilter {
    ScriptFilter::compile("t", code, limits, on_error, Arc::new(AtomicU64::new(0)))
        .unwrap_or_else(|e| panic!("compile: {e:?}"))
}

fn chat(from: &str, body: &str) -> Event {
    HookTranslator
        .translate(&json!({"hook":"user_send_message","from":from,"to":"bob@x/pc","type":"chat","body":body,"id":"m-1","metadata":{"keep":"me"}}))
        .unwrap()
}

fn presence(jid: &str) -> Event {
    HookTranslator
        .translate(&json!({"hook":"user_available","jid":jid}))
        .unwrap()
}

#[test]
fn reads_fields_and_writes_metadata_of_each_type() {
    let f = compile(
        r#"
        fn filter(event) {
            event.metadata.s = event.from + "|" + event.to + "|" + event.type + "|" + event.direction;
            event.metadata.i = event.body.len();
            event.metadata.f = 1.5;
            event.metadata.b = event.jid == ();
            event.metadata["with-dash"] = event.message_id;
            event.metadata.kept = event.metadata.keep;
        }
        "#,
    );
    let mut e = chat("alice@x/phone", "hello");
    let before = e.clone();
    assert_eq!(f.apply(&mut e), Verdict::Continue);
    assert_eq!(
        e.metadata["s"],
        MetaValue::String("alice@x/phone|bob@x/pc|chat|in".into())
    );
    assert_eq!(e.metadata["i"], MetaValue::Int(5));
    assert_eq!(e.metadata["f"], MetaValue::Float(1.5));
    assert_eq!(e.metadata["b"], MetaValue::Bool(true));
    assert_eq!(e.metadata["with-dash"], MetaValue::String("m-1".into()));
    assert_eq!(e.metadata["kept"], MetaValue::String("me".into()));
    // Everything but metadata is as it was.
    assert_eq!(
        (e.id.clone(), e.body.clone(), e.timestamp),
        (before.id, before.body, before.timestamp)
    );
    assert_eq!(f.errors(), 0);
}

#[test]
fn returns_decide_continue_or_stop() {
    let f = compile(r#"fn filter(event) { if event.event == "presence" { return false; } true }"#);
    assert_eq!(f.apply(&mut presence("a@x/r")), Verdict::Stop);
    assert_eq!(f.apply(&mut chat("a@x", "hi")), Verdict::Continue);
    let nothing = compile("fn filter(event) { }");
    assert_eq!(nothing.apply(&mut chat("a@x", "hi")), Verdict::Continue);
    let bad = compile("fn filter(event) { 42 }");
    assert!(bad
        .run(&mut chat("a@x", "hi"))
        .unwrap_err()
        .to_string()
        .contains("returned i64"));
}

#[test]
fn read_only_field_change_gets_on_error_and_leaves_event_untouched() {
    let code = r#"fn filter(event) { event.metadata.x = 1; event.body = "changed"; false }"#;
    let f = compile(code);
    let mut e = chat("a@x", "hi");
    let before = e.clone();
    let err = f.run(&mut e).unwrap_err().to_string();
    assert!(err.contains("event.body is read-only"), "{err}");
    assert_eq!(e, before, "a failed call must not change the event");
    assert_eq!(f.apply(&mut e), Verdict::Continue);
    assert_eq!(f.errors(), 1);
    let stop = compile_with(code, Limits::default(), OnError::Stop);
    assert_eq!(stop.apply(&mut chat("a@x", "hi")), Verdict::Stop);
    assert_eq!(stop.errors(), 1);
}

#[test]
fn bad_metadata_values_are_errors() {
    for (code, want) in [
        (
            "event.metadata.a = [1]",
            "metadata `a` must be a string, integer, float or boolean",
        ),
        ("event.metadata.a = #{x: 1}", "metadata `a`"),
        ("event.metadata.a = ()", "metadata `a`"),
        ("event.metadata = 5", "event.metadata must be an object map"),
        ("event.colour", "event has no field `colour`"),
    ] {
        let f = compile(&format!("fn filter(event) {{ {code}; }}"));
        let err = f.run(&mut chat("a@x", "hi")).unwrap_err().to_string();
        assert!(err.contains(want), "{code}: {err}");
    }
    // Replacing the whole table is allowed.
    let f = compile("fn filter(event) { event.metadata = #{only: true}; }");
    let mut e = chat("a@x", "hi");
    f.apply(&mut e);
    assert_eq!(e.metadata.len(), 1);
    assert_eq!(e.metadata["only"], MetaValue::Bool(true));
}

#[test]
fn infinite_loop_is_cut_by_max_operations() {
    let limits = Limits {
        max_operations: 10_000,
        ..Limits::default()
    };
    let f = compile_with("fn filter(event) { loop { } }", limits, OnError::Stop);
    let started = Instant::now();
    let err = f.run(&mut chat("a@x", "hi")).unwrap_err().to_string();
    assert!(err.contains("Too many operations"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(f.apply(&mut chat("a@x", "hi")), Verdict::Stop);
}

#[test]
fn data_size_and_depth_limits() {
    let limits = Limits {
        max_string_size: 1000,
        max_array_size: 100,
        max_map_size: 100,
        ..Limits::default()
    };
    for (code, want) in [
        (r#"let s = "x"; loop { s += s; }"#, "Length of string"),
        ("let a = []; loop { a.push(1); }", "Size of array"),
        (
            "let m = #{}; let i = 0; loop { let n = #{}; n[`k${i}`] = i; m += n; i += 1; }",
            "Size of object map",
        ),
        (r#""x".pad(1000000000, "y")"#, "Length of string"),
        ("blob(1 << 40)", "BLOB too large"),
        ("deep(0)", "Stack overflow"),
    ] {
        let f = compile_with(
            &format!("fn deep(n) {{ deep(n + 1) }}\nfn filter(event) {{ {code}; }}"),
            limits,
            OnError::Continue,
        );
        let err = f.run(&mut chat("a@x", "hi")).unwrap_err().to_string();
        assert!(err.contains(want), "{code}: {err}");
    }
}

#[test]
fn throw_is_an_error_with_its_message() {
    let f = compile(r#"fn filter(event) { throw "no thanks"; }"#);
    let err = f.run(&mut chat("a@x", "hi")).unwrap_err().to_string();
    assert!(err.contains("no thanks"), "{err}");
}

#[test]
fn no_clock_file_eval_sleep_or_import() {
    for code in [
        "timestamp()",
        "sleep(10)",
        "exit(1)",
        r#"eval("1")"#,
        r#"import "x" as y;"#,
        r#"open_file("/etc/passwd")"#,
    ] {
        let compiled = ScriptFilter::compile(
            "t",
            &format!("fn filter(event) {{ {code}; }}"),
            Limits::default(),
            OnError::Continue,
            Arc::new(AtomicU64::new(0)),
        );
        match compiled {
            Err(_) => {}
            Ok(f) => {
                let started = Instant::now();
                assert!(f.run(&mut chat("a@x", "hi")).is_err(), "{code} ran");
                assert!(started.elapsed() < Duration::from_secs(5), "{code} blocked");
            }
        }
    }
}

#[test]
fn helpers_split_jids_and_match_with_a_cached_regex() {
    let f = compile(
        r#"
        fn filter(event) {
            event.metadata.bare = bare(event.from);
            event.metadata.domain = domain(event.from);
            event.metadata.resource = resource(event.from);
            event.metadata.spam = matches(event.body ?? "", "(?i)viagra");
            event.metadata.spam2 = matches(event.body, "(?i)viagra");
        }
        "#,
    );
    let mut e = chat("alice@vip.example.com/phone", "Buy VIAGRA now");
    f.apply(&mut e);
    assert_eq!(e.metadata["bare"], MetaValue::String("alice@vip.example.com".into()));
    assert_eq!(e.metadata["domain"], MetaValue::String("vip.example.com".into()));
    assert_eq!(e.metadata["resource"], MetaValue::String("phone".into()));
    assert_eq!(e.metadata["spam"], MetaValue::Bool(true));
    for _ in 0..10 {
        f.apply(&mut chat("a@x", "hello"));
    }
    assert_eq!(f.regex_cache().len(), 1, "one pattern, compiled once");
    let bad = compile(r#"fn filter(event) { matches("x", "(") }"#);
    assert!(bad
        .run(&mut chat("a@x", "hi"))
        .unwrap_err()
        .to_string()
        .contains("invalid regular expression"));
}

#[test]
fn design_example_runs() {
    let f = compile(
        r#"
        fn filter(event) {
            if event.event == "chat" && matches(event.body ?? "", "(?i)viagra") { return false; }
            if domain(event.from ?? event.jid) == "vip.example.com" { event.metadata.tier = 1; }
            true
        }
        "#,
    );
    assert_eq!(f.apply(&mut chat("a@x", "cheap viagra")), Verdict::Stop);
    let mut vip = presence("boss@vip.example.com/desk");
    assert_eq!(f.apply(&mut vip), Verdict::Continue);
    assert_eq!(vip.metadata["tier"], MetaValue::Int(1));
    // An unacked event has neither `from` nor `jid`: `domain(())` is `()`,
    // not an error (it used to hit on_error for every unacked event).
    let mut unacked = HookTranslator
        .translate(&json!({"hook":"unacknowledged_message","to":"bob@x/pc"}))
        .unwrap();
    assert_eq!(f.apply(&mut unacked), Verdict::Continue);
    assert!(unacked.metadata.is_empty());
    assert_eq!(f.errors(), 0);
}

#[test]
fn helpers_take_a_missing_field() {
    let f = compile(
        r#"
        fn filter(event) {
            if bare(event.jid) != () || resource(event.jid) != () || domain(event.jid) != () { throw "not unit"; }
            !matches(event.jid, "x")
        }
        "#,
    );
    assert_eq!(f.apply(&mut chat("a@x", "hi")), Verdict::Continue);
    assert_eq!(f.errors(), 0);
}

#[test]
fn no_state_between_events_and_usable_from_many_threads() {
    let f = Arc::new(compile(
        r#"
        fn filter(event) {
            let seen = event.metadata.seen ?? 0;
            event.metadata.seen = seen + 1;
        }
        "#,
    ));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let f = f.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let mut e = chat("a@x", "hi");
                    f.apply(&mut e);
                    assert_eq!(e.metadata["seen"], MetaValue::Int(1));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn compile_errors_have_positions() {
    let err = |code: &str| {
        ScriptFilter::compile(
            "t",
            code,
            Limits::default(),
            OnError::Continue,
            Arc::new(AtomicU64::new(0)),
        )
        .unwrap_err()
    };
    let e = err("fn filter(event) {\n    let x = ;\n}");
    assert_eq!((e.line, e.column), (2, 13), "{e:?}");
    let e = err("fn filter(event) {\n  undefined_var\n}");
    assert_eq!(e.line, 2, "{e:?}");
    assert!(e.message.contains("undefined_var"), "{e:?}");
    let e = err("fn other(x) { true }");
    assert!(e.message.contains("fn filter(event)"), "{e:?}");
}

#[test]
fn costly_operations_are_cut_by_the_time_budget() {
    // Few operations, each copying half a megabyte: max_operations alone
    // would let this run for minutes.
    let limits = Limits {
        max_operations: u64::MAX,
        ..Limits::default()
    };
    let f = compile_with(
        r#"fn filter(event) { let s = "x"; s.pad(500000, "y"); loop { let t = s + "z"; } }"#,
        limits,
        OnError::Continue,
    );
    let started = Instant::now();
    let err = f.run(&mut chat("a@x", "hi")).unwrap_err().to_string();
    assert!(err.contains("time budget"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn enumerated_fields_read_as_their_words() {
    let f = compile(
        r#"
        fn filter(event) {
            event.metadata.what = `${event.event}|${event.type ?? "-"}|${event.direction ?? "-"}|${event.status ?? "-"}`;
        }
        "#,
    );
    let mut offline = HookTranslator
        .translate(&json!({"hook":"unset_presence","jid":"a@x/r"}))
        .unwrap();
    let mut unacked = HookTranslator
        .translate(&json!({"hook":"unacknowledged_message","to":"bob@x/pc"}))
        .unwrap();
    let mut muc = HookTranslator
        .translate(&json!({"hook":"user_send_message","from":"a@x/r","to":"room@muc.x","type":"groupchat","body":"hi"}))
        .unwrap();
    for (e, want) in [
        (&mut chat("a@x/r", "hi"), "chat|chat|in|-"),
        (&mut presence("a@x/r"), "presence|-|-|online"),
        (&mut offline, "presence|-|-|offline"),
        (&mut unacked, "unacked|-|-|-"),
        (&mut muc, "chat|groupchat|in|-"),
    ] {
        assert_eq!(f.apply(e), Verdict::Continue);
        assert_eq!(e.metadata["what"], MetaValue::String(want.into()));
    }
    assert_eq!(f.errors(), 0);
}

#[test]
fn errors_are_typed() {
    let bad = compile("fn filter(event) { 42 }");
    assert!(matches!(
        bad.run(&mut chat("a@x", "hi")),
        Err(super::ScriptError::NotAVerdict("i64"))
    ));
    let throws = compile(r#"fn filter(event) { throw "no"; }"#);
    match throws.run(&mut chat("a@x", "hi")) {
        Err(e @ super::ScriptError::Failed(_)) => {
            assert!(std::error::Error::source(&e).is_some(), "Rhai's error is the source")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_pattern_is_shared_not_copied() {
    // A copied `Regex` starts with an empty match cache; the cache hands
    // out the one compiled instance.
    let cache = super::RegexCache::default();
    let a = cache.get("(?i)viagra").unwrap();
    let b = cache.get("(?i)viagra").unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}
