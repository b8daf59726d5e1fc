//! `ModuleRuntime`: everything the host owns on behalf of one loaded module.
//!
//! The context pointer a module receives is a `*const ModuleRuntime`. Through it the host
//! *owns* what could keep module code running or posting after the module is asked to go:
//! its posting gate (gate.rs), its timers and threads (started here, stopped and joined here),
//! its hooks (hooks.rs), the SRCU domains it created, and the accounting of every callback it
//! posted — counted per owner (the module whose code the callback will run), so the unloader
//! can prove "pending == 0" instead of hoping.

use crate::gate::Gate;
use crate::library::CodeRange;
use rcu_core::Srcu;
use rcumod_abi as abi;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Callback counters of one module.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallbackCounts {
    /// Callbacks accepted (owned by this module).
    pub posted: u64,
    /// Of those, invoked.
    pub invoked: u64,
    /// Posts refused because the module's posting gate was closed (a module bug: the host
    /// returned them with `ESHUTDOWN`, nothing was lost silently).
    pub refused_after_stop: u64,
    /// Posts refused because the function was not code of a live module.
    pub refused_foreign: u64,
    /// Callbacks that found their module unmapped when their turn came (checked mode only;
    /// without checked mode such a callback would have crashed the process).
    pub late: u64,
}

impl CallbackCounts {
    /// Posted and not yet invoked.
    pub fn pending(&self) -> u64 {
        self.posted.saturating_sub(self.invoked + self.late)
    }
}

/// The module's callback counters. `posted` is written by the module's posting threads and
/// `invoked` by the domains' invokers, at every callback: per-thread slots summed on read
/// (percpu.rs), so that neither is a line every posting thread shares.
#[derive(Debug, Default)]
struct Counters {
    posted: crate::percpu::Counter,
    invoked: crate::percpu::Counter,
    refused_after_stop: AtomicU64,
    refused_foreign: AtomicU64,
    late: AtomicU64,
}

#[derive(Debug)]
struct HostTimer {
    id: u32,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

#[derive(Debug)]
struct ModThread {
    id: u32,
    name: String,
    thread: JoinHandle<()>,
}

/// A hook as published by a module (hooks.rs publishes them under RCU).
#[derive(Clone, Debug)]
pub(crate) struct HookEntry {
    /// Interned by the hook table when published (hooks.rs), so that a resolved handle
    /// recognises its hook by one pointer comparison.
    pub(crate) name: Arc<str>,
    pub(crate) func: abi::HookFn,
    pub(crate) data: usize,
    pub(crate) owner: Arc<ModuleRuntime>,
}

/// What the runtime needs from its host.
pub(crate) trait HostServices: Send + Sync + std::fmt::Debug {
    /// The host's domains, by id (fixed for the host's life).
    fn domains(&self) -> Vec<crate::domains::DomainRef>;
    /// The live module whose code contains `addr`.
    fn owner_of(&self, addr: usize) -> Option<Arc<ModuleRuntime>>;
    fn publish_hook(&self, hook: HookEntry) -> Result<(), std::ffi::c_int>;
    fn unpublish_hook(&self, module: &ModuleRuntime, name: &str) -> Result<(), std::ffi::c_int>;
    fn checked(&self) -> bool;
    fn late_callback(&self, module: &str);
}

/// Tells a context pointer the host handed out from any other pointer (the first field).
const MAGIC: u64 = 0x7263_756d_6f64_5254; // "rcumodRT"

/// The host side of one loaded module.
#[derive(Debug)]
#[repr(C)]
pub struct ModuleRuntime {
    magic: u64,
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) params: HashMap<String, String>,
    pub(crate) gate: Gate,
    counters: Counters,
    /// Host domains (bit i = domain i) this module's callbacks were posted to.
    domains_used: AtomicU64,
    pub(crate) srcu: Mutex<Vec<Arc<Srcu>>>,
    timers: Mutex<Vec<HostTimer>>,
    threads: Mutex<Vec<ModThread>>,
    next_id: AtomicU64,
    /// Set when the host asks the module's threads to stop; `wake` signals it.
    stopping: AtomicBool,
    wake: (Mutex<()>, Condvar),
    pub(crate) code: RwLock<Vec<CodeRange>>,
    /// The first executable ranges of `code`, readable without the lock (every post checks
    /// its function against them); `code_len` says how many hold (0 once the object is gone).
    code_fast: [(AtomicUsize, AtomicUsize); 4],
    code_len: AtomicUsize,
    /// The host's domains, resolved once: a post or read section indexes this, instead of
    /// upgrading `host` (a compare-and-swap on a count every module's threads share).
    pub(crate) domains: Vec<crate::domains::DomainRef>,
    /// Whether this module's callbacks are in the owners table (owners.rs) and may be posted
    /// as they are; otherwise each goes through the host's wrapper.
    direct: AtomicBool,
    /// False once the module's object has been closed (checked mode consults it).
    pub(crate) mapped: AtomicBool,
    /// Hooks published during `init`, made visible together when the module goes live.
    pub(crate) staged_hooks: Mutex<Option<Vec<HookEntry>>>,
    pub(crate) host: Weak<dyn HostServices>,
    /// The host's checked mode, fixed when the host is built. Every callback reads it; it
    /// should not upgrade `host` to learn it (a CAS on the count the posting threads use too).
    checked: bool,
}

