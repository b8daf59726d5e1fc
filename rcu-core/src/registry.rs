//! Thread registration: the thread-local slot array, the domain table, and thread exit.
//!
//! Every thread has one array of [`MAX_DOMAINS`] pointer slots in constant-initialised TLS (no
//! destructor, so access is a plain `fs:`-relative load, usable from signal handlers); a domain
//! owns one slot index for its lifetime. `read_lock` is therefore: load the slot, test for null,
//! update the record it points to — the same single TLS access as liburcu's `URCU_TLS(rcu_reader)`.
//!
//! A second array holds each thread's callback queue per domain (cbqueue.rs), under the same
//! rules: `Srcu` domains own a slot index too, for their queues only.
//!
//! Three things change slots, all under the global [`TABLE`] lock, which is what makes the raw
//! pointers safe: registration (the thread fills its own slot), thread exit (a TLS destructor
//! empties the thread's slots and removes its records), and domain drop (the domain empties its
//! slot in every registered thread and frees the slot index). Because a thread's exit hook takes
//! the lock before its TLS is freed, a domain holding the lock may write to another thread's
//! slot. Because a domain's drop takes the lock before its state is freed, an exiting thread
//! holding the lock may touch the domain of any non-null slot. No reader can be inside a section
//! of a domain that is being dropped: read guards borrow the domain.

use crate::cbqueue::{CbEngine, CbQueue};
use crate::domain::Shared;
use crate::handshake;
use crate::ops::DomainOps;
use crate::primitive::{AtomicU64, Ordering};
use crate::reader::{gettid, GpState, Reader};
use std::cell::Cell;
use std::ptr::{self, NonNull};
use std::sync::atomic::{fence, AtomicPtr};
use std::sync::{Arc, Mutex, MutexGuard};

/// How many domains (`Rcu` instances) may exist at once in a process.
pub const MAX_DOMAINS: usize = 128;

thread_local! {
    static SLOTS: [AtomicPtr<Reader>; MAX_DOMAINS] =
        const { [const { AtomicPtr::new(ptr::null_mut()) }; MAX_DOMAINS] };
    static CB_SLOTS: [AtomicPtr<CbQueue>; MAX_DOMAINS] =
        const { [const { AtomicPtr::new(ptr::null_mut()) }; MAX_DOMAINS] };
    static EXIT_HOOK: ExitHook = const { ExitHook { armed: Cell::new(false) } };
}

/// Slot index → the domain's state, for thread exit and fork. Guarded by its mutex, which is
/// the global registry lock of the module documentation.
pub(crate) struct Table {
    used: [bool; MAX_DOMAINS],
    ops: [Option<NonNull<dyn DomainOps>>; MAX_DOMAINS],
}

// SAFETY: the pointers are only dereferenced while the table lock is held, and a domain
// removes itself from the table (under the lock) before its state can be freed.
unsafe impl Send for Table {}

static TABLE: Mutex<Table> = Mutex::new(Table {
    used: [false; MAX_DOMAINS],
    ops: [None; MAX_DOMAINS],
});

impl Table {
    /// Every live domain.
    pub(crate) fn domains(&self) -> impl Iterator<Item = &dyn DomainOps> {
        // SAFETY: a published pointer stays valid while the table lock (`&self`) is held.
        self.ops.iter().flatten().map(|p| unsafe { p.as_ref() })
    }
}

pub(crate) fn table() -> MutexGuard<'static, Table> {
    // A panic while holding the lock (a user's `tracing` subscriber, say) leaves the table
    // consistent: every mutation is a single store.
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The calling thread's record for the domain owning `slot`, if it is registered.
/// Async-signal-safe.
#[inline(always)]
pub(crate) fn lookup(slot: u32) -> Option<NonNull<Reader>> {
    SLOTS.with(|s| NonNull::new(s[slot as usize].load(Ordering::Relaxed)))
}

/// Call `f` on each of the calling thread's records. Async-signal-safe.
pub(crate) fn for_each_own(mut f: impl FnMut(&Reader)) {
    SLOTS.with(|slots| {
        for slot in slots {
            let p = slot.load(Ordering::Relaxed);
            if !p.is_null() {
                // SAFETY: a record in the calling thread's slot is alive until this thread
                // unregisters, which it is not doing while it runs this (a signal handler
                // interrupting `remove` sees the slot either set, record alive, or null).
                f(unsafe { &*p });
            }
        }
    });
}

