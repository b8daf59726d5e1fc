//! `torture`: callbacks that re-post themselves until a stop flag is set — the case for which
//! rcutorture sets `fullstop` before its `rcu_barrier()` ("RCU and Unloadable Modules": "Line 6
//! sets a global variable that prevents any RCU callbacks from re-posting themselves").
//!
//! `chains` callback chains (default 4) each re-post on every invocation while `STOP` is clear;
//! `flood` (default 0) posts that many one-shot callbacks at init. `exit` sets `STOP`, so every
//! chain ends at its next invocation; the host's barrier — repeated until the module's pending
//! count is zero — drains what was queued. Hook `torture.count`: callbacks run so far.

use rcumod_abi::sdk::{Error, Module};
use rcumod_abi::DOMAIN_GLOBAL;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static RUN: AtomicU64 = AtomicU64::new(0);

fn link(m: Module) {
    RUN.fetch_add(1, Ordering::Relaxed);
    if !STOP.load(Ordering::Acquire) {
        // If the host refuses (the module is going away), the chain simply ends here.
        let _ = m.call(DOMAIN_GLOBAL, move || link(m));
    }
}

unsafe extern "C" fn count(_d: *mut c_void, _a: u64) -> u64 {
    RUN.load(Ordering::Relaxed)
}

fn init(m: &Module) -> Result<(), Error> {
    let chains: u64 = m.param_as("chains").unwrap_or(4);
    let flood: u64 = m.param_as("flood").unwrap_or(0);
    for _ in 0..flood {
        m.call(DOMAIN_GLOBAL, || {
            RUN.fetch_add(1, Ordering::Relaxed);
        })
        .map_err(|r| r.error)?;
    }
    let module = *m;
    for _ in 0..chains {
        m.call(DOMAIN_GLOBAL, move || link(module))
            .map_err(|r| r.error)?;
    }
    // SAFETY: `count` only reads an atomic.
    unsafe { m.hook_publish("torture.count", count, std::ptr::null_mut()) }
}

fn exit(_m: &Module) {
    // fullstop: chains end at their next invocation instead of re-posting.
    STOP.store(true, Ordering::Release);
}

rcumod_abi::declare_module! {
    name: "torture",
    version: "1.0",
    description: "self-reposting callback chains stopped by a flag at exit; callback floods",
    author: "rcumod",
    license: "MIT OR Apache-2.0",
    depends: "",
    params: [
        ("chains", "uint", "number of self-reposting callback chains"),
        ("flood", "uint", "one-shot callbacks posted at init"),
    ],
    init: init,
    exit: exit,
}
