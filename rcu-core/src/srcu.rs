//! `Srcu`: sleepable RCU, one domain per subsystem.
//!
//! An SRCU reader may block — sleep, wait for I/O, take a mutex — inside its read-side section,
//! which would stall every grace period of an ordinary domain. SRCU confines the damage: each
//! `Srcu` has its own grace periods, which wait only for its own readers (the kernel's
//! `srcu_struct`; `call_srcu` and `srcu_barrier` exist there today, unlike in the 2007 text of
//! "RCU and Unloadable Modules", whose Quick Quiz #1 asks why there is no `srcu_barrier`).
//!
//! Readers need no registration. Each domain has a small array of cache-line-sized counter
//! slots; a thread always uses the same slot. Entering increments `lock[idx]` of the slot for
//! the domain's current index `idx` (0 or 1), leaving increments `unlock[idx]`; the counters
//! only grow. A grace period waits until Σ lock[i] = Σ unlock[i] for the index readers used
//! before, in two phases around a flip of the index, as the kernel's classic SRCU does
//! (kernel/rcu/srcutree.c, `srcu_readers_active_idx_check`):
//!
//! 1. wait for stragglers on the *inactive* index (readers that sampled it before the last flip
//!    but incremented late),
//! 2. flip the index, so new readers use the other one,
//! 3. wait for the readers on the previously active index.
//!
//! Fences (docs/design/memory-ordering.md, "SRCU"): **S-A** between the writer's unlock and lock
//! sums pairs with **S-B** after a reader's lock increment; **S-D/S-E** around the flip; unlock
//! increments are Release and the sums Acquire. A reader whose late increment the writer missed
//! is ordered after S-A and sees the writer's updates; the *next* grace period's phase 1 waits
//! for it.
//!
//! Callbacks (`call`, `barrier`, `barrier_expedited`) use the same engine as `Rcu` domains.
//! Dropping an `Srcu` barriers first, so no callback of it is left behind.

use crate::barrier::{BarrierError, ExpediteReport};
use crate::cbqueue::{post_closure, CallbackStats, CbConfig, CbEngine};
use crate::domain::DomainError;
use crate::forklock::ForkLock;
use crate::futex;
use crate::gp::{DriveReport, Mode};
use crate::handshake::{GP_INC, GP_INIT};
use crate::ops::DomainOps;
use crate::poll::GpWorker;
use crate::registry::{self, MAX_DOMAINS};
use crate::seq::GpSeq;
use crate::stall::StallClock;
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

#[repr(C, align(128))]
#[derive(Debug, Default)]
struct Counters {
    lock: [AtomicU64; 2],
    unlock: [AtomicU64; 2],
}

thread_local! {
    /// This thread's counter-slot number (before masking), assigned on first SRCU use.
    static THREAD_SLOT: Cell<u32> = const { Cell::new(u32::MAX) };
    /// Per-domain, per-index read-side nesting of this thread: for misuse detection, and to
    /// restore this thread's counts in a forked child.
    static NEST: [[Cell<u32>; 2]; MAX_DOMAINS] =
        const { [const { [const { Cell::new(0) }, const { Cell::new(0) }] }; MAX_DOMAINS] };
}

static NEXT_THREAD_SLOT: AtomicU32 = AtomicU32::new(0);

fn thread_slot() -> u32 {
    THREAD_SLOT.with(|s| {
        let v = s.get();
        if v != u32::MAX {
            return v;
        }
        let v = NEXT_THREAD_SLOT.fetch_add(1, Ordering::Relaxed) & (u32::MAX >> 1);
        s.set(v);
        v
    })
}

#[derive(Debug)]
struct SrcuShared {
    me: Weak<SrcuShared>,
    name: Box<str>,
    slot: u32,
    engine: CbEngine,
    worker: GpWorker,
    /// Low bit: the index new readers use.
    idx: AtomicU64,
    counters: Box<[Counters]>,
    mask: u32,
    /// Last grace period started / completed (GpSeq numbering, as Rcu).
    started: AtomicU64,
    completed: AtomicU64,
    gp_lock: ForkLock<()>,
    /// Futex word: a writer sleeps waiting for readers.
    sleepers: AtomicU32,
    stall_timeout: Duration,
    grace_periods: AtomicU64,
}

/// A sleepable-RCU domain: sleepable readers, two-phase grace periods over per-domain read
/// counters, and the same callback engine as [`Rcu`](crate::Rcu).
pub struct Srcu {
    shared: Arc<SrcuShared>,
}