/// The calling thread's callback queue for the domain owning `slot`, if it has one.
#[inline(always)]
pub(crate) fn lookup_queue(slot: u32) -> Option<NonNull<CbQueue>> {
    CB_SLOTS.with(|s| NonNull::new(s[slot as usize].load(Ordering::Relaxed)))
}

/// Create the calling thread's queue for `engine`. None during thread teardown.
pub(crate) fn register_queue(engine: &CbEngine) -> Option<NonNull<CbQueue>> {
    let _t = table();
    if let Some(q) = lookup_queue(engine.slot) {
        return Some(q);
    }
    EXIT_HOOK.try_with(|h| h.armed.set(true)).ok()?;
    let cell: *const AtomicPtr<CbQueue> = CB_SLOTS.with(|s| &s[engine.slot as usize] as *const _);
    let q = engine.new_queue(cell);
    let raw = Arc::as_ptr(&q) as *mut CbQueue;
    crate::domain::lock(&engine.queues).push(q);
    // SAFETY: `cell` is this thread's own slot, alive for the thread's lifetime.
    unsafe { &*cell }.store(raw, Ordering::Relaxed);
    NonNull::new(raw)
}

/// Claim a slot index for a new domain; `set_slot` fills it in.
pub(crate) fn reserve_slot() -> Option<u32> {
    crate::fork::ensure_handlers();
    let mut t = table();
    let i = t.used.iter().position(|u| !u)?;
    t.used[i] = true;
    Some(i as u32)
}

/// Publish a domain's state in its slot (once its address is fixed).
pub(crate) fn set_slot(slot: u32, ops: &dyn DomainOps) {
    let p: NonNull<dyn DomainOps + '_> = NonNull::from(ops);
    // SAFETY: lifetime erasure only; the domain unpublishes itself in `release_*slot`, under
    // the table lock, before its state is freed, and the pointer is only used under that lock.
    let p: NonNull<dyn DomainOps> = unsafe { std::mem::transmute(p) };
    table().ops[slot as usize] = Some(p);
}

/// Drop-time: detach the engine's per-thread queues and release the slot.
pub(crate) fn release_engine_slot(engine: &CbEngine) {
    let mut t = table();
    engine.detach_all();
    let i = engine.slot as usize;
    t.ops[i] = None;
    t.used[i] = false;
}

/// Drop-time: empty the domain's slot in every registered thread and release the slot.
pub(crate) fn release_slot(shared: &Shared) {
    let mut t = table();
    shared.engine.detach_all();
    let mut readers = shared.readers();
    for r in readers.drain(..) {
        // SAFETY: the owning thread has not run its exit hook (it would have removed `r` from
        // the registry under the lock we hold), so its TLS, and the slot, are alive.
        unsafe { &*r.slot_cell }.store(ptr::null_mut(), Ordering::Relaxed);
        r.gone.store(true, Ordering::Relaxed);
        // The owner can no longer reach the record (its slot is empty and nobody can borrow
        // the domain being dropped), so it cannot be inside a section: mark it quiescent for
        // any driver still scanning it (the poll worker, stopped next).
        r.word.store(0, Ordering::Release);
    }
    drop(readers);
    shared.gp.wake_writers();
    let i = shared.slot as usize;
    t.ops[i] = None;
    t.used[i] = false;
}