impl ModuleRuntime {
    pub(crate) fn new(
        id: u64,
        name: String,
        params: HashMap<String, String>,
        host: Weak<dyn HostServices>,
    ) -> Arc<ModuleRuntime> {
        let (checked, domains) = match host.upgrade() {
            Some(h) => (h.checked(), h.domains()),
            None => (false, Vec::new()),
        };
        Arc::new(ModuleRuntime {
            magic: MAGIC,
            id,
            name,
            params,
            gate: Gate::default(),
            counters: Counters::default(),
            domains_used: AtomicU64::new(0),
            srcu: Mutex::new(Vec::new()),
            timers: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
            code: RwLock::new(Vec::new()),
            code_fast: Default::default(),
            code_len: AtomicUsize::new(0),
            domains,
            direct: AtomicBool::new(false),
            mapped: AtomicBool::new(false),
            staged_hooks: Mutex::new(Some(Vec::new())),
            checked,
            host,
        })
    }

    /// The load generation (unique per load in a host; part of the private copy's name).
    pub fn generation(&self) -> u64 {
        self.id
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Callback counters.
    pub fn counts(&self) -> CallbackCounts {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Acquire);
        CallbackCounts {
            posted: c.posted.sum(),
            invoked: c.invoked.sum(),
            refused_after_stop: g(&c.refused_after_stop),
            refused_foreign: g(&c.refused_foreign),
            late: g(&c.late),
        }
    }

    pub(crate) fn ctx(self: &Arc<Self>) -> *mut abi::ModuleCtx {
        Arc::as_ptr(self) as *mut abi::ModuleCtx
    }

    /// The runtime behind a context pointer a module passed, if it is one the host handed out.
    ///
    /// # Safety
    ///
    /// `ctx` must be null, or point to readable memory of at least a word (a context the host
    /// handed out, or some other pointer of the module's: its first word is then compared).
    /// A context the host handed out stays valid for the module's whole life: the host keeps
    /// the runtime until after the module's last callback and its `exit`.
    #[inline]
    pub(crate) unsafe fn from_ctx<'a>(ctx: *mut abi::ModuleCtx) -> Option<&'a ModuleRuntime> {
        let p = ctx as *const ModuleRuntime;
        // SAFETY: non-null and readable for a word (the caller); `magic` is the first field of
        // a #[repr(C)] struct.
        if p.is_null() || unsafe { std::ptr::addr_of!((*p).magic).read() } != MAGIC {
            return None;
        }
        // SAFETY: a context the host handed out (the magic), alive for the module's life.
        Some(unsafe { &*p })
    }

    /// A new strong reference to this runtime (for what outlives a call: a hook entry).
    pub(crate) fn arc(&self) -> Arc<ModuleRuntime> {
        let p = self as *const ModuleRuntime;
        // SAFETY: every runtime lives in an `Arc` (`new`), which the host holds while module
        // code can run; we add a count for the new reference.
        unsafe {
            Arc::increment_strong_count(p);
            Arc::from_raw(p)
        }
    }

