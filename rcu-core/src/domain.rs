//! The RCU domain: a flavor, a grace-period counter, a registry of reader threads.
//!
//! A domain is independent of every other: its own counter, registry, locks and worker, so a
//! slow grace period in one never delays another. Most programs use [`Rcu::global()`]; a
//! subsystem that wants its grace periods to wait only for its own readers creates its own
//! with [`Rcu::new`] or [`Rcu::builder`].

use crate::cbqueue::{CbConfig, CbEngine};
use crate::forklock::ForkLock;
use crate::gp::{DriveReport, Mode};
use crate::handshake;
use crate::membarrier;
use crate::ops::DomainOps;
use crate::poll::GpWorker;
use crate::reader::{GpState, Reader};
use crate::registry::{self, MAX_DOMAINS};
use crate::seq::GpSeq;
use crate::stats::Stats;
use crate::ReadGuard;
use std::ptr::NonNull;
use std::sync::atomic::{compiler_fence, AtomicU64 as StdAtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

/// How readers and writers of a domain synchronize. Modelled on liburcu's flavors
/// (docs/design/grace-periods.md compares them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Flavor {
    /// The default. Readers store to a thread-local word behind a compiler fence; the writer
    /// executes `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` on their behalf. Falls back to
    /// [`Flavor::Mb`] where membarrier is unavailable.
    Memb,
    /// Readers execute a full fence on entry and exit. Slower readers (tens of ns), cheaper
    /// grace periods (no IPI); needs nothing from the kernel.
    Mb,
    /// Quiescent-state-based: read-side sections cost nothing but a thread-local counter;
    /// threads must announce [`Rcu::quiescent_state`] periodically or go
    /// [`Rcu::thread_offline`] around blocking calls, or grace periods wait for them.
    Qsbr,
    /// **Deliberately broken**: `synchronize()` returns without waiting for readers. It exists
    /// so that tests and `rcumod torture` can prove they catch a broken RCU (the kernel's
    /// rcutorture `busted` ops). Never use it for anything else.
    Busted,
}

impl Flavor {
    pub(crate) fn is_qsbr(self) -> bool {
        self == Flavor::Qsbr
    }

    /// Short lowercase name, as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Memb => "memb",
            Flavor::Mb => "mb",
            Flavor::Qsbr => "qsbr",
            Flavor::Busted => "busted",
        }
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Flavor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "memb" => Ok(Flavor::Memb),
            "mb" => Ok(Flavor::Mb),
            "qsbr" => Ok(Flavor::Qsbr),
            "busted" => Ok(Flavor::Busted),
            _ => Err(format!(
                "unknown RCU flavor `{s}` (expected memb, mb, qsbr or busted)"
            )),
        }
    }
}

/// Why a domain could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DomainError {
    /// Every one of the [`MAX_DOMAINS`] thread-local slots is taken by a live domain.
    TooManyDomains {
        /// The limit.
        max: usize,
    },
}

impl std::fmt::Display for DomainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DomainError::TooManyDomains { max } => write!(
                f,
                "cannot create RCU domain: {max} domains already exist in this process"
            ),
        }
    }
}

impl std::error::Error for DomainError {}

/// Configures a new domain. Obtained from [`Rcu::builder`].
#[derive(Debug, Clone)]
pub struct RcuBuilder {
    flavor: Flavor,
    name: String,
    stall_timeout: Duration,
    force_fallback: bool,
    callbacks: CbConfig,
}

/// Default bound after which a waiting grace period names the readers holding it.
/// The kernel uses 21 s; a userspace host wants to hear sooner.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);

impl RcuBuilder {
    /// The flavor (default [`Flavor::Memb`]).
    pub fn flavor(mut self, flavor: Flavor) -> Self {
        self.flavor = flavor;
        self
    }

    /// A name for diagnostics (stall warnings, misuse panics, worker thread names).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How long a grace period may wait before a stall warning names the readers holding it;
    /// warnings repeat at 2×, 4×, … this bound.
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// For [`Flavor::Memb`]: use the fence-based fallback even if membarrier works (also
    /// forced for every domain by the environment variable `RCU_CORE_FORCE_MB=1`).
    pub fn force_fallback(mut self, force: bool) -> Self {
        self.force_fallback = force;
        self
    }

    /// Callbacks the worker invokes per pass before it defers the rest (default 10 000).
    pub fn callback_batch(mut self, limit: usize) -> Self {
        self.callbacks.batch = limit.max(1);
        self
    }

