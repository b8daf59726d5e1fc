//! `timer_poster`: posts callbacks from a host timer — the seed's "if your module invokes
//! call_rcu() from timers, you will need to first cancel all the timers, and only then invoke
//! rcu_barrier()". The module never cancels its timer itself: the host owns it and cancels it
//! (waiting for a running tick) before calling `exit` and closing the posting gate, so a tick
//! can never post after the barrier.
//!
//! Every `period_us` (default 500) a tick retires a small allocation through `call_rcu`, `burst`
//! (default 8) at a time. Hooks `timer_poster.ticks` and `timer_poster.freed`.

use rcumod_abi::sdk::{Error, Module};
use rcumod_abi::DOMAIN_GLOBAL;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static TICKS: AtomicU64 = AtomicU64::new(0);
static FREED: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn ticks(_d: *mut c_void, _a: u64) -> u64 {
    TICKS.load(Ordering::Relaxed)
}

unsafe extern "C" fn freed(_d: *mut c_void, _a: u64) -> u64 {
    FREED.load(Ordering::Relaxed)
}

fn init(m: &Module) -> Result<(), Error> {
    let period = Duration::from_micros(m.param_as("period_us").unwrap_or(500));
    let burst: u64 = m.param_as("burst").unwrap_or(8);
    let module = *m;
    m.timer_start(period, move || {
        TICKS.fetch_add(1, Ordering::Relaxed);
        for i in 0..burst {
            let retired = Box::new([i; 16]);
            if let Err(r) = module.call(DOMAIN_GLOBAL, move || {
                drop(retired);
                FREED.fetch_add(1, Ordering::Relaxed);
            }) {
                // Cannot happen while the host owns the timer; if it did, nothing is lost.
                (r.callback)();
            }
        }
    })?;
    // SAFETY: the hooks only read atomics.
    unsafe {
        m.hook_publish("timer_poster.ticks", ticks, std::ptr::null_mut())?;
        m.hook_publish("timer_poster.freed", freed, std::ptr::null_mut())
    }
}

fn exit(_m: &Module) {}

rcumod_abi::declare_module! {
    name: "timer_poster",
    version: "1.0",
    description: "posts call_rcu frees from a host-managed timer",
    author: "rcumod",
    license: "MIT OR Apache-2.0",
    depends: "",
    params: [
        ("period_us", "uint", "timer period in microseconds"),
        ("burst", "uint", "callbacks posted per tick"),
    ],
    init: init,
    exit: exit,
}
