//! # rcumod-abi: the contract between the rcumod host and its modules
//!
//! A module is a shared object (a Rust `cdylib` or a C library) that exports one symbol,
//! [`DESCRIPTOR_SYMBOL`], a [`ModuleDescriptor`], and carries a `.modinfo` section of
//! NUL-separated `key=value` records ([`modinfo`]) that the host reads *without running the file*.
//! When the host loads it, it calls `init` with a [`HostApi`] table and an opaque context; every
//! service the module uses — RCU read sections and `call_rcu` on the host's domains, SRCU
//! domains of its own, timers, threads, hooks, parameters, logging — goes through that table.
//!
//! Why a table and not symbols: a module that linked its own RCU library would have a second,
//! separate RCU that the host's `rcu_barrier` never waits for, and a module's own `tracing`
//! statics would log into the void. Through the table the host sees every callback the module
//! posts, owns every timer and thread that could post more, and can therefore enforce the unload
//! protocol of "RCU and Unloadable Modules" (stop posting → barrier → unmap) instead of trusting
//! each module author to remember it.
//!
//! * [`ModuleDescriptor`], [`HostApi`], [`RcuHead`], [`RcuEntry`]: the `#[repr(C)]` types; the C
//!   header `include/rcumod.h` declares the same layout (a test keeps them in sync).
//! * [`modinfo`]: the record format and a parser shared by host and tools.
//! * [`sdk`]: safe Rust wrappers and [`declare_module!`] for module authors.
//!
//! Versioning: [`ABI_MAJOR`] must match exactly; a module built against a higher
//! [`ABI_MINOR`] than the host's is refused (it may call entries the host lacks); the host's
//! table only grows at its end, and `size` fields let each side see how much the other has.

#![allow(clippy::missing_safety_doc)] // the safety contract of the C ABI is documented per type

pub mod modinfo;
pub mod sdk;

use std::ffi::{c_char, c_int, c_void};

/// Incompatible changes bump the major version.
pub const ABI_MAJOR: u32 = 1;
/// Compatible additions (entries appended to [`HostApi`]) bump the minor version.
pub const ABI_MINOR: u32 = 1;
/// `"RCUMOD"`, 0x01, 0x00 in little-endian byte order.
pub const DESCRIPTOR_MAGIC: u64 = u64::from_le_bytes(*b"RCUMOD\x01\x00");
/// The one symbol every module exports.
pub const DESCRIPTOR_SYMBOL: &str = "rcumod_module";
/// The section holding the module's `key=value` records.
pub const MODINFO_SECTION: &str = ".modinfo";

/// The host's default (global, memb) RCU domain.
pub const DOMAIN_GLOBAL: u32 = 0;
/// The host's qsbr domain (readers are the host's reader threads).
pub const DOMAIN_QSBR: u32 = 1;
/// The process-wide domain (`rcu_core::Rcu::global()`), under which signal hooks run.
pub const DOMAIN_PROCESS: u32 = 2;

/// Success.
pub const OK: c_int = 0;
/// An argument is invalid (null pointer, unknown domain, bad name).
pub const EINVAL: c_int = -22;
/// No such parameter, hook, timer, thread or SRCU domain.
pub const ENOENT: c_int = -2;
/// The module is going away: its posting gate is closed. The callback was not queued.
pub const ESHUTDOWN: c_int = -108;
/// The callback function is not code of a live module.
pub const EFAULT: c_int = -14;
/// The call would wait for itself (synchronize inside a read section, barrier in a callback).
pub const EDEADLK: c_int = -35;
/// A resource limit was reached.
pub const ENOSPC: c_int = -28;
/// A buffer was too small; the return value of the call says how much is needed.
pub const ERANGE: c_int = -34;
/// The operation is not offered for this argument (an inline reader of a qsbr domain).
pub const EOPNOTSUPP: c_int = -95;

