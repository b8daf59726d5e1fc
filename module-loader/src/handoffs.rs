//! What module code hands libc for later, recorded as it happens and undone at unload.
//!
//! A module can leave code reachable after `dlclose` without ever calling the host's API: a
//! thread of its own, a signal disposition, a thread-specific-data destructor, a POSIX timer, an
//! exit handler (loader-anchors.md, "what module code hands libc", measured on glibc 2.36). glibc
//! undoes only some of these at `dlclose` (the module's `__cxa_atexit` handlers and fork
//! handlers); for the rest a crash follows the unmap. So the host interposes those imports of
//! *module code only*: after `dlopen` and before `init`, got.rs rewrites the module's GOT slots
//! for the symbols in [`crate::inspect`]'s `INTERPOSED` list to point at the wrappers here, which
//! call the real libc function and record what was handed over in the module's [`Handed`].
//!
//! At unload, after the module's `exit` ([`Handed::undo`]):
//! * its POSIX timers still alive are deleted;
//! * each signal whose handler lies in the module gets back the disposition the module replaced;
//! * each thread-specific-data key whose destructor lies in the module is deleted — found both
//!   from the records and from glibc's own key table (`__pthread_keys`, which libthread_db reads
//!   too), so a key created by a constructor, before the GOT was rewritten, is found as well;
//! * `on_exit` handlers and `__cxa_atexit` handlers registered without the module's handle were
//!   never given to libc: the host holds them and runs them just before `dlclose`, as glibc runs
//!   the module's own (and at process exit if the module is still loaded then).
//!
//! Then [`Handed::check`] asks the kernel and glibc what is still registered: a signal whose
//! handler still lies in the module (installed by a raw system call, or by a constructor) and
//! a thread the module started that still runs make the unload `Pinned`, with the reason. The
//! stack scan of every other thread is threadscan.rs.
//!
//! Which module called a wrapper is known without looking at the caller: each loaded module gets
//! one of [`SLOTS`] slots, and its GOT points at that slot's instance of each wrapper (a const
//! generic), which finds the module's record in `SLOTS[S]`. Limits (docs/design/unload-protocol.md):
//! constructors run inside `dlopen`, before the rewrite; calls made through `dlsym`, a raw
//! `syscall`, or another library the module loaded are not seen by the wrappers (the kernel and
//! key-table checks and the stack scan still see their effect, except a timer's).

use crate::library::CodeRange;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};

/// How many modules can be interposed at once; a load past that runs without the wrappers
/// (warned about), watched by the unload-time checks alone.
pub(crate) const SLOTS: usize = 64;

type StartFn = extern "C" fn(*mut c_void) -> *mut c_void;
type DtorFn = unsafe extern "C" fn(*mut c_void);
type OnExitFn = unsafe extern "C" fn(c_int, *mut c_void);

/// One module's record of what its code handed libc.
#[derive(Debug)]
pub(crate) struct Handed {
    module: String,
    code: Vec<CodeRange>,
    /// The whole mapping: `__dso_handle`, which glibc keys the module's exit handlers by, lies in
    /// it.
    span: (usize, usize),
    slot: Option<usize>,
    records: Mutex<Records>,
}

#[derive(Debug, Default)]
struct Records {
    threads: Vec<StartedThread>,
    /// Per signal, the disposition before the module's first handler.
    signals: Vec<(c_int, SigAction)>,
    keys: Vec<libc::pthread_key_t>,
    timers: Vec<usize>,
    /// Held exit handlers, in registration order.
    exits: Vec<HeldExit>,
}

#[derive(Clone, Copy, Debug)]
struct StartedThread {
    tid: i32,
    returned: bool,
}

#[derive(Clone, Copy)]
struct SigAction(libc::sigaction);

impl std::fmt::Debug for SigAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sigaction({:#x})", self.0.sa_sigaction)
    }
}

#[derive(Clone, Copy, Debug)]
enum HeldExit {
    Cxa(DtorFn, usize),
    OnExit(OnExitFn, usize),
}

static SLOT_TABLE: [AtomicPtr<Handed>; SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];
static SLOT_LOCK: Mutex<()> = Mutex::new(());

