//! The Rust SDK: declare a module, and use the host's services safely.
//!
//! ```ignore
//! use rcumod_abi::sdk::{Module, Error};
//!
//! fn init(m: &Module) -> Result<(), Error> {
//!     m.info("hello from a module");
//!     m.call(rcumod_abi::DOMAIN_GLOBAL, || { /* runs after a grace period */ })
//!         .map_err(|r| r.error)
//! }
//! fn exit(_m: &Module) {}
//!
//! rcumod_abi::declare_module! {
//!     name: "hello", version: "1.0", description: "says hello", author: "you",
//!     license: "MIT", depends: "", params: [("greeting", "str", "what to say")],
//!     init: init, exit: exit,
//! }
//! ```
//!
//! Every `extern "C"` entry the SDK generates (init, exit, callback, timer and thread
//! trampolines) catches panics: since Rust 1.81 a panic unwinding out of `extern "C"` aborts
//! the whole host process. A panic becomes an error code (init), a logged error (exit,
//! callbacks, timers, threads), and the host carries on.
//!
//! Closures handed to timers and threads are owned by the SDK inside the module and freed after
//! the module's `exit` returns (the host has stopped timers and threads before calling `exit`).

use crate::{HookFn, HostApi, ModuleCtx, RcuFn, RcuHead, ABI_MAJOR, EINVAL, ENOENT, ERANGE, OK};
use std::any::Any;
use std::ffi::{c_int, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Returned by `init` when the module's init panicked (the panic was caught).
pub const EPANIC: c_int = -1001;

/// A host error code (negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error(pub c_int);

impl Error {
    fn check(code: c_int) -> Result<(), Error> {
        if code >= 0 {
            Ok(())
        } else {
            Err(Error(code))
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.0 {
            crate::EINVAL => "invalid argument",
            crate::ENOENT => "no such object",
            crate::ESHUTDOWN => "module is going away; posting is closed",
            crate::EFAULT => "callback is not code of this module",
            crate::EDEADLK => "would wait for itself",
            crate::ENOSPC => "limit reached",
            crate::ERANGE => "buffer too small",
            EPANIC => "panicked",
            _ => "error",
        };
        write!(f, "{what} ({})", self.0)
    }
}

impl std::error::Error for Error {}

/// A callback the host refused (the module is going away): given back, never dropped silently.
#[derive(Debug)]
pub struct Refused<F> {
    /// The callback that was not queued.
    pub callback: F,
    /// Why.
    pub error: Error,
}

/// The module's handle on the host. Copyable; valid from `init` until the host has unloaded
/// the module (the host waits for every callback before it does).
#[derive(Clone, Copy, Debug)]
pub struct Module {
    api: &'static HostApi,
    ctx: *mut ModuleCtx,
}

// SAFETY: every host entry is thread-safe by contract (rcumod.h), and `ctx` is an opaque handle
// the host keeps valid for the module's whole lifetime.
unsafe impl Send for Module {}
// SAFETY: as above.
unsafe impl Sync for Module {}

static MODULE: OnceLock<Module> = OnceLock::new();
/// Closures owned on behalf of timers and threads; freed after `exit`.
static OWNED: Mutex<Vec<Box<dyn Any + Send>>> = Mutex::new(Vec::new());

fn cstring(s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error(EINVAL))
}

impl Module {
    /// The module's handle, once `init` has been entered.
    pub fn get() -> Option<Module> {
        MODULE.get().copied()
    }

    /// The raw table (for calls the wrappers do not cover).
    pub fn api(&self) -> &'static HostApi {
        self.api
    }

    /// The raw context handle.
    pub fn ctx(&self) -> *mut ModuleCtx {
        self.ctx
    }

    /// Log into the host's log.
    pub fn log(&self, level: u32, msg: &str) {
        // SAFETY: `msg` is valid for `len` bytes for the duration of the call.
        unsafe { (self.api.log)(self.ctx, level, msg.as_ptr(), msg.len()) }
    }

    /// Log at error level.
    pub fn error(&self, msg: &str) {
        self.log(crate::level::ERROR, msg)
    }

    /// Log at warning level.
    pub fn warn(&self, msg: &str) {
        self.log(crate::level::WARN, msg)
    }

    /// Log at info level.
    pub fn info(&self, msg: &str) {
        self.log(crate::level::INFO, msg)
    }

    /// A parameter's value as given at load time (or its declared default: none).
    pub fn param(&self, name: &str) -> Option<String> {
        let name = cstring(name).ok()?;
        let mut buf = vec![0u8; 128];
        loop {
            // SAFETY: `buf` is writable for its length; `name` is NUL-terminated.
            let r = unsafe {
                (self.api.param_get)(self.ctx, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            };
            if r == ENOENT || (r < 0 && r != ERANGE) {
                return None;
            }
            if r == ERANGE {
                let n = buf.len() * 2;
                if n > 1 << 20 {
                    return None;
                }
                buf.resize(n, 0);
                continue;
            }
            buf.truncate(r as usize);
            return String::from_utf8(buf).ok();
        }
    }

    /// A parameter parsed as `T`.
    pub fn param_as<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.param(name)?.parse().ok()
    }

    /// Enter a read-side section of a host domain.
    ///
    /// On a memb domain of a host with ABI 1.1 this is inline: the calling thread's reader
    /// (asked of the host once per thread and domain, kept in a thread-local without a
    /// destructor) is entered as rcu-core's own guards do, with no call into the host
    /// (`rcu-core/src/foreign.rs` gives the protocol). Elsewhere it calls the host.
    #[inline]
    pub fn read_lock(&self, domain: u32) -> Result<ReadSection<'_>, Error> {
        if let Some(r) = fast::reader(self, domain) {
            fast::lock(&r)?;
            return Ok(ReadSection {
                m: self,
                domain,
                fast: Some(r),
            });
        }
        // SAFETY: plain call into the host.
        Error::check(unsafe { (self.api.read_lock)(self.ctx, domain) })?;
        Ok(ReadSection {
            m: self,
            domain,
            fast: None,
        })
    }

    /// The calling thread's reader of host domain `domain`, for many sections in a row: its
    /// [`ThreadReader::read_lock`] enters inline without the thread-local lookup that each
    /// [`Module::read_lock`] makes. `None` where the host offers none (a qsbr domain, the
    /// process domain, a host older than ABI 1.1): use [`Module::read_lock`] there.
    pub fn reader(&self, domain: u32) -> Option<ThreadReader<'_>> {
        Some(ThreadReader {
            m: self,
            r: fast::reader(self, domain)?,
        })
    }

    /// Wait for a grace period of a host domain.
    pub fn synchronize(&self, domain: u32) -> Result<(), Error> {
        // SAFETY: plain call into the host.
        Error::check(unsafe { (self.api.synchronize)(self.ctx, domain) })
    }

    /// `rcu_barrier` on a host domain: every callback posted to it before the call has run.
    /// `EDEADLK` from inside a callback or a read section of that domain.
    pub fn barrier(&self, domain: u32) -> Result<(), Error> {
        // SAFETY: plain call into the host.
        Error::check(unsafe { (self.api.barrier)(self.ctx, domain) })
    }

    /// `call_rcu` with a closure: run `f` after a grace period of `domain`.
    pub fn call<F: FnOnce() + Send + 'static>(&self, domain: u32, f: F) -> Result<(), Refused<F>> {
        // SAFETY: `post_boxed` hands `call_rcu` a fresh boxed head with its own trampoline.
        post_boxed(f, |head, tramp| unsafe {
            (self.api.call_rcu)(self.ctx, domain, head, tramp)
        })
    }

    /// `call_rcu` with an embedded head.
    ///
    /// # Safety
    ///
    /// `head` must stay valid and unmoved until `func` runs, and must not be posted twice.
    pub unsafe fn call_rcu(
        &self,
        domain: u32,
        head: *mut RcuHead,
        func: RcuFn,
    ) -> Result<(), Error> {
        // SAFETY: forwarded from the caller.
        Error::check(unsafe { (self.api.call_rcu)(self.ctx, domain, head, func) })
    }

    /// Create an SRCU domain owned by this module (the host barriers and destroys it at unload).
    pub fn srcu_create(&self, name: &str) -> Result<SrcuDomain, Error> {
        let name = cstring(name)?;
        let mut id = 0;
        // SAFETY: `name` is NUL-terminated; `id` is writable.
        Error::check(unsafe { (self.api.srcu_create)(self.ctx, name.as_ptr(), &mut id) })?;
        Ok(SrcuDomain { m: *self, id })
    }

    /// Start a host-managed periodic timer running `f`. The host cancels it before `exit`.
    pub fn timer_start<F: FnMut() + Send + 'static>(
        &self,
        period: Duration,
        f: F,
    ) -> Result<u32, Error> {
        let arg = own(Box::new(Mutex::new(f)));
        let mut id = 0;
        // SAFETY: `arg` points to an owned closure that lives until after `exit`.
        Error::check(unsafe {
            (self.api.timer_start)(
                self.ctx,
                period.as_nanos().min(u64::MAX as u128) as u64,
                timer_trampoline::<F>,
                arg,
                &mut id,
            )
        })?;
        Ok(id)
    }

    /// Cancel a timer, waiting for a running call.
    pub fn timer_cancel(&self, id: u32) -> Result<(), Error> {
        // SAFETY: plain call into the host.
        Error::check(unsafe { (self.api.timer_cancel)(self.ctx, id) })
    }

    /// Start a host-managed thread running `f`; it should return once
    /// [`ThreadCtx::should_stop`]. The host stops and joins it before `exit`.
    pub fn spawn<F: FnOnce(&ThreadCtx) + Send + 'static>(
        &self,
        name: &str,
        f: F,
    ) -> Result<u32, Error> {
        let name = cstring(name)?;
        let arg = own(Box::new(Mutex::new(Some(f))));
        let mut id = 0;
        // SAFETY: `arg` points to an owned closure that lives until after `exit`.
        Error::check(unsafe {
            (self.api.thread_spawn)(
                self.ctx,
                name.as_ptr(),
                thread_trampoline::<F>,
                arg,
                &mut id,
            )
        })?;
        Ok(id)
    }

    /// Publish (or replace) a hook the host calls under RCU.
    ///
    /// # Safety
    ///
    /// `func(data, arg)` must be safe to call from any host thread, concurrently, until the hook
    /// is unpublished and a grace period has passed; `data` must stay valid as long.
    pub unsafe fn hook_publish(
        &self,
        name: &str,
        func: HookFn,
        data: *mut c_void,
    ) -> Result<(), Error> {
        let name = cstring(name)?;
        // SAFETY: `name` is NUL-terminated; the caller vouches for `func` and `data`.
        Error::check(unsafe { (self.api.hook_publish)(self.ctx, name.as_ptr(), func, data) })
    }

    /// Have the host call `func(data, signo)` from its handler for `signo`, inside a read
    /// section of [`DOMAIN_PROCESS`](crate::DOMAIN_PROCESS).
    ///
    /// # Safety
    ///
    /// `func` must be async-signal-safe and callable concurrently on any thread, and `data`
    /// valid, until the hook is withdrawn and a grace period of that domain has passed.
    pub unsafe fn signal_hook(
        &self,
        signo: c_int,
        func: HookFn,
        data: *mut c_void,
    ) -> Result<(), Error> {
        // SAFETY: plain call; the caller vouches for `func` and `data`.
        Error::check(unsafe { (self.api.signal_hook)(self.ctx, signo, func, data) })
    }

    /// Withdraw the signal hook for `signo`.
    pub fn signal_unhook(&self, signo: c_int) -> Result<(), Error> {
        // SAFETY: plain call into the host.
        Error::check(unsafe { (self.api.signal_unhook)(self.ctx, signo) })
    }

    /// Withdraw a hook.
    pub fn hook_unpublish(&self, name: &str) -> Result<(), Error> {
        let name = cstring(name)?;
        // SAFETY: `name` is NUL-terminated.
        Error::check(unsafe { (self.api.hook_unpublish)(self.ctx, name.as_ptr()) })
    }
}