    /// Time a worker pass may spend invoking callbacks before it defers the rest (default 2 ms).
    pub fn callback_time_cap(mut self, cap: Duration) -> Self {
        self.callbacks.time_cap = cap;
        self
    }

    /// Create the domain.
    ///
    /// # Panics
    ///
    /// If [`MAX_DOMAINS`] domains already exist; [`RcuBuilder::try_build`] returns that as an
    /// error instead.
    pub fn build(self) -> Rcu {
        self.try_build().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Create the domain, or say why not.
    pub fn try_build(self) -> Result<Rcu, DomainError> {
        let forced =
            self.force_fallback || std::env::var_os("RCU_CORE_FORCE_MB").is_some_and(|v| v == "1");
        let kind = match self.flavor {
            Flavor::Memb if forced || !membarrier::available() => Flavor::Mb,
            f => f,
        };
        let slot =
            registry::reserve_slot().ok_or(DomainError::TooManyDomains { max: MAX_DOMAINS })?;
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            engine: CbEngine::new(slot, self.callbacks),
            name: self.name.into_boxed_str(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            requested: self.flavor,
            kind,
            slot,
            gp: GpState {
                ctr: crate::primitive::AtomicU64::new(handshake::GP_INIT),
                sleepers: Default::default(),
                boosts: Default::default(),
            },
            completed: StdAtomicU64::new(handshake::GP_INIT),
            readers: Mutex::new(Vec::new()),
            gp_lock: ForkLock::new(Vec::new()),
            exp_lock: ForkLock::new(Vec::new()),
            stall_timeout: self.stall_timeout,
            stats: Stats::default(),
            worker: GpWorker::default(),
        });
        // The slot table keeps raw pointers into the `Shared`, whose address the Arc fixes.
        registry::set_slot(slot, &*shared);
        Ok(Rcu {
            slot,
            kind,
            mb: kind == Flavor::Mb,
            shared,
        })
    }
}

static NEXT_ID: StdAtomicU64 = StdAtomicU64::new(1);

/// State shared by a domain's handle, its worker and its readers' records.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Weak self-reference, from which worker threads get their strong one.
    me: Weak<Shared>,
    pub(crate) engine: CbEngine,
    pub(crate) name: Box<str>,
    pub(crate) id: u64,
    /// The flavor asked for.
    pub(crate) requested: Flavor,
    /// The flavor in effect (memb may have fallen back to mb).
    pub(crate) kind: Flavor,
    pub(crate) slot: u32,
    pub(crate) gp: GpState,
    /// Highest grace-period target known complete.
    pub(crate) completed: StdAtomicU64,
    readers: Mutex<Vec<Arc<Reader>>>,
    /// Serializes normal grace-period drivers; holds their registry snapshot buffer.
    pub(crate) gp_lock: ForkLock<Vec<Arc<Reader>>>,
    /// Serializes expedited drivers (which run concurrently with a normal one).
    pub(crate) exp_lock: ForkLock<Vec<Arc<Reader>>>,
    pub(crate) stall_timeout: Duration,
    pub(crate) stats: Stats,
    pub(crate) worker: GpWorker,
}

/// Lock a mutex whose protected state stays consistent across a panic (every critical section
/// here is a single push, retain or copy).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// The registry of reader records.
    pub(crate) fn readers(&self) -> MutexGuard<'_, Vec<Arc<Reader>>> {
        lock(&self.readers)
    }
}

