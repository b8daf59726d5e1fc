//! `barrier()` (rcu_barrier): wait until every callback posted before the call has run.
//!
//! `synchronize()` waits for readers, not for callbacks; a callback can still be queued, or
//! deferred by a busy worker, long after several grace periods (the seed's argument for
//! `rcu_barrier()` before unloading a module). The barrier relies on two facts: queues are FIFO,
//! and callbacks are invoked in extraction order (cbqueue.rs). So it *entrains* one sentinel
//! callback behind the last callback of every non-empty queue (an empty queue gets none, and
//! costs no grace period) and waits until all sentinels have run (the kernel's `rcu_barrier`,
//! kernel/rcu/tree.c; liburcu instead queues a heap item on every worker, empty or not, and
//! every barrier pays the worker's 10 ms batching sleep).
//!
//! * **Premature completion** (the seed's Quick Quiz): a sentinel may run before the next one
//!   is posted, so the outstanding count starts at one and that extra reference is dropped only
//!   after every sentinel is entrained (today's kernel starts at two for the same reason).
//! * **Sharing**: barriers are serialized by a lock; a caller snapshots the barrier sequence
//!   number first and returns at once if a barrier that started after its snapshot completed
//!   while it waited for the lock (`rcu_seq_snap` on `barrier_sequence`).
//! * **Queues that go away**: entraining holds the queue-list lock that adoption takes, and a
//!   sentinel keeps its queue's memory alive (a strong reference dropped by the sentinel itself).
//!
//! `barrier_expedited()` does the same entraining, then repeats rounds of: expedited grace
//! period (forced quiescent states, boosting of readers that hold it up) and direct invocation
//! of ready callbacks in the caller's context, until every sentinel has run — the three cases
//! of patent US9262234's claim 1 (docs/design/expedited-unload.md maps them).

use crate::callback::RcuHead;
use crate::cbqueue::{CbEngine, CbQueue};
use crate::domain::lock;
use crate::futex;
use crate::gp::Mode;
use crate::ops::DomainOps;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a barrier refused to run. Each would otherwise hang.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BarrierError {
    /// Called from an RCU callback: the worker that would have to run the sentinels is the
    /// caller (liburcu deadlocks here).
    FromCallback {
        /// The domain whose barrier was asked for.
        domain: String,
    },
    /// Called inside a read-side critical section of the same domain.
    InsideReader {
        /// The domain.
        domain: String,
    },
    /// `barrier_until_quiet` gave up: callbacks kept re-posting themselves.
    NotQuiet {
        /// The domain.
        domain: String,
        /// Barriers run.
        rounds: u32,
    },
}

impl std::fmt::Display for BarrierError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BarrierError::FromCallback { domain } => write!(
                f,
                "barrier() of RCU domain `{domain}` called from an RCU callback; it would wait for \
                 the worker running it"
            ),
            BarrierError::InsideReader { domain } => write!(
                f,
                "barrier() called inside a read-side critical section of RCU domain `{domain}`"
            ),
            BarrierError::NotQuiet { domain, rounds } => write!(
                f,
                "callbacks of RCU domain `{domain}` were still being posted after {rounds} \
                 barriers; stop the re-posting (set its stop flag) first"
            ),
        }
    }
}

impl std::error::Error for BarrierError {}

/// What an expedited barrier did, from `barrier_expedited()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpediteReport {
    /// Rounds of (expedited grace period, direct invocation).
    pub rounds: u32,
    /// Expedited grace periods driven.
    pub grace_periods: u32,
    /// Forced-quiescent-state requests sent to threads (qsbr signals).
    pub threads_forced: u32,
    /// Reader threads priority-boosted while they held a grace period up.
    pub threads_boosted: u32,
    /// Boosts the kernel refused (no CAP_SYS_NICE).
    pub boosts_denied: u32,
    /// Callbacks invoked directly by the caller (barrier sentinels not counted).
    pub callbacks_inline: u64,
    /// The caller ran them at a boosted priority (nice −10; with at least 1024 callbacks
    /// queued, and when the kernel permits it: a refusal counts in `boosts_denied`).
    pub invoker_boosted: bool,
    /// Sentinels entrained (non-empty queues).
    pub sentinels: u32,
    /// Another barrier did the work while this one waited for the lock.
    pub shared: bool,
    /// Wall time.
    pub elapsed: Duration,
}