/// A read-side section of a host domain; ends when dropped. Not `Send`: a section belongs
/// to the thread that entered it.
#[derive(Debug)]
pub struct ReadSection<'a> {
    m: &'a Module,
    domain: u32,
    /// The thread's inline reader, if the section was entered inline.
    fast: Option<crate::Reader>,
}

impl Drop for ReadSection<'_> {
    #[inline]
    fn drop(&mut self) {
        match &self.fast {
            Some(r) => fast::unlock(self.m, r),
            // SAFETY: plain call into the host, balancing our read_lock.
            None => unsafe {
                (self.m.api.read_unlock)(self.m.ctx, self.domain);
            },
        }
    }
}

/// A thread's reader of a memb host domain ([`Module::reader`]); not `Send`: it is the
/// calling thread's.
#[derive(Debug, Clone, Copy)]
pub struct ThreadReader<'a> {
    m: &'a Module,
    r: crate::Reader,
}

impl<'a> ThreadReader<'a> {
    /// Enter a section inline; `Err(EINVAL)` only on nesting overflow.
    #[inline]
    pub fn read_lock(&self) -> Result<ReadSection<'a>, Error> {
        fast::lock(&self.r)?;
        Ok(ReadSection {
            m: self.m,
            domain: self.r.domain,
            fast: Some(self.r),
        })
    }
}