fn lock(m: &Mutex<Records>) -> MutexGuard<'_, Records> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handed {
    /// A record for the module mapped at `span` with executable ranges `code`, holding a slot
    /// if one is free (the slot is released by [`Lease`]'s drop).
    pub(crate) fn lease(module: &str, code: &[CodeRange], span: (usize, usize)) -> Lease {
        let _g = SLOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let free = SLOT_TABLE
            .iter()
            .position(|s| s.load(Ordering::Relaxed).is_null());
        let handed = Arc::new(Handed {
            module: module.to_owned(),
            code: code.to_vec(),
            span,
            slot: free,
            records: Mutex::default(),
        });
        match free {
            // Release pairs with the Acquire load in `slot`: a wrapper that finds the pointer
            // sees the record it points to.
            Some(s) => SLOT_TABLE[s].store(Arc::as_ptr(&handed).cast_mut(), Ordering::Release),
            None => tracing::warn!(target: "rcumod", module, slots = SLOTS,
                "every interposition slot is taken: the module's threads, handlers, keys and \
                 timers are checked at unload only"),
        }
        Lease { handed }
    }

    /// The module's slot, if it has one: the index of the wrappers its GOT is to point at.
    pub(crate) fn slot(&self) -> Option<usize> {
        self.slot
    }

    fn in_code(&self, addr: usize) -> bool {
        self.code.iter().any(|&(s, e)| addr >= s && addr < e)
    }

    /// Undo what module code handed libc and the module did not take back in its `exit`;
    /// returns what was undone, one line per kind, for the report.
    pub(crate) fn undo(&self) -> Vec<String> {
        let mut r = lock(&self.records);
        let mut undone = Vec::new();
        let mut timers = 0;
        for t in r.timers.drain(..) {
            // SAFETY: a timer id timer_create returned to module code and not deleted since (the
            // wrapper of timer_delete forgets it).
            if unsafe { libc::timer_delete(t as libc::timer_t) } == 0 {
                timers += 1;
            }
        }
        if timers > 0 {
            undone.push(format!("{timers} POSIX timer(s) deleted"));
        }
        for (signo, prev) in r.signals.drain(..) {
            let now = current_action(signo);
            if now.is_some_and(|a| self.in_code(a.sa_sigaction)) {
                // SAFETY: `prev` is a disposition the kernel returned for this signal.
                if unsafe { libc::sigaction(signo, &prev.0, std::ptr::null_mut()) } == 0 {
                    undone.push(format!(
                        "signal {signo} ({}) disposition restored",
                        signal_name(signo)
                    ));
                }
            }
        }
        let mut keys: Vec<_> = r.keys.drain(..).collect();
        for k in glibc_keys::with_destructor_in(&self.code) {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        // SAFETY: keys whose destructor is module code; after this no thread exit calls it.
        // Values still set are leaked (freeing them would need the module's destructor).
        let deleted = keys
            .into_iter()
            .filter(|&k| unsafe { libc::pthread_key_delete(k) } == 0)
            .count();
        if deleted > 0 {
            undone.push(format!("{deleted} thread-specific-data key(s) deleted"));
        }
        undone
    }

    /// What still lets module code run, as reasons for `Pinned` (empty when nothing does).
    pub(crate) fn check(&self) -> Vec<String> {
        let mut why = Vec::new();
        for signo in 1..=libc::SIGRTMAX() {
            if let Some(a) = current_action(signo) {
                if self.in_code(a.sa_sigaction) {
                    why.push(format!(
                        "signal {signo} ({}) has its handler in the module at {}, installed \
                         where the host could not see it",
                        signal_name(signo),
                        self.where_(a.sa_sigaction)
                    ));
                }
            }
        }
        for k in glibc_keys::with_destructor_in(&self.code) {
            why.push(format!(
                "thread-specific-data key {k} keeps a destructor in the module"
            ));
        }
        let threads = lock(&self.records).threads.clone();
        for t in threads.iter().filter(|t| !t.returned) {
            if let Some(name) = crate::threadscan::alive(t.tid) {
                why.push(format!(
                    "thread {} ({name}) started by module code is still running",
                    t.tid
                ));
            }
        }
        why
    }

    /// Run the held exit handlers, newest first, as glibc runs a module's at `dlclose`.
    pub(crate) fn run_held_exits(&self) -> usize {
        let held: Vec<HeldExit> = std::mem::take(&mut lock(&self.records).exits);
        for h in held.iter().rev() {
            match *h {
                // SAFETY: handlers module code registered with these arguments, run once, while
                // the module is still mapped.
                HeldExit::Cxa(f, arg) => unsafe { f(arg as *mut c_void) },
                // SAFETY: as above; on_exit passes the exit status, 0 for an unload.
                HeldExit::OnExit(f, arg) => unsafe { f(0, arg as *mut c_void) },
            }
        }
        held.len()
    }

    /// `addr` as `module+0xoffset` from the start of the mapping.
    pub(crate) fn where_(&self, addr: usize) -> String {
        format!("{}+{:#x}", self.module, addr.wrapping_sub(self.span.0))
    }
}