/// Keeps the worker aside while an expedited barrier invokes, and wakes it afterwards (also
/// on unwinding, so a panic cannot park the worker for good).
struct WorkerAside<'a> {
    engine: &'a CbEngine,
}

impl<'a> WorkerAside<'a> {
    fn new(engine: &'a CbEngine) -> Self {
        engine.worker.expediting.fetch_add(1, Ordering::AcqRel);
        WorkerAside { engine }
    }
}

impl Drop for WorkerAside<'_> {
    fn drop(&mut self) {
        self.engine.worker.expediting.fetch_sub(1, Ordering::AcqRel);
        self.engine.kick();
    }
}

/// Callbacks queued from which an expedited barrier boosts the thread invoking them.
const INLINE_BOOST_MIN: usize = 1024;

fn seq_snap(s: u64) -> u64 {
    // The end of the first barrier that starts after now: if one is running (odd), the one
    // after it.
    (s + 3) & !1
}

fn seq_done(cur: u64, snap: u64) -> bool {
    cur.wrapping_sub(snap) as i64 >= 0
}

unsafe extern "C" fn sentinel(head: *mut RcuHead) {
    // SAFETY: sentinels are only the `sentinel` field of a live CbQueue (kept alive by the
    // strong count taken in `entrain_all`), so stepping back by its offset gives the queue.
    let q = unsafe {
        head.byte_sub(std::mem::offset_of!(CbQueue, sentinel))
            .cast::<CbQueue>()
    };
    // SAFETY: the queue is alive (see above), and its engine outlives its queues.
    let engine = unsafe { &*(*q).engine };
    engine.counters.sentinels.fetch_add(1, Ordering::Relaxed);
    if engine.barrier.count.sentinel_ran() {
        futex::wake_all(engine.barrier.count.word());
    }
    // SAFETY: releases the strong count taken when this sentinel was entrained; the queue is
    // not touched afterwards.
    unsafe { Arc::decrement_strong_count(q) };
}

impl CbEngine {
    /// Take the barrier lock unless a concurrent barrier covers us. None: covered.
    fn begin_barrier(&self) -> Option<crate::forklock::ForkLockGuard<'_, ()>> {
        let snap = seq_snap(self.barrier.seq.load(Ordering::Acquire));
        let g = self.barrier.lock.lock();
        if seq_done(self.barrier.seq.load(Ordering::Acquire), snap) {
            self.counters
                .barriers_shared
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.barrier.seq.fetch_add(1, Ordering::AcqRel);
        Some(g)
    }

    fn end_barrier(&self) {
        self.counters.barriers.fetch_add(1, Ordering::Relaxed);
        self.barrier.seq.fetch_add(1, Ordering::AcqRel);
    }

    /// Entrain a sentinel in every non-empty queue. The count is left at sentinels + 1.
    /// Returns the sentinels entrained and the callbacks queued ahead of them.
    fn entrain_all(&self) -> (u32, usize) {
        self.barrier.count.begin();
        let queues = lock(&self.queues);
        let (mut n, mut queued) = (0, 0);
        for q in std::iter::once(self.default_queue()).chain(queues.iter()) {
            let mut l = q.locked();
            queued += l.len();
            let head = q.sentinel.get();
            // SAFETY: the sentinel is not posted (barriers are serialized and the previous
            // barrier waited for it), and it lives as long as the queue, which the strong count
            // below keeps alive until the sentinel has run.
            let entrained = unsafe {
                (*head).func = Some(sentinel);
                l.entrain(head)
            };
            if entrained {
                n += 1;
                // Counted under the queue lock, before the invoker can extract the sentinel.
                self.barrier.count.add();
                // SAFETY: `q` is a live Arc; the sentinel releases this count.
                unsafe { Arc::increment_strong_count(Arc::as_ptr(q)) };
            }
        }
        (n, queued)
    }