/// Log levels for [`HostApi::log`].
pub mod level {
    /// Errors.
    pub const ERROR: u32 = 1;
    /// Warnings.
    pub const WARN: u32 = 2;
    /// Information.
    pub const INFO: u32 = 3;
    /// Debugging.
    pub const DEBUG: u32 = 4;
}

/// Opaque per-module context handle passed to `init` and to every host call.
#[repr(C)]
#[derive(Debug)]
pub struct ModuleCtx {
    _private: [u8; 0],
}

/// The module's `init`: 0 on success, a negative error code otherwise (the host unwinds
/// everything the module registered, and reports the code).
pub type InitFn = unsafe extern "C" fn(api: *const HostApi, ctx: *mut ModuleCtx) -> c_int;
/// The module's `exit`: release what `init` set up. It may still post callbacks (final frees);
/// the host closes the posting gate after it returns.
pub type ExitFn = unsafe extern "C" fn(api: *const HostApi, ctx: *mut ModuleCtx);

/// The exported descriptor. `size` is `size_of::<ModuleDescriptor>()` as the module was built.
#[repr(C)]
#[derive(Debug)]
pub struct ModuleDescriptor {
    /// [`DESCRIPTOR_MAGIC`].
    pub magic: u64,
    /// [`ABI_MAJOR`] the module was built against.
    pub abi_major: u32,
    /// [`ABI_MINOR`] the module was built against.
    pub abi_minor: u32,
    /// Size of this struct in the module.
    pub size: u32,
    /// Reserved, zero.
    pub flags: u32,
    /// NUL-terminated module name; must equal the `.modinfo` `name`.
    pub name: *const c_char,
    /// Called once after loading.
    pub init: Option<InitFn>,
    /// Called once before unloading (absent: the module cannot be unloaded, as in the kernel).
    pub exit: Option<ExitFn>,
}

// SAFETY: the descriptor is immutable static data; `name` points to a static string.
unsafe impl Sync for ModuleDescriptor {}

/// `struct rcu_head`: embed it in an object, post it with [`HostApi::call_rcu`], and the host
/// calls `func(head)` after a grace period. Owned by the host while posted.
#[repr(C)]
#[derive(Debug)]
pub struct RcuHead {
    /// Host-owned link.
    pub next: *mut RcuHead,
    /// Host-owned.
    pub func: Option<RcuFn>,
}

impl RcuHead {
    /// An unposted head.
    pub const fn new() -> Self {
        RcuHead {
            next: std::ptr::null_mut(),
            func: None,
        }
    }
}

impl Default for RcuHead {
    fn default() -> Self {
        Self::new()
    }
}

/// A callback taking its head.
pub type RcuFn = unsafe extern "C" fn(head: *mut RcuHead);
/// A callback taking an argument (the Keyronex `ke_rcu_call` form).
pub type ArgFn = unsafe extern "C" fn(arg: *mut c_void);

/// The Keyronex RCU(9) form: an entry embedded somewhere, a callback and its argument
/// (`ke_rcu_call(entry, callback, arg)`). The entry is host-owned until the callback ran.
#[repr(C)]
#[derive(Debug)]
pub struct RcuEntry {
    /// Host-owned.
    pub head: RcuHead,
    /// Host-owned.
    pub callback: Option<ArgFn>,
    /// Host-owned.
    pub arg: *mut c_void,
}

impl RcuEntry {
    /// An unposted entry.
    pub const fn new() -> Self {
        RcuEntry {
            head: RcuHead::new(),
            callback: None,
            arg: std::ptr::null_mut(),
        }
    }
}

impl Default for RcuEntry {
    fn default() -> Self {
        Self::new()
    }
}

/// A hook the host calls under RCU: `data` is what the module published with it, `arg` the
/// caller's argument. The meaning of the return value is the hook's contract.
pub type HookFn = unsafe extern "C" fn(data: *mut c_void, arg: u64) -> u64;

