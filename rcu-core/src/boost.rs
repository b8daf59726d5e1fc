//! Priority boosting of readers that hold up an expedited grace period.
//!
//! Patent US9262234's preemptible case: a reader preempted inside its read-side critical
//! section blocks the grace period for as long as the scheduler keeps it off the CPU, and
//! forcing quiescent states cannot help (it *is* in a section). The kernel boosts such readers
//! to a real-time priority through an rt_mutex (`CONFIG_RCU_BOOST`, priority 1 by default,
//! kernel/rcu/tree_plugin.h), and the reader drops the boost itself in `rcu_read_unlock`'s
//! slow path (`rcu_read_unlock_special`).
//!
//! Here an expedited driver boosts a reader that has blocked it for [`BOOST_AFTER`] and is
//! runnable (procfs state `R`: preempted, or running); a reader asleep inside its section is
//! left alone:
//!
//! * to `SCHED_FIFO` priority 1 (`sched_setscheduler` on its thread id). A change of class
//!   makes the kernel reschedule the reader's CPU at once. A nice value does not: the first
//!   version raised the nice value only, and the reader kept waiting for the next scheduler
//!   tick (4 ms at HZ=250) behind the busy thread that had preempted it;
//! * where real-time priority is not permitted (no CAP_SYS_NICE or RLIMIT_RTPRIO), to nice
//!   [`BOOST_NICE`] (`setpriority`, which acts on one thread under Linux), and if that is
//!   refused too the driver counts and reports it and keeps waiting.
//!
//! A real-time reader must not stay real-time a moment longer than needed: a busy reader would
//! keep its CPU from every other thread. So the record says how to restore it, and whoever
//! comes first restores it, exactly once: the reader itself at its outermost unlock (the slow
//! path it takes anyway because the driver sleeps waiting for it, as the kernel's does), or the
//! driver when the grace period ends.
//!
//! The same lever serves the expedited side itself, at nice [`BOOST_NICE`] only:
//! `barrier_expedited` boosts the thread that invokes a backlog of callbacks inline, and the
//! module loader's expedited unload runs its whole protocol boosted
//! ([`boost_current_thread`]), so busy application threads do not preempt the work the caller
//! asked to be expedited.

use crate::reader::Reader;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The nice value a boosted thread runs at where real-time priority is not used or permitted.
pub const BOOST_NICE: i32 = -10;

/// The `SCHED_FIFO` priority a boosted reader runs at (the kernel's `CONFIG_RCU_BOOST_PRIO`
/// default: the lowest real-time priority, above every normal thread).
const BOOST_RT_PRIORITY: i32 = 1;

/// How long a reader must block an expedited grace period from inside one section before it is
/// boosted. The kernel boosts the readers that block an expedited grace period at once
/// (`rcu_initiate_boost` skips the `boost_time` delay when `exp_tasks` is set), knowing they
/// were preempted; we cannot tell a preempted reader from a running one with a long section,
/// so we give it 50 µs, ten times the driver's spin and longer than any section that does
/// not block. A needless boost costs the reader two system calls.
pub(crate) const BOOST_AFTER: Duration = Duration::from_micros(50);

/// How often an expedited driver looks again at a reader it found asleep inside its section
/// (such a reader is not boosted; each look reads its procfs state, ~10 µs).
const ASLEEP_RECHECK: Duration = Duration::from_millis(1);

/// The boosts of one expedited wait for readers (gp.rs `wait_for_readers`). Each reader is
/// boosted at most once, and a refusal is counted once, not at every wake-up. Dropping this at
/// the end of the grace period restores every reader that has not restored itself.
#[derive(Debug, Default)]
pub(crate) struct WaitBoosts {
    boosted: Vec<Boosted>,
    /// Readers a boost was tried for.
    tried: Vec<i32>,
}