impl DomainOps for Shared {
    fn name(&self) -> &str {
        &self.name
    }
    fn snap(&self) -> GpSeq {
        Shared::snap(self)
    }
    fn completed(&self) -> GpSeq {
        Shared::completed(self)
    }
    fn drive(&self, snap: GpSeq, mode: Mode) -> DriveReport {
        self.synchronize_to(snap, mode)
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
    fn rcu(&self) -> Option<&Shared> {
        Some(self)
    }
    fn fork_prepare(&self, held: &mut Vec<crate::ops::Held>) {
        // SAFETY: this domain is published in the registry table (`fork::hold`).
        held.push(unsafe { crate::fork::hold(self.readers()) });
        self.worker.fork_prepare(held);
        self.engine.fork_prepare(held);
    }
    fn fork_child(&self) {
        let mine = registry::lookup(self.slot);
        self.readers().retain(|r| {
            let ours = mine.is_some_and(|m| std::ptr::eq(m.as_ptr(), Arc::as_ptr(r)));
            if !ours {
                // A thread that does not exist here: it holds up nothing.
                r.word.store(0, Ordering::Relaxed);
                r.gone.store(true, Ordering::Relaxed);
            }
            ours
        });
        self.gp.sleepers.store(0, Ordering::Relaxed);
        // A boost counted in the parent belongs to a thread the child does not have.
        self.gp.boosts.store(0, Ordering::Relaxed);
        // SAFETY: we are the only thread of a freshly forked child, holding no guard of these.
        unsafe {
            self.gp_lock.reset_in_child().clear();
            self.exp_lock.reset_in_child().clear();
        }
        self.worker.fork_child();
        self.engine.fork_child();
    }
}

/// An RCU domain. See the [crate documentation](crate) for the mechanism and the API map.
///
/// `Rcu` is `Send + Sync`; share it by reference or in an `Arc`. Read guards borrow it, so a
/// domain cannot be dropped while any thread is inside one of its read-side sections. Dropping
/// a domain stops its worker and detaches the threads still registered with it.
pub struct Rcu {
    slot: u32,
    kind: Flavor,
    /// `kind == Mb`, kept apart so that a reader loop tests it as its own loop-invariant flag
    /// (LLVM unswitches on it) rather than folding both flavor tests into one jump table.
    mb: bool,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Rcu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rcu")
            .field("name", &self.shared.name)
            .field("flavor", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Rcu {
    /// The process-wide default domain (memb, named `global`).
    pub fn global() -> &'static Rcu {
        static GLOBAL: OnceLock<Rcu> = OnceLock::new();
        GLOBAL.get_or_init(|| Rcu::builder().name("global").build())
    }

    /// A new independent domain of the given flavor.
    pub fn new(flavor: Flavor) -> Rcu {
        Rcu::builder().flavor(flavor).build()
    }

    /// Configure a new domain.
    pub fn builder() -> RcuBuilder {
        RcuBuilder {
            flavor: Flavor::Memb,
            name: "rcu".to_owned(),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            force_fallback: false,
            callbacks: CbConfig::default(),
        }
    }

    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    /// The flavor in effect: [`Flavor::Mb`] for a memb domain that fell back.
    pub fn flavor(&self) -> Flavor {
        self.kind
    }

    /// The flavor the domain was created with.
    pub fn requested_flavor(&self) -> Flavor {
        self.shared.requested
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Counters of what the domain has done.
    pub fn stats(&self) -> crate::RcuStats {
        self.shared.stats.snapshot()
    }

    // ------------------------------------------------------------------------------------
    // Read side
    // ------------------------------------------------------------------------------------

    /// Enter a read-side critical section, registering the calling thread on first use.
    ///
    /// Sections nest. The guard is `!Send`, and references obtained through it (for example
    /// from [`RcuCell::load`](crate::RcuCell::load)) cannot outlive it. The fast path performs
    /// no allocation, takes no lock and makes no system call, so once the thread is registered
    /// it is async-signal-safe; in a signal handler that may run on an unregistered thread use
    /// [`Rcu::try_read_lock`].
    #[inline]
    pub fn read_lock(&self) -> ReadGuard<'_> {
        let r = match registry::lookup(self.slot) {
            Some(r) => r,
            None => registry::register(&self.shared),
        };
        self.enter(r);
        ReadGuard::new(self, r)
    }

    /// Enter a read-side critical section if the calling thread is already registered with
    /// this domain (and, for qsbr, online); `None` otherwise. Never allocates, locks, registers
    /// or panics: async-signal-safe. Signals often arrive while a qsbr thread is offline around
    /// a blocking call, and a panic in a signal handler would abort the process.
    #[inline]
    pub fn try_read_lock(&self) -> Option<ReadGuard<'_>> {
        let r = registry::lookup(self.slot)?;
        if self.kind.is_qsbr() {
            // SAFETY: as in `enter`.
            let rd = unsafe { r.as_ref() };
            if rd.nest.load(Ordering::Relaxed) & crate::reader::QSBR_OFFLINE != 0 {
                return None;
            }
        }
        self.enter(r);
        Some(ReadGuard::new(self, r))
    }