/// The inline read side (ABI 1.1), the Rust twin of `rcumod.h`'s `rcumod_reader_lock`.
mod fast {
    use super::{Error, Module};
    use crate::{HostApi, Reader, EINVAL};
    use std::cell::Cell;
    use std::sync::atomic::{compiler_fence, fence, AtomicU32, AtomicU64, Ordering};

    const DOMAINS: usize = 4;
    /// 0: not asked, 1: ready, 2: not offered.
    const READY: u8 = 1;
    const NONE: u8 = 2;

    const NO_READER: Reader = Reader {
        word: std::ptr::null_mut(),
        gp_ctr: std::ptr::null(),
        sleepers: std::ptr::null(),
        nest_mask: 0,
        full_fence: 0,
        domain: 0,
    };

    thread_local! {
        // `const` and without `Drop`: no thread-local destructor is registered, which would
        // keep the module mapped (glibc's rule for `__cxa_thread_atexit_impl`).
        static READERS: [Cell<(u8, Reader)>; DOMAINS] =
            const { [const { Cell::new((0, NO_READER)) }; DOMAINS] };
    }

    #[inline]
    pub(super) fn reader(m: &Module, domain: u32) -> Option<Reader> {
        let d = domain as usize;
        if d >= DOMAINS {
            return None;
        }
        match READERS.try_with(|rs| rs[d].get()).ok()? {
            (READY, r) => Some(r),
            (NONE, _) => None,
            _ => ask(m, domain),
        }
    }