/// Register the calling thread with the domain. Returns its record.
pub(crate) fn register(shared: &Shared) -> NonNull<Reader> {
    let _t = table();
    if let Some(r) = lookup(shared.slot) {
        return r;
    }
    // Arm the exit hook first: registration during TLS teardown (from another TLS value's
    // destructor, after our hook ran) would leave a record no one removes.
    let armed = EXIT_HOOK.try_with(|h| h.armed.set(true)).is_ok();
    assert!(
        armed,
        "rcu-core: a thread cannot register with RCU domain `{}` while it is exiting \
         (read_lock called from a thread-local destructor that runs after rcu-core's)",
        shared.name
    );
    let cell: *const AtomicPtr<Reader> = SLOTS.with(|s| &s[shared.slot as usize] as *const _);
    let name = std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_owned()
        .into_boxed_str();
    let record = Arc::new(Reader {
        word: AtomicU64::new(0),
        nest: Default::default(),
        hint: Default::default(),
        gp: &shared.gp as *const GpState,
        slot_cell: cell,
        tid: gettid(),
        gone: Default::default(),
        name,
        boost: Default::default(),
    });
    if shared.kind.is_qsbr() {
        // A registered qsbr thread is online; it must announce quiescent states or go offline.
        handshake::qsbr_online(&record.word, &shared.gp.ctr);
    }
    let raw = Arc::as_ptr(&record) as *mut Reader;
    shared.readers().push(record);
    // SAFETY: `cell` is this thread's own slot, alive for the thread's lifetime.
    unsafe { &*cell }.store(raw, Ordering::Relaxed);
    // SAFETY: `raw` comes from an Arc that the registry now holds.
    unsafe { NonNull::new_unchecked(raw) }
}

/// Unregister the calling thread from the domain (explicitly, or from the exit hook).
/// Returns false if it was not registered.
pub(crate) fn unregister(shared: &Shared) -> bool {
    let _t = table();
    match lookup(shared.slot) {
        Some(r) => {
            // SAFETY: the record is alive while it is in our slot.
            remove(shared, unsafe { r.as_ref() }, false);
            true
        }
        None => false,
    }
}

/// Remove `r` (the calling thread's record) from `shared`. Caller holds the table lock.
fn remove(shared: &Shared, r: &Reader, exiting: bool) {
    let inside = if shared.kind.is_qsbr() {
        r.qsbr_depth() != 0
    } else {
        handshake::in_section(r.word.load(Ordering::Relaxed))
    };
    if inside && !exiting {
        panic!(
            "rcu-core: thread {} unregisters from RCU domain `{}` inside a read-side critical \
             section",
            r.label(),
            shared.name
        );
    }
    if inside {
        // A leaked guard (mem::forget) on an exiting thread. The references it protected died
        // with the thread, so ending the section is safe; aborting the process from a TLS
        // destructor (what a panic here would do) would punish every other thread for it.
        tracing::error!(
            target: "rcu_core",
            domain = %shared.name,
            thread = %r.label(),
            "thread exited inside an RCU read-side critical section (a leaked ReadGuard?); \
             the section is ended so grace periods can complete"
        );
        eprintln!(
            "rcu-core: thread {} exited inside a read-side critical section of RCU domain `{}`; \
             the section is ended so grace periods can complete",
            r.label(),
            shared.name
        );
    }
    // Release C, then Fence D: a writer scanning this record sees it quiescent.
    r.word.store(0, Ordering::Release);
    fence(Ordering::SeqCst);
    r.gone.store(true, Ordering::Relaxed);
    // SAFETY: `slot_cell` is the calling thread's own slot.
    unsafe { &*r.slot_cell }.store(ptr::null_mut(), Ordering::Relaxed);
    shared
        .readers()
        .retain(|x| !ptr::eq(Arc::as_ptr(x), r as *const Reader));
    shared.gp.reader_left();
}

struct ExitHook {
    armed: Cell<bool>,
}

impl Drop for ExitHook {
    fn drop(&mut self) {
        if !self.armed.get() {
            return;
        }
        let t = table();
        SLOTS.with(|slots| {
            for (i, slot) in slots.iter().enumerate() {
                let p = slot.load(Ordering::Relaxed);
                if p.is_null() {
                    continue;
                }
                // SAFETY: a non-null slot under the table lock means the domain has not run
                // `release_slot`, so both its state and our record are alive.
                let (ops, r) = unsafe { (t.ops[i].expect("live slot").as_ref(), &*p) };
                if let Some(shared) = ops.rcu() {
                    remove(shared, r, true);
                }
            }
        });
        CB_SLOTS.with(|slots| {
            for (i, slot) in slots.iter().enumerate() {
                let p = slot.swap(ptr::null_mut(), Ordering::Relaxed);
                if p.is_null() {
                    continue;
                }
                // SAFETY: as above: the engine has not released its slot, and the queue is in
                // its list (which holds an Arc) until `adopt` removes it.
                let (ops, q) = unsafe { (t.ops[i].expect("live slot").as_ref(), &*p) };
                ops.engine().adopt(q);
            }
        });
    }
}