    #[inline(always)]
    fn enter(&self, r: NonNull<Reader>) {
        // SAFETY: a record reachable from the calling thread's slot is alive until the thread
        // unregisters, which it cannot do while this call runs.
        let r = unsafe { r.as_ref() };
        // An `if` rather than a `match` on the flavor (which compiles to a jump table: two
        // indirect jumps per read pair), and the counter reached through `self.shared` (whose
        // address stays in a register) rather than `r.gp` (reloaded after every compiler
        // fence): docs/performance.md measured memb reads at 1.52x liburcu before, 1.1x after.
        if self.kind == Flavor::Qsbr {
            // 0: online and not nested. The outermost entry stores a constant, not `n + 1`,
            // so successive sections form no dependency chain through `nest`.
            let n = r.nest.load(Ordering::Relaxed);
            if n == 0 {
                r.nest.store(1, Ordering::Relaxed);
            } else {
                self.qsbr_enter_slow(r, n);
            }
            // Keeps the section's loads after the nesting marker, as a forced quiescent
            // state (signal handler, same thread) must observe it.
            compiler_fence(Ordering::SeqCst);
        } else {
            handshake::lock(&r.word, &self.shared.gp.ctr, self.mb);
        }
    }

    /// Leave a read-side critical section entered through `r`. Called by `ReadGuard::drop`.
    #[inline(always)]
    pub(crate) fn exit(&self, r: NonNull<Reader>) {
        // SAFETY: as in `enter`; the guard being dropped keeps the thread registered.
        let r = unsafe { r.as_ref() };
        if self.kind == Flavor::Qsbr {
            compiler_fence(Ordering::SeqCst);
            let n = r.nest.load(Ordering::Relaxed).wrapping_sub(1);
            r.nest.store(n, Ordering::Relaxed);
            // Same-thread ordering against the forced-QS signal handler.
            compiler_fence(Ordering::SeqCst);
            // Nonzero: still nested, or the handler left a deferred report.
            if n == crate::reader::QSBR_HINT {
                crate::expedited::deferred_quiescent_state(r);
            }
        } else if handshake::unlock(&r.word, self.mb) {
            self.shared.gp.reader_left_by(r);
        }
    }

    /// qsbr `read_lock` on a thread that is offline or already inside a section.
    #[cold]
    #[inline(never)]
    fn qsbr_enter_slow(&self, r: &Reader, n: u32) {
        if n & crate::reader::QSBR_OFFLINE != 0 {
            self.offline_reader(r);
        }
        if n & crate::reader::QSBR_DEPTH == crate::reader::QSBR_DEPTH {
            panic!(
                "rcu-core: read-side sections of qsbr domain `{}` nested too deeply",
                self.shared.name
            );
        }
        r.nest.store(n + 1, Ordering::Relaxed);
    }

    #[cold]
    #[inline(never)]
    fn offline_reader(&self, r: &Reader) -> ! {
        panic!(
            "rcu-core: thread {} entered a read-side critical section of qsbr domain `{}` while \
             offline; call thread_online() first",
            r.label(),
            self.shared.name
        )
    }

    /// Is the calling thread inside a read-side critical section of this domain?
    pub fn in_read_section(&self) -> bool {
        match registry::lookup(self.slot) {
            // SAFETY: as in `enter`.
            Some(r) => self.section_depth(unsafe { r.as_ref() }) != 0,
            None => false,
        }
    }

    fn section_depth(&self, r: &Reader) -> u64 {
        if self.kind.is_qsbr() {
            u64::from(r.qsbr_depth())
        } else {
            r.word.load(Ordering::Relaxed) & handshake::NEST_MASK
        }
    }

    /// Panic, naming the domain, if the calling thread is inside one of its read sections:
    /// `what` would wait for the calling thread itself.
    pub(crate) fn assert_not_in_reader(&self, what: &str) {
        if self.in_read_section() {
            panic!(
                "rcu-core: {what}() called inside a read-side critical section of RCU domain \
                 `{}`; it would wait for its own reader forever (drop the ReadGuard first)",
                self.shared.name
            );
        }
    }

    // ------------------------------------------------------------------------------------
    // Registration and quiescent states
    // ------------------------------------------------------------------------------------

    /// Register the calling thread explicitly (it is also registered on its first
    /// `read_lock`). Registering is what makes `read_lock` async-signal-safe on this thread.
    /// A qsbr thread starts online.
    pub fn register_thread(&self) {
        if registry::lookup(self.slot).is_none() {
            registry::register(&self.shared);
        }
    }

