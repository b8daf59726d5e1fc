//! The callback engine: per-thread FIFO queues, posting, and adoption of orphaned queues.
//!
//! Each thread that posts to a domain gets its own [`CbQueue`] the first time it posts, found
//! through one thread-local slot as readers are (registry.rs); a domain also has a *default*
//! queue that never goes away. A queue is a lock-free *intake* (posters push the head with one
//! CAS) in front of a [`SegCbList`] behind a lock that only the worker, barriers and adoption
//! take; they drain the intake, in posting order, into NEXT before they look. Posting writes no
//! shared cache line and never waits for the worker (liburcu's per-thread `call_rcu_data` is a
//! wait-free queue too; its default queue is one that every thread hits).
//!
//! When a thread exits, its queue is *adopted*: its callbacks, in order and including any
//! barrier sentinel entrained among them, move to the tail of the default queue, under the
//! engine's queue-list lock — the lock `barrier()` holds while it entrains, so a barrier sees
//! either the queue or its callbacks in the default queue, never neither (liburcu learned this
//! the hard way: commit 51b98c3, rcu-anchors.md).
//!
//! Invocation is serialized by the engine's *invoker* lock: whoever extracts ready callbacks
//! (the worker, or an expedited barrier invoking inline) invokes that whole batch before the
//! next extraction. With FIFO queues and FIFO adoption, that is what makes a sentinel behind
//! the last callback of every queue a barrier.

use crate::callback::{self, RcuHead};
use crate::domain::lock;
use crate::forklock::ForkLock;
use crate::ops::DomainOps;
use crate::segcblist::{CbList, SegCbList};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// One FIFO callback queue. The sentinel head is the queue's own barrier callback: barriers are
/// serialized, so a queue has at most one sentinel posted at a time (the kernel's
/// `rdp->barrier_head`), and a barrier allocates nothing per queue.
#[repr(C, align(128))]
pub(crate) struct CbQueue {
    /// Lock-free intake: posters push here (a Treiber stack through the heads' `next`), and
    /// whoever holds `list`'s lock drains it, reversed, into NEXT. Posting never takes the lock,
    /// so it never waits for the worker (which holds the lock while it moves segments).
    pub(crate) intake: AtomicPtr<RcuHead>,
    /// Posts since the intake was last drained by its poster: a trigger, not a count (posters
    /// of a shared queue may lose each other's increments, which only delays a drain).
    pub(crate) since_drain: AtomicU32,
    pub(crate) list: Mutex<SegCbList>,
    /// Callbacks ever posted to this queue and drained from the intake (written under `list`'s
    /// lock, when the intake is drained; exact once the intake is drained).
    pub(crate) posted: AtomicU64,
    pub(crate) sentinel: UnsafeCell<RcuHead>,
    pub(crate) engine: *const CbEngine,
    /// The owning thread's slot; null for the default queue.
    pub(crate) owner_cell: *const AtomicPtr<CbQueue>,
}

// SAFETY: `list` is behind a mutex and counters are atomic. `sentinel` is touched only under
// `list`'s lock (entrain) or by the single invoker that extracted it. The raw pointers are
// read-only: `engine` points to the engine that owns (and outlives) the queue, `owner_cell`
// into the owning thread's TLS, written only under the global registry lock (registry.rs).
unsafe impl Send for CbQueue {}
// SAFETY: as for Send.
unsafe impl Sync for CbQueue {}