/// A module's [`Handed`] record and its slot, which is released when the lease is dropped. Only
/// drop it once the module is unmapped: a pinned module's code can still call the wrappers, so
/// its lease is forgotten with the rest of it.
#[derive(Debug)]
pub(crate) struct Lease {
    handed: Arc<Handed>,
}

impl std::ops::Deref for Lease {
    type Target = Handed;
    fn deref(&self) -> &Handed {
        &self.handed
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(s) = self.handed.slot {
            let _g = SLOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            SLOT_TABLE[s].store(std::ptr::null_mut(), Ordering::Release);
        }
    }
}

fn current_action(signo: c_int) -> Option<libc::sigaction> {
    // SAFETY: a query (no new action); `old` is written by the kernel.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        (libc::sigaction(signo, std::ptr::null(), &mut old) == 0).then_some(old)
    }
}

/// Threads module code started through the wrappers that have not returned from their start
/// routine, of every interposed module: the thread scan leaves them to [`Handed::check`] (a
/// module's own are named there; another module's reach this one's code only through hooks and
/// callbacks, which the protocol waits for).
pub(crate) fn started_threads() -> Vec<i32> {
    let mut v = Vec::new();
    // Under the slot lock: an unloader elsewhere may be dropping a lease, which clears its slot
    // under this lock before the record is freed. (The wrappers need no lock: only their
    // module's code calls them, and it cannot run once the module is unmapped.)
    let _g = SLOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for s in &SLOT_TABLE {
        let p = s.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: a set slot's record is freed only after the slot is cleared under
            // SLOT_LOCK, which we hold.
            let h = unsafe { &*p };
            v.extend(
                lock(&h.records)
                    .threads
                    .iter()
                    .filter(|t| !t.returned)
                    .map(|t| t.tid),
            );
        }
    }
    v
}

/// A signal's description ("User defined signal 1"), for messages.
pub(crate) fn signal_name(signo: c_int) -> String {
    // SAFETY: strsignal returns a string that stays valid until the next call; it is copied at
    // once. (Its text is the description, e.g. "User defined signal 1".)
    let s = unsafe { std::ffi::CStr::from_ptr(libc::strsignal(signo)) };
    s.to_string_lossy().into_owned()
}

/// The record of the module in slot `S`. A wrapper of a module that is still mapped always
/// finds it: the slot is cleared only when the module is unmapped.
fn slot<const S: usize>() -> Option<&'static Handed> {
    let p = SLOT_TABLE[S].load(Ordering::Acquire);
    // SAFETY: a non-null slot points into the `Arc` its `Lease` holds, and the lease is dropped
    // (clearing the slot first) only once the module, whose code alone calls these wrappers, is
    // unmapped.
    (!p.is_null()).then(|| unsafe { &*p })
}

// ---- the wrappers -------------------------------------------------------------------------

struct Start {
    start: StartFn,
    arg: *mut c_void,
    handed: Arc<Handed>,
}

/// Every thread module code creates starts here: host code, which records the thread's id
/// before running the module's start routine, and that it returned.
extern "C" fn thread_entry(p: *mut c_void) -> *mut c_void {
    // SAFETY: `p` is the `Start` box `w_pthread_create` leaked for this thread alone.
    let s = unsafe { Box::from_raw(p.cast::<Start>()) };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    lock(&s.handed.records).threads.push(StartedThread {
        tid,
        returned: false,
    });
    let ret = (s.start)(s.arg);
    let mut r = lock(&s.handed.records);
    if let Some(t) = r.threads.iter_mut().find(|t| t.tid == tid) {
        t.returned = true;
    }
    // Threads that came and went need no record.
    r.threads.retain(|t| !(t.returned && t.tid == tid));
    ret
}

unsafe extern "C" fn w_pthread_create<const S: usize>(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: StartFn,
    arg: *mut c_void,
) -> c_int {
    let Some(h) = slot::<S>() else {
        // SAFETY: the caller's arguments, passed on unchanged.
        return unsafe { libc::pthread_create(thread, attr, start, arg) };
    };
    // Recover the Arc the lease holds (one more strong count for the thread).
    // SAFETY: `h` points into a live Arc (see `slot`).
    let handed = unsafe {
        Arc::increment_strong_count(h as *const Handed);
        Arc::from_raw(h as *const Handed)
    };
    let boxed = Box::into_raw(Box::new(Start { start, arg, handed }));
    // SAFETY: the caller's thread and attr; the start routine is ours, with its box.
    let rc = unsafe { libc::pthread_create(thread, attr, thread_entry, boxed.cast()) };
    if rc != 0 {
        // SAFETY: no thread was created; the box is still ours.
        drop(unsafe { Box::from_raw(boxed) });
    }
    rc
}

