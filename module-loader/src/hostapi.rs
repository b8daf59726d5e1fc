//! The host API table handed to every module's `init` (`rcumod_abi::HostApi`).
//!
//! Each entry turns the module's context pointer back into its [`ModuleRuntime`], validates its
//! arguments, and maps failures to the ABI's negative error codes. No entry lets a panic unwind
//! into module code (that would abort the process since Rust 1.81): each runs under
//! `catch_unwind`. Misuse that would hang — `synchronize` inside a read section of the same
//! domain — is refused with `EDEADLK` before it can.

use crate::runtime::{Domain, HookEntry, ModuleRuntime, Target};
use rcumod_abi::{self as abi, HostApi, ModuleCtx};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The table every module receives.
pub(crate) static HOST_API: HostApi = HostApi {
    abi_major: abi::ABI_MAJOR,
    abi_minor: abi::ABI_MINOR,
    size: std::mem::size_of::<HostApi>() as u32,
    flags: 0,
    log,
    read_lock,
    read_unlock,
    dereference,
    assign_pointer,
    synchronize,
    call_rcu,
    call_rcu_entry,
    srcu_create,
    srcu_read_lock,
    srcu_read_unlock,
    srcu_synchronize,
    call_srcu,
    timer_start,
    timer_cancel,
    thread_spawn,
    thread_should_stop,
    thread_sleep,
    hook_publish,
    hook_unpublish,
    param_get,
    signal_hook,
    signal_unhook,
    barrier,
    reader_get,
    read_unlock_slow,
};

/// Most SRCU domains one module may create.
const MAX_SRCU_PER_MODULE: usize = 16;

/// Run an entry: resolve the context by borrowing it (no count is taken: the host keeps the
/// runtime for the module's whole life), catch panics, map them to `EINVAL`.
#[inline]
fn entry(ctx: *mut ModuleCtx, f: impl FnOnce(&ModuleRuntime) -> c_int) -> c_int {
    // SAFETY: the ABI passes the context the host handed to `init`, or the module's mistake,
    // which `from_ctx` tells apart by its first word.
    let Some(rt) = (unsafe { ModuleRuntime::from_ctx(ctx) }) else {
        return abi::EINVAL;
    };
    catch_unwind(AssertUnwindSafe(|| f(rt))).unwrap_or_else(|_| {
        tracing::error!(target: "rcumod", module = %rt.name(), "host API call panicked; refused");
        abi::EINVAL
    })
}

fn name_arg<'a>(name: *const c_char) -> Option<&'a str> {
    if name.is_null() {
        return None;
    }
    // SAFETY: the ABI requires a NUL-terminated string, valid during the call.
    unsafe { CStr::from_ptr(name) }
        .to_str()
        .ok()
        .filter(|s| s.len() <= 64)
}

#[inline]
fn host_domain(rt: &ModuleRuntime, d: u32) -> Option<&rcu_core::Rcu> {
    rt.domains.get(d as usize).map(|d| &**d)
}

fn srcu(rt: &ModuleRuntime, id: u32) -> Option<Arc<rcu_core::Srcu>> {
    rt.srcu
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(id as usize)
        .cloned()
}

/// Is `f` code of this module (or another live one)?
fn is_module_code(rt: &ModuleRuntime, f: usize) -> bool {
    rt.owns_code(f) || rt.host.upgrade().is_some_and(|h| h.owner_of(f).is_some())
}

unsafe extern "C" fn log(ctx: *mut ModuleCtx, level: u32, msg: *const u8, len: usize) {
    entry(ctx, |rt| {
        if msg.is_null() {
            return abi::EINVAL;
        }
        // SAFETY: the ABI requires `msg` valid for `len` bytes during the call.
        let bytes = unsafe { std::slice::from_raw_parts(msg, len.min(64 * 1024)) };
        let text = String::from_utf8_lossy(bytes);
        let m = rt.name();
        match level {
            abi::level::ERROR => tracing::error!(target: "rcumod::module", module = %m, "{text}"),
            abi::level::WARN => tracing::warn!(target: "rcumod::module", module = %m, "{text}"),
            abi::level::INFO => tracing::info!(target: "rcumod::module", module = %m, "{text}"),
            _ => tracing::debug!(target: "rcumod::module", module = %m, "{text}"),
        }
        abi::OK
    });
}