    #[cold]
    fn ask(m: &Module, domain: u32) -> Option<Reader> {
        let has = m.api.abi_minor >= 1
            && m.api.size as usize
                >= std::mem::offset_of!(HostApi, read_unlock_slow) + std::mem::size_of::<usize>();
        let mut r = NO_READER;
        // SAFETY: the entry exists (checked above); `r` is writable.
        let ok = has && unsafe { (m.api.reader_get)(m.ctx, domain, &mut r) } == crate::OK;
        let entry = if ok { (READY, r) } else { (NONE, NO_READER) };
        let _ = READERS.try_with(|rs| rs[domain as usize].set(entry));
        ok.then_some(r)
    }

    #[inline]
    fn fences(r: &Reader) {
        if r.full_fence != 0 {
            fence(Ordering::SeqCst);
        } else {
            compiler_fence(Ordering::SeqCst);
        }
    }

    #[inline]
    pub(super) fn lock(r: &Reader) -> Result<(), Error> {
        // SAFETY: the host handed out this thread's reader word and the domain's counter,
        // alive while the thread runs; only this thread writes the word.
        let (word, gp) = unsafe {
            (
                AtomicU64::from_ptr(r.word),
                &*(r.gp_ctr as *const AtomicU64),
            )
        };
        let w = word.load(Ordering::Relaxed);
        if w & r.nest_mask == 0 {
            // Acquire R, then fence B (rcu-core docs/design/memory-ordering.md).
            word.store(gp.load(Ordering::Acquire), Ordering::Relaxed);
            fences(r);
        } else if w & r.nest_mask == r.nest_mask {
            return Err(Error(EINVAL));
        } else {
            word.store(w + 1, Ordering::Relaxed);
        }
        Ok(())
    }

