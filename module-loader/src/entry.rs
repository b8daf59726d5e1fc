//! The module's own entry points, `init` and `exit`, each run on a host thread of its own.
//!
//! Two reasons. Module code that runs on a thread can leave thread-local state behind on it: a
//! Rust module's std registers thread-local destructors (`__cxa_thread_atexit_impl`) the first
//! time it spawns a thread or asks for `thread::current()`, and glibc does not unmap an object
//! while a live thread still holds such a destructor (loader-anchors.md). Run on the caller's
//! thread — the application's — `init` would pin its module for as long as that thread lives;
//! run on a thread that ends when the call returns (and is joined: the destructors run in its
//! exit), nothing stays behind. And a call on a thread of its own can be waited for with a
//! deadline: an `exit` that blocks must not block its unloader, nor the host's other work.

use crate::runtime::ModuleRuntime;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After this long in one step, the unloader warns that it is stalled there.
pub(crate) const STALL_WARNING: Duration = Duration::from_secs(1);

/// A module context, sent to the entry thread.
struct Ctx(*mut rcumod_abi::ModuleCtx);
// SAFETY: the context is the module's, valid for its whole life and usable from any thread (the
// host API resolves it per call).
unsafe impl Send for Ctx {}

/// Run the module's `init` on a thread of its own and join it; returns what `init` returned.
pub(crate) fn call_init(init: rcumod_abi::InitFn, rt: &Arc<ModuleRuntime>) -> i32 {
    let ctx = Ctx(rt.ctx());
    let run = move || {
        crate::threadscan::mark_host_thread();
        let ctx = ctx;
        // SAFETY: the module's init, called once with the host table and its context; the
        // inspection and descriptor checks passed. (A panic cannot cross `extern "C"`: the
        // SDK's generated `init` catches it inside the module.)
        unsafe { init(&crate::hostapi::HOST_API, ctx.0) }
    };
    match std::thread::Builder::new()
        .name(format!("rcumod-init-{}", rt.name()))
        .spawn(run)
    {
        Ok(t) => t.join().unwrap_or(rcumod_abi::EINVAL),
        Err(e) => {
            tracing::error!(target: "rcumod", module = %rt.name(), error = %e,
                "could not start a thread to run init");
            rcumod_abi::EINVAL
        }
    }
}

/// Run the module's `exit` on a thread of its own, waiting `deadline` at most: a module whose
/// exit blocks must not block its unloader (nor the host's other work) with it. After one second
/// a stall warning names the module and the step. An exit that does not return leaves its thread
/// running module code, so the module is then pinned, never closed.
pub(crate) fn call_exit(
    exit: rcumod_abi::ExitFn,
    rt: &Arc<ModuleRuntime>,
    deadline: Duration,
) -> Result<(), String> {
    let ctx = Ctx(rt.ctx());
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    let spawned = std::thread::Builder::new()
        .name(format!("rcumod-exit-{}", rt.name()))
        .spawn(move || {
            crate::threadscan::mark_host_thread();
            let ctx = ctx;
            // No catch_unwind here: a panic cannot cross `extern "C"` (it aborts at the
            // module's boundary), so the SDK's generated `exit` catches it inside the module.
            // SAFETY: the module's exit, called once, with the table and context its init
            // received; its threads and timers are stopped.
            unsafe { exit(&crate::hostapi::HOST_API, ctx.0) };
            let _ = tx.send(());
        });
    let thread = match spawned {
        Ok(t) => t,
        Err(e) => return Err(format!("could not start a thread to run exit: {e}")),
    };
    // Joined once exit returned: the thread's own exit runs the thread-local destructors that
    // module code registered on it (a Rust module's std does), and glibc does not unmap an
    // object with destructors outstanding.
    let returned = |thread: std::thread::JoinHandle<()>| {
        let _ = thread.join();
        Ok(())
    };
    let t0 = Instant::now();
    let first = deadline.min(STALL_WARNING);
    if rx.recv_timeout(first).is_ok() {
        return returned(thread);
    }
    if first < deadline {
        tracing::warn!(target: "rcumod", module = %rt.name(), step = "exit",
            "unload stalled: the module's exit has not returned after {:?}", t0.elapsed());
        if rx.recv_timeout(deadline - first).is_ok() {
            return returned(thread);
        }
    }
    tracing::error!(target: "rcumod", module = %rt.name(), ?deadline,
        "the module's exit did not return; the module stays pinned");
    Err(format!("exit did not return within {deadline:?}"))
}