    /// Unregister the calling thread (it is unregistered automatically when it exits).
    /// Returns false if it was not registered.
    ///
    /// # Panics
    ///
    /// Inside a read-side critical section of this domain.
    pub fn unregister_thread(&self) -> bool {
        registry::unregister(&self.shared)
    }

    /// qsbr: announce that the calling thread holds no reference obtained in an earlier read
    /// section. A no-op for the other flavors, whose readers are quiescent whenever they are
    /// outside a section, and for unregistered or offline threads.
    ///
    /// # Panics
    ///
    /// Inside a read-side critical section of this domain.
    #[inline]
    pub fn quiescent_state(&self) {
        if !self.kind.is_qsbr() {
            return;
        }
        let Some(r) = registry::lookup(self.slot) else {
            return;
        };
        // SAFETY: as in `enter`.
        let r = unsafe { r.as_ref() };
        if r.qsbr_depth() != 0 {
            self.assert_not_in_reader("quiescent_state");
        }
        if r.word.load(Ordering::Relaxed) != 0 && handshake::qsbr_quiescent(&r.word, &r.gp().ctr) {
            r.hint.store(0, Ordering::Relaxed);
            r.gp().reader_left_by(r);
        }
    }

    /// qsbr: the calling thread stops being a reader (before a blocking call), so grace
    /// periods no longer wait for it. A no-op for the other flavors.
    ///
    /// # Panics
    ///
    /// Inside a read-side critical section of this domain.
    pub fn thread_offline(&self) {
        if !self.kind.is_qsbr() {
            return;
        }
        self.assert_not_in_reader("thread_offline");
        if let Some(r) = registry::lookup(self.slot) {
            // SAFETY: as in `enter`.
            let r = unsafe { r.as_ref() };
            if r.word.load(Ordering::Relaxed) != 0 {
                r.qsbr_offline();
                r.hint.store(0, Ordering::Relaxed);
                r.gp().reader_left_by(r);
            }
        }
    }

    /// qsbr: the calling thread becomes a reader again (registering it if needed).
    /// A no-op for the other flavors.
    pub fn thread_online(&self) {
        if !self.kind.is_qsbr() {
            return;
        }
        let r = match registry::lookup(self.slot) {
            Some(r) => r,
            None => return self.register_thread(),
        };
        // SAFETY: as in `enter`.
        let r = unsafe { r.as_ref() };
        if r.word.load(Ordering::Relaxed) == 0 {
            r.qsbr_online(&r.gp().ctr);
        }
    }

    /// qsbr: run `f` offline (around a blocking call), then come back online. For the other
    /// flavors, just runs `f`.
    pub fn offline<R>(&self, f: impl FnOnce() -> R) -> R {
        let was_online = self.is_online();
        if was_online {
            self.thread_offline();
        }
        struct Online<'a>(&'a Rcu, bool);
        impl Drop for Online<'_> {
            fn drop(&mut self) {
                if self.1 {
                    self.0.thread_online();
                }
            }
        }
        let _restore = Online(self, was_online);
        f()
    }

    /// qsbr: is the calling thread registered and online? (Always false for other flavors.)
    pub fn is_registered_online(&self) -> bool {
        self.is_online()
    }

    /// qsbr: is the calling thread registered and online?
    pub(crate) fn is_online(&self) -> bool {
        self.kind.is_qsbr()
            && registry::lookup(self.slot)
                // SAFETY: as in `enter`.
                .is_some_and(|r| unsafe { r.as_ref() }.word.load(Ordering::Relaxed) != 0)
    }

    /// Number of threads currently registered with this domain.
    pub fn registered_threads(&self) -> usize {
        self.shared.readers().len()
    }
}

impl Drop for Rcu {
    fn drop(&mut self) {
        // Callbacks first: they may point into data the owner frees after dropping us.
        if crate::callback::in_callback() {
            // A domain owned by data that one of its own callbacks frees cannot wait for
            // itself; what is still queued is leaked rather than run after teardown.
            tracing::warn!(
                target: "rcu_core",
                domain = %self.shared.name,
                "RCU domain dropped from inside an RCU callback; callbacks still queued on it \
                 are leaked"
            );
        } else {
            self.shared.engine.barrier(&*self.shared);
        }
        // Detach next: it marks every record quiescent, so a worker still driving a grace
        // period (waiting for, say, an online qsbr thread) finishes and can be joined.
        registry::release_slot(&self.shared);
        self.shared.worker.stop();
        self.shared.engine.stop_worker();
    }
}
