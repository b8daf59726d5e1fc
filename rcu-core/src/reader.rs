//! The per-thread, per-domain reader record, and the domain's grace-period state it points to.
//!
//! A record is created when a thread first uses a domain (or calls `register_thread`), lives in
//! the domain's registry (an `Arc`, so a writer that snapshotted the registry can keep scanning
//! a record whose thread exits meanwhile), and is reached by its own thread through one
//! thread-local slot ([`crate::registry`]). The reader's fast path touches only its own record:
//! the first cache line holds everything `read_lock`/`read_unlock` need.

use crate::futex;
use crate::primitive::AtomicU64;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

/// A domain's grace-period counter and writer-sleep flag, on their own cache line: readers
/// sample the counter at every outermost `read_lock` and read the flag at every outermost
/// `read_unlock`, and both change only when a grace period starts or a writer sleeps.
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct GpState {
    /// The grace-period counter ([`crate::handshake`]).
    pub(crate) ctr: AtomicU64,
    /// Futex word: nonzero while some writer sleeps waiting for readers.
    pub(crate) sleepers: AtomicU32,
    /// Readers an expedited driver has boosted to real-time priority and that have not yet
    /// dropped the boost (boost.rs). While nonzero, `sleepers` stays raised, so that every
    /// outermost unlock takes the slow path where a boosted reader drops its boost.
    pub(crate) boosts: AtomicU32,
}

impl GpState {
    /// A reader left its section or passed a quiescent state (Fence D executed): wake
    /// writers if any sleeps.
    #[inline(always)]
    pub(crate) fn reader_left(&self) {
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            self.wake_writers();
        }
    }

    /// [`reader_left`](GpState::reader_left) at the outermost unlock of reader `r`: the slow
    /// path also drops a priority boost an expedited driver gave `r` (boost.rs), at no cost to
    /// the fast path.
    #[inline(always)]
    pub(crate) fn reader_left_by(&self, r: &Reader) {
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            self.wake_writers_unboost(r);
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_writers_unboost(&self, r: &Reader) {
        self.wake_writers();
        r.end_boost();
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn wake_writers(&self) {
        // Reset first, so the readers leaving after us do not each issue a system call;
        // every sleeping writer re-arms the flag before re-checking (Fence E). Not while a
        // reader is boosted: it must take this path at its next unlock.
        if self.boosts.load(Ordering::Relaxed) == 0 {
            self.sleepers.store(0, Ordering::Relaxed);
        }
        futex::wake_all(&self.sleepers);
    }
}

/// qsbr `nest`: the depth of read-side nesting.
pub(crate) const QSBR_DEPTH: u32 = QSBR_HINT - 1;
/// qsbr `nest`: an expedited writer asked for a quiescent state; the outermost `read_unlock`
/// reports it. Set by the writer (an atomic or, before it signals the thread) and again by the
/// handler when it finds the thread inside a section. The owner updates `nest` with a load and
/// a store, so a set landing between the two is dropped: the thread then keeps blocking the
/// grace period, and the writer's next forcing round sets the bit again.
pub(crate) const QSBR_HINT: u32 = 1 << 30;
/// qsbr `nest`: the thread is offline (its word is 0). Set before the word goes to 0, cleared
/// after it comes back, so `read_lock` on an offline thread always sees it.
pub(crate) const QSBR_OFFLINE: u32 = 1 << 31;

/// One thread's reader state for one domain.
#[repr(C, align(128))]
pub(crate) struct Reader {
    /// The reader word of [`crate::handshake`]: written by the owning thread, scanned by writers.
    pub(crate) word: AtomicU64,
    /// qsbr read-side state: the nesting depth ([`QSBR_DEPTH`]), plus [`QSBR_HINT`] and
    /// [`QSBR_OFFLINE`]. Only the owning thread (and its signal handlers) touch it; it is atomic
    /// so that a signal handler reads a value the compiler did not cache. One word, so that the
    /// outermost `read_lock` and `read_unlock` each test one value: 0 on the way in (online, not
    /// nested), 0 on the way out (no deferred report).
    pub(crate) nest: AtomicU32,
    /// qsbr forced-quiescent-state request, set by an expedited writer before it signals the
    /// thread; cleared when the thread reports (the handler, when it finds the thread outside a
    /// section; otherwise the outermost `read_unlock`, to which the handler leaves
    /// [`QSBR_HINT`]).
    pub(crate) hint: AtomicU32,
    /// The domain's grace-period state. Valid while the record is reachable from its thread's
    /// slot: the domain clears every slot before it frees its state.
    pub(crate) gp: *const GpState,
    /// The owning thread's slot for this domain, cleared by the domain if it is dropped first.
    pub(crate) slot_cell: *const AtomicPtr<Reader>,
    /// Kernel thread id, for stall warnings, forced quiescent states and priority boosts.
    pub(crate) tid: i32,
    /// Set once the owning thread has unregistered or exited (tids are recycled).
    pub(crate) gone: AtomicBool,
    /// Thread name, for stall warnings.
    pub(crate) name: Box<str>,
    /// Nonzero while an expedited driver has the thread boosted to real-time priority: how to
    /// restore it (boost.rs). Whoever swaps it to zero restores.
    pub(crate) boost: std::sync::atomic::AtomicU64,
}

// SAFETY: every field shared between threads is atomic. The raw pointers are read-only after
// construction and point to state that outlives the record's use from other threads: `gp` into
// the domain's `Shared` (kept alive by the `Arc<Shared>` of whoever scans the registry), and
// `slot_cell` into the owning thread's TLS, written by another thread only under the global
// registry lock while the owner is provably alive (registry.rs).
unsafe impl Send for Reader {}
// SAFETY: as for Send: shared mutation goes through atomics only.
unsafe impl Sync for Reader {}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("name", &self.name)
            .field("tid", &self.tid)
            .field("word", &self.word.load(Ordering::Relaxed))
            .finish()
    }
}

impl Reader {
    /// The domain's grace-period state.
    #[inline(always)]
    pub(crate) fn gp(&self) -> &GpState {
        // SAFETY: `gp` points into the domain's `Shared`, which outlives every record reachable
        // from a thread slot or from a registry snapshot (see the field's documentation).
        unsafe { &*self.gp }
    }

    /// qsbr: the nesting depth of the owning thread's read-side sections.
    #[inline]
    pub(crate) fn qsbr_depth(&self) -> u32 {
        self.nest.load(Ordering::Relaxed) & QSBR_DEPTH
    }

    /// qsbr: go offline (the caller is the owning thread, outside any section).
    pub(crate) fn qsbr_offline(&self) {
        self.nest.store(QSBR_OFFLINE, Ordering::Relaxed);
        // Same-thread order: a handler that finds the word 0 finds the flag set.
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        crate::handshake::qsbr_offline(&self.word);
    }

    /// qsbr: come back online (the caller is the owning thread).
    pub(crate) fn qsbr_online(&self, gp: &crate::primitive::AtomicU64) {
        crate::handshake::qsbr_online(&self.word, gp);
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        self.nest.store(0, Ordering::Relaxed);
    }

    /// A display label for diagnostics: `name (tid N)`.
    pub(crate) fn label(&self) -> String {
        format!("{} (tid {})", self.name, self.tid)
    }
}

/// The calling thread's kernel thread id.
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}
