//! Signal hooks: host-owned signal handlers that run module code under RCU.
//!
//! The perfbook's "Pure RCU" example reads an RCU-protected profile buffer from an NMI handler
//! and relies on `synchronize_sched()` waiting for every handler in flight. A userspace module
//! cannot install its own handler safely: between the signal's delivery and the handler's first
//! `read_lock`, the thread runs module code outside any read section, which no grace period
//! waits for — unloading then could unmap code a thread is executing. So the *host* installs
//! the handler (host code, never unmapped); it enters a read section of the process-wide domain
//! (`Rcu::global()`, [`rcumod_abi::DOMAIN_PROCESS`]) with the async-signal-safe `try_read_lock`,
//! and only then calls the module hooks registered for that signal. Withdrawing a module's hooks
//! and waiting one grace period of that domain guarantees no handler is in module code.
//!
//! A signal that lands on a thread not registered with the process domain finds no read section
//! to enter and is counted as missed (registering from a handler would allocate). The signals
//! offered are SIGPROF, SIGALRM, SIGUSR1 and SIGUSR2; one whose disposition the application has
//! set itself is left alone and refused.

use crate::runtime::ModuleRuntime;
use rcu_core::{Rcu, RcuCell};
use rcumod_abi::{self as abi, HookFn};
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Debug)]
struct SigHook {
    signo: c_int,
    func: HookFn,
    data: usize,
    owner: Arc<ModuleRuntime>,
}

static TABLE: OnceLock<RcuCell<Vec<SigHook>>> = OnceLock::new();
static WRITE: Mutex<()> = Mutex::new(());
static INSTALLED: [AtomicBool; 65] = [const { AtomicBool::new(false) }; 65];
static CALLS: AtomicU64 = AtomicU64::new(0);
static MISSED: AtomicU64 = AtomicU64::new(0);

/// Signals modules may hook.
pub(crate) fn allowed(signo: c_int) -> bool {
    [libc::SIGPROF, libc::SIGALRM, libc::SIGUSR1, libc::SIGUSR2].contains(&signo)
}

fn table() -> &'static RcuCell<Vec<SigHook>> {
    TABLE.get_or_init(|| RcuCell::new_in(Vec::new(), Rcu::global()))
}

/// Hook calls made, and signals that found their thread unregistered (process-wide).
pub fn signal_stats() -> (u64, u64) {
    (
        CALLS.load(Ordering::Relaxed),
        MISSED.load(Ordering::Relaxed),
    )
}

fn update(f: impl FnOnce(&mut Vec<SigHook>) -> c_int) -> c_int {
    let _w = WRITE.lock().unwrap_or_else(|e| e.into_inner());
    let mut next = {
        let g = Rcu::global().read_lock();
        table().load(&g).clone()
    };
    let r = f(&mut next);
    if r == abi::OK {
        table().publish(next).defer();
    }
    r
}

fn install(signo: c_int) -> bool {
    let _w = WRITE.lock().unwrap_or_else(|e| e.into_inner());
    let slot = &INSTALLED[signo as usize];
    if slot.load(Ordering::Acquire) {
        return true;
    }
    // SAFETY: sigaction reads and writes the two structs we pass, both properly initialised;
    // the handler is host code with static lifetime.
    let ok = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        let queried = libc::sigaction(signo, std::ptr::null(), &mut old) == 0;
        // An application's own handler is left alone.
        let free = old.sa_sigaction == libc::SIG_DFL || old.sa_sigaction == libc::SIG_IGN;
        if !queried || !free {
            false
        } else {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(signo, &sa, std::ptr::null_mut()) == 0
        }
    };
    slot.store(ok, Ordering::Release);
    ok
}

/// Register `func(data, signo)` of module `owner` for `signo` (replacing its previous one).
pub(crate) fn hook(owner: &Arc<ModuleRuntime>, signo: c_int, func: HookFn, data: usize) -> c_int {
    if !allowed(signo) {
        return abi::EINVAL;
    }
    if !install(signo) {
        tracing::error!(target: "rcumod", module = %owner.name(), signo, "signal is handled by the application; refused");
        return abi::EINVAL;
    }
    update(|t| {
        t.retain(|h| !(h.signo == signo && Arc::ptr_eq(&h.owner, owner)));
        t.push(SigHook {
            signo,
            func,
            data,
            owner: Arc::clone(owner),
        });
        abi::OK
    })
}

/// Withdraw `owner`'s hook for `signo`.
pub(crate) fn unhook(owner: &ModuleRuntime, signo: c_int) -> c_int {
    update(|t| {
        let n = t.len();
        t.retain(|h| !(h.signo == signo && std::ptr::eq(&*h.owner, owner)));
        if t.len() == n {
            abi::ENOENT
        } else {
            abi::OK
        }
    })
}

/// Withdraw every hook of `owner`; the caller then waits a grace period of the process domain.
pub(crate) fn remove_module(owner: &ModuleRuntime) -> usize {
    let Some(t) = TABLE.get() else { return 0 };
    let present = {
        let g = Rcu::global().read_lock();
        t.load(&g)
            .iter()
            .filter(|h| std::ptr::eq(&*h.owner, owner))
            .count()
    };
    if present > 0 {
        update(|t| {
            t.retain(|h| !std::ptr::eq(&*h.owner, owner));
            abi::OK
        });
    }
    present
}

extern "C" fn on_signal(signo: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot; we restore what the
    // interrupted code had.
    let saved = unsafe { *libc::__errno_location() };
    if let Some(t) = TABLE.get() {
        match Rcu::global().try_read_lock() {
            Some(g) => {
                for h in t.load(&g).iter().filter(|h| h.signo == signo) {
                    CALLS.fetch_add(1, Ordering::Relaxed);
                    // SAFETY: the module registered `func(data, ·)` as async-signal-safe; we are
                    // inside a read section of the process domain, and the module's hooks are
                    // withdrawn and a grace period of that domain elapses before it is unmapped.
                    unsafe { (h.func)(h.data as *mut std::ffi::c_void, signo as u64) };
                }
            }
            None => {
                MISSED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}