    /// Record the module's executable ranges (its object is mapped), or forget them (`&[]`:
    /// it is gone).
    pub(crate) fn set_code(&self, code: &[CodeRange]) {
        *self.code.write().unwrap_or_else(|e| e.into_inner()) = code.to_vec();
        self.code_len.store(0, Ordering::Release);
        for (slot, &(s, e)) in self.code_fast.iter().zip(code) {
            slot.0.store(s, Ordering::Relaxed);
            slot.1.store(e, Ordering::Relaxed);
        }
        // Release pairs with `owns_code`'s Acquire: the ranges are seen with the length.
        self.code_len.store(code.len(), Ordering::Release);
        if code.is_empty() {
            if self.direct.swap(false, Ordering::AcqRel) {
                crate::owners::unregister(self);
            }
        } else if !self.checked && crate::owners::register(self, code) {
            self.direct.store(true, Ordering::Release);
        }
    }

    #[inline]
    pub(crate) fn owns_code(&self, addr: usize) -> bool {
        let n = self.code_len.load(Ordering::Acquire);
        let fast = self.code_fast[..n.min(4)]
            .iter()
            .any(|(s, e)| s.load(Ordering::Relaxed) <= addr && addr < e.load(Ordering::Relaxed));
        fast || (n > 4
            && self
                .code
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|&(s, e)| s <= addr && addr < e))
    }

    /// One of this module's callbacks ran (owners.rs, runtime's wrapper).
    #[inline]
    pub(crate) fn callback_invoked(&self) {
        self.counters.invoked.add(1);
    }

    /// A runtime not attached to any host, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str) -> Arc<ModuleRuntime> {
        let none: Weak<dyn HostServices> = Weak::<NoHost>::new();
        ModuleRuntime::new(0, name.to_owned(), HashMap::new(), none)
    }

    /// Host domains this module posted to.
    pub(crate) fn domains_used(&self) -> Vec<u32> {
        let m = self.domains_used.load(Ordering::Acquire);
        (0..64).filter(|i| m & (1 << i) != 0).collect()
    }

    fn next_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed) as u32
    }

    // --------------------------------------------------------------------------------------
    // Posting
    // --------------------------------------------------------------------------------------

    /// Post a module callback on host domain `domain` (or on SRCU domain `srcu`).
    ///
    /// The per-call path touches no line other threads write: the function is checked against
    /// this module's own ranges, the gate is a read section (gate.rs), the count a per-thread
    /// slot (percpu.rs), and the module's own head is posted as it is (owners.rs counts it
    /// when it runs). A function of another module, and checked mode, take the slow path.
    #[inline]
    pub(crate) fn post(&self, target: Target, domain: Domain) -> std::ffi::c_int {
        // The callback is owned by the module whose code it will run.
        let addr = target.code_addr();
        if self.owns_code(addr) {
            return self.post_owned(target, domain);
        }
        match self.host.upgrade().and_then(|h| h.owner_of(addr)) {
            Some(o) => o.post_owned(target, domain),
            None => {
                self.counters
                    .refused_foreign
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    target: "rcumod",
                    module = %self.name,
                    addr = format_args!("{addr:#x}"),
                    "refused a callback whose function is not code of a live module"
                );
                abi::EFAULT
            }
        }
    }

    /// Post a callback whose function is this module's code.
    #[inline]
    fn post_owned(&self, target: Target, domain: Domain) -> std::ffi::c_int {
        let Some(_pass) = self.gate.enter() else {
            return self.refused_after_stop();
        };
        let (head, func) = if self.direct.load(Ordering::Relaxed) {
            match target {
                Target::Head(h, f) => (h.cast::<rcu_core::RcuHead>(), f_core(f)),
                // SAFETY: the entry is the module's, handed over until its callback runs;
                // `call_rcu_entry` stored the callback and argument in it.
                Target::Entry(e, ..) => unsafe {
                    (
                        std::ptr::addr_of_mut!((*e).head).cast(),
                        run_entry as rcu_core::RcuCallback,
                    )
                },
            }
        } else {
            let posted = Box::into_raw(Box::new(Posted {
                head: rcu_core::RcuHead::new(),
                owner: self.arc(),
                target,
            }));
            (posted.cast(), run_posted as rcu_core::RcuCallback)
        };
        match domain {
            Domain::Host(d) => {
                let Some(rcu) = self.domains.get(d as usize) else {
                    if func as usize == run_posted as *const () as usize {
                        // SAFETY: never posted; reclaim our box.
                        drop(unsafe { Box::from_raw(head.cast::<Posted>()) });
                    }
                    return abi::EINVAL;
                };
                let bit = 1 << (d & 63);
                // Read first: the bit is set at the first post and the line stays shared.
                if self.domains_used.load(Ordering::Relaxed) & bit == 0 {
                    self.domains_used.fetch_or(bit, Ordering::AcqRel);
                }
                self.counters.posted.add(1);
                // SAFETY: the head is the module's (or our fresh box), unposted and valid until
                // its function runs; the function is module code, which stays mapped until the
                // unload protocol has seen it run, or host code.
                unsafe { rcu.call_raw(head, func) };
            }
            Domain::Srcu(s) => {
                self.counters.posted.add(1);
                // SAFETY: as above.
                unsafe { s.call_raw(head, func) };
            }
        }
        abi::OK
    }

    #[cold]
    fn refused_after_stop(&self) -> std::ffi::c_int {
        let before = self
            .counters
            .refused_after_stop
            .fetch_add(1, Ordering::Relaxed);
        // Once per module: a thread of the module's own that retries after a refusal (and
        // keeps a pinned module posting) would otherwise flood the log.
        if before == 0 {
            tracing::error!(
                target: "rcumod",
                module = %self.name,
                "module bug: callback posted after the module was told to stop; refused and \
                 returned to the module (ESHUTDOWN); later refusals are counted only"
            );
        }
        abi::ESHUTDOWN
    }

    // --------------------------------------------------------------------------------------
    // Timers and threads
    // --------------------------------------------------------------------------------------

    pub(crate) fn timer_start(
        self: &Arc<Self>,
        period: Duration,
        func: abi::ArgFn,
        arg: usize,
    ) -> Result<u32, std::ffi::c_int> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(abi::ESHUTDOWN);
        }
        let id = self.next_id();
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let period = period.max(Duration::from_micros(10));
        let s2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("t:{}", self.name))
            .spawn(move || {
                crate::threadscan::mark_host_thread();
                let (m, cv) = &*s2;
                let mut next = Instant::now() + period;
                loop {
                    let mut stopped = m.lock().unwrap_or_else(|e| e.into_inner());
                    while !*stopped {
                        let now = Instant::now();
                        if now >= next {
                            break;
                        }
                        stopped = cv
                            .wait_timeout(stopped, next - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    if *stopped {
                        return;
                    }
                    drop(stopped);
                    next += period;
                    // SAFETY: the module registered `func(arg)` as its timer; its code stays
                    // mapped until the timer is cancelled (joined) by the unload protocol.
                    unsafe { func(arg as *mut c_void) };
                }
            })
            .map_err(|_| abi::ENOSPC)?;
        self.timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(HostTimer { id, stop, thread });
        Ok(id)
    }

    /// Cancel one timer (or all with `None`), waiting for a running call to finish.
    pub(crate) fn timer_cancel(&self, id: Option<u32>) -> usize {
        let taken: Vec<HostTimer> = {
            let mut ts = self.timers.lock().unwrap_or_else(|e| e.into_inner());
            let (take, keep) = ts.drain(..).partition(|t| id.is_none_or(|i| t.id == i));
            *ts = keep;
            take
        };
        let n = taken.len();
        for t in taken {
            *t.stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
            t.stop.1.notify_all();
            if t.thread.thread().id() != std::thread::current().id() {
                let _ = t.thread.join();
            }
        }
        n
    }

    pub(crate) fn thread_spawn(
        self: &Arc<Self>,
        name: &str,
        func: abi::ArgFn,
        arg: usize,
    ) -> Result<u32, std::ffi::c_int> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(abi::ESHUTDOWN);
        }
        let id = self.next_id();
        let thread = std::thread::Builder::new()
            .name(format!("m:{name}"))
            .spawn(move || {
                crate::threadscan::mark_host_thread();
                // SAFETY: the module asked for `func(arg)` on a host thread; the unload
                // protocol joins the thread before the module's code is unmapped.
                unsafe { func(arg as *mut c_void) };
            })
            .map_err(|_| abi::ENOSPC)?;
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ModThread {
                id,
                name: name.to_owned(),
                thread,
            });
        Ok(id)
    }

    pub(crate) fn should_stop(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Sleep up to `d`; true if woken because the module is stopping.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut g = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.should_stop() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .wake
                .1
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Ask the module's threads to stop and join them, waiting at most `wait` in all.
    /// Returns the names of threads that did not stop in time (they are left running, and
    /// the module can then not be unmapped).
    ///
    /// Each thread is joined with a deadline: what must be waited for is the thread's exit, its
    /// thread-local destructors (which may be module code) included, and the join waits for
    /// exactly that, in one sleep. (Before, the host first slept until the thread signalled that
    /// the module's function had returned, then again in an unbounded join: one wake-up more,
    /// and no bound on the destructors.) On the 2-vCPU guest of docs/performance.md, the
    /// unload's stop step for `rcu_list`'s one thread took 20–30 µs against 25–50 µs before
    /// (medians of 3000 unloads, six runs of each alternating), and 37–51 µs against 52–69 µs
    /// with the other vCPU kept busy by a spinning process (four runs of 1500).
    ///
    /// No spinning before the sleep: polling `pthread_tryjoin_np` (or the exit flag this
    /// replaced) for a bounded 10–50 µs saved one wake-up when the other vCPU was idle (medians
    /// down to 10 µs), but cost the whole bound when it was busy (56–110 µs): the thread waited
    /// for then needs the spinner's own CPU to run at all.
    pub(crate) fn stop_threads(&self, wait: Duration) -> (usize, Vec<String>) {
        self.stopping.store(true, Ordering::Release);
        {
            let _g = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.1.notify_all();
        }
        let deadline = Instant::now() + wait;
        let threads: Vec<ModThread> = self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        let n = threads.len();
        let mut stuck = Vec::new();
        for t in threads {
            match join_until(t.thread, deadline) {
                Ok(()) => {}
                Err((thread, why)) => {
                    stuck.push(match why {
                        None => format!("{} (id {})", t.name, t.id),
                        Some(why) => format!("{} (id {}: {why})", t.name, t.id),
                    });
                    // Keep the handle in the list, so a later unload attempt can retry.
                    self.threads
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(ModThread { thread, ..t });
                }
            }
        }
        (n, stuck)
    }

    /// Are timers or threads still registered?
    pub(crate) fn has_activity(&self) -> bool {
        !self
            .timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
            || !self
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }
}