impl WaitBoosts {
    /// Reader `r` has been inside a section, blocking the wait, which began `waited` ago; it is
    /// due for a boost at `due` (since the wait began; initially [`BOOST_AFTER`]). If it is due
    /// and runnable, boost it. If it is due but asleep, push `due` back by [`ASLEEP_RECHECK`].
    /// Returns how long until `r` should be looked at again, or `None` once a boost was tried.
    pub(crate) fn consider(
        &mut self,
        r: &Arc<Reader>,
        waited: Duration,
        due: &mut Duration,
        report: &mut crate::gp::DriveReport,
    ) -> Option<Duration> {
        if self.tried.contains(&r.tid) {
            return None;
        }
        if let Some(left) = due.checked_sub(waited).filter(|left| !left.is_zero()) {
            return Some(left);
        }
        let Some(result) = boost_reader(r) else {
            *due = waited + ASLEEP_RECHECK;
            return Some(ASLEEP_RECHECK);
        };
        self.tried.push(r.tid);
        if let Some(b) = result.keep(&mut report.boost_denied) {
            report.boosted += 1;
            self.boosted.push(b);
        }
        None
    }
}

/// A boost to undo: dropping it restores the thread's old priority (unless a boosted reader
/// already restored itself).
#[derive(Debug)]
#[must_use = "dropping the boost restores the old priority at once"]
pub struct Boosted {
    undo: Undo,
}

#[derive(Debug)]
enum Undo {
    /// Set this thread's nice value back.
    Nice { tid: i32, old_nice: i32 },
    /// The reader's record holds the restore word ([`Reader::boost`]).
    Reader(Arc<Reader>),
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

impl BoostResult {
    /// The boost to hold, if one was made; a refusal is added to `denied`.
    pub fn keep(self, denied: &mut u32) -> Option<Boosted> {
        match self {
            BoostResult::Boosted(b) => Some(b),
            BoostResult::Denied => {
                *denied += 1;
                None
            }
            BoostResult::NotNeeded => None,
        }
    }
}

/// Raise the calling thread to nice [`BOOST_NICE`] until the returned [`Boosted`] is dropped:
/// for work whose latency matters more than fairness to the application's other threads, as an
/// expedited barrier's direct invocation or an expedited module unload.
pub fn boost_current_thread() -> BoostResult {
    boost_nice(crate::reader::gettid())
}

/// Boost reader `r`, which holds up an expedited grace period from inside a section; `None`
/// if it sleeps there. The kernel boosts only readers that were preempted; a userspace reader
/// may also block inside its section, and then priority would not wake it, while a boost it
/// kept until it wakes would make every other reader's unlock take the slow path meanwhile.
fn boost_reader(r: &Arc<Reader>) -> Option<BoostResult> {
    if !runnable(r.tid) {
        return None;
    }
    Some(boost_runnable_reader(r))
}

fn boost_runnable_reader(r: &Arc<Reader>) -> BoostResult {
    // SAFETY: sched_getscheduler takes a plain integer.
    let policy = unsafe { libc::sched_getscheduler(r.tid) };
    if policy < 0 {
        return BoostResult::Denied;
    }
    // The policy comes back with SCHED_RESET_ON_FORK or'ed in if set; restoring keeps it.
    if matches!(
        policy & !libc::SCHED_RESET_ON_FORK,
        libc::SCHED_FIFO | libc::SCHED_RR | libc::SCHED_DEADLINE
    ) {
        return BoostResult::NotNeeded;
    }
    // Publish the way back before the boost, and hold the writers' sleep flag raised until
    // it is undone (`GpState::wake_writers` leaves it raised while `boosts` is nonzero), so
    // that the reader's next outermost unlock takes the slow path and drops the boost. A
    // preempted reader runs again only after the boost, and the context switch orders these
    // stores before its unlock. Only a driver holding the domain's expedited lock boosts, and
    // the boost is undone (by the reader or by that driver) before the lock is released: the
    // word is free.
    let w = restore_word(policy);
    let gp = r.gp();
    gp.boosts.fetch_add(1, Ordering::SeqCst);
    r.boost.store(w, Ordering::SeqCst);
    gp.sleepers.store(1, Ordering::SeqCst);
    let param = libc::sched_param {
        sched_priority: BOOST_RT_PRIORITY,
    };
    // SAFETY: `param` is a valid sched_param; on Linux the call acts on thread `tid` only.
    if unsafe { libc::sched_setscheduler(r.tid, libc::SCHED_FIFO, &param) } == 0 {
        // A reader that was running, not preempted, may have reached its unlock and taken the
        // word between the store above and the call: it then "restored" itself before it was
        // boosted, and would stay real-time for good. (The first version missed this: in the
        // unload benchmark two busy hook readers ended up SCHED_FIFO for good and starved
        // everything else on the 2 vCPUs.) Restoring once more is harmless: nobody boosts the
        // reader again before this driver's grace period ends.
        if r.boost.load(Ordering::SeqCst) == 0 {
            restore(r.tid, w);
        }
        return BoostResult::Boosted(Boosted {
            undo: Undo::Reader(Arc::clone(r)),
        });
    }
    r.boost.store(0, Ordering::Relaxed);
    gp.boosts.fetch_sub(1, Ordering::SeqCst);
    boost_nice(r.tid)
}

/// Raise thread `tid` to nice [`BOOST_NICE`].
pub(crate) fn boost_nice(tid: i32) -> BoostResult {
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
        BoostResult::Boosted(Boosted {
            undo: Undo::Nice { tid, old_nice: old },
        })
    } else {
        BoostResult::Denied
    }
}