    /// No queue needed a sentinel, yet callbacks may be in flight: a batch the invoker
    /// extracted from a queue that was adopted (its thread exited) before we entrained is in no
    /// listed queue any more. Extraction and invocation happen under the invoker lock, so
    /// taking it once waits for such a batch. (With a sentinel entrained anywhere nothing more
    /// is needed: it is extracted only after every batch extracted before it has run.)
    fn wait_for_in_flight(&self) {
        drop(self.invoker.lock());
    }

    /// Drop the entraining reference; true if every sentinel already ran.
    fn release_guard(&self) -> bool {
        self.barrier.count.release_guard()
    }

    fn sentinels_outstanding(&self) -> u32 {
        self.barrier.count.outstanding()
    }

    /// rcu_barrier. Returns false if a concurrent barrier did the work.
    pub(crate) fn barrier(&self, ops: &dyn DomainOps) -> bool {
        let Some(_g) = self.begin_barrier() else {
            return false;
        };
        let (n, _) = self.entrain_all();
        if n > 0 {
            self.wake_worker(ops);
        } else {
            self.wait_for_in_flight();
        }
        if !self.release_guard() {
            loop {
                let c = self.sentinels_outstanding();
                if c == 0 {
                    break;
                }
                futex::wait(self.barrier.count.word(), c, None);
            }
        }
        self.end_barrier();
        true
    }

    /// The expedited barrier (see the module documentation).
    pub(crate) fn barrier_expedited(&self, ops: &dyn DomainOps) -> ExpediteReport {
        let t0 = Instant::now();
        let mut report = ExpediteReport::default();
        let Some(_g) = self.begin_barrier() else {
            report.shared = true;
            report.elapsed = t0.elapsed();
            return report;
        };
        let queued;
        (report.sentinels, queued) = self.entrain_all();
        if report.sentinels == 0 {
            self.wait_for_in_flight();
        }
        if !self.release_guard() {
            // The patent's deferred-context case, taken one step further: the callbacks run
            // here instead of in the worker, and here at a boosted priority, so that busy
            // threads of the application do not stretch the unload the way they stretch the
            // worker's passes (the worker yields between passes; on the 2-vCPU guest of
            // docs/performance.md two busy readers made the unboosted inline invocation of 100k
            // callbacks 2-3x slower than on idle CPUs). Restored when the barrier ends. Below
            // `INLINE_BOOST_MIN` callbacks the three system calls would cost more than they save.
            let invoker_boost = (queued >= INLINE_BOOST_MIN)
                .then(|| crate::boost::boost_current_thread().keep(&mut report.boosts_denied))
                .flatten();
            report.invoker_boosted = invoker_boost.is_some();
            // The unloader is the invoker for the whole expedited barrier: otherwise the worker,
            // kicked by each grace period's completion, would race it for the ready callbacks.
            // The worker steps aside while `expediting` is raised: the invoker lock is unfair,
            // and a worker re-locking between its passes starved this barrier through a whole
            // flood (the flood test saw 93 ms and no round of ours).
            let _aside = WorkerAside::new(self);
            let mut queues = self.invoker.lock();
            while self.sentinels_outstanding() != 0 {
                report.rounds += 1;
                // Run what is already ready (a reader may be waiting for it), and assign every
                // queued callback, sentinels included, its grace period, so the grace period
                // driven next covers them all.
                report.callbacks_inline += self.invoke_ready_inline(&mut queues, ops);
                let d = ops.drive(ops.snap(), Mode::Expedited);
                report.grace_periods += 1;
                report.threads_forced += d.forced;
                report.threads_boosted += d.boosted;
                report.boosts_denied += d.boost_denied;
                report.callbacks_inline += self.invoke_ready_inline(&mut queues, ops);
            }
            drop(queues);
        }
        self.end_barrier();
        report.elapsed = t0.elapsed();
        report
    }
}

impl crate::Rcu {
    fn check_barrier_context(&self) -> Result<(), BarrierError> {
        barrier_context(self.name(), self.in_read_section())
    }