impl std::fmt::Debug for Srcu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Srcu")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// An SRCU read-side section held as a plain value (see [`Srcu::read_lock_token`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrcuToken(pub u32);

/// An SRCU read-side critical section; it may block. Ends when dropped.
#[must_use = "the read-side critical section ends when the guard is dropped"]
pub struct SrcuGuard<'a> {
    srcu: &'a Srcu,
    idx: usize,
    slot: usize,
    _not_send: PhantomData<*mut ()>,
}

impl std::fmt::Debug for SrcuGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrcuGuard")
            .field("domain", &self.srcu.shared.name)
            .field("idx", &self.idx)
            .finish()
    }
}

impl Srcu {
    /// A new SRCU domain named `name` (for diagnostics).
    ///
    /// # Panics
    ///
    /// If [`MAX_DOMAINS`] domains (of either kind) exist; see [`Srcu::try_new`].
    pub fn new(name: &str) -> Srcu {
        Srcu::try_new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A new SRCU domain, or why not.
    pub fn try_new(name: &str) -> Result<Srcu, DomainError> {
        let slot =
            registry::reserve_slot().ok_or(DomainError::TooManyDomains { max: MAX_DOMAINS })?;
        let n = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .saturating_mul(2)
            .next_power_of_two()
            .clamp(4, 64);
        let shared = Arc::new_cyclic(|me| SrcuShared {
            me: me.clone(),
            name: name.into(),
            slot,
            engine: CbEngine::new(slot, CbConfig::default()),
            worker: GpWorker::default(),
            idx: AtomicU64::new(0),
            counters: (0..n).map(|_| Counters::default()).collect(),
            mask: (n - 1) as u32,
            started: AtomicU64::new(GP_INIT),
            completed: AtomicU64::new(GP_INIT),
            gp_lock: ForkLock::new(()),
            sleepers: AtomicU32::new(0),
            stall_timeout: crate::DEFAULT_STALL_TIMEOUT,
            grace_periods: AtomicU64::new(0),
        });
        registry::set_slot(slot, &*shared);
        Ok(Srcu { shared })
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Enter a read-side critical section, which may block. Nestable.
    pub fn read_lock(&self) -> SrcuGuard<'_> {
        let s = &*self.shared;
        let slot = (thread_slot() & s.mask) as usize;
        let idx = (s.idx.load(Ordering::Relaxed) & 1) as usize;
        s.counters[slot].lock[idx].fetch_add(1, Ordering::Relaxed);
        // Fence S-B: pairs with S-A in `wait_zero`, and with S-D/S-E around the flip.
        fence(Ordering::SeqCst);
        NEST.with(|n| {
            let c = &n[s.slot as usize][idx];
            c.set(c.get() + 1);
        });
        SrcuGuard {
            srcu: self,
            idx,
            slot,
            _not_send: PhantomData,
        }
    }

    /// Enter a read-side section and return it as a token, for code that cannot hold a Rust
    /// value across the section (a C caller). End it with [`Srcu::read_unlock_token`].
    pub fn read_lock_token(&self) -> SrcuToken {
        let g = self.read_lock();
        let t = SrcuToken((g.slot as u32) << 1 | g.idx as u32);
        std::mem::forget(g);
        t
    }

    /// End a section entered with [`Srcu::read_lock_token`] on this thread.
    ///
    /// # Safety
    ///
    /// `token` must come from `read_lock_token` of this domain on this thread and be used once.
    pub unsafe fn read_unlock_token(&self, token: SrcuToken) {
        drop(SrcuGuard {
            srcu: self,
            idx: (token.0 & 1) as usize,
            slot: (token.0 >> 1) as usize,
            _not_send: PhantomData,
        });
    }

    /// Is the calling thread inside a read-side section of this domain?
    pub fn in_read_section(&self) -> bool {
        NEST.with(|n| n[self.shared.slot as usize].iter().any(|c| c.get() != 0))
    }

    fn assert_not_in_reader(&self, what: &str) {
        if self.in_read_section() {
            panic!(
                "rcu-core: {what}() called inside a read-side critical section of SRCU domain \
                 `{}`; it would wait for its own reader forever",
                self.shared.name
            );
        }
    }

    /// Wait until every read-side section of this domain that began before the call has ended.
    ///
    /// # Panics
    ///
    /// Inside a read-side section of this domain.
    pub fn synchronize(&self) {
        self.assert_not_in_reader("synchronize");
        self.shared.drive(self.shared.snap(), Mode::Normal);
    }

    /// As [`synchronize`](Srcu::synchronize), polling without ever sleeping (SRCU readers may
    /// block, so there is no quiescent state to force; the caller just never waits to be woken).
    ///
    /// # Panics
    ///
    /// Inside a read-side section of this domain.
    pub fn synchronize_expedited(&self) {
        self.assert_not_in_reader("synchronize_expedited");
        self.shared.drive(self.shared.snap(), Mode::Expedited);
    }

    /// `call_srcu`: run `f` after a grace period of this domain.
    pub fn call<F: FnOnce() + Send + 'static>(&self, f: F) {
        post_closure(&*self.shared, f);
    }

