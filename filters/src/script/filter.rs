//! [`ScriptFilter`]: one compiled script in the chain.
//!
//! Compiled once; each event is a fresh call of `fn filter(event)` with an
//! empty scope, so nothing carries over from one event to the next and any
//! number of workers can run the same filter at once. The scope's storage
//! is kept per thread and emptied around every call, so a call does not
//! allocate it anew. Whatever goes wrong
//! in a call (a throw, a broken limit, a read-only field written, even a
//! panic inside the engine) becomes that event's `on_error` verdict,
//! counted and logged at a bounded rate.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use event_pusher_core::event::{EventBody, Unacked};
use event_pusher_core::{Event, Filter, Metadata, Verdict};
use rhai::{CallFnOptions, Dynamic, Engine, Scope, AST};

use super::event::ScriptEvent;
use super::log_limit::LogLimit;
use super::{deadline, sandbox, Limits, OnError, RegexCache};

/// The function every script defines.
const ENTRY: &str = "filter";

thread_local! {
    /// The scope calls on this thread use: empty between calls, its
    /// storage kept.
    static SCOPE: RefCell<Scope<'static>> = RefCell::new(Scope::new());
}

/// One failing filter logs at most once per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A script that did not compile: where (1-based, in the script's text) and
/// why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Why one call of `fn filter(event)` gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The call ran past [`deadline::BUDGET`] (Rhai says only "Script
    /// terminated").
    #[error("ran over its time budget of {budget:?} ({position})", budget = deadline::BUDGET)]
    OverBudget { position: rhai::Position },
    /// A throw, a broken limit, a read-only field written, a runtime error.
    #[error("{0}")]
    Failed(#[source] Box<rhai::EvalAltResult>),
    /// A bug in the engine; it costs the event its verdict, not the worker.
    #[error("the script engine panicked")]
    Panicked,
    /// `fn filter` returned something other than a boolean or nothing.
    #[error("fn filter returned {0}: return true (continue), false (stop) or nothing")]
    NotAVerdict(&'static str),
}

/// A compiled script filter.
pub struct ScriptFilter {
    name: String,
    engine: Engine,
    ast: AST,
    on_error: OnError,
    regexes: Arc<RegexCache>,
    errors: Arc<AtomicU64>,
    log: LogLimit,
}

impl std::fmt::Debug for ScriptFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptFilter")
            .field("name", &self.name)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl ScriptFilter {
    /// Compile `code`. `errors` is the filter's error counter (see
    /// [`crate::metrics`]).
    pub fn compile(
        name: &str,
        code: &str,
        limits: Limits,
        on_error: OnError,
        errors: Arc<AtomicU64>,
    ) -> Result<Self, CompileError> {
        let regexes = Arc::new(RegexCache::default());
        let engine = sandbox::engine(name, &limits, regexes.clone());
        let ast = engine.compile(code).map_err(|e| {
            let pos = e.position();
            CompileError {
                line: pos.line().unwrap_or(1),
                column: pos.position().unwrap_or(1),
                message: e.err_type().to_string(),
            }
        })?;
        if !ast.iter_functions().any(|f| f.name == ENTRY && f.params.len() == 1) {
            return Err(CompileError {
                line: 1,
                column: 1,
                message: "the script defines no `fn filter(event)`, which is called for each event".into(),
            });
        }
        Ok(ScriptFilter {
            name: name.to_owned(),
            engine,
            ast,
            on_error,
            regexes,
            errors,
            log: LogLimit::new(LOG_INTERVAL),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The patterns `matches` has compiled (for tests and introspection).
    pub fn regex_cache(&self) -> &RegexCache {
        &self.regexes
    }

    /// Events whose script call failed.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Run the script on `event`: its verdict, or why it failed. On failure
    /// the event is left as it came in.
    pub fn run(&self, event: &mut Event) -> Result<Verdict, ScriptError> {
        let lent = ScriptEvent::lend(std::mem::replace(event, placeholder()));
        let arg = lent.clone();
        // The engine is not expected to panic, but a bug there must cost one
        // event its verdict, not the worker.
        let outcome = match catch_unwind(AssertUnwindSafe(|| self.call(arg))) {
            Ok(Ok(value)) => verdict(value),
            Ok(Err(e)) => Err(describe(e)),
            Err(_) => Err(ScriptError::Panicked),
        };
        *event = lent.give_back(outcome.is_ok());
        outcome
    }

    fn call(&self, event: ScriptEvent) -> Result<Dynamic, Box<rhai::EvalAltResult>> {
        // An empty scope per call: no state between events. Top-level
        // statements are not run; only functions exist.
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        let run = |scope: &mut Scope<'static>| {
            scope.clear();
            let result = deadline::with_budget(|| {
                self.engine
                    .call_fn_with_options::<Dynamic>(options, scope, &self.ast, ENTRY, (event,))
            });
            scope.clear();
            result
        };
        SCOPE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scope) => run(&mut scope),
            // Only if a call on this thread were ever nested in another.
            Err(_) => run(&mut Scope::new()),
        })
    }

    fn failed(&self, event: &Event, error: &ScriptError) -> Verdict {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.log.admit() {
            tracing::warn!(
                filter = %self.name,
                event_id = %event.id,
                on_error = ?self.on_error,
                held_back,
                "script filter failed: {error}"
            );
        }
        match self.on_error {
            OnError::Continue => Verdict::Continue,
            OnError::Stop => Verdict::Stop,
        }
    }
}

impl Filter for ScriptFilter {
    fn apply(&self, event: &mut Event) -> Verdict {
        match self.run(event) {
            Ok(v) => v,
            Err(error) => self.failed(event, &error),
        }
    }

    /// A call may run up to its wall-clock budget.
    fn may_block(&self) -> bool {
        true
    }
}

/// Rhai's error, except for a call ended by the time budget, which Rhai
/// calls just "Script terminated".
fn describe(e: Box<rhai::EvalAltResult>) -> ScriptError {
    match e.unwrap_inner() {
        rhai::EvalAltResult::ErrorTerminated(_, pos) => ScriptError::OverBudget { position: *pos },
        _ => ScriptError::Failed(e),
    }
}

/// `true` or nothing continues, `false` stops.
fn verdict(value: Dynamic) -> Result<Verdict, ScriptError> {
    if value.is_unit() {
        return Ok(Verdict::Continue);
    }
    match value.as_bool() {
        Ok(true) => Ok(Verdict::Continue),
        Ok(false) => Ok(Verdict::Stop),
        Err(type_name) => Err(ScriptError::NotAVerdict(type_name)),
    }
}

/// Stands in for the event while the script holds it; allocates nothing.
fn placeholder() -> Event {
    Event {
        id: String::new(),
        body: EventBody::Unacked(Unacked {
            to: String::new(),
            from: None,
            body: None,
            message_id: None,
        }),
        timestamp: time::OffsetDateTime::UNIX_EPOCH,
        metadata: Metadata::new(),
    }
}