/// Join `thread`, waiting until `deadline` at most. On failure the handle comes back, still
/// joinable, with why it was not joined if not for the deadline.
fn join_until(
    thread: JoinHandle<()>,
    deadline: Instant,
) -> Result<(), (JoinHandle<()>, Option<String>)> {
    use std::os::unix::thread::JoinHandleExt;
    // The handle owns the thread and has neither joined nor detached it, so the id is valid
    // until the join below succeeds.
    let id = thread.as_pthread_t();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // The call takes a CLOCK_REALTIME time; in slices, so that the system clock set back
        // delays the deadline by one slice at most.
        let slice = left.min(Duration::from_millis(100));
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            + slice;
        let at = libc::timespec {
            tv_sec: at.as_secs() as libc::time_t,
            tv_nsec: at.subsec_nanos().into(),
        };
        // SAFETY: `id` names a joinable thread (see above), joined at most once: on success the
        // handle is consumed below without detaching it. `at` is a valid time (nanoseconds below
        // 1e9), and the result is not asked for.
        let rc = unsafe { libc::pthread_timedjoin_np(id, std::ptr::null_mut(), &at) };
        match rc {
            0 => {
                // Joined: the handle must not detach it when dropped.
                let _ = thread.into_pthread_t();
                return Ok(());
            }
            // Early if the system clock was set forward: the deadline is the monotonic one.
            libc::ETIMEDOUT if Instant::now() < deadline => {}
            libc::ETIMEDOUT => return Err((thread, None)),
            libc::EDEADLK => {
                return Err((thread, Some("it is the thread unloading the module".into())))
            }
            e => {
                let e = std::io::Error::from_raw_os_error(e);
                return Err((thread, Some(format!("pthread_timedjoin_np: {e}"))));
            }
        }
    }
}