impl std::fmt::Debug for CbQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CbQueue")
            .field("posted", &self.posted.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl CbQueue {
    /// Push a head onto the intake.
    ///
    /// # Safety
    ///
    /// `h` is valid, in no queue, and stays valid until its callback has been invoked.
    unsafe fn push(&self, h: *mut RcuHead) {
        let mut top = self.intake.load(Ordering::Relaxed);
        loop {
            // SAFETY: `h` is ours until the CAS publishes it.
            unsafe { (*h).next = top };
            // SeqCst: the poster's following load of the worker's `idle` flag must not be
            // ordered before this push (the Dekker pair with `worker_loop` going idle).
            match self
                .intake
                .compare_exchange_weak(top, h, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => top = now,
            }
        }
    }

    /// Is anything waiting in the intake?
    pub(crate) fn intake_pending(&self) -> bool {
        !self.intake.load(Ordering::SeqCst).is_null()
    }

    /// Move the intake, in posting order, to the tail of `l` (the caller holds `list`'s lock),
    /// and count it as posted.
    ///
    /// One pass: the stack (newest first) is reversed in place while it is counted, and the
    /// reversed chain is spliced onto NEXT whole. Posting counts nothing itself, so that a post
    /// is one CAS; a barrier behind a million-callback intake pays one walk, not two (it paid
    /// 2–4.7 ms of a 13–17 ms barrier with a per-node enqueue, docs/performance.md).
    pub(crate) fn drain_intake(&self, l: &mut SegCbList) {
        // Acquire: pairs with the posters' pushes; the heads' contents are visible.
        let mut p = self.intake.swap(std::ptr::null_mut(), Ordering::Acquire);
        if p.is_null() {
            return;
        }
        let tail = p;
        let mut rev: *mut RcuHead = std::ptr::null_mut();
        let mut n = 0usize;
        while !p.is_null() {
            // SAFETY: every node was pushed by `push` and is owned by this queue now.
            let next = unsafe { (*p).next };
            // SAFETY: as above.
            unsafe { (*p).next = rev };
            rev = p;
            p = next;
            n += 1;
        }
        // SAFETY: `rev`..`tail` is the chain just reversed: `n` heads linked through `next`,
        // `tail` (the oldest push, first in the stack's chain) ending it with null.
        let mut chain = unsafe { CbList::from_chain(rev, tail, n) };
        l.enqueue_list(&mut chain);
        // Only ever written under `list`'s lock; readers without it see a count that lags.
        self.posted.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Every [`DRAIN_EVERY`] posts, while the worker waits for a grace period (`worker_waits`),
    /// the poster drains the intake itself if nobody holds the list: it walks heads it has just
    /// written, still in its cache, instead of leaving a million-long cold chain to whoever
    /// locks the list next — in the worst case a barrier, right on its critical path (a reader
    /// holding the grace period while callbacks pile up). A worker that is invoking drains at
    /// its next pass anyway; a poster draining then only contends with it for the list.
    #[inline]
    fn after_push(&self, worker_waits: impl FnOnce() -> bool) {
        let n = self.since_drain.load(Ordering::Relaxed) + 1;
        if n < DRAIN_EVERY {
            self.since_drain.store(n, Ordering::Relaxed);
            return;
        }
        self.since_drain.store(0, Ordering::Relaxed);
        if !worker_waits() {
            return;
        }
        let l = match self.list.try_lock() {
            Ok(l) => l,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            // The holder drains the intake before it looks at the list.
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        let mut l = l;
        self.drain_intake(&mut l);
    }

    /// Lock the segmented list with the intake drained into it.
    pub(crate) fn locked(&self) -> std::sync::MutexGuard<'_, SegCbList> {
        let mut l = lock(&self.list);
        self.drain_intake(&mut l);
        l
    }
}

/// Posts between two drains of an intake by its poster (see `CbQueue::after_push`): large
/// enough that the lock is rare on the posting path, small enough that the chain is still in
/// the poster's cache.
const DRAIN_EVERY: u32 = 256;

/// Tuning of callback invocation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CbConfig {
    /// Callbacks invoked per worker pass before the worker defers the rest.
    pub(crate) batch: usize,
    /// Time a worker pass may spend invoking before it defers the rest.
    pub(crate) time_cap: Duration,
}

impl Default for CbConfig {
    fn default() -> Self {
        // The kernel invokes `blimit` (10) callbacks per softirq and lifts the limit past
        // `qhimark` (10000); a userspace worker pays a wake-up per pass, so it takes bigger
        // bites, and bounds each bite in time as `rcu_do_batch` does with `rcu_resched_ns`.
        CbConfig {
            batch: 10_000,
            time_cap: Duration::from_millis(2),
        }
    }
}

/// Callback counters of a domain, from `callback_stats()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallbackStats {
    /// Callbacks posted.
    pub posted: u64,
    /// Callbacks invoked (barrier sentinels are not counted in either).
    pub invoked: u64,
    /// Invoked callbacks that panicked (caught).
    pub panicked: u64,
    /// Callbacks moved from an exiting thread's queue to the default queue.
    pub adopted: u64,
    /// Callbacks invoked directly by expedited barriers.
    pub invoked_inline: u64,
    /// Barriers that waited (entrained sentinels or found nothing pending).
    pub barriers: u64,
    /// Barriers that returned because a concurrent barrier did the work.
    pub barriers_shared: u64,
    /// Worker passes that stopped at the batch limit or the time cap.
    pub deferred_passes: u64,
}

impl CallbackStats {
    /// Posted and not yet invoked.
    pub fn pending(&self) -> u64 {
        self.posted.saturating_sub(self.invoked)
    }
}

