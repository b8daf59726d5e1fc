//! Priority boosting of readers that hold up an expedited grace period.
//!
//! Patent US9262234's preemptible case: a reader preempted inside its read-side critical
//! section blocks the grace period for as long as the scheduler keeps it off the CPU, and
//! forcing quiescent states cannot help (it *is* in a section). The kernel boosts such readers
//! through an rt_mutex (`CONFIG_RCU_BOOST`, kernel/rcu/tree_plugin.h). In userspace the lever
//! is the thread's nice value: `setpriority(PRIO_PROCESS, tid, …)` acts on one thread under
//! Linux. An expedited driver boosts a reader that has blocked it for [`BOOST_AFTER`] to
//! [`BOOST_NICE`] and restores its old nice value when the grace period ends. Raising priority
//! needs CAP_SYS_NICE (or RLIMIT_NICE); when it is refused the driver counts that, reports it,
//! and keeps waiting.
//!
//! The same lever serves the expedited side itself: `barrier_expedited` boosts the thread that
//! invokes a backlog of callbacks inline, and the module loader's expedited unload runs its
//! whole protocol boosted ([`boost_current_thread`]), so busy application threads do not
//! preempt the work the caller asked to be expedited.

use std::time::Duration;

/// The nice value a boosted reader runs at.
pub const BOOST_NICE: i32 = -10;

/// How long a reader must block an expedited grace period before it is boosted.
pub(crate) const BOOST_AFTER: Duration = Duration::from_micros(500);

/// A boosted thread and the nice value to restore: dropping it restores that value.
#[derive(Debug)]
#[must_use = "dropping the boost restores the old priority at once"]
pub struct Boosted {
    tid: i32,
    old_nice: i32,
}

/// Outcome of one boost attempt.
#[derive(Debug)]
pub enum BoostResult {
    /// Boosted until the value is dropped.
    Boosted(Boosted),
    /// Already at or above the boost priority.
    NotNeeded,
    /// The kernel refused (no CAP_SYS_NICE), or the thread is gone.
    Denied,
}

/// Raise the calling thread to [`BOOST_NICE`] until the returned [`Boosted`] is dropped: for
/// work whose latency matters more than the fairness to the application's other threads, as an
/// expedited barrier's direct invocation or an expedited module unload.
pub fn boost_current_thread() -> BoostResult {
    boost(crate::reader::gettid())
}

pub(crate) fn boost(tid: i32) -> BoostResult {
    // SAFETY: errno is thread-local; clearing it lets us tell a nice value of -1 from an error.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: getpriority takes plain integers.
    let old = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
    // SAFETY: as above.
    if old == -1 && unsafe { *libc::__errno_location() } != 0 {
        return BoostResult::Denied;
    }
    if old <= BOOST_NICE {
        return BoostResult::NotNeeded;
    }
    // SAFETY: setpriority takes plain integers; on Linux PRIO_PROCESS with a tid acts on that
    // thread only.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BOOST_NICE) };
    if r == 0 {
        BoostResult::Boosted(Boosted { tid, old_nice: old })
    } else {
        BoostResult::Denied
    }
}

impl Drop for Boosted {
    fn drop(&mut self) {
        // Lowering priority is always permitted. The thread may have exited; then this fails
        // harmlessly (or, if the tid was recycled within our process, sets a nice value that
        // thread's owner may change back).
        // SAFETY: setpriority takes plain integers.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, self.tid as libc::id_t, self.old_nice) };
    }
}
