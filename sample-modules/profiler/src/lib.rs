//! `profiler`: the perfbook's "Pure RCU" example (Section 9.5, the NMI profiler) in userspace.
//!
//! A profile buffer `{ size, entries[] }` is published through an RCU pointer. SIGPROF stands in
//! for the NMI: on every tick (`setitimer(ITIMER_PROF)`, `period_us`, default 1000) the host's
//! signal handler enters a read section of the process domain and calls this module's signal
//! hook, which increments one entry — checking the index against the size stored *in the
//! buffer*, so a buffer swapped for a smaller one is never overrun. A module thread swaps the
//! buffer for one of another size every `swap_ms` (default 20), and frees the old one with
//! `call_rcu` on the process domain: after a grace period, no handler can still be counting
//! into it. The signal handler itself is the host's (signals.rs in module-loader), so the
//! unloader can wait for handlers in flight with a grace period.
//!
//! Hooks: `profiler.samples` (entries counted in the current buffer), `profiler.ticks`,
//! `profiler.swaps`.

use rcumod_abi::sdk::{Error, Module, RcuPtr};
use rcumod_abi::DOMAIN_PROCESS;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

struct Profile {
    size: usize,
    entries: Box<[AtomicU64]>,
}

impl Profile {
    fn new(size: usize) -> Box<Profile> {
        Box::new(Profile {
            size,
            entries: (0..size).map(|_| AtomicU64::new(0)).collect(),
        })
    }
}

static BUFFER: RcuPtr<Profile> = RcuPtr::null();
static TICKS: AtomicU64 = AtomicU64::new(0);
static SWAPS: AtomicU64 = AtomicU64::new(0);

/// The SIGPROF hook: async-signal-safe (atomics only). The host calls it inside a read section
/// of the process domain.
unsafe extern "C" fn on_sigprof(_data: *mut c_void, _signo: u64) -> u64 {
    let tick = TICKS.fetch_add(1, Ordering::Relaxed);
    let p = BUFFER.load_raw();
    // SAFETY: inside the host's read section of the process domain; buffers are freed only a
    // grace period of that domain after being unpublished.
    if let Some(b) = unsafe { p.as_ref() } {
        // "storing the size with the buffer guarantees that the range check matches the buffer"
        let pc = (tick as usize).wrapping_mul(2_654_435_761) % 4096;
        if pc < b.size {
            b.entries[pc].fetch_add(1, Ordering::Relaxed);
        }
    }
    0
}

/// Hook: samples counted in the current buffer. The host calls hooks inside a section of
/// domain 0, but buffers are retired through the process domain, so this takes a section of
/// that domain itself.
unsafe extern "C" fn samples(_d: *mut c_void, _a: u64) -> u64 {
    let Some(m) = Module::get() else { return 0 };
    let Ok(section) = m.read_lock(DOMAIN_PROCESS) else {
        return 0;
    };
    BUFFER.load(&section).map_or(0, |b| {
        b.entries.iter().map(|e| e.load(Ordering::Relaxed)).sum()
    })
}

/// Hook: SIGPROF ticks seen by the module.
unsafe extern "C" fn ticks(_d: *mut c_void, _a: u64) -> u64 {
    TICKS.load(Ordering::Relaxed)
}

unsafe extern "C" fn swaps(_d: *mut c_void, _a: u64) -> u64 {
    SWAPS.load(Ordering::Relaxed)
}

fn retire(m: &Module, old: *mut Profile) {
    if old.is_null() {
        return;
    }
    let old = old as usize;
    let free = move || {
        // SAFETY: unpublished before this callback was posted; a grace period of the process
        // domain (the one the handler reads under) has passed.
        drop(unsafe { Box::from_raw(old as *mut Profile) });
    };
    if let Err(r) = m.call(DOMAIN_PROCESS, free) {
        let _ = m.synchronize(DOMAIN_PROCESS);
        (r.callback)();
    }
}

fn set_itimer(period: Duration) {
    let tv = libc_timeval(period);
    let it = ITimerVal {
        interval: tv,
        value: tv,
    };
    // SAFETY: setitimer reads `it`; ITIMER_PROF = 2 on Linux.
    unsafe { setitimer(2, &it, std::ptr::null_mut()) };
}

#[repr(C)]
#[derive(Clone, Copy)]
struct TimeVal {
    sec: i64,
    usec: i64,
}

#[repr(C)]
struct ITimerVal {
    interval: TimeVal,
    value: TimeVal,
}

fn libc_timeval(d: Duration) -> TimeVal {
    TimeVal {
        sec: d.as_secs() as i64,
        usec: i64::from(d.subsec_micros()),
    }
}

extern "C" {
    fn setitimer(which: i32, new: *const ITimerVal, old: *mut ITimerVal) -> i32;
}

/// SIGPROF on Linux.
const SIGPROF: i32 = 27;

fn init(m: &Module) -> Result<(), Error> {
    let period = Duration::from_micros(m.param_as("period_us").unwrap_or(1000));
    let swap = Duration::from_millis(m.param_as("swap_ms").unwrap_or(20));
    retire(m, BUFFER.publish(Some(Profile::new(256))));
    // SAFETY: `on_sigprof` is async-signal-safe (atomics and an RCU load only).
    unsafe { m.signal_hook(SIGPROF, on_sigprof, std::ptr::null_mut())? };
    set_itimer(period);
    let module = *m;
    m.spawn("profiler-swap", move |t| {
        let mut big = false;
        while !t.sleep(swap) {
            big = !big;
            let size = if big { 4096 } else { 256 };
            retire(&module, BUFFER.publish(Some(Profile::new(size))));
            SWAPS.fetch_add(1, Ordering::Relaxed);
        }
    })?;
    // SAFETY: the hooks only read atomics.
    unsafe {
        m.hook_publish("profiler.samples", samples, std::ptr::null_mut())?;
        m.hook_publish("profiler.ticks", ticks, std::ptr::null_mut())?;
        m.hook_publish("profiler.swaps", swaps, std::ptr::null_mut())
    }
}

fn exit(m: &Module) {
    // The host has already withdrawn the signal hook and waited a grace period of the process
    // domain, so no handler is in our code; stop the timer and retire the last buffer.
    set_itimer(Duration::ZERO);
    retire(m, BUFFER.publish(None));
}

rcumod_abi::declare_module! {
    name: "profiler",
    version: "1.0",
    description: "perfbook Pure RCU: SIGPROF-driven profile buffer swapped under RCU",
    author: "rcumod",
    license: "MIT OR Apache-2.0",
    depends: "",
    params: [
        ("period_us", "uint", "profiling timer period in microseconds of CPU time"),
        ("swap_ms", "uint", "how often the buffer is swapped for one of another size"),
    ],
    init: init,
    exit: exit,
}