#[derive(Debug, Default)]
pub(crate) struct CbCounters {
    /// Posted to queues that have since been adopted (their own counters are gone).
    pub(crate) posted_retired: AtomicU64,
    pub(crate) invoked: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) adopted: AtomicU64,
    pub(crate) invoked_inline: AtomicU64,
    pub(crate) barriers: AtomicU64,
    pub(crate) barriers_shared: AtomicU64,
    pub(crate) deferred_passes: AtomicU64,
    /// Sentinels invoked (subtracted from the invoked count).
    pub(crate) sentinels: AtomicU64,
}

/// The worker's shared flags. See cbworker.rs.
#[derive(Debug)]
pub(crate) struct CbWorkerState {
    /// Futex word, bumped by every wake-up request.
    pub(crate) kick: AtomicU32,
    /// The worker found nothing to do and sleeps (or is not started): posters must wake it.
    pub(crate) idle: AtomicBool,
    /// The worker sleeps until a grace period completes.
    pub(crate) waiting_gp: AtomicBool,
    pub(crate) stop: AtomicBool,
    /// Expedited barriers waiting for (or holding) the invoker lock: the worker steps aside at
    /// its next pass boundary instead of re-taking the (unfair) lock ahead of them.
    pub(crate) expediting: AtomicU32,
    pub(crate) thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The barrier's shared state. See barrier.rs.
#[derive(Debug, Default)]
pub(crate) struct BarrierState {
    /// Serializes barriers; concurrent callers share through `seq`.
    pub(crate) lock: ForkLock<()>,
    /// Even: idle; odd: a barrier is entraining or waiting.
    pub(crate) seq: AtomicU64,
    /// Sentinels outstanding, plus one while entraining.
    pub(crate) count: crate::barrier_count::BarrierCount,
}

/// A domain's callback engine.
#[derive(Debug)]
pub(crate) struct CbEngine {
    pub(crate) slot: u32,
    default: OnceLock<Arc<CbQueue>>,
    /// Per-thread queues (the default queue is not in this list).
    pub(crate) queues: Mutex<Vec<Arc<CbQueue>>>,
    /// Serializes extraction + invocation; holds the pass's snapshot of the queue list.
    pub(crate) invoker: ForkLock<Vec<Arc<CbQueue>>>,
    pub(crate) worker: CbWorkerState,
    pub(crate) barrier: BarrierState,
    pub(crate) config: CbConfig,
    pub(crate) counters: CbCounters,
    /// The owner's invoker, if it set one (callback.rs, [`InvokeHook`](crate::InvokeHook)).
    pub(crate) hook: OnceLock<crate::InvokeHook>,
}

impl CbEngine {
    pub(crate) fn new(slot: u32, config: CbConfig) -> CbEngine {
        CbEngine {
            slot,
            default: OnceLock::new(),
            queues: Mutex::new(Vec::new()),
            invoker: ForkLock::new(Vec::new()),
            worker: CbWorkerState {
                kick: AtomicU32::new(0),
                idle: AtomicBool::new(true),
                waiting_gp: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                expediting: AtomicU32::new(0),
                thread: Mutex::new(None),
            },
            barrier: BarrierState::default(),
            config,
            counters: CbCounters::default(),
            hook: OnceLock::new(),
        }
    }

    pub(crate) fn new_queue(&self, owner_cell: *const AtomicPtr<CbQueue>) -> Arc<CbQueue> {
        Arc::new(CbQueue {
            intake: AtomicPtr::new(std::ptr::null_mut()),
            since_drain: AtomicU32::new(0),
            list: Mutex::new(SegCbList::new()),
            posted: AtomicU64::new(0),
            sentinel: UnsafeCell::new(RcuHead::new()),
            engine: self as *const CbEngine,
            owner_cell,
        })
    }

    /// The default queue (orphans, and posts from threads that cannot have a queue).
    pub(crate) fn default_queue(&self) -> &Arc<CbQueue> {
        self.default
            .get_or_init(|| self.new_queue(std::ptr::null()))
    }

    /// Every queue, default first, into `out`.
    pub(crate) fn all_queues(&self, out: &mut Vec<Arc<CbQueue>>) {
        out.clear();
        out.push(Arc::clone(self.default_queue()));
        out.extend(lock(&self.queues).iter().cloned());
    }

