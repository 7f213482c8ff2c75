//! Giving memory back to the OS after many webhook subscriptions are
//! detached.
//!
//! A subscription's queue, backend and buffers are freed when it is
//! detached, but glibc's allocator keeps freed pages in its arenas, so a
//! sidecar that once held 5,000 subscriptions kept their RSS (about 100 MB)
//! long after all were gone. After detaches we ask it to return what is
//! free (`malloc_trim`): once, a second after the last detach of a burst,
//! so a script detaching thousands pays for one trim, not thousands.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set while a trim is scheduled.
static SCHEDULED: AtomicBool = AtomicBool::new(false);

/// How long after a detach the trim runs: detaches in a burst share it.
const SETTLE: Duration = Duration::from_secs(1);

/// Return freed memory to the OS shortly (call after freeing much of it).
pub fn trim_soon() {
    if SCHEDULED.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(SETTLE).await;
        SCHEDULED.store(false, Ordering::Release);
        // Walking the heap takes a while with a large one: off the workers.
        let _ = tokio::task::spawn_blocking(trim).await;
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases free memory at the allocator's
    // discretion; it takes no pointers and is thread-safe in glibc.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