    /// `call_srcu` with an embedded head; see [`Rcu::call_raw`](crate::Rcu::call_raw).
    ///
    /// # Safety
    ///
    /// As [`Rcu::call_raw`](crate::Rcu::call_raw).
    pub unsafe fn call_raw(&self, head: *mut crate::RcuHead, func: crate::RcuCallback) {
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

    fn check_barrier_context(&self) -> Result<(), BarrierError> {
        crate::barrier::barrier_context(self.name(), self.in_read_section())
    }

    /// `srcu_barrier`: wait until every callback posted to this domain before the call has run.
    ///
    /// # Errors
    ///
    /// From an RCU callback, or inside a read-side section of this domain.
    pub fn barrier(&self) -> Result<(), BarrierError> {
        self.check_barrier_context()?;
        self.shared.engine.barrier(&*self.shared);
        Ok(())
    }

    /// Barrier until no callback was posted during the last one; see
    /// [`Rcu::barrier_until_quiet`](crate::Rcu::barrier_until_quiet).
    ///
    /// # Errors
    ///
    /// As [`Rcu::barrier_until_quiet`](crate::Rcu::barrier_until_quiet).
    pub fn barrier_until_quiet(&self) -> Result<u32, BarrierError> {
        self.shared
            .engine
            .until_quiet(self.name(), || self.barrier())
    }

    /// The expedited barrier; see [`Rcu::barrier_expedited`](crate::Rcu::barrier_expedited).
    ///
    /// # Errors
    ///
    /// As [`barrier`](Srcu::barrier).
    pub fn barrier_expedited(&self) -> Result<ExpediteReport, BarrierError> {
        self.check_barrier_context()?;
        Ok(self.shared.engine.barrier_expedited(&*self.shared))
    }

    /// Counters of this domain's callbacks.
    pub fn callback_stats(&self) -> CallbackStats {
        self.shared.engine.stats()
    }

    /// Grace periods completed.
    pub fn grace_periods(&self) -> u64 {
        self.shared.grace_periods.load(Ordering::Relaxed)
    }
}

impl Drop for SrcuGuard<'_> {
    fn drop(&mut self) {
        let s = &*self.srcu.shared;
        NEST.with(|n| {
            let c = &n[s.slot as usize][self.idx];
            c.set(c.get() - 1);
        });
        // Release: the section's accesses happen-before a writer's Acquire sum that counts
        // this unlock.
        s.counters[self.slot].unlock[self.idx].fetch_add(1, Ordering::Release);
        // Fence S-D: pairs with the writer's fence after raising `sleepers`.
        fence(Ordering::SeqCst);
        if s.sleepers.load(Ordering::Relaxed) != 0 {
            s.sleepers.store(0, Ordering::Relaxed);
            futex::wake_all(&s.sleepers);
        }
    }
}

impl SrcuShared {
    fn snap(&self) -> GpSeq {
        GpSeq::snap(self.started.load(Ordering::Acquire))
    }

    fn completed(&self) -> GpSeq {
        GpSeq(self.completed.load(Ordering::Acquire))
    }

    fn readers_gone(&self, i: usize) -> bool {
        let unlocks: u64 = self
            .counters
            .iter()
            .map(|c| c.unlock[i].load(Ordering::Acquire))
            .fold(0, u64::wrapping_add);
        // Fence S-A: pairs with S-B. A lock increment this sum misses belongs to a reader that
        // will see every update made before this fence.
        fence(Ordering::SeqCst);
        let locks: u64 = self
            .counters
            .iter()
            .map(|c| c.lock[i].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add);
        locks == unlocks
    }

