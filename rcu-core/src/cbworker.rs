//! The callback worker: one thread per domain that invokes callbacks once their grace period
//! has completed.
//!
//! A *pass* advances every queue (moves segments whose grace period completed to DONE),
//! accelerates new callbacks (assigns them the next grace period), and invokes ready callbacks
//! up to the batch limit and the time cap. Then:
//!
//! * if it stopped at a limit, it yields and passes again: the rest is *deferred*, so a flood
//!   of callbacks lags behind grace periods instead of monopolising a CPU — the behaviour the
//!   seed document warns makes back-to-back `synchronize()` calls useless before an unload;
//! * if callbacks wait for a grace period, it asks the domain's grace-period worker for it and
//!   sleeps until the grace period completes (the driver kicks it);
//! * if nothing is queued, it sleeps until a poster kicks it.
//!
//! Every sleep is a futex wait for a specific wake-up; nothing sleeps for a fixed time (liburcu's
//! worker sleeps 10 ms after every wake-up, which is the floor of its `rcu_barrier`).

use crate::callback;
use crate::cbqueue::{CbEngine, CbQueue};
use crate::domain::lock;
use crate::futex;
use crate::ops::DomainOps;
use crate::segcblist::CbList;
use crate::seq::GpSeq;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Callbacks extracted per queue-lock acquisition (and between time-cap checks).
const CHUNK: usize = 64;

/// What a pass leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Ready callbacks remain (a limit was hit) or new ones arrived: pass again.
    More,
    /// Callbacks wait for this grace period.
    NeedGp(GpSeq),
    /// Nothing queued.
    Idle,
}

impl CbEngine {
    /// Wake the worker, starting it if it has not been.
    pub(crate) fn wake_worker(&self, ops: &dyn DomainOps) {
        let mut t = lock(&self.worker.thread);
        if t.is_none() && !self.worker.stop.load(Ordering::Acquire) {
            let Some(owner) = ops.arc() else { return };
            let spawned = std::thread::Builder::new()
                .name(format!("rcu-cb/{}", ops.name()))
                .spawn(move || {
                    let _service = crate::service::ServiceThread::enter();
                    owner.engine().worker_loop(&*owner)
                });
            match spawned {
                Ok(h) => *t = Some(h),
                Err(e) => tracing::error!(
                    target: "rcu_core",
                    domain = ops.name(),
                    "cannot start the callback worker ({e}); callbacks run at the next barrier"
                ),
            }
        }
        drop(t);
        self.kick();
    }

    /// Bump the worker's futex word and wake it.
    pub(crate) fn kick(&self) {
        self.worker.kick.fetch_add(1, Ordering::Release);
        futex::wake_all(&self.worker.kick);
    }

    /// A grace period of the domain completed: wake the worker if it waits for one.
    pub(crate) fn gp_completed(&self) {
        // Pairs with the fence in `worker_loop` after raising `waiting_gp`: either the worker
        // sees the completion when it re-checks, or we see the flag.
        fence(Ordering::SeqCst);
        if self.worker.waiting_gp.load(Ordering::Relaxed) {
            self.kick();
        }
    }

    /// Stop the worker thread (after a barrier emptied the queues).
    pub(crate) fn stop_worker(&self) {
        self.worker.stop.store(true, Ordering::Release);
        self.kick();
        if let Some(t) = lock(&self.worker.thread).take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }

    fn worker_loop(&self, ops: &dyn DomainOps) {
        let w = &self.worker;
        loop {
            let kick = w.kick.load(Ordering::Acquire);
            if w.stop.load(Ordering::Acquire) {
                return;
            }
            if w.expediting.load(Ordering::Acquire) != 0 {
                // An expedited barrier is taking over invocation; it kicks us when done.
                futex::wait(&w.kick, kick, None);
                continue;
            }
            match self
                .pass(ops, self.config.batch, Some(self.config.time_cap))
                .0
            {
                Outcome::More => std::thread::yield_now(),
                Outcome::NeedGp(gp) => {
                    w.waiting_gp.store(true, Ordering::Relaxed);
                    // Pairs with the fence in `gp_completed`.
                    fence(Ordering::SeqCst);
                    ops.gp_worker().request(ops, gp);
                    if !gp.done(ops.completed()) {
                        futex::wait(&w.kick, kick, None);
                    }
                    w.waiting_gp.store(false, Ordering::Relaxed);
                }
                Outcome::Idle => {
                    // SeqCst: the Dekker pair with `post` (push, then load `idle`).
                    w.idle.store(true, Ordering::SeqCst);
                    if self.any_queued() {
                        w.idle.store(false, Ordering::Relaxed);
                        continue;
                    }
                    futex::wait(&w.kick, kick, None);
                    w.idle.store(false, Ordering::Relaxed);
                }
            }
        }
    }