/// The host services, passed to `init`. Every function takes the module's context first.
/// Functions returning `c_int` return [`OK`] or a negative error code.
#[repr(C)]
#[derive(Debug)]
pub struct HostApi {
    /// [`ABI_MAJOR`] of the host.
    pub abi_major: u32,
    /// [`ABI_MINOR`] of the host.
    pub abi_minor: u32,
    /// `size_of::<HostApi>()` in the host.
    pub size: u32,
    /// Reserved, zero.
    pub flags: u32,

    /// Log `len` bytes of UTF-8 at `level` into the host's log.
    pub log: unsafe extern "C" fn(ctx: *mut ModuleCtx, level: u32, msg: *const u8, len: usize),

    /// Enter a read-side section of host domain `domain`.
    pub read_lock: unsafe extern "C" fn(ctx: *mut ModuleCtx, domain: u32) -> c_int,
    /// Leave it.
    pub read_unlock: unsafe extern "C" fn(ctx: *mut ModuleCtx, domain: u32) -> c_int,
    /// `rcu_dereference(*slot)`: an Acquire load.
    pub dereference: unsafe extern "C" fn(slot: *const *mut c_void) -> *mut c_void,
    /// `rcu_assign_pointer(*slot, value)`: a Release store.
    pub assign_pointer: unsafe extern "C" fn(slot: *mut *mut c_void, value: *mut c_void),
    /// Wait for a grace period of `domain`. [`EDEADLK`] inside one of its read sections.
    pub synchronize: unsafe extern "C" fn(ctx: *mut ModuleCtx, domain: u32) -> c_int,

    /// `call_rcu(head, func)` on `domain`. [`ESHUTDOWN`] once the module is going away,
    /// [`EFAULT`] if `func` is not code of this module.
    pub call_rcu: unsafe extern "C" fn(
        ctx: *mut ModuleCtx,
        domain: u32,
        head: *mut RcuHead,
        func: RcuFn,
    ) -> c_int,
    /// `ke_rcu_call(entry, callback, arg)` on `domain`. Errors as `call_rcu`.
    pub call_rcu_entry: unsafe extern "C" fn(
        ctx: *mut ModuleCtx,
        domain: u32,
        entry: *mut RcuEntry,
        callback: ArgFn,
        arg: *mut c_void,
    ) -> c_int,

    /// Create an SRCU domain owned by the module (destroyed, after a barrier, at unload).
    pub srcu_create:
        unsafe extern "C" fn(ctx: *mut ModuleCtx, name: *const c_char, id: *mut u32) -> c_int,
    /// Enter an SRCU read section; returns a token (≥ 0) for `srcu_read_unlock`.
    pub srcu_read_lock: unsafe extern "C" fn(ctx: *mut ModuleCtx, id: u32) -> c_int,
    /// Leave it.
    pub srcu_read_unlock: unsafe extern "C" fn(ctx: *mut ModuleCtx, id: u32, token: c_int) -> c_int,
    /// Wait for an SRCU grace period.
    pub srcu_synchronize: unsafe extern "C" fn(ctx: *mut ModuleCtx, id: u32) -> c_int,
    /// `call_srcu(head, func)`. Errors as `call_rcu`.
    pub call_srcu: unsafe extern "C" fn(
        ctx: *mut ModuleCtx,
        id: u32,
        head: *mut RcuHead,
        func: RcuFn,
    ) -> c_int,

    /// Start a periodic host timer calling `func(arg)` every `period_ns`.
    pub timer_start: unsafe extern "C" fn(
        ctx: *mut ModuleCtx,
        period_ns: u64,
        func: ArgFn,
        arg: *mut c_void,
        id: *mut u32,
    ) -> c_int,
    /// Cancel a timer, waiting for a running call to finish.
    pub timer_cancel: unsafe extern "C" fn(ctx: *mut ModuleCtx, id: u32) -> c_int,

