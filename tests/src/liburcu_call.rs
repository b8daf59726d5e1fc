//! Wrappers over `csrc/urcu_call_shim.c`: liburcu's memb `call_rcu` and `rcu_barrier`
//! measurements, each run entirely in C (only with `cfg(have_liburcu)`).
//!
//! They live in the library, not in the benchmark, so that the library's object references the
//! shim and the linker takes its archive member into the benchmark binary.

use std::time::Duration;

extern "C" {
    fn shim_cb_register();
    fn shim_cb_unregister();
    fn shim_cb_call_loop(n: u64) -> u64;
    fn shim_cb_barrier() -> u64;
    fn shim_cb_end_to_end(n: u64) -> u64;
    fn shim_cb_barrier_pending(n: u64) -> u64;
}

thread_local! {
    static REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Register the calling thread with liburcu's memb flavor, once (liburcu asserts on a second
/// registration).
pub fn register_thread() {
    if !REGISTERED.with(|r| r.replace(true)) {
        // SAFETY: plain registration of the calling thread, not registered before.
        unsafe { shim_cb_register() }
    }
}

/// Unregister the calling thread, if registered.
pub fn unregister_thread() {
    if REGISTERED.with(|r| r.replace(false)) {
        // SAFETY: the calling thread registered with `register_thread`.
        unsafe { shim_cb_unregister() }
    }
}

/// `n` × (malloc + `call_rcu(free)`) on a registered thread; the posting time.
pub fn call_loop(n: u64) -> Duration {
    // SAFETY: the shim runs its loop on this (registered) thread.
    Duration::from_nanos(unsafe { shim_cb_call_loop(n) })
}

/// `rcu_barrier()`.
pub fn barrier() -> Duration {
    // SAFETY: as above.
    Duration::from_nanos(unsafe { shim_cb_barrier() })
}

/// `n` callbacks then `rcu_barrier()`.
pub fn end_to_end(n: u64) -> Duration {
    // SAFETY: as above.
    Duration::from_nanos(unsafe { shim_cb_end_to_end(n) })
}

/// A C reader holds the grace period while `n` callbacks are posted; `rcu_barrier()` timed from
/// its release.
pub fn barrier_pending(n: u64) -> Duration {
    // SAFETY: as above; the shim creates and joins its own reader thread.
    Duration::from_nanos(unsafe { shim_cb_barrier_pending(n) })
}
