//! Which live module's code a callback runs, found without a lock, and the invoker hook that
//! uses it to count each callback for its module as it runs.
//!
//! A module's callbacks are posted on the host's domains with the module's own embedded head
//! and function, exactly as rcu-core's `call_raw`: no allocation of the host's per post. So
//! the domain, not a host wrapper, holds the function, and the host learns whose callback runs
//! where rcu-core invokes it: every host domain (and the process domain, and each module's SRCU
//! domains) invokes through [`invoke`] (rcu-core's `InvokeHook`), which finds the module whose
//! code holds the function in this table and counts the callback as invoked for it.
//!
//! The table is written when a module's object is mapped (before its `init`) and cleared once
//! its callbacks are done (after the barrier and the checks, before `dlclose`: once the
//! object is unmapped, a module loaded meanwhile may be mapped at the same addresses, and the
//! stress demo caught its callbacks counted for the old one), under a lock; it is read on
//! every invocation without one. A lookup is for a callback still pending, whose module is in
//! the table for the whole lookup; other entries may change meanwhile, so a reader re-reads an
//! entry's owner after its range and ignores an entry that changed under it.
//!
//! Checked mode keeps a host wrapper per callback (runtime.rs `Posted`): a callback whose
//! module was unmapped (unloaded without the barrier) must be caught before its function is
//! called, and by then the module is no longer in this table.

use crate::library::CodeRange;
use crate::runtime::ModuleRuntime;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Code ranges the table holds at most (a module has one or two executable segments).
const ENTRIES: usize = 256;

struct Entry {
    start: AtomicUsize,
    end: AtomicUsize,
    owner: AtomicPtr<ModuleRuntime>,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Entry = Entry {
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    owner: AtomicPtr::new(std::ptr::null_mut()),
};

static TABLE: [Entry; ENTRIES] = [EMPTY; ENTRIES];
/// One past the highest entry ever used: readers scan no further.
static USED: AtomicUsize = AtomicUsize::new(0);
/// Serializes writers.
static WRITE: Mutex<()> = Mutex::new(());

/// Enter `rt`'s code ranges. False if the table is full (the module's callbacks then go
/// through the host's wrapper, as in checked mode).
pub(crate) fn register(rt: &ModuleRuntime, code: &[CodeRange]) -> bool {
    let _w = WRITE.lock().unwrap_or_else(|e| e.into_inner());
    let free: Vec<usize> = (0..ENTRIES)
        .filter(|&i| TABLE[i].owner.load(Ordering::Relaxed).is_null())
        .take(code.len())
        .collect();
    if free.len() < code.len() {
        return false;
    }
    for (&i, &(s, e)) in free.iter().zip(code) {
        let t = &TABLE[i];
        t.start.store(s, Ordering::Relaxed);
        t.end.store(e, Ordering::Relaxed);
        // Release pairs with `find`'s Acquire load of the owner: the range is seen with it.
        t.owner
            .store(rt as *const ModuleRuntime as *mut _, Ordering::Release);
        USED.fetch_max(i + 1, Ordering::Release);
    }
    true
}

/// Remove every entry of `rt` (its callbacks are done).
pub(crate) fn unregister(rt: &ModuleRuntime) {
    let _w = WRITE.lock().unwrap_or_else(|e| e.into_inner());
    let me = rt as *const ModuleRuntime as *mut ModuleRuntime;
    for t in TABLE.iter() {
        if t.owner.load(Ordering::Relaxed) == me {
            t.owner.store(std::ptr::null_mut(), Ordering::Release);
        }
    }
}

/// The live module whose code holds `addr`.
#[inline]
pub(crate) fn find(addr: usize) -> Option<*const ModuleRuntime> {
    // Acquire pairs with `register`'s Release of USED.
    let used = USED.load(Ordering::Acquire);
    for t in &TABLE[..used] {
        // Acquire pairs with `register`'s Release store of the owner (its range is written
        // before it).
        let owner = t.owner.load(Ordering::Acquire);
        if owner.is_null() {
            continue;
        }
        let (s, e) = (
            t.start.load(Ordering::Relaxed),
            t.end.load(Ordering::Relaxed),
        );
        // Acquire: the range loads above complete before this re-read; an entry that changed
        // owner meanwhile may have given us another module's range.
        if addr >= s && addr < e && t.owner.load(Ordering::Acquire) == owner {
            return Some(owner);
        }
    }
    None
}

/// The invoker of every domain module callbacks are posted on (rcu-core `InvokeHook`).
///
/// # Safety
///
/// rcu-core's contract: `head` was posted with `func`, its grace period has elapsed, and this
/// is its only invocation.
pub(crate) unsafe fn invoke(head: *mut rcu_core::RcuHead, func: rcu_core::RcuCallback) {
    let code = crate::runtime::callback_code(head, func);
    let owner = find(code);
    // SAFETY: forwarded from rcu-core: the callback's one invocation, after its grace period.
    unsafe { func(head) };
    if let Some(rt) = owner {
        // SAFETY: a module stays in the table, and its runtime alive, until its callbacks are
        // done; this one was pending until it returned just now, so the unloader has not yet
        // seen its barrier complete.
        unsafe { (*rt).callback_invoked() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime enters the table when its code is set and leaves it when the code is
    /// forgotten (before `dlclose`) or the runtime is dropped (a pinned module's, with its
    /// host): a range left behind would count a later module's callbacks for it, as the
    /// stress soak once showed.
    #[test]
    fn a_runtime_leaves_when_its_code_is_forgotten_or_it_is_dropped() {
        let code = [(0x2000_0000usize, 0x2000_1000usize)];
        let rt = crate::runtime::ModuleRuntime::for_tests("owners_forget");
        rt.set_code(&code);
        assert_eq!(find(0x2000_0010), Some(&*rt as *const _));
        rt.set_code(&[]);
        assert_eq!(find(0x2000_0010), None, "forgotten");

        let rt = crate::runtime::ModuleRuntime::for_tests("owners_drop");
        rt.set_code(&code);
        assert!(find(0x2000_0010).is_some());
        drop(rt);
        assert_eq!(find(0x2000_0010), None, "dropped");
    }

    #[test]
    fn ranges_are_found_until_unregistered() {
        let rt = crate::runtime::ModuleRuntime::for_tests("owners_test");
        let code = [(0x1000_0000usize, 0x1000_1000usize)];
        assert!(register(&rt, &code));
        assert_eq!(find(0x1000_0800), Some(&*rt as *const _));
        assert_eq!(find(0x1000_1000), None, "end is exclusive");
        unregister(&rt);
        assert_eq!(find(0x1000_0800), None);
    }
}