    /// Post `head` on the calling thread's queue.
    ///
    /// # Safety
    ///
    /// `head` is valid, in no queue, and stays valid until its callback has been invoked.
    pub(crate) unsafe fn post(&self, ops: &dyn DomainOps, head: *mut RcuHead) {
        let q = match crate::registry::lookup_queue(self.slot) {
            Some(q) => q,
            None => crate::registry::register_queue(self).unwrap_or_else(|| {
                // Thread teardown (after rcu-core's exit hook): use the default queue.
                let d: &CbQueue = self.default_queue();
                std::ptr::NonNull::from(d)
            }),
        };
        // SAFETY: a queue reachable from our slot (or the default queue) is alive.
        let q = unsafe { q.as_ref() };
        // SAFETY: forwarded from the caller.
        unsafe { q.push(head) };
        q.after_push(|| self.worker.waiting_gp.load(Ordering::Relaxed));
        // A worker going idle stores `idle` and then looks at every intake (SeqCst both
        // sides): either it sees our push or we see `idle` and wake it.
        if self.worker.idle.load(Ordering::SeqCst) && self.worker.idle.swap(false, Ordering::SeqCst)
        {
            self.wake_worker(ops);
        }
    }

    /// Thread exit: move the exiting thread's queue to the default queue's tail. Called under
    /// the global registry lock.
    pub(crate) fn adopt(&self, q: &CbQueue) {
        let mut queues = lock(&self.queues);
        let n = {
            let mut l = q.locked();
            let mut orphans = l.take_all();
            let n = orphans.len();
            if n > 0 {
                self.default_queue().locked().adopt(&mut orphans);
            }
            n
        };
        self.counters
            .posted_retired
            .fetch_add(q.posted.load(Ordering::Relaxed), Ordering::Relaxed);
        // The default queue's counter takes none of these: they were counted when posted.
        self.counters.adopted.fetch_add(n as u64, Ordering::Relaxed);
        queues.retain(|x| !std::ptr::eq(Arc::as_ptr(x), q));
        drop(queues);
        if n > 0 {
            self.kick();
        }
    }

    /// Domain teardown: forget every thread's queue (after a barrier emptied them).
    /// Called under the global registry lock.
    pub(crate) fn detach_all(&self) {
        let mut queues = lock(&self.queues);
        for q in queues.drain(..) {
            // SAFETY: the owning thread has not run its exit hook (it would have removed the
            // queue under the registry lock we hold), so its TLS slot is alive.
            unsafe { &*q.owner_cell }.store(std::ptr::null_mut(), Ordering::Relaxed);
            self.counters
                .posted_retired
                .fetch_add(q.posted.load(Ordering::Relaxed), Ordering::Relaxed);
            let mut l = q.locked();
            let mut rest = l.take_all();
            self.default_queue().locked().adopt(&mut rest);
        }
    }

    pub(crate) fn stats(&self) -> CallbackStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // Posts are counted when an intake is drained: drain each, so the count is exact.
        let drained = |q: &CbQueue| {
            let l = q.locked();
            let n = q.posted.load(Ordering::Relaxed);
            drop(l);
            n
        };
        let queues = lock(&self.queues);
        let mut posted = get(&c.posted_retired) + drained(self.default_queue());
        posted += queues.iter().map(|q| drained(q)).sum::<u64>();
        drop(queues);
        CallbackStats {
            posted,
            invoked: get(&c.invoked).saturating_sub(get(&c.sentinels)),
            panicked: get(&c.panicked),
            adopted: get(&c.adopted),
            invoked_inline: get(&c.invoked_inline),
            barriers: get(&c.barriers),
            barriers_shared: get(&c.barriers_shared),
            deferred_passes: get(&c.deferred_passes),
        }
    }

    /// Callbacks posted so far (a cheap sum for `barrier_until_quiet`).
    pub(crate) fn posted(&self) -> u64 {
        self.stats().posted
    }
}

/// Post a boxed closure.
pub(crate) fn post_closure<F: FnOnce() + Send + 'static>(ops: &dyn DomainOps, f: F) {
    let head = callback::boxed(f);
    // SAFETY: a fresh boxed head, owned by the queue until its trampoline frees it.
    unsafe { ops.engine().post(ops, head) };
}

