//! Forced quiescent states for qsbr: how an expedited grace period hurries threads along.
//!
//! A qsbr thread reports a quiescent state only when it calls `quiescent_state()` (or goes
//! offline), which may be seldom. An expedited driver therefore asks each thread that still
//! blocks it to report *now*, as the kernel's expedited grace period IPIs each CPU
//! (`rcu_exp_handler` in kernel/rcu/tree_exp.h): it sets the record's hint, and the hint bit
//! of the nesting word that `read_unlock` tests, and sends the thread a real-time signal. The
//! handler, running on that thread, reports a quiescent state at once if the thread is outside
//! every read-side section of the domain; otherwise the outermost `read_unlock` reports (the
//! kernel's `exp_hint` / `rcu_read_unlock_special`), also on a thread that blocks the signal.
//! Rounds repeat every [`REFORCE_AFTER`] until the grace period ends (patent US9262234: "forcing
//! each processor to note a new grace period and forcing a quiescent state … repeated").
//!
//! Why a thread outside a section may be declared quiescent: with rcu-core's API a reference
//! obtained under a read guard cannot outlive it, so a qsbr thread outside a section holds
//! none (liburcu's qsbr, whose readers are bare pointers, cannot assume this).
//!
//! The signal is `SIGRTMIN + 5`. If the application has already installed a handler for it,
//! rcu-core leaves it alone, logs once, and expedited qsbr grace periods simply wait.

use crate::domain::Shared;
use crate::gp::DriveReport;
use crate::handshake;
use crate::reader::Reader;
use crate::registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

/// Interval between forcing rounds while a qsbr thread still blocks an expedited grace period.
pub(crate) const REFORCE_AFTER: Duration = Duration::from_millis(1);

static INSTALL: Once = Once::new();
static AVAILABLE: AtomicBool = AtomicBool::new(false);

/// The signal used to force quiescent states.
pub fn forcing_signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

fn install() -> bool {
    INSTALL.call_once(|| {
        let sig = forcing_signal();
        // SAFETY: sigaction with a null new action only reads the current disposition into
        // `old`, a properly sized, zero-initialised struct.
        let ok = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                false
            } else if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
                tracing::warn!(
                    target: "rcu_core",
                    signal = sig,
                    "the application handles SIGRTMIN+5; expedited qsbr grace periods will \
                     wait for quiescent states instead of forcing them"
                );
                false
            } else {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = handler as extern "C" fn(libc::c_int) as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut()) == 0
            }
        };
        AVAILABLE.store(ok, Ordering::Release);
    });
    AVAILABLE.load(Ordering::Acquire)
}

/// One forcing round: hint and signal every thread still blocking `target`.
pub(crate) fn force_round(
    shared: &Shared,
    readers: &[Arc<Reader>],
    target: u64,
    report: &mut DriveReport,
) {
    if !install() {
        return;
    }
    report.rounds += 1;
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    for r in readers {
        if r.gone.load(Ordering::Relaxed) || !handshake::blocks(handshake::scan(&r.word), target) {
            continue;
        }
        r.hint.store(1, Ordering::Relaxed);
        // Also in the word the outermost read_unlock tests, for a thread that blocks the
        // signal; the handler sets it again if the owner's own store dropped it (QSBR_HINT).
        r.nest.fetch_or(crate::reader::QSBR_HINT, Ordering::Relaxed);
        // The hint store must be visible to the handler, which runs on the target thread
        // after the signal is delivered; signal delivery (a system call here, the kernel's
        // delivery there) orders it.
        // SAFETY: tgkill takes plain integers. The tid is that of a thread of this process
        // that was alive a moment ago; if it exited and its tid was recycled by another thread
        // of ours, the handler finds no hint there and does nothing (tgkill cannot reach
        // another process).
        unsafe {
            libc::syscall(libc::SYS_tgkill, pid, r.tid, forcing_signal());
        }
        report.forced += 1;
        shared
            .stats
            .forced_quiescent_states
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// The outermost qsbr `read_unlock` found the hint the handler left: report now.
#[cold]
#[inline(never)]
pub(crate) fn deferred_quiescent_state(r: &Reader) {
    r.nest.store(0, Ordering::Relaxed);
    // Same-thread order: a handler running from here on sees the thread outside its section
    // (and may report first; reporting twice is harmless).
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
    report(r);
}

fn report(r: &Reader) {
    if r.word.load(Ordering::Relaxed) != 0 {
        handshake::qsbr_quiescent(&r.word, &r.gp().ctr);
    }
    r.hint.store(0, Ordering::Relaxed);
    r.gp().reader_left_by(r);
}

extern "C" fn handler(_sig: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno slot; saving and restoring it keeps
    // the interrupted code's errno intact (futex wake may overwrite it).
    let errno = unsafe { *libc::__errno_location() };
    registry::for_each_own(|r| {
        if r.hint.load(Ordering::Relaxed) == 0 {
            return;
        }
        let n = r.nest.load(Ordering::Relaxed);
        if n & crate::reader::QSBR_DEPTH == 0 {
            r.nest
                .store(n & !crate::reader::QSBR_HINT, Ordering::Relaxed);
            report(r);
        } else {
            // Inside a section: the outermost read_unlock reports (see QSBR_HINT).
            r.nest
                .store(n | crate::reader::QSBR_HINT, Ordering::Relaxed);
        }
    });
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}