impl Drop for ModuleRuntime {
    fn drop(&mut self) {
        // A pinned module keeps its entry in the owners table (its callbacks may still run);
        // once its runtime goes (the host dropped), the entry must not point at freed memory.
        // Its callbacks then run uncounted, from code that stays mapped.
        if *self.direct.get_mut() {
            crate::owners::unregister(self);
        }
    }
}

/// Where a module posts.
pub(crate) enum Domain {
    Host(u32),
    Srcu(Arc<Srcu>),
}

/// A module callback, in one of the two forms of the ABI (the entry holds its callback and
/// argument, stored by `call_rcu_entry`).
#[derive(Debug)]
pub(crate) enum Target {
    Head(*mut abi::RcuHead, abi::RcuFn),
    Entry(*mut abi::RcuEntry, abi::ArgFn, *mut c_void),
}

impl Target {
    fn code_addr(&self) -> usize {
        match *self {
            Target::Head(_, f) => f as usize,
            Target::Entry(_, f, _) => f as usize,
        }
    }
}

/// The ABI's callback type as rcu-core's (the heads have one layout).
fn f_core(f: abi::RcuFn) -> rcu_core::RcuCallback {
    // SAFETY: both are `unsafe extern "C" fn(*mut Head)` with `#[repr(C)]` heads of the same
    // layout (module-abi's `RcuHead` mirrors rcu-core's; header_sync.rs checks the C side).
    unsafe { std::mem::transmute::<abi::RcuFn, rcu_core::RcuCallback>(f) }
}