    #[inline]
    pub(super) fn unlock(m: &Module, r: &Reader) {
        // SAFETY: as in `lock`.
        let word = unsafe { AtomicU64::from_ptr(r.word) };
        let w = word.load(Ordering::Relaxed);
        match w & r.nest_mask {
            1 => {
                // Release C, then fence D; a waiting writer is woken by the host.
                word.store(0, Ordering::Release);
                fences(r);
                // SAFETY: the domain's flag, alive with the domain.
                let sleepers = unsafe { &*(r.sleepers as *const AtomicU32) };
                if sleepers.load(Ordering::Relaxed) != 0 {
                    // SAFETY: plain call into the host.
                    unsafe { (m.api.read_unlock_slow)(m.ctx, r.domain) };
                }
            }
            0 => {} // a section entered inline is never left twice: the guard owns it
            _ => word.store(w - 1, Ordering::Relaxed),
        }
    }
}

/// An RCU-protected pointer inside a module (`rcu_assign_pointer` / `rcu_dereference`).
#[derive(Debug)]
pub struct RcuPtr<T> {
    p: AtomicPtr<T>,
}

impl<T> RcuPtr<T> {
    /// Null.
    pub const fn null() -> Self {
        RcuPtr {
            p: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// `rcu_dereference`: the current value, valid for the section.
    pub fn load<'s>(&self, _section: &'s ReadSection<'_>) -> Option<&'s T> {
        // SAFETY: values are published from `Box::into_raw` and freed only after a grace
        // period following their replacement (`publish` hands the old one back for that).
        unsafe { self.p.load(Ordering::Acquire).as_ref() }
    }

    /// The current pointer (an Acquire load), for code whose read section the SDK cannot see —
    /// a signal hook, which the host calls inside a section of the process domain. Dereferencing
    /// it is the caller's `unsafe` promise that such a section is held.
    pub fn load_raw(&self) -> *mut T {
        self.p.load(Ordering::Acquire)
    }

    /// `srcu_dereference`: the current value, valid for an SRCU section of the domain whose
    /// grace periods retire this pointer's values.
    pub fn load_srcu<'s>(&self, _section: &'s SrcuSection<'_>) -> Option<&'s T> {
        // SAFETY: as in `load`, with the SRCU domain's grace periods.
        unsafe { self.p.load(Ordering::Acquire).as_ref() }
    }

    /// `rcu_assign_pointer`: publish `v`; the old value is returned as a raw pointer that must be
    /// freed only after a grace period (with `Module::call`, or after `synchronize`).
    pub fn publish(&self, v: Option<Box<T>>) -> *mut T {
        let new = v.map_or(std::ptr::null_mut(), Box::into_raw);
        self.p.swap(new, Ordering::AcqRel)
    }
}

/// An SRCU domain owned by the module.
#[derive(Clone, Copy, Debug)]
pub struct SrcuDomain {
    m: Module,
    id: u32,
}

/// An SRCU read-side section (may block); ends when dropped.
#[derive(Debug)]
pub struct SrcuSection<'a> {
    d: &'a SrcuDomain,
    token: c_int,
}

impl SrcuDomain {
    /// The domain id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Enter a read section.
    pub fn read_lock(&self) -> Result<SrcuSection<'_>, Error> {
        // SAFETY: plain call into the host.
        let token = unsafe { (self.m.api.srcu_read_lock)(self.m.ctx, self.id) };
        Error::check(token)?;
        Ok(SrcuSection { d: self, token })
    }

    /// Wait for a grace period of this domain.
    pub fn synchronize(&self) -> Result<(), Error> {
        // SAFETY: plain call into the host.
        Error::check(unsafe { (self.m.api.srcu_synchronize)(self.m.ctx, self.id) })
    }

    /// `call_srcu` with a closure.
    pub fn call<F: FnOnce() + Send + 'static>(&self, f: F) -> Result<(), Refused<F>> {
        // SAFETY: as in `Module::call`.
        post_boxed(f, |head, tramp| unsafe {
            (self.m.api.call_srcu)(self.m.ctx, self.id, head, tramp)
        })
    }
}

impl Drop for SrcuSection<'_> {
    fn drop(&mut self) {
        // SAFETY: balances our srcu_read_lock with its token.
        unsafe { (self.d.m.api.srcu_read_unlock)(self.d.m.ctx, self.d.id, self.token) };
    }
}

/// What a module thread can ask the host.
#[derive(Debug)]
pub struct ThreadCtx {
    m: Module,
}

impl ThreadCtx {
    /// Has the host asked the module's threads to stop?
    pub fn should_stop(&self) -> bool {
        // SAFETY: plain call into the host.
        unsafe { (self.m.api.thread_should_stop)(self.m.ctx) != 0 }
    }