    /// `rcu_barrier`: wait until every callback posted to this domain before the call has run.
    ///
    /// With nothing pending it returns in about a microsecond; otherwise it waits for the grace
    /// period the last callback of each queue waits for, and for the worker to reach it.
    /// Concurrent callers share barriers. A callback that re-posts itself can outrun one
    /// barrier: stop the re-posting first (a flag the callback checks), then barrier — or use
    /// [`barrier_until_quiet`](crate::Rcu::barrier_until_quiet).
    ///
    /// # Errors
    ///
    /// From inside an RCU callback, or inside a read-side section of this domain: both would
    /// hang.
    pub fn barrier(&self) -> Result<(), BarrierError> {
        self.check_barrier_context()?;
        self.offline(|| self.shared.engine.barrier(&*self.shared));
        Ok(())
    }

    /// Barrier repeatedly until one completes during which no callback was posted (a
    /// re-posting chain that honours a stop flag is then drained). Returns the barriers run.
    ///
    /// # Errors
    ///
    /// As [`barrier`](crate::Rcu::barrier), and [`BarrierError::NotQuiet`] after 10 000
    /// barriers if callbacks keep being posted.
    pub fn barrier_until_quiet(&self) -> Result<u32, BarrierError> {
        self.shared
            .engine
            .until_quiet(self.name(), || self.barrier())
    }

    /// The expedited barrier (patent US9262234): entrain as [`barrier`](crate::Rcu::barrier)
    /// does, then repeat — drive an expedited grace period (forcing quiescent states, boosting
    /// readers that hold it up), invoke ready callbacks here, in the caller's context, with no
    /// batch limit — until every callback posted before the call has run.
    ///
    /// # Errors
    ///
    /// As [`barrier`](crate::Rcu::barrier).
    pub fn barrier_expedited(&self) -> Result<ExpediteReport, BarrierError> {
        self.check_barrier_context()?;
        Ok(self.offline(|| self.shared.engine.barrier_expedited(&*self.shared)))
    }
}

/// Refuse a barrier that would hang: from a callback (the worker would wait for itself) or
/// inside a read section of the same domain. Shared by every domain kind.
pub(crate) fn barrier_context(domain: &str, in_read_section: bool) -> Result<(), BarrierError> {
    if crate::callback::in_callback() {
        return Err(BarrierError::FromCallback {
            domain: domain.to_owned(),
        });
    }
    if in_read_section {
        return Err(BarrierError::InsideReader {
            domain: domain.to_owned(),
        });
    }
    Ok(())
}

impl CbEngine {
    /// `barrier_until_quiet` for every domain kind: run `barrier` until one completes during
    /// which nothing was posted to this engine, at most 10,000 times.
    pub(crate) fn until_quiet(
        &self,
        domain: &str,
        mut barrier: impl FnMut() -> Result<(), BarrierError>,
    ) -> Result<u32, BarrierError> {
        const MAX_ROUNDS: u32 = 10_000;
        let mut posted = self.posted();
        for rounds in 1..=MAX_ROUNDS {
            barrier()?;
            let now = self.posted();
            if now == posted {
                return Ok(rounds);
            }
            posted = now;
        }
        Err(BarrierError::NotQuiet {
            domain: domain.to_owned(),
            rounds: MAX_ROUNDS,
        })
    }
}

/// The sentinel's function, to recognise sentinels in a queue.
pub(crate) fn sentinel_fn() -> crate::RcuCallback {
    sentinel
}

/// fork(), child: a sentinel of a barrier that no thread waits for any more was unlinked;
/// release the reference to its queue that it held.
pub(crate) fn abandon_sentinel(head: *mut RcuHead) {
    // SAFETY: as in `sentinel`: the head is the `sentinel` field of a CbQueue kept alive by the
    // strong count taken when it was entrained, which this releases.
    unsafe {
        let q = head
            .byte_sub(std::mem::offset_of!(CbQueue, sentinel))
            .cast::<CbQueue>();
        Arc::decrement_strong_count(q);
    }
}