/// Runs a `call_rcu_entry` callback posted as it is: the entry's head is first, its callback
/// and argument follow.
unsafe extern "C" fn run_entry(head: *mut rcu_core::RcuHead) {
    let e = head.cast::<abi::RcuEntry>();
    // SAFETY: posted only by `post_owned` with the head of an entry whose callback and
    // argument `call_rcu_entry` stored; invoked once, after its grace period.
    unsafe {
        if let Some(cb) = (*e).callback {
            cb((*e).arg);
        }
    }
}

/// The module code a dequeued callback will run: its function, or for an entry posted as it
/// is, the entry's callback (owners.rs attributes by it).
pub(crate) fn callback_code(head: *mut rcu_core::RcuHead, func: rcu_core::RcuCallback) -> usize {
    if func as usize == run_entry as *const () as usize {
        // SAFETY: `run_entry` is posted only with the head of a live entry (see above).
        unsafe {
            (*head.cast::<abi::RcuEntry>())
                .callback
                .map_or(0, |c| c as usize)
        }
    } else {
        func as usize
    }
}

#[cfg(test)]
#[derive(Debug)]
struct NoHost;

#[cfg(test)]
impl HostServices for NoHost {
    fn domains(&self) -> Vec<crate::domains::DomainRef> {
        Vec::new()
    }
    fn owner_of(&self, _: usize) -> Option<Arc<ModuleRuntime>> {
        None
    }
    fn publish_hook(&self, _: HookEntry) -> Result<(), std::ffi::c_int> {
        Err(abi::ESHUTDOWN)
    }
    fn unpublish_hook(&self, _: &ModuleRuntime, _: &str) -> Result<(), std::ffi::c_int> {
        Err(abi::ESHUTDOWN)
    }
    fn checked(&self) -> bool {
        false
    }
    fn late_callback(&self, _: &str) {}
}

/// The host's wrapper around a module callback: attribution and the checked-mode test.
#[repr(C)]
struct Posted {
    head: rcu_core::RcuHead,
    owner: Arc<ModuleRuntime>,
    target: Target,
}

unsafe extern "C" fn run_posted(head: *mut rcu_core::RcuHead) {
    // SAFETY: installed only by `ModuleRuntime::post` for a `Posted` whose first field is the
    // head; the domain invokes it once.
    let p = unsafe { Box::from_raw(head.cast::<Posted>()) };
    let owner = &p.owner;
    if owner.checked && !owner.mapped.load(Ordering::Acquire) {
        owner.counters.late.fetch_add(1, Ordering::AcqRel);
        tracing::error!(
            target: "rcumod",
            module = %owner.name,
            "late callback: its module is no longer mapped (unloaded without a barrier?); \
             skipped instead of jumping into unmapped memory"
        );
        if let Some(h) = owner.host.upgrade() {
            h.late_callback(&owner.name);
        }
        return;
    }
    // SAFETY: the module posted this callback; its code is mapped (the unload protocol waits
    // for pending == 0 before closing the object), and the head/entry is the module's to hand
    // back.
    unsafe {
        match p.target {
            Target::Head(h, f) => f(h),
            Target::Entry(_, f, arg) => f(arg),
        }
    }
    owner.counters.invoked.add(1);
}
