//! `membarrier(2)`: the asymmetric fence that makes memb readers free of fences.
//!
//! `MEMBARRIER_CMD_PRIVATE_EXPEDITED` interrupts every CPU currently running a thread of this
//! process and executes a full memory barrier there before returning. A writer that issues it
//! obtains, on the readers' behalf, the fence each reader would otherwise execute on every
//! `read_lock()` — so the reader side is only a compiler fence (liburcu's memb flavor; the
//! kernel's `sys_membarrier` was written for it). It costs about 0.11 µs with no other thread
//! running and about 13.5 µs per IPI round on this machine kind (shared/anchors, table F).
//!
//! The private-expedited command must be registered once per process. Where the kernel lacks it
//! (or a seccomp filter refuses it), memb domains fall back to the mb flavor, log that once, and
//! keep working; `RCU_CORE_FORCE_MB=1` or [`RcuBuilder::force_fallback`](crate::RcuBuilder::force_fallback)
//! force the fallback so that tests exercise it.

use std::sync::atomic::{AtomicU8, Ordering};

const CMD_QUERY: libc::c_int = 0;
const CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

const UNKNOWN: u8 = 0;
const AVAILABLE: u8 = 1;
const UNAVAILABLE: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes two integer arguments and touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_int) }
}

/// Whether private expedited membarrier is usable, registering this process on first call.
pub(crate) fn available() -> bool {
    match STATE.load(Ordering::Acquire) {
        AVAILABLE => return true,
        UNAVAILABLE => return false,
        _ => {}
    }
    let mask = membarrier(CMD_QUERY);
    let ok = mask >= 0
        && (mask & CMD_PRIVATE_EXPEDITED as libc::c_long) != 0
        && membarrier(CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
    // Racing first callers may both register; registration is idempotent.
    let new = if ok { AVAILABLE } else { UNAVAILABLE };
    if STATE.swap(new, Ordering::AcqRel) != new && !ok {
        tracing::warn!(
            target: "rcu_core",
            "membarrier(PRIVATE_EXPEDITED) is not available; memb domains fall back to \
             fence-based (mb) readers"
        );
    }
    ok
}

/// Execute a full memory barrier on every running thread of this process.
///
/// Callers must have seen [`available`] return true.
pub(crate) fn barrier() {
    let r = membarrier(CMD_PRIVATE_EXPEDITED);
    // Registration cannot be undone, so a failure here means the kernel changed its mind
    // under us; continuing without the barrier would break the readers' guarantee.
    assert!(
        r == 0,
        "membarrier(PRIVATE_EXPEDITED) failed after successful registration: {}",
        std::io::Error::last_os_error()
    );
}