// A module's read sections on a qsbr domain are bracketed by coming online and going offline:
// module code may take them from any thread (a hook caller, a timer), and a thread left online
// without ever announcing a quiescent state would hold every grace period of the domain up.
// Outside its sections a module holds no references (the ABI's contract), so offline is right —
// but only for threads this bracket brought online: a host thread that is online in the domain
// on its own account stays as it was.

thread_local! {
    /// Host domains (bit = index) this thread was brought online in by a module's read_lock.
    static ONLINED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

unsafe extern "C" fn read_lock(ctx: *mut ModuleCtx, domain: u32) -> c_int {
    entry(ctx, |rt| match host_domain(rt, domain) {
        Some(rcu) => {
            if rcu.flavor() == rcu_core::Flavor::Qsbr
                && !rcu.in_read_section()
                && !rcu.is_registered_online()
            {
                rcu.thread_online();
                ONLINED.with(|o| o.set(o.get() | 1 << (domain & 63)));
            }
            rcu.read_lock().into_raw();
            abi::OK
        }
        None => abi::EINVAL,
    })
}

unsafe extern "C" fn read_unlock(ctx: *mut ModuleCtx, domain: u32) -> c_int {
    entry(ctx, |rt| match host_domain(rt, domain) {
        Some(rcu) if rcu.in_read_section() => {
            // SAFETY: this thread is inside a section of `rcu`, entered through `read_lock`
            // above (the module's contract pairs the two).
            unsafe { rcu.read_unlock_raw() };
            let bit = 1 << (domain & 63);
            if !rcu.in_read_section() && ONLINED.with(|o| o.get()) & bit != 0 {
                rcu.thread_offline();
                ONLINED.with(|o| o.set(o.get() & !bit));
            }
            abi::OK
        }
        _ => abi::EINVAL,
    })
}

unsafe extern "C" fn dereference(slot: *const *mut c_void) -> *mut c_void {
    if slot.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: the ABI requires an aligned pointer slot shared only through these entries;
    // AtomicPtr has the layout of a pointer.
    unsafe { &*(slot as *const AtomicPtr<c_void>) }.load(Ordering::Acquire)
}

unsafe extern "C" fn assign_pointer(slot: *mut *mut c_void, value: *mut c_void) {
    if slot.is_null() {
        return;
    }
    // SAFETY: as in `dereference`.
    unsafe { &*(slot as *const AtomicPtr<c_void>) }.store(value, Ordering::Release);
}

unsafe extern "C" fn synchronize(ctx: *mut ModuleCtx, domain: u32) -> c_int {
    entry(ctx, |rt| match host_domain(rt, domain) {
        Some(rcu) if rcu.in_read_section() => abi::EDEADLK,
        Some(rcu) => {
            rcu.synchronize();
            abi::OK
        }
        None => abi::EINVAL,
    })
}

unsafe extern "C" fn call_rcu(
    ctx: *mut ModuleCtx,
    domain: u32,
    head: *mut abi::RcuHead,
    func: abi::RcuFn,
) -> c_int {
    entry(ctx, |rt| {
        if head.is_null() {
            return abi::EINVAL;
        }
        rt.post(Target::Head(head, func), Domain::Host(domain))
    })
}

unsafe extern "C" fn call_rcu_entry(
    ctx: *mut ModuleCtx,
    domain: u32,
    e: *mut abi::RcuEntry,
    callback: abi::ArgFn,
    arg: *mut c_void,
) -> c_int {
    entry(ctx, |rt| {
        if e.is_null() {
            return abi::EINVAL;
        }
        // SAFETY: the entry is the module's, handed to the host until the callback runs; we
        // record what it asked for in it, as `ke_rcu_call` does.
        unsafe {
            (*e).callback = Some(callback);
            (*e).arg = arg;
        }
        rt.post(Target::Entry(e, callback, arg), Domain::Host(domain))
    })
}

unsafe extern "C" fn srcu_create(ctx: *mut ModuleCtx, name: *const c_char, id: *mut u32) -> c_int {
    entry(ctx, |rt| {
        let (Some(name), false) = (name_arg(name), id.is_null()) else {
            return abi::EINVAL;
        };
        let mut v = rt.srcu.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() >= MAX_SRCU_PER_MODULE {
            return abi::ENOSPC;
        }
        match rcu_core::Srcu::try_new(&format!("{}/{name}", rt.name())) {
            Ok(s) => {
                // SAFETY: owners::invoke calls each callback's function once (rcu-core's
                // contract for the hook).
                unsafe { s.set_invoke_hook(crate::owners::invoke) };
                v.push(Arc::new(s));
                // SAFETY: checked non-null; the ABI requires it writable.
                unsafe { *id = (v.len() - 1) as u32 };
                abi::OK
            }
            Err(_) => abi::ENOSPC,
        }
    })
}

unsafe extern "C" fn srcu_read_lock(ctx: *mut ModuleCtx, id: u32) -> c_int {
    entry(ctx, |rt| match srcu(rt, id) {
        Some(s) => s.read_lock_token().0 as c_int,
        None => abi::ENOENT,
    })
}

unsafe extern "C" fn srcu_read_unlock(ctx: *mut ModuleCtx, id: u32, token: c_int) -> c_int {
    entry(ctx, |rt| match srcu(rt, id) {
        Some(s) if token >= 0 && s.in_read_section() => {
            // SAFETY: the module's contract pairs this with the `srcu_read_lock` that returned
            // `token` on this thread; rcu-core bounds-checks the token.
            unsafe { s.read_unlock_token(rcu_core::SrcuToken(token as u32)) };
            abi::OK
        }
        Some(_) => abi::EINVAL,
        None => abi::ENOENT,
    })
}

unsafe extern "C" fn srcu_synchronize(ctx: *mut ModuleCtx, id: u32) -> c_int {
    entry(ctx, |rt| match srcu(rt, id) {
        Some(s) if s.in_read_section() => abi::EDEADLK,
        Some(s) => {
            s.synchronize();
            abi::OK
        }
        None => abi::ENOENT,
    })
}

unsafe extern "C" fn call_srcu(
    ctx: *mut ModuleCtx,
    id: u32,
    head: *mut abi::RcuHead,
    func: abi::RcuFn,
) -> c_int {
    entry(ctx, |rt| match srcu(rt, id) {
        Some(s) if !head.is_null() => rt.post(Target::Head(head, func), Domain::Srcu(s)),
        Some(_) => abi::EINVAL,
        None => abi::ENOENT,
    })
}

unsafe extern "C" fn timer_start(
    ctx: *mut ModuleCtx,
    period_ns: u64,
    func: abi::ArgFn,
    arg: *mut c_void,
    id: *mut u32,
) -> c_int {
    entry(ctx, |rt| {
        if id.is_null() || period_ns == 0 {
            return abi::EINVAL;
        }
        if !is_module_code(rt, func as usize) {
            return abi::EFAULT;
        }
        match rt
            .arc()
            .timer_start(Duration::from_nanos(period_ns), func, arg as usize)
        {
            Ok(t) => {
                // SAFETY: checked non-null; the ABI requires it writable.
                unsafe { *id = t };
                abi::OK
            }
            Err(e) => e,
        }
    })
}

unsafe extern "C" fn timer_cancel(ctx: *mut ModuleCtx, id: u32) -> c_int {
    entry(ctx, |rt| {
        if rt.timer_cancel(Some(id)) == 0 {
            abi::ENOENT
        } else {
            abi::OK
        }
    })
}

unsafe extern "C" fn thread_spawn(
    ctx: *mut ModuleCtx,
    name: *const c_char,
    func: abi::ArgFn,
    arg: *mut c_void,
    id: *mut u32,
) -> c_int {
    entry(ctx, |rt| {
        let (Some(name), false) = (name_arg(name), id.is_null()) else {
            return abi::EINVAL;
        };
        if !is_module_code(rt, func as usize) {
            return abi::EFAULT;
        }
        match rt.arc().thread_spawn(name, func, arg as usize) {
            Ok(t) => {
                // SAFETY: checked non-null; the ABI requires it writable.
                unsafe { *id = t };
                abi::OK
            }
            Err(e) => e,
        }
    })
}

unsafe extern "C" fn thread_should_stop(ctx: *mut ModuleCtx) -> c_int {
    entry(ctx, |rt| c_int::from(rt.should_stop()))
}

unsafe extern "C" fn thread_sleep(ctx: *mut ModuleCtx, ns: u64) -> c_int {
    entry(ctx, |rt| c_int::from(rt.sleep(Duration::from_nanos(ns))))
}

unsafe extern "C" fn hook_publish(
    ctx: *mut ModuleCtx,
    name: *const c_char,
    func: abi::HookFn,
    data: *mut c_void,
) -> c_int {
    entry(ctx, |rt| {
        let Some(name) = name_arg(name) else {
            return abi::EINVAL;
        };
        if !is_module_code(rt, func as usize) {
            return abi::EFAULT;
        }
        let hook = HookEntry {
            name: Arc::from(name),
            func,
            data: data as usize,
            owner: rt.arc(),
        };
        match rt.host.upgrade() {
            Some(h) => h.publish_hook(hook).err().unwrap_or(abi::OK),
            None => abi::ESHUTDOWN,
        }
    })
}

unsafe extern "C" fn hook_unpublish(ctx: *mut ModuleCtx, name: *const c_char) -> c_int {
    entry(ctx, |rt| {
        let Some(name) = name_arg(name) else {
            return abi::EINVAL;
        };
        match rt.host.upgrade() {
            Some(h) => h.unpublish_hook(rt, name).err().unwrap_or(abi::OK),
            None => abi::ESHUTDOWN,
        }
    })
}

unsafe extern "C" fn param_get(
    ctx: *mut ModuleCtx,
    name: *const c_char,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    entry(ctx, |rt| {
        let Some(name) = name_arg(name) else {
            return abi::EINVAL;
        };
        let Some(v) = rt.params.get(name) else {
            return abi::ENOENT;
        };
        if buf.is_null() || len < v.len() + 1 {
            return abi::ERANGE;
        }
        // SAFETY: `buf` is writable for `len` ≥ v.len() + 1 bytes (checked above, the ABI
        // requires it).
        unsafe {
            std::ptr::copy_nonoverlapping(v.as_ptr(), buf.cast::<u8>(), v.len());
            *buf.add(v.len()) = 0;
        }
        v.len() as c_int
    })
}

unsafe extern "C" fn signal_hook(
    ctx: *mut ModuleCtx,
    signo: c_int,
    func: abi::HookFn,
    data: *mut c_void,
) -> c_int {
    entry(ctx, |rt| {
        if !is_module_code(rt, func as usize) {
            return abi::EFAULT;
        }
        if rt.gate.is_closed() {
            return abi::ESHUTDOWN;
        }
        crate::signals::hook(&rt.arc(), signo, func, data as usize)
    })
}

unsafe extern "C" fn signal_unhook(ctx: *mut ModuleCtx, signo: c_int) -> c_int {
    entry(ctx, |rt| crate::signals::unhook(&rt.arc(), signo))
}

unsafe extern "C" fn barrier(ctx: *mut ModuleCtx, domain: u32) -> c_int {
    entry(ctx, |rt| match host_domain(rt, domain) {
        Some(rcu) => match rcu.barrier() {
            Ok(()) => abi::OK,
            // From a callback or inside a read section: it would wait for itself.
            Err(e) => {
                tracing::warn!(target: "rcumod", module = %rt.name(), "refused: {e}");
                abi::EDEADLK
            }
        },
        None => abi::EINVAL,
    })
}

unsafe extern "C" fn reader_get(ctx: *mut ModuleCtx, domain: u32, out: *mut abi::Reader) -> c_int {
    entry(ctx, |rt| {
        if out.is_null() {
            return abi::EINVAL;
        }
        let Some(d) = rt.domains.get(domain as usize) else {
            return abi::EINVAL;
        };
        // The process domain is the application's too: it may unregister a thread, which would
        // free the reader a module caches.
        if matches!(d, crate::domains::DomainRef::Process) {
            return abi::EOPNOTSUPP;
        }
        let Some(f) = d.foreign_reader() else {
            return abi::EOPNOTSUPP;
        };
        // SAFETY: checked non-null; the ABI requires it writable.
        unsafe {
            *out = abi::Reader {
                word: f.word as *mut u64,
                gp_ctr: f.gp_ctr as *const u64,
                sleepers: f.sleepers as *const u32,
                nest_mask: f.nest_mask,
                full_fence: u32::from(f.full_fence),
                domain,
            };
        }
        abi::OK
    })
}

unsafe extern "C" fn read_unlock_slow(ctx: *mut ModuleCtx, domain: u32) {
    entry(ctx, |rt| {
        if let Some(d) = host_domain(rt, domain) {
            d.foreign_reader_left();
        }
        abi::OK
    });
}
