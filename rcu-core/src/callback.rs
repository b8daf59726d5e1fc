//! Callbacks: the intrusive `RcuHead`, boxed closures, and invoking either safely.
//!
//! An `RcuHead` is the kernel's `struct rcu_head`: two words embedded in the object to be
//! reclaimed, `{ next, func }`, so posting a callback never allocates ([`Rcu::call_raw`]). A
//! Rust closure is boxed together with its own head ([`Rcu::call`]): one allocation, the same
//! cost as liburcu's `malloc` + `call_rcu`.
//!
//! Invocation runs with a thread-local "inside a callback" marker, so that `barrier()` from a
//! callback is refused instead of deadlocking the worker that would have to run it (liburcu
//! hangs there forever: rcu-anchors.md). A closure that panics is caught at its trampoline —
//! a panic must not unwind through `extern "C"` — counted on its domain, and reported through
//! `tracing`; the worker and the other callbacks carry on.
//!
//! [`Rcu::call_raw`]: crate::Rcu::call_raw
//! [`Rcu::call`]: crate::Rcu::call

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

/// A callback function for [`RcuHead`]: receives the head it was posted with.
pub type RcuCallback = unsafe extern "C" fn(head: *mut RcuHead);

/// A domain's invoker, set by its owner ([`Rcu::set_invoke_hook`](crate::Rcu::set_invoke_hook)):
/// called for every dequeued callback in place of `func(head)`, and responsible for calling it.
/// A module host uses it to attribute each callback to the module whose code it runs (and to
/// refuse one whose module is gone) without wrapping every callback in an allocation of its own.
///
/// # Safety
///
/// The domain calls it with a head whose grace period has elapsed, once, with the head's
/// function; the hook must call `func(head)` exactly once, or not at all and then own the head
/// (it must not be posted elsewhere afterwards without care for its owner).
pub type InvokeHook = unsafe fn(head: *mut RcuHead, func: RcuCallback);

/// The intrusive callback header (`struct rcu_head`), `#[repr(C)]` so C modules can embed it.
///
/// While posted, the head belongs to the domain: it must not be moved, freed or posted again
/// until its callback has been invoked.
#[repr(C)]
#[derive(Debug)]
pub struct RcuHead {
    /// Next callback in its queue (owned by the domain while posted).
    pub next: *mut RcuHead,
    /// The function to invoke after a grace period.
    pub func: Option<RcuCallback>,
}

impl RcuHead {
    /// An unposted head.
    pub const fn new() -> RcuHead {
        RcuHead {
            next: ptr::null_mut(),
            func: None,
        }
    }
}

impl Default for RcuHead {
    fn default() -> Self {
        RcuHead::new()
    }
}

/// A boxed closure with its head first, so `*mut RcuHead` is also `*mut Boxed<F>`.
#[repr(C)]
struct Boxed<F> {
    head: RcuHead,
    f: F,
}

/// Box `f` with a head whose function runs it. Returns the head, owned by whoever posts it.
pub(crate) fn boxed<F: FnOnce() + Send + 'static>(f: F) -> *mut RcuHead {
    let b = Box::new(Boxed {
        head: RcuHead {
            next: ptr::null_mut(),
            func: Some(trampoline::<F>),
        },
        f,
    });
    Box::into_raw(b).cast::<RcuHead>()
}

unsafe extern "C" fn trampoline<F: FnOnce() + Send + 'static>(head: *mut RcuHead) {
    // SAFETY: this function is only ever installed by `boxed::<F>`, whose head is the first
    // field of a `#[repr(C)] Boxed<F>` allocated by Box; the domain invokes each head once.
    let b = unsafe { Box::from_raw(head.cast::<Boxed<F>>()) };
    let f = b.f;
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        report_panic(&*payload);
    }
}

fn report_panic(payload: &(dyn std::any::Any + Send)) {
    let msg = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<non-string panic payload>");
    let counter = CURRENT_PANICS.with(Cell::get);
    if !counter.is_null() {
        // SAFETY: `CURRENT_PANICS` is set by `invoke` to a counter of the engine that is
        // invoking us, alive for the duration of the invocation.
        unsafe { &*counter }.fetch_add(1, Ordering::Relaxed);
    }
    tracing::error!(target: "rcu_core", panic = msg, "an RCU callback panicked; the panic was caught and the callback counted as run");
}

thread_local! {
    static IN_CALLBACK: Cell<u32> = const { Cell::new(0) };
    static CURRENT_PANICS: Cell<*const AtomicU64> = const { Cell::new(ptr::null()) };
}

/// Is the calling thread running an RCU callback (of any domain)?
pub fn in_callback() -> bool {
    IN_CALLBACK.with(Cell::get) != 0
}

/// The thread-local state of invoking a batch of callbacks: the "inside a callback" marker and
/// the panic counter, set once per batch rather than once per callback.
pub(crate) struct Invoking {
    prev: *const AtomicU64,
    hook: Option<InvokeHook>,
}

impl Invoking {
    /// Start invoking a batch whose panics count into `panics`.
    pub(crate) fn begin(panics: &AtomicU64, hook: Option<InvokeHook>) -> Invoking {
        IN_CALLBACK.with(|c| c.set(c.get() + 1));
        let prev = CURRENT_PANICS.with(|c| c.replace(panics as *const AtomicU64));
        Invoking { prev, hook }
    }

    /// Invoke one dequeued callback.
    ///
    /// # Safety
    ///
    /// `head` must be a posted head that has just been removed from its queue, whose grace
    /// period has elapsed, and that is invoked exactly once.
    pub(crate) unsafe fn invoke(&self, head: *mut RcuHead) {
        // SAFETY: the caller guarantees `head` is a live posted head.
        let func = unsafe { (*head).func };
        let Some(func) = func else {
            tracing::error!(target: "rcu_core", "an RCU callback was posted without a function; skipped");
            return;
        };
        // A raw `extern "C"` callback that unwinds aborts the process at its own boundary
        // (Rust's rule for `extern "C"`); closures are caught in their trampoline. This catch is
        // for `extern "C-unwind"`-style functions cast to our signature, belt and braces.
        let run = || match self.hook {
            // SAFETY: as below; the hook's contract is to call `func(head)` once.
            Some(hook) => unsafe { hook(head, func) },
            // SAFETY: the caller guarantees the grace period has elapsed and single invocation.
            None => unsafe { func(head) },
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(run)) {
            report_panic(&*payload);
        }
    }
}

impl Drop for Invoking {
    fn drop(&mut self) {
        CURRENT_PANICS.with(|c| c.set(self.prev));
        IN_CALLBACK.with(|c| c.set(c.get() - 1));
    }
}