unsafe extern "C" fn w_sigaction<const S: usize>(
    signo: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    // SAFETY: zeroed is a valid sigaction.
    let mut prev: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: the caller's new action (or null), and our own old-action buffer.
    let rc = unsafe { libc::sigaction(signo, act, &mut prev) };
    if rc == 0 {
        if !old.is_null() {
            // SAFETY: the caller's buffer for the old action.
            unsafe { *old = prev };
        }
        if let (Some(h), false) = (slot::<S>(), act.is_null()) {
            // SAFETY: non-null, the caller's action, read by the kernel just now.
            note_signal(h, signo, unsafe { (*act).sa_sigaction }, prev);
        }
    }
    rc
}

unsafe extern "C" fn w_signal<const S: usize>(
    signo: c_int,
    handler: libc::sighandler_t,
) -> libc::sighandler_t {
    let prev = current_action(signo);
    // SAFETY: the caller's arguments, passed on unchanged.
    let rc = unsafe { libc::signal(signo, handler) };
    if let (Some(h), Some(prev), false) = (slot::<S>(), prev, rc == libc::SIG_ERR) {
        note_signal(h, signo, handler, prev);
    }
    rc
}

fn note_signal(h: &Handed, signo: c_int, handler: usize, prev: libc::sigaction) {
    let mut r = lock(&h.records);
    let known = r.signals.iter().position(|(s, _)| *s == signo);
    match (h.in_code(handler), known) {
        // The first handler of the module's for this signal: remember what it replaced.
        (true, None) => r.signals.push((signo, SigAction(prev))),
        // The module put something else back itself.
        (false, Some(i)) => {
            r.signals.remove(i);
        }
        _ => {}
    }
}

unsafe extern "C" fn w_pthread_key_create<const S: usize>(
    key: *mut libc::pthread_key_t,
    dtor: Option<DtorFn>,
) -> c_int {
    // SAFETY: the caller's arguments, passed on unchanged.
    let rc = unsafe { libc::pthread_key_create(key, dtor) };
    if let (0, Some(h), Some(d)) = (rc, slot::<S>(), dtor) {
        if h.in_code(d as usize) {
            // SAFETY: pthread_key_create succeeded and wrote the key.
            lock(&h.records).keys.push(unsafe { *key });
        }
    }
    rc
}

unsafe extern "C" fn w_pthread_key_delete<const S: usize>(key: libc::pthread_key_t) -> c_int {
    if let Some(h) = slot::<S>() {
        lock(&h.records).keys.retain(|k| *k != key);
    }
    // SAFETY: the caller's key.
    unsafe { libc::pthread_key_delete(key) }
}

unsafe extern "C" fn w_timer_create<const S: usize>(
    clock: libc::clockid_t,
    sevp: *mut libc::sigevent,
    timer: *mut libc::timer_t,
) -> c_int {
    // SAFETY: the caller's arguments, passed on unchanged.
    let rc = unsafe { libc::timer_create(clock, sevp, timer) };
    if let (0, Some(h)) = (rc, slot::<S>()) {
        // SAFETY: timer_create succeeded and wrote the id.
        lock(&h.records).timers.push(unsafe { *timer } as usize);
    }
    rc
}

unsafe extern "C" fn w_timer_delete<const S: usize>(timer: libc::timer_t) -> c_int {
    if let Some(h) = slot::<S>() {
        lock(&h.records).timers.retain(|t| *t != timer as usize);
    }
    // SAFETY: the caller's timer.
    unsafe { libc::timer_delete(timer) }
}

extern "C" {
    fn __cxa_atexit(f: DtorFn, arg: *mut c_void, dso: *mut c_void) -> c_int;
    fn on_exit(f: OnExitFn, arg: *mut c_void) -> c_int;
}

unsafe extern "C" fn w_cxa_atexit<const S: usize>(
    f: DtorFn,
    arg: *mut c_void,
    dso: *mut c_void,
) -> c_int {
    match slot::<S>() {
        // The module's own handle (its `__dso_handle`, as `atexit` in a shared object passes):
        // glibc runs these at dlclose.
        Some(h) if !(dso as usize >= h.span.0 && (dso as usize) < h.span.1) => {
            hold(h, HeldExit::Cxa(f, arg as usize));
            0
        }
        // SAFETY: the caller's arguments, passed on unchanged.
        _ => unsafe { __cxa_atexit(f, arg, dso) },
    }
}