    /// Start a host thread running `func(arg)`; it should return once `thread_should_stop`.
    pub thread_spawn: unsafe extern "C" fn(
        ctx: *mut ModuleCtx,
        name: *const c_char,
        func: ArgFn,
        arg: *mut c_void,
        id: *mut u32,
    ) -> c_int,
    /// 1 when the host asks the module's threads to stop, else 0.
    pub thread_should_stop: unsafe extern "C" fn(ctx: *mut ModuleCtx) -> c_int,
    /// Sleep up to `ns`, returning early (1) when asked to stop, else 0.
    pub thread_sleep: unsafe extern "C" fn(ctx: *mut ModuleCtx, ns: u64) -> c_int,

    /// Publish (or replace) the hook `name`; the host calls `func(data, arg)` under RCU.
    pub hook_publish: unsafe extern "C" fn(
        ctx: *mut ModuleCtx,
        name: *const c_char,
        func: HookFn,
        data: *mut c_void,
    ) -> c_int,
    /// Withdraw the hook `name` (a grace period later no caller runs it).
    pub hook_unpublish: unsafe extern "C" fn(ctx: *mut ModuleCtx, name: *const c_char) -> c_int,

    /// Copy parameter `name`'s value (NUL-terminated) into `buf`; returns its length, [`ENOENT`]
    /// if unknown, or [`ERANGE`] if `len` is too small.
    pub param_get: unsafe extern "C" fn(
        ctx: *mut ModuleCtx,
        name: *const c_char,
        buf: *mut c_char,
        len: usize,
    ) -> c_int,

    /// Run `func(data, signo)` when signal `signo` (SIGPROF, SIGALRM, SIGUSR1 or SIGUSR2)
    /// arrives: the host's own handler calls it inside a read section of [`DOMAIN_PROCESS`] on
    /// threads registered with that domain (others count a miss), so the unloader can wait for
    /// every running handler with a grace period — a handler that were module code could be
    /// executing its first instructions, outside any read section, when the module is unmapped.
    /// `func` must be async-signal-safe.
    pub signal_hook: unsafe extern "C" fn(
        ctx: *mut ModuleCtx,
        signo: c_int,
        func: HookFn,
        data: *mut c_void,
    ) -> c_int,
    /// Withdraw the module's hook for `signo`.
    pub signal_unhook: unsafe extern "C" fn(ctx: *mut ModuleCtx, signo: c_int) -> c_int,

    /// `rcu_barrier()` on host domain `domain`: wait until every callback posted to it before
    /// the call has run (a module freeing a structure its own callbacks still use). The host
    /// barriers at unload anyway. [`EDEADLK`] from inside a callback or a read section of that
    /// domain, where it would wait for itself.
    pub barrier: unsafe extern "C" fn(ctx: *mut ModuleCtx, domain: u32) -> c_int,

    // ---- ABI 1.1 ----
    /// Fill `out` with the calling thread's reader of memb host domain `domain`, for the
    /// header's inline read side (`rcumod_read_lock` in `rcumod.h`; the protocol is rcu-core's
    /// `ForeignReader`). [`EOPNOTSUPP`] for a qsbr domain and for the process domain (whose
    /// threads the application may unregister), [`EINVAL`] for an unknown one. The reader is
    /// valid on this thread until it exits.
    pub reader_get:
        unsafe extern "C" fn(ctx: *mut ModuleCtx, domain: u32, out: *mut Reader) -> c_int,
    /// The slow path of an inline outermost unlock that found `*sleepers != 0`.
    pub read_unlock_slow: unsafe extern "C" fn(ctx: *mut ModuleCtx, domain: u32),
}

/// `struct rcumod_reader`: a thread's reader of a memb host domain (ABI 1.1, see
/// [`HostApi::reader_get`]).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Reader {
    /// The thread's reader word.
    pub word: *mut u64,
    /// The domain's grace-period counter.
    pub gp_ctr: *const u64,
    /// Nonzero while a writer waits: an outermost unlock then calls `read_unlock_slow`.
    pub sleepers: *const u32,
    /// The nesting bits of the reader word.
    pub nest_mask: u64,
    /// Nonzero: the section's fences are full fences (no `membarrier`).
    pub full_fence: u32,
    /// The domain this reader is of.
    pub domain: u32,
}