    /// Sleep up to `d`; true if woken because the host asks the thread to stop.
    pub fn sleep(&self, d: Duration) -> bool {
        // SAFETY: plain call into the host.
        unsafe {
            (self.m.api.thread_sleep)(self.m.ctx, d.as_nanos().min(u64::MAX as u128) as u64) != 0
        }
    }

    /// The module handle.
    pub fn module(&self) -> Module {
        self.m
    }
}

#[repr(C)]
struct Boxed<F> {
    head: RcuHead,
    f: F,
}

/// Box `f` with a head and hand both to `post` (a host `call_*` entry). On refusal the host
/// never took the head, so the closure is given back to the caller, never dropped silently.
fn post_boxed<F: FnOnce() + Send + 'static>(
    f: F,
    post: impl FnOnce(*mut RcuHead, RcuFn) -> c_int,
) -> Result<(), Refused<F>> {
    let head = Box::into_raw(Box::new(Boxed {
        head: RcuHead::new(),
        f,
    }));
    let r = post(head.cast(), trampoline::<F>);
    if r == OK {
        return Ok(());
    }
    // SAFETY: refused, so the host never took ownership; this is our Box.
    let b = unsafe { Box::from_raw(head) };
    Err(Refused {
        callback: b.f,
        error: Error(r),
    })
}

fn report_panic(what: &str, payload: &(dyn Any + Send)) {
    let msg = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<non-string panic payload>");
    if let Some(m) = Module::get() {
        m.error(&format!("{what} panicked: {msg}"));
    }
}

unsafe extern "C" fn trampoline<F: FnOnce() + Send + 'static>(head: *mut RcuHead) {
    // SAFETY: installed only by `call`/`SrcuDomain::call` for a `Boxed<F>` whose head is its
    // first field; the host invokes each posted head once.
    let b = unsafe { Box::from_raw(head.cast::<Boxed<F>>()) };
    let f = b.f;
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        report_panic("an RCU callback", &*p);
    }
}

fn own<T: Any + Send>(b: Box<T>) -> *mut c_void {
    let p = &*b as *const T as *mut c_void;
    OWNED.lock().unwrap_or_else(|e| e.into_inner()).push(b);
    p
}

unsafe extern "C" fn timer_trampoline<F: FnMut() + Send + 'static>(arg: *mut c_void) {
    // SAFETY: `arg` is the owned `Mutex<F>` registered by `timer_start`, alive until after exit.
    let f = unsafe { &*(arg as *const Mutex<F>) };
    let r = catch_unwind(AssertUnwindSafe(|| {
        (f.lock().unwrap_or_else(|e| e.into_inner()))()
    }));
    if let Err(p) = r {
        report_panic("a timer", &*p);
    }
}

unsafe extern "C" fn thread_trampoline<F: FnOnce(&ThreadCtx) + Send + 'static>(arg: *mut c_void) {
    // SAFETY: `arg` is the owned `Mutex<Option<F>>` registered by `spawn`, alive until after exit.
    let slot = unsafe { &*(arg as *const Mutex<Option<F>>) };
    let f = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (Some(f), Some(m)) = (f, Module::get()) else {
        return;
    };
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&ThreadCtx { m }))) {
        report_panic("a module thread", &*p);
    }
}

/// Replace the module's panic hook (each cdylib has its own copy of std, hence its own hook)
/// with one that logs through the host. std's default hook prints to stderr and looks up the
/// thread's name, which registers thread-local state with a destructor on the panicking thread:
/// that destructor is module code, and glibc then keeps the module mapped until that thread
/// exits (loader-anchors.md, pitfall 2) — a panic on a host thread would pin the module.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("<non-string panic payload>");
        if let Some(m) = Module::get() {
            match info.location() {
                Some(l) => m.error(&format!("panicked at {}:{}: {msg}", l.file(), l.line())),
                None => m.error(&format!("panicked: {msg}")),
            }
        }
    }));
}