    /// Is any callback queued? Inspects each queue under its lock (see `post`).
    fn any_queued(&self) -> bool {
        let mut qs = Vec::new();
        self.all_queues(&mut qs);
        qs.iter()
            .any(|q| q.intake_pending() || lock(&q.list).len() > 0)
    }

    /// One pass: advance and accelerate every queue, invoke up to `budget` ready callbacks
    /// within `cap`. Holds the invoker lock throughout.
    pub(crate) fn pass(
        &self,
        ops: &dyn DomainOps,
        budget: usize,
        cap: Option<Duration>,
    ) -> (Outcome, u64) {
        let mut queues = self.invoker.lock();
        self.pass_locked(&mut queues, ops, budget, cap)
    }

    /// A pass by the holder of the invoker lock (`queues` is the lock's scratch list).
    pub(crate) fn pass_locked(
        &self,
        queues: &mut Vec<Arc<CbQueue>>,
        ops: &dyn DomainOps,
        budget: usize,
        cap: Option<Duration>,
    ) -> (Outcome, u64) {
        let mut invoked = 0u64;
        self.all_queues(queues);
        let start = Instant::now();
        let mut need: Option<GpSeq> = None;
        for q in queues.iter() {
            let mut l = q.locked();
            l.advance(ops.completed());
            // The snapshot is taken under the queue lock, after every callback it assigns was
            // enqueued (segcblist.rs: `accelerate`).
            l.accelerate(ops.snap());
            if let Some(g) = l.needed() {
                need = Some(match need {
                    Some(n) if g.done(n) => n,
                    _ => g,
                });
            }
        }
        let mut left = budget;
        let mut limited = false;
        'queues: for q in queues.iter() {
            loop {
                if left == 0 || cap.is_some_and(|c| start.elapsed() >= c) {
                    limited = true;
                    break 'queues;
                }
                let batch = lock(&q.list).take_done(left.min(CHUNK));
                if batch.is_empty() {
                    break;
                }
                let n = self.invoke_batch(q, batch);
                left -= n;
                invoked += n as u64;
            }
        }
        let queued_new = queues
            .iter()
            .any(|q| q.intake_pending() || lock(&q.list).has_next());
        queues.clear();
        let outcome = if limited {
            if budget > 0 {
                self.counters
                    .deferred_passes
                    .fetch_add(1, Ordering::Relaxed);
            }
            Outcome::More
        } else if queued_new {
            Outcome::More
        } else {
            match need {
                Some(g) if !g.done(ops.completed()) => Outcome::NeedGp(g),
                Some(_) => Outcome::More,
                None => Outcome::Idle,
            }
        };
        (outcome, invoked)
    }

    /// Invoke an extracted batch of `q`, then account for it. Returns how many ran.
    fn invoke_batch(&self, q: &CbQueue, mut batch: CbList) -> usize {
        let sentinel = crate::barrier::sentinel_fn() as usize;
        let invoking = callback::Invoking::begin(&self.counters.panicked, self.hook.get().copied());
        let (mut n, mut counted) = (0usize, 0usize);
        while let Some(h) = batch.pop() {
            // The invoked count is published in bulk, but always before a barrier sentinel runs:
            // the sentinel may release a caller who then reads the counters and must find every
            // callback ahead of it (and the sentinel itself) counted.
            // SAFETY: `h` is a live head extracted from DONE.
            if unsafe { (*h).func }.is_some_and(|f| f as usize == sentinel) {
                self.counters
                    .invoked
                    .fetch_add((n + 1 - counted) as u64, Ordering::Relaxed);
                counted = n + 1;
            }
            // SAFETY: `h` was extracted from DONE (its grace period completed) by the holder of
            // the invoker lock, and is invoked once.
            unsafe { invoking.invoke(h) };
            n += 1;
        }
        drop(invoking);
        self.counters
            .invoked
            .fetch_add((n - counted) as u64, Ordering::Relaxed);
        lock(&q.list).finish(n, &mut batch);
        n
    }

    /// Invoke every ready callback now, in the caller's context, with no limit (the patent's
    /// "invoking the deferred context directly"), as the holder of the invoker lock. Returns how
    /// many ran.
    pub(crate) fn invoke_ready_inline(
        &self,
        queues: &mut Vec<Arc<CbQueue>>,
        ops: &dyn DomainOps,
    ) -> u64 {
        // Barrier sentinels are not callbacks anyone posted; the invoker lock we hold makes
        // the difference of the sentinel counter exact.
        let sentinels = self.counters.sentinels.load(Ordering::Relaxed);
        let (_, n) = self.pass_locked(queues, ops, usize::MAX, None);
        let n = n - (self.counters.sentinels.load(Ordering::Relaxed) - sentinels);
        self.counters.invoked_inline.fetch_add(n, Ordering::Relaxed);
        n
    }
}