impl crate::Rcu {
    /// `call_rcu`: run `f` after a grace period, on the domain's callback worker.
    ///
    /// Never blocks (one allocation, one CAS on the thread's own queue). Callbacks posted by one
    /// thread run in the order posted. Use [`barrier`](crate::Rcu::barrier) to wait for
    /// callbacks, not [`synchronize`](crate::Rcu::synchronize): a grace period does not wait
    /// for them.
    pub fn call<F: FnOnce() + Send + 'static>(&self, f: F) {
        post_closure(&*self.shared, f);
    }

    /// `call_rcu` with an embedded [`RcuHead`]: no allocation. `func` receives `head` after a
    /// grace period (typically it frees the structure containing `head`, found with
    /// `offset_of!`).
    ///
    /// # Safety
    ///
    /// `head` must be valid for writes, not currently posted, and must stay valid and unmoved
    /// until `func` has been invoked with it. `func` must be safe to call with `head` on any
    /// thread after a grace period, must not unwind, and its code must stay mapped until it has
    /// run (for code in a loadable module: unload only after [`barrier`](crate::Rcu::barrier)).
    pub unsafe fn call_raw(&self, head: *mut RcuHead, func: crate::RcuCallback) {
        // SAFETY: the caller guarantees `head` is valid and unposted.
        unsafe { (*head).func = Some(func) };
        // SAFETY: forwarded from the caller.
        unsafe { self.shared.engine.post(&*self.shared, head) };
    }

    /// Have every callback of this domain invoked through `hook` (once per domain; false if
    /// one was already set). Closures posted with `call` are callbacks too: their trampoline
    /// is what `hook` receives.
    ///
    /// # Safety
    ///
    /// `hook` must honour [`InvokeHook`](crate::InvokeHook)'s contract for every callback posted
    /// to this domain, by anyone.
    pub unsafe fn set_invoke_hook(&self, hook: crate::InvokeHook) -> bool {
        self.shared.engine.hook.set(hook).is_ok()
    }

    /// Counters of this domain's callbacks.
    pub fn callback_stats(&self) -> CallbackStats {
        self.shared.engine.stats()
    }
}

impl CbEngine {
    /// fork(): hold the worker-handle, queue-list and queue locks across the fork.
    pub(crate) fn fork_prepare(&self, held: &mut Vec<crate::ops::Held>) {
        let default = Arc::clone(self.default_queue());
        // SAFETY: the engine belongs to a published domain (`fork::hold`).
        held.push(unsafe { crate::fork::hold(lock(&self.worker.thread)) });
        let queues = lock(&self.queues);
        let all: Vec<Arc<CbQueue>> = std::iter::once(default)
            .chain(queues.iter().cloned())
            .collect();
        // SAFETY: as above.
        held.push(unsafe { crate::fork::hold(queues) });
        for q in &all {
            // SAFETY: as above; the queue is kept alive by the held queue list (or, for the
            // default queue, by the engine).
            held.push(unsafe { crate::fork::hold(lock(&q.list)) });
        }
    }

    /// fork(), child: keep the forking thread's queue, adopt the others', abandon a barrier in
    /// flight and the worker thread.
    pub(crate) fn fork_child(&self) {
        let default = Arc::clone(self.default_queue());
        let mine = crate::registry::lookup_queue(self.slot);
        let mut queues = lock(&self.queues);
        let all: Vec<Arc<CbQueue>> = std::iter::once(Arc::clone(&default))
            .chain(queues.drain(..))
            .collect();
        for q in all {
            let is_default = Arc::ptr_eq(&q, &default);
            let ours = mine.is_some_and(|m| std::ptr::eq(m.as_ptr(), Arc::as_ptr(&q)));
            let mut l = q.locked();
            l.forget_in_flight();
            for h in l.remove_func(crate::barrier::sentinel_fn()) {
                crate::barrier::abandon_sentinel(h);
            }
            if ours {
                drop(l);
                queues.push(q);
            } else if !is_default {
                self.counters
                    .posted_retired
                    .fetch_add(q.posted.load(Ordering::Relaxed), Ordering::Relaxed);
                let mut orphans = l.take_all();
                drop(l);
                default.locked().adopt(&mut orphans);
            }
        }
        drop(queues);
        // SAFETY: we are the only thread of a freshly forked child, holding no guard of these.
        unsafe {
            self.invoker.reset_in_child().clear();
            drop(self.barrier.lock.reset_in_child());
        }
        let seq = self.barrier.seq.load(Ordering::Relaxed);
        self.barrier.seq.store((seq + 1) & !1, Ordering::Relaxed);
        self.barrier.count.reset();
        if let Some(h) = lock(&self.worker.thread).take() {
            // Dropping would detach a pthread that does not exist in this process.
            std::mem::forget(h);
        }
        self.worker.stop.store(false, Ordering::Relaxed);
        self.worker.waiting_gp.store(false, Ordering::Relaxed);
        self.worker.expediting.store(0, Ordering::Relaxed);
        self.worker.idle.store(true, Ordering::Relaxed);
    }
}