/// Run the module's init (used by [`declare_module!`]).
///
/// # Safety
///
/// `api` and `ctx` are what the host passed to the module's `init`.
#[doc(hidden)]
pub unsafe fn run_init(
    api: *const HostApi,
    ctx: *mut ModuleCtx,
    init: fn(&Module) -> Result<(), Error>,
) -> c_int {
    // SAFETY: the host passes a table valid for the module's lifetime.
    let Some(api) = (unsafe { api.as_ref() }) else {
        return EINVAL;
    };
    if api.abi_major != ABI_MAJOR || (api.size as usize) < std::mem::size_of::<HostApi>() {
        return EINVAL;
    }
    let m = *MODULE.get_or_init(|| Module { api, ctx });
    install_panic_hook();
    match catch_unwind(AssertUnwindSafe(|| init(&m))) {
        Ok(Ok(())) => OK,
        Ok(Err(e)) => e.0.min(-1),
        Err(p) => {
            report_panic("init", &*p);
            EPANIC
        }
    }
}

/// Run the module's exit, then free what the SDK owned (used by [`declare_module!`]).
///
/// # Safety
///
/// As [`run_init`].
#[doc(hidden)]
pub unsafe fn run_exit(_api: *const HostApi, _ctx: *mut ModuleCtx, exit: fn(&Module)) {
    if let Some(m) = Module::get() {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| exit(&m))) {
            report_panic("exit", &*p);
        }
    }
    OWNED.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Copy a string into a byte array of its length, at compile time (for the `.modinfo` static).
#[doc(hidden)]
pub const fn modinfo_bytes<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = b[i];
        i += 1;
    }
    out
}

/// The ABI version as a string literal, for `concat!` in [`declare_module!`]. A test checks it
/// against [`ABI_MAJOR`] / [`ABI_MINOR`](crate::ABI_MINOR).
#[doc(hidden)]
#[macro_export]
macro_rules! __rcumod_abi_str {
    () => {
        "1.1"
    };
}

/// Declare a module: emits the `.modinfo` records and the exported descriptor whose `init` and
/// `exit` call yours inside `catch_unwind`. See the [module documentation](crate::sdk).
#[macro_export]
macro_rules! declare_module {
    (
        name: $name:literal,
        version: $version:literal,
        description: $desc:literal,
        author: $author:literal,
        license: $license:literal,
        depends: $depends:literal,
        params: [ $( ($pname:literal, $ptype:literal, $pdesc:literal) ),* $(,)? ],
        init: $init:path,
        exit: $exit:path $(,)?
    ) => {
        const __RCUMOD_MODINFO_STR: &str = concat!(
            "name=", $name, "\0",
            "version=", $version, "\0",
            "description=", $desc, "\0",
            "author=", $author, "\0",
            "license=", $license, "\0",
            "depends=", $depends, "\0",
            "abi=", $crate::__rcumod_abi_str!(), "\0",
            $( "parm=", $pname, ":", $ptype, ":", $pdesc, "\0", )*
        );

        #[used]
        #[link_section = ".modinfo"]
        static __RCUMOD_MODINFO: [u8; __RCUMOD_MODINFO_STR.len()] =
            $crate::sdk::modinfo_bytes(__RCUMOD_MODINFO_STR);

        #[allow(non_upper_case_globals)]
        #[no_mangle]
        pub static rcumod_module: $crate::ModuleDescriptor = $crate::ModuleDescriptor {
            magic: $crate::DESCRIPTOR_MAGIC,
            abi_major: $crate::ABI_MAJOR,
            abi_minor: $crate::ABI_MINOR,
            size: ::std::mem::size_of::<$crate::ModuleDescriptor>() as u32,
            flags: 0,
            name: concat!($name, "\0").as_ptr().cast(),
            init: Some(__rcumod_init),
            exit: Some(__rcumod_exit),
        };

        unsafe extern "C" fn __rcumod_init(
            api: *const $crate::HostApi,
            ctx: *mut $crate::ModuleCtx,
        ) -> ::std::ffi::c_int {
            // SAFETY: called by the host with its table and our context.
            unsafe { $crate::sdk::run_init(api, ctx, $init) }
        }

        unsafe extern "C" fn __rcumod_exit(api: *const $crate::HostApi, ctx: *mut $crate::ModuleCtx) {
            // SAFETY: called by the host with its table and our context.
            unsafe { $crate::sdk::run_exit(api, ctx, $exit) }
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn abi_string_matches_constants() {
        assert_eq!(
            crate::__rcumod_abi_str!(),
            format!("{}.{}", crate::ABI_MAJOR, crate::ABI_MINOR)
        );
    }
}