unsafe extern "C" fn w_on_exit<const S: usize>(f: OnExitFn, arg: *mut c_void) -> c_int {
    match slot::<S>() {
        Some(h) => {
            hold(h, HeldExit::OnExit(f, arg as usize));
            0
        }
        // SAFETY: the caller's arguments, passed on unchanged.
        None => unsafe { on_exit(f, arg) },
    }
}

fn hold(h: &Handed, e: HeldExit) {
    lock(&h.records).exits.push(e);
    // A module still loaded when the process exits gets its held handlers run then.
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        extern "C" fn run_all() {
            let _g = SLOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            for s in &SLOT_TABLE {
                let p = s.load(Ordering::Acquire);
                if !p.is_null() {
                    // SAFETY: as in `started_threads`: freed only after its slot is cleared
                    // under SLOT_LOCK, which we hold; the module is mapped while it is set.
                    unsafe { (*p).run_held_exits() };
                }
            }
        }
        // SAFETY: registers host code, never unmapped.
        unsafe { libc::atexit(run_all) };
    });
}

/// The wrapper addresses of one slot, in the order of `inspect::INTERPOSED`.
type Wrappers = [usize; 9];

fn wrappers_of<const S: usize>() -> Wrappers {
    [
        w_pthread_create::<S> as *const () as usize,
        w_sigaction::<S> as *const () as usize,
        w_signal::<S> as *const () as usize,
        w_pthread_key_create::<S> as *const () as usize,
        w_pthread_key_delete::<S> as *const () as usize,
        w_timer_create::<S> as *const () as usize,
        w_timer_delete::<S> as *const () as usize,
        w_cxa_atexit::<S> as *const () as usize,
        w_on_exit::<S> as *const () as usize,
    ]
}

macro_rules! slot_wrappers {
    ($($s:literal)*) => {
        /// The wrappers of slot `s`.
        pub(crate) fn wrappers(s: usize) -> Option<Wrappers> {
            match s {
                $($s => Some(wrappers_of::<$s>()),)*
                _ => None,
            }
        }
    };
}
slot_wrappers!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30
    31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61
    62 63);

/// glibc's table of thread-specific-data keys, which libthread_db reads too: an array of
/// `{ seq, destructor }` pairs, a key in use while its `seq` is odd. Found by `dlvsym` under
/// glibc's private version and used only if its size is what libthread_db's own descriptor of
/// it (`_thread_db___pthread_keys`: element bits, count, offset) says; elsewhere nothing is
/// found and only the recorded keys are deleted.
mod glibc_keys {
    use crate::library::CodeRange;
    use std::sync::OnceLock;

    #[repr(C)]
    struct KeySlot {
        seq: usize,
        destr: usize,
    }

    fn table() -> Option<&'static [KeySlot]> {
        static T: OnceLock<Option<(usize, usize)>> = OnceLock::new();
        let (at, n) = (*T.get_or_init(|| {
            // SAFETY: dlvsym with NUL-terminated names; the results are only compared and read
            // as documented for libthread_db.
            unsafe {
                let keys = libc::dlvsym(
                    libc::RTLD_DEFAULT,
                    c"__pthread_keys".as_ptr(),
                    c"GLIBC_PRIVATE".as_ptr(),
                );
                let desc = libc::dlvsym(
                    libc::RTLD_DEFAULT,
                    c"_thread_db___pthread_keys".as_ptr(),
                    c"GLIBC_PRIVATE".as_ptr(),
                ) as *const u32;
                if keys.is_null() || desc.is_null() {
                    return None;
                }
                let (bits, count) = (*desc, *desc.add(1));
                (bits as usize == 8 * std::mem::size_of::<KeySlot>()
                    && count > 0
                    && count <= 1 << 16)
                    .then_some((keys as usize, count as usize))
            }
        }))?;
        // SAFETY: glibc's static array of `n` key slots, alive for the process; words read while
        // other threads may create keys, which at worst shows a key one step stale.
        Some(unsafe { std::slice::from_raw_parts(at as *const KeySlot, n) })
    }

    /// Keys in use whose destructor lies in `code`.
    pub(super) fn with_destructor_in(code: &[CodeRange]) -> Vec<libc::pthread_key_t> {
        let Some(t) = table() else { return Vec::new() };
        t.iter()
            .enumerate()
            .filter(|(_, k)| {
                // SAFETY: aligned words of glibc's table (see `table`).
                let (seq, d) = unsafe {
                    (
                        std::ptr::read_volatile(&k.seq),
                        std::ptr::read_volatile(&k.destr),
                    )
                };
                seq & 1 == 1 && code.iter().any(|&(s, e)| d >= s && d < e)
            })
            .map(|(i, _)| i as libc::pthread_key_t)
            .collect()
    }
}
