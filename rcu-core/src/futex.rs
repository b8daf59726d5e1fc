//! Futex wait and wake: how a writer sleeps until the last reader blocking it leaves.
//!
//! A writer first spins briefly (most read-side critical sections last nanoseconds), then
//! announces that it sleeps and waits on the domain's futex word; the reader whose outermost
//! `read_unlock()` (or quiescent state) sees the announcement wakes it (liburcu's
//! `wait_gp()`/`wake_up_gp()`). Timeouts are only deadlines for stall warnings: no path here
//! sleeps for a fixed time waiting for something to happen.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleep while `*word == expected`, at most `timeout`. Spurious returns are allowed; callers
/// re-check their condition.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live AtomicU32 (futex words are 32-bit and aligned); the kernel only
    // reads it atomically. `tsp` is null or points to `ts`, which outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            tsp,
        );
    }
}

/// Wake every thread sleeping on `word`. Async-signal-safe.
pub(crate) fn wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a live AtomicU32; FUTEX_WAKE does not access it beyond hashing its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}