    fn wait_zero(&self, i: usize, mode: Mode) {
        let mut spins = 0u32;
        let mut stall: Option<StallClock> = None;
        // An expedited wait spins ten times longer, then sleeps as well: SRCU readers may
        // block, and a yield loop can hand the CPU to a busy thread for a scheduler tick
        // (gp.rs, `wait_for_readers`).
        let spin_limit = match mode {
            Mode::Normal => 1000,
            Mode::Expedited => 10_000,
        };
        while !self.readers_gone(i) {
            if spins < spin_limit {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let clock = stall.get_or_insert_with(|| StallClock::start(self.stall_timeout));
            self.sleepers.store(1, Ordering::Relaxed);
            // Pairs with S-D in the reader's unlock.
            fence(Ordering::SeqCst);
            if self.readers_gone(i) {
                break;
            }
            futex::wait(&self.sleepers, 1, Some(clock.until_next()));
            if clock.due() {
                tracing::warn!(
                    target: "rcu_core::stall",
                    domain = %self.name,
                    waited_ms = clock.elapsed().as_millis() as u64,
                    "SRCU grace period stall: a reader of domain `{}` has been inside its \
                     read-side section for at least {:?}",
                    self.name,
                    clock.elapsed()
                );
                clock.back_off();
            }
        }
    }
}

impl DomainOps for SrcuShared {
    fn name(&self) -> &str {
        &self.name
    }
    fn snap(&self) -> GpSeq {
        SrcuShared::snap(self)
    }
    fn completed(&self) -> GpSeq {
        SrcuShared::completed(self)
    }
    fn drive(&self, snap: GpSeq, mode: Mode) -> DriveReport {
        let mut report = DriveReport::default();
        if snap.done(self.completed()) {
            return report;
        }
        let _g = self.gp_lock.lock();
        while !snap.done(self.completed()) {
            report.drove = true;
            let target = self.started.load(Ordering::Relaxed).wrapping_add(GP_INC);
            self.started.store(target, Ordering::Release);
            let cur = (self.idx.load(Ordering::Relaxed) & 1) as usize;
            self.wait_zero(cur ^ 1, mode);
            // Fence S-D: the phase-1 observations happen before the flip.
            fence(Ordering::SeqCst);
            self.idx.fetch_add(1, Ordering::Relaxed);
            // Fence S-E: the flip happens before the phase-2 sums.
            fence(Ordering::SeqCst);
            self.wait_zero(cur, mode);
            self.completed.store(target, Ordering::Release);
            self.grace_periods.fetch_add(1, Ordering::Relaxed);
            self.engine.gp_completed();
        }
        report
    }
    fn gp_worker(&self) -> &GpWorker {
        &self.worker
    }
    fn engine(&self) -> &CbEngine {
        &self.engine
    }
    fn arc(&self) -> Option<Arc<dyn DomainOps>> {
        self.me.upgrade().map(|a| a as Arc<dyn DomainOps>)
    }
    fn fork_prepare(&self, held: &mut Vec<crate::ops::Held>) {
        self.worker.fork_prepare(held);
        self.engine.fork_prepare(held);
    }
    fn fork_child(&self) {
        // Only this thread survives: its open sections are the only ones left. Balance every
        // slot, then count this thread's sections again.
        for c in self.counters.iter() {
            for i in 0..2 {
                c.lock[i].store(c.unlock[i].load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        let mine = &self.counters[(thread_slot() & self.mask) as usize];
        NEST.with(|n| {
            for (i, c) in n[self.slot as usize].iter().enumerate() {
                mine.lock[i].fetch_add(u64::from(c.get()), Ordering::Relaxed);
            }
        });
        self.sleepers.store(0, Ordering::Relaxed);
        // SAFETY: we are the only thread of a freshly forked child, holding no guard of it.
        drop(unsafe { self.gp_lock.reset_in_child() });
        // A grace period another thread was driving is abandoned.
        self.started
            .store(self.completed.load(Ordering::Relaxed), Ordering::Relaxed);
        self.worker.fork_child();
        self.engine.fork_child();
    }
}

impl Drop for Srcu {
    fn drop(&mut self) {
        let s = &*self.shared;
        if crate::callback::in_callback() {
            tracing::warn!(
                target: "rcu_core",
                domain = %s.name,
                "SRCU domain dropped from inside an RCU callback; callbacks still queued on it \
                 are leaked"
            );
        } else {
            s.engine.barrier(s);
        }
        registry::release_engine_slot(&s.engine);
        s.worker.stop();
        s.engine.stop_worker();
    }
}