/// Is thread `tid` of this process running or waiting for a CPU (state `R` in procfs)? When
/// procfs cannot tell, assume so: the boost is then tried, as if the check did not exist.
fn runnable(tid: i32) -> bool {
    let Ok(stat) = std::fs::read(format!("/proc/self/task/{tid}/stat")) else {
        return true;
    };
    // "tid (comm) S …": the name may contain spaces and parentheses, the state follows the
    // last ')'.
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return true;
    };
    stat.get(close + 2).is_none_or(|&state| state == b'R')
}

/// The restore word of a reader boost: nonzero, and carrying the scheduling policy to go back
/// to. The nice value needs no saving: the kernel keeps it while a thread runs real-time.
fn restore_word(policy: i32) -> u64 {
    1 << 32 | policy as u32 as u64
}

/// Undo a reader boost described by restore word `w` on thread `tid` (0: the caller).
fn restore(tid: i32, w: u64) {
    let param = libc::sched_param { sched_priority: 0 };
    // Lowering priority is always permitted. The thread may have exited; then this fails
    // harmlessly (or, if the tid was recycled within our process, resets a thread that is not
    // real-time by our doing: the same as the nice restore below risks).
    // SAFETY: `param` is a valid sched_param; plain integers otherwise.
    unsafe { libc::sched_setscheduler(tid, w as u32 as i32, &param) };
}

impl Reader {
    /// The reader's outermost unlock found a writer asleep (the slow path): if an expedited
    /// driver boosted this thread, drop the boost now rather than when the grace period ends.
    /// Called by the owning thread.
    #[cold]
    pub(crate) fn end_boost(&self) {
        let w = self.boost.swap(0, Ordering::AcqRel);
        if w != 0 {
            restore(0, w);
            self.gp().boosts.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Boosted {
    fn drop(&mut self) {
        match &self.undo {
            Undo::Nice { tid, old_nice } => {
                // Lowering priority is always permitted. The thread may have exited; then this
                // fails harmlessly (or, if the tid was recycled within our process, sets a nice
                // value that thread's owner may change back).
                // SAFETY: setpriority takes plain integers.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, *tid as libc::id_t, *old_nice) };
            }
            Undo::Reader(r) => {
                let w = r.boost.swap(0, Ordering::AcqRel);
                if w != 0 {
                    if !r.gone.load(Ordering::Acquire) {
                        restore(r.tid, w);
                    }
                    r.gp().boosts.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }
}
