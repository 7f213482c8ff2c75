//! A wall-clock budget per script call, behind `max_operations`.
//!
//! Rhai counts operations, not their cost: `s + "x"` on a 1 MiB string is
//! one operation that copies a megabyte, so within `max_operations` a
//! script could still hold a worker for seconds. The engine's progress hook
//! checks the calling thread's deadline every few thousand operations and
//! ends the call once it has passed. The deadline is per thread because a
//! call runs on one thread and one engine serves every worker.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Longest one call of `fn filter(event)` may run.
pub const BUDGET: Duration = Duration::from_millis(500);

/// Check the clock once per this many operations (a power of two; reading
/// the clock costs about as much as an operation).
const CHECK_EVERY: u64 = 4096;

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Run `f` with the budget set for this thread.
pub fn with_budget<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(Option<Instant>);
    impl Drop for Reset {
        fn drop(&mut self) {
            DEADLINE.with(|d| d.set(self.0));
        }
    }
    let _reset = Reset(DEADLINE.with(|d| d.replace(Some(Instant::now() + BUDGET))));
    f()
}

/// For the engine's progress hook: `true` once the running call is over
/// its budget.
pub fn passed(operations: u64) -> bool {
    operations & (CHECK_EVERY - 1) == 0 && DEADLINE.with(|d| d.get()).is_some_and(|at| Instant::now() >= at)
}
