//! The reason the unload protocol exists, shown with a deliberately broken control: a child
//! process unloads a module while its callbacks are still queued (a reader holds the grace
//! period) *without* the barrier, and must die by SIGSEGV when those callbacks run into the
//! unmapped code. The same scenario through the protocol exits 0. In checked mode the broken
//! unload is instead reported as late callbacks and the process survives. A module that cannot
//! be unmapped is reported pinned, and loading it again maps a new object, never the pinned one;
//! so is a module whose thread is still exiting (running a destructor of the module's) when the
//! host's wait for its threads ends.
//! Each scenario runs in its own process: it must be observed from outside, and unmapping is
//! per-process state.

use module_loader::{Host, HostEvent, UnloadMode, UnloadOutcome};
use rcumod_tests::modules::{
    c_module, c_module_from_source, child_passes, is_child, nodelete_module, pinned_allowed,
    run_child, rust_module,
};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Load c_list posting its frees to the host's qsbr domain (1), hold a reader of that domain
/// on another thread so its callbacks stay queued (the hook domain 0, which the unload's first
/// step waits on, is left free), unload with `mode`, then release the reader and let the
/// callbacks run.
fn scenario(mode: UnloadMode, checked: bool) {
    let host = Host::builder().checked(checked).build().unwrap();
    let events = host.subscribe();
    let so = c_module("c_list", &[]);
    host.load(
        &so,
        &[
            ("period_us".into(), "100".into()),
            ("domain".into(), "1".into()),
        ],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50)); // let the timer post some callbacks
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let rcu = host.domain(1).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            let g = rcu.read_lock();
            held_tx.send(()).unwrap();
            let _ = hold_rx.recv_timeout(Duration::from_millis(300));
            drop(g);
            rcu.thread_offline();
        });
        held_rx.recv().unwrap();
        let report = host.unload("c_list", mode).unwrap();
        println!("unload: {:?} {:?}", report.outcome, report.callbacks);
        if mode == UnloadMode::SkipBarrierForTesting {
            assert_eq!(
                report.outcome,
                UnloadOutcome::Unloaded,
                "unmapped while callbacks pending"
            );
            assert!(
                report.callbacks.pending() > 0,
                "the control needs queued callbacks"
            );
        }
        hold_tx.send(()).ok();
    });
    host.domain(1).unwrap().barrier().unwrap(); // run whatever is queued
    if checked {
        let late = events
            .try_iter()
            .filter(|e| matches!(e, HostEvent::LateCallback { .. }))
            .count();
        println!("late callbacks reported: {late}");
        assert!(late > 0, "checked mode must report the late callbacks");
    }
    println!("child survived");
}

#[test]
fn child_without_barrier() {
    if is_child("no_barrier") {
        scenario(UnloadMode::SkipBarrierForTesting, false);
    }
}

#[test]
fn child_with_protocol() {
    if is_child("protocol") {
        scenario(UnloadMode::Normal, false);
    }
}

#[test]
fn child_checked_without_barrier() {
    if is_child("checked") {
        scenario(UnloadMode::SkipBarrierForTesting, true);
    }
}

#[test]
fn unloading_without_the_barrier_crashes_the_process() {
    let (st, out) = run_child("child_without_barrier", "no_barrier", CHILD_TIMEOUT);
    assert_eq!(
        st.signal(),
        Some(libc::SIGSEGV),
        "the broken control must die by SIGSEGV; status {st:?}\n{out}"
    );
    assert!(!out.contains("child survived"), "{out}");
}

#[test]
fn the_same_scenario_with_the_protocol_exits_cleanly() {
    child_passes(
        "child_with_protocol",
        "protocol",
        CHILD_TIMEOUT,
        "child survived",
    );
}

#[test]
fn checked_mode_reports_late_callbacks_instead_of_crashing() {
    child_passes(
        "child_checked_without_barrier",
        "checked",
        CHILD_TIMEOUT,
        "late callbacks reported",
    );
}

#[test]
fn child_tls_pin() {
    if !is_child("tls_pin") {
        return;
    }
    let host = Host::new().unwrap();
    let so = rust_module("broken");
    host.load(&so, &[("mode".into(), "tls_pin".into())])
        .unwrap();
    // Module code that touches a thread-local with a destructor on this (an application)
    // thread: glibc keeps the object mapped while this thread lives.
    host.call_hook("broken.touch_tls", 0).expect("hook");
    let r = host.unload("broken", UnloadMode::Normal).unwrap();
    println!("outcome: {}", r.outcome);
    match &r.outcome {
        UnloadOutcome::Pinned { reason } => assert!(reason.contains("thread-local"), "{reason}"),
        o => {
            panic!("a module with a live thread-local destructor must be reported pinned, got {o}")
        }
    }
    let m = host.info("broken").expect("pinned modules stay listed");
    assert_eq!(m.state.to_string(), "Pinned");
    // A pinned module cannot be unloaded again, and its name can be loaded anew.
    assert!(host.unload("broken", UnloadMode::Normal).is_err());
    host.load(&so, &[]).unwrap();
    assert_eq!(
        host.unload("broken", UnloadMode::Normal).unwrap().outcome,
        UnloadOutcome::Unloaded
    );
    println!("child survived");
}

