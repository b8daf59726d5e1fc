//! fork(): a child process can go on using RCU, with its workers re-created.
//!
//! After `fork()` the child has one thread — a copy of the forking one — and copies of every
//! lock, queue and registry, some of them mid-update by threads that no longer exist. rcu-core
//! registers `pthread_atfork` handlers (liburcu offers `call_rcu_before_fork` /
//! `call_rcu_after_fork_child` to call by hand; folly registers AtFork handlers):
//!
//! * **prepare** takes the global registry lock and, per domain, the short-held locks that
//!   guard registries and queues, so nothing is copied mid-update. The long-held locks (a
//!   grace-period driver's, the invoker's, the barrier's) are not taken — the forking thread
//!   may be the reader a driver waits for, or a callback the invoker runs — and are
//!   [`ForkLock`](crate::forklock::ForkLock)s instead, reset in the child.
//! * **parent** releases everything.
//! * **child** forgets everything that belonged to other threads: their reader records (a
//!   parent thread inside a read section must not hold up the child's grace periods), their
//!   callback queues (adopted by the default queue, so their callbacks run in the child too),
//!   a barrier in flight (its sentinels are unlinked), the worker threads (started again on
//!   demand), and the SRCU read counts of other threads.
//!
//! Callbacks a parent worker was invoking at the moment of the fork are not run in the child.

use crate::ops::Held;
use crate::registry::{self, Table};
use std::cell::RefCell;
use std::sync::{MutexGuard, Once};

static HANDLERS: Once = Once::new();

thread_local! {
    static HELD: RefCell<Option<(MutexGuard<'static, Table>, Vec<Held>)>> =
        const { RefCell::new(None) };
}

/// Register the fork handlers (once per process, when the first domain is created).
pub(crate) fn ensure_handlers() {
    HANDLERS.call_once(|| {
        // SAFETY: the handlers are `extern "C" fn()` with static lifetime.
        let r = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if r != 0 {
            tracing::warn!(
                target: "rcu_core",
                "pthread_atfork failed ({r}); a forked child must not use RCU"
            );
        }
    });
}

/// Keep a guard until the fork completes.
///
/// # Safety
///
/// The guarded lock must outlive the fork handlers' use of it: it belongs to a domain whose
/// slot is published in the registry table, whose lock the fork handlers hold throughout
/// (a domain unpublishes itself under that lock before it is freed).
pub(crate) unsafe fn hold<T: 'static>(g: MutexGuard<'_, T>) -> Held {
    // SAFETY: lifetime erasure only; the caller guarantees the lock outlives the guard.
    let g: MutexGuard<'static, T> = unsafe { std::mem::transmute(g) };
    Box::new(g)
}

extern "C" fn prepare() {
    let t = registry::table();
    let mut held = Vec::new();
    for d in t.domains() {
        d.fork_prepare(&mut held);
    }
    HELD.with(|h| *h.borrow_mut() = Some((t, held)));
}

extern "C" fn parent() {
    if let Some((t, held)) = HELD.with(|h| h.borrow_mut().take()) {
        drop(held);
        drop(t);
    }
}

extern "C" fn child() {
    if let Some((t, held)) = HELD.with(|h| h.borrow_mut().take()) {
        // Release the per-domain locks first: the fix-ups below take them again (the child
        // has a single thread, so nothing contends).
        drop(held);
        for d in t.domains() {
            d.fork_child();
        }
        drop(t);
    }
}
