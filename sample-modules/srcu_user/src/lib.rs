//! `srcu_user`: a module with an SRCU domain of its own. Its readers may sleep inside their
//! read sections (SRCU's point), its updater retires versions with `call_srcu`, and at unload
//! the host barriers that domain too — "RCU and Unloadable Modules" notes one `srcu_barrier()`
//! is needed per SRCU domain — and then destroys it.
//!
//! A module thread publishes a new configuration string every `period_us` (default 1000) and
//! frees the old one with `call_srcu`; another thread reads it in SRCU sections that sleep
//! `sleep_us` (default 200). Hook `srcu_user.version`: the current version number, read in an
//! SRCU section.

use rcumod_abi::sdk::{Error, Module, RcuPtr, SrcuDomain};
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

struct Config {
    version: u64,
    text: String,
}

static CONFIG: RcuPtr<Config> = RcuPtr::null();
static DOMAIN: OnceLock<SrcuDomain> = OnceLock::new();
static READS: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn version(_d: *mut c_void, _a: u64) -> u64 {
    let Some(d) = DOMAIN.get() else { return 0 };
    let Ok(s) = d.read_lock() else { return 0 };
    CONFIG.load_srcu(&s).map_or(0, |c| c.version)
}

fn publish(d: &SrcuDomain, version: u64) {
    let old = CONFIG.publish(Some(Box::new(Config {
        version,
        text: format!("configuration #{version}"),
    })));
    if old.is_null() {
        return;
    }
    let old = old as usize;
    let free = move || {
        // SAFETY: unpublished before this callback was posted; an SRCU grace period passed.
        drop(unsafe { Box::from_raw(old as *mut Config) });
    };
    if let Err(r) = d.call(free) {
        let _ = d.synchronize();
        (r.callback)();
    }
}

fn init(m: &Module) -> Result<(), Error> {
    let period = Duration::from_micros(m.param_as("period_us").unwrap_or(1000));
    let nap = Duration::from_micros(m.param_as("sleep_us").unwrap_or(200));
    let d = m.srcu_create("config")?;
    let _ = DOMAIN.set(d);
    publish(&d, 1);
    m.spawn("srcu-writer", move |t| {
        let mut v = 1;
        while !t.sleep(period) {
            v += 1;
            publish(&d, v);
        }
    })?;
    m.spawn("srcu-reader", move |t| {
        while !t.should_stop() {
            if let Ok(s) = d.read_lock() {
                if let Some(c) = CONFIG.load_srcu(&s) {
                    assert!(c.text.ends_with(&c.version.to_string()));
                    READS.fetch_add(1, Ordering::Relaxed);
                }
                // Sleeping inside the section is what SRCU allows and RCU does not.
                std::thread::sleep(nap);
            }
        }
    })?;
    // SAFETY: `version` reads under an SRCU section of our domain.
    unsafe { m.hook_publish("srcu_user.version", version, std::ptr::null_mut()) }
}

fn exit(_m: &Module) {
    // Threads are stopped; retire the last version through the domain (the host barriers it).
    if let Some(d) = DOMAIN.get() {
        let last = CONFIG.publish(None);
        if !last.is_null() {
            let last = last as usize;
            let free = move || {
                // SAFETY: unpublished before this callback was posted; a grace period passed.
                drop(unsafe { Box::from_raw(last as *mut Config) });
            };
            if let Err(r) = d.call(free) {
                let _ = d.synchronize();
                (r.callback)();
            }
        }
    }
}

rcumod_abi::declare_module! {
    name: "srcu_user",
    version: "1.0",
    description: "own SRCU domain with sleeping readers and call_srcu",
    author: "rcumod",
    license: "MIT OR Apache-2.0",
    depends: "",
    params: [
        ("period_us", "uint", "how often a new configuration is published"),
        ("sleep_us", "uint", "how long readers sleep inside their SRCU sections"),
    ],
    init: init,
    exit: exit,
}