#[test]
fn a_thread_local_destructor_pins_the_module_and_is_reported() {
    child_passes("child_tls_pin", "tls_pin", CHILD_TIMEOUT, "outcome: pinned");
}

/// Objects the dynamic loader lists in this process.
fn loaded_objects() -> usize {
    unsafe extern "C" fn count(
        _info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut std::ffi::c_void,
    ) -> std::ffi::c_int {
        // SAFETY: `data` is the counter passed below, alive for the whole iteration.
        unsafe { *(data as *mut usize) += 1 };
        0
    }
    let mut n = 0usize;
    // SAFETY: `count` matches the callback type and only touches `n` during the call.
    unsafe { libc::dl_iterate_phdr(Some(count), &mut n as *mut usize as *mut std::ffi::c_void) };
    n
}

#[test]
fn child_pinned_reload() {
    if !is_child("pinned_reload") {
        return;
    }
    let host = Host::builder().policy(pinned_allowed()).build().unwrap();
    let so = nodelete_module();
    let before = loaded_objects();
    for round in 1..=2 {
        host.load(&so, &[]).unwrap();
        let r = host.unload("nodelete", UnloadMode::Normal).unwrap();
        println!("round {round}: {}", r.outcome);
        assert!(matches!(r.outcome, UnloadOutcome::Pinned { .. }), "{r:#?}");
        assert_eq!(
            loaded_objects() - before,
            round,
            "each load maps an object of its own"
        );
    }
    println!("child survived");
}

/// A pinned object keeps the file it was loaded from, and with it the name the loader knows it
/// by. Loading the same module again must map a new object, not hand back the pinned one.
#[test]
fn a_pinned_module_loaded_again_is_a_new_object() {
    child_passes(
        "child_pinned_reload",
        "pinned_reload",
        CHILD_TIMEOUT,
        "child survived",
    );
}

/// A module whose thread stops when asked but then spends 2 s in a thread-specific-data
/// destructor (module code) before it exits.
const SLOW_EXIT: &str = r#"
#include "rcumod.h"
#include <pthread.h>
#include <time.h>

static const struct rcumod_host_api *host;
static pthread_key_t key;

static void linger(void *value)
{
	struct timespec two = { 2, 0 };
	(void)value;
	nanosleep(&two, NULL);
}

static void run(void *ctx)
{
	pthread_setspecific(key, &key);
	while (!host->thread_sleep(ctx, 1000000000ull))
		;
}

static int slow_init(const struct rcumod_host_api *api, struct rcumod_ctx *ctx)
{
	uint32_t id;
	host = api;
	if (pthread_key_create(&key, linger))
		return RCUMOD_EINVAL;
	return api->thread_spawn(ctx, "lingerer", run, ctx, &id);
}

static void slow_exit(const struct rcumod_host_api *api, struct rcumod_ctx *ctx)
{
	(void)api;
	(void)ctx;
}

RCUMOD_MODINFO("name=slow_exit\0version=1.0\0license=MIT OR Apache-2.0\0"
	       "description=a thread whose exit runs module code for 2 s\0depends=\0");
RCUMOD_MODULE("slow_exit", slow_init, slow_exit);
"#;

#[test]
fn child_slow_thread_exit() {
    if !is_child("slow_thread_exit") {
        return;
    }
    let wait = Duration::from_millis(200);
    let host = Host::builder().thread_stop_wait(wait).build().unwrap();
    let so = c_module_from_source("slow_exit", SLOW_EXIT, &[]);
    host.load(&so, &[]).unwrap();
    let t0 = std::time::Instant::now();
    let r = host.unload("slow_exit", UnloadMode::Normal).unwrap();
    let took = t0.elapsed();
    println!("outcome: {} after {took:?}", r.outcome);
    match &r.outcome {
        UnloadOutcome::Pinned { reason } => {
            assert!(
                reason.contains("did not stop") && reason.contains("lingerer"),
                "{reason}"
            )
        }
        o => panic!("a thread still running module code must pin the module, got {o}"),
    }
    assert!(
        took < Duration::from_millis(1500),
        "the stop waits for the thread's exit only as long as it was told: {took:?}"
    );
    println!("child survived");
}

/// The bound on stopping a module's threads covers their exit too: a thread whose
/// thread-specific-data destructor (module code) is still running when the wait ends pins the
/// module, and the unload does not block until the destructor returns.
#[test]
fn a_thread_still_exiting_after_the_wait_pins_the_module() {
    let out = child_passes(
        "child_slow_thread_exit",
        "slow_thread_exit",
        CHILD_TIMEOUT,
        "outcome: pinned",
    );
    assert!(out.contains("child survived"), "{out}");
}
