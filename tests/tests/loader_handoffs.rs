//! "Unloaded" holds for what module code hands libc by itself, not only through the host's API:
//! its own threads (C `pthread_create`, Rust `std::thread::spawn`, a constructor's), signal
//! dispositions, thread-specific-data key destructors, POSIX timers, exit and fork handlers, and
//! an `exit` that never returns. Each case (sample-modules/c/handoff.c, and the Rust `broken`
//! module's thread modes) is unloaded in a child process, which must exit normally; the outcome
//! and its reason are asserted. Where the host's answer is what prevents a crash, the same
//! scenario with the host's watch turned off (`foreign_code_checks_for_testing(false)`) is the
//! control, and must die of SIGSEGV.

use module_loader::inspect::Handoff;
use module_loader::{Host, UnloadMode, UnloadOutcome, UnloadReport};
use rcumod_tests::modules::{
    c_module_from_source, child_passes, handoff_module, is_child, run_child, rust_module,
};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

fn host(checks: bool) -> Host {
    Host::builder()
        .foreign_code_checks_for_testing(checks)
        .build()
        .unwrap()
}

fn load(host: &Host, so: &Path, params: &[(&str, &str)]) -> String {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    host.load(so, &params).unwrap().name
}

fn unload(host: &Host, name: &str) -> UnloadReport {
    let r = host.unload(name, UnloadMode::Normal).unwrap();
    println!("outcome: {}", r.outcome);
    println!("undone: {:?}", r.libc_undone);
    r
}

/// Load the `handoff` fixture built for `case` on a watching host, unload it, and return why it
/// is pinned.
fn pinned_case(case: &str) -> String {
    let host = host(true);
    let name = load(&host, &handoff_module(case), &[]);
    pinned_reason(&unload(&host, &name)).to_owned()
}

/// Unload `name`, which must end `Unloaded`; with the watch on, the report must list an undone
/// item containing `undone`.
fn unload_undoing(host: &Host, name: &str, checks: bool, undone: &str) {
    let r = unload(host, name);
    assert_eq!(r.outcome, UnloadOutcome::Unloaded);
    if checks {
        assert!(
            r.libc_undone.iter().any(|u| u.contains(undone)),
            "{undone}: {:?}",
            r.libc_undone
        );
    }
}

fn pinned_reason(r: &UnloadReport) -> &str {
    match &r.outcome {
        UnloadOutcome::Pinned { reason } => reason,
        UnloadOutcome::Unloaded => panic!("expected Pinned, got Unloaded"),
    }
}

/// The control's end: the child must have died of SIGSEGV (its output is shown otherwise).
#[track_caller]
fn crashed(test: &str, scenario: &str) {
    let (st, out) = run_child(test, scenario, CHILD_TIMEOUT);
    assert_eq!(
        st.signal(),
        Some(libc::SIGSEGV),
        "the control must crash: status {st:?}\n{out}"
    );
}

/// A case with its control: as the child `scenario`, run `case(true)` (the host's watch on);
/// as `<scenario>_control`, `case(false)`; as the parent, the first must exit normally and the
/// second die of SIGSEGV. Returns the first child's output to the parent.
#[track_caller]
fn case_and_control(test: &str, scenario: &str, case: &dyn Fn(bool)) -> Option<String> {
    let control = format!("{scenario}_control");
    if is_child(scenario) {
        case(true);
        return None;
    }
    if is_child(&control) {
        case(false);
        return None;
    }
    if std::env::var_os(rcumod_tests::modules::CHILD_ENV).is_some() {
        return None; // another scenario's child
    }
    let out = child_passes(test, scenario, CHILD_TIMEOUT, "child survived");
    crashed(test, &control);
    Some(out)
}

/// A thread of the module's own keeps posting, and once refused, sleeps and retries. With the
/// watch on, the unload is Pinned naming the thread; without it, the module is unmapped under the
/// thread.
fn own_thread(so: &Path, params: &[(&str, &str)], thread: &str, checks: bool) {
    let rust = !params.is_empty();
    let host = host(checks);
    let name = load(&host, so, params);
    std::thread::sleep(Duration::from_millis(20));
    let r = unload(&host, &name);
    if checks {
        let reason = pinned_reason(&r);
        assert!(
            reason.contains("started by module code is still running"),
            "{reason}"
        );
        assert!(reason.contains(thread), "the thread is named: {reason}");
        assert!(host.list().iter().any(|m| m.name == name), "kept as pinned");
    } else if rust {
        // A Rust std thread registers thread-local destructors of its std (in the module), and
        // glibc does not unmap an object with destructors outstanding: the control is pinned
        // by glibc's rule, which names no thread and would not hold for a C thread.
        let reason = pinned_reason(&r);
        assert!(reason.contains("dl_iterate_phdr"), "{reason}");
        assert!(!reason.contains(thread), "{reason}");
    } else {
        assert_eq!(r.outcome, UnloadOutcome::Unloaded, "the control unmaps");
    }
    // The thread wakes from its sleep and returns into the module's code.
    std::thread::sleep(Duration::from_millis(100));
    println!("child survived");
}

#[test]
fn c_thread_pins_and_its_control_crashes() {
    case_and_control(
        "c_thread_pins_and_its_control_crashes",
        "c_thread",
        &|checks| own_thread(&handoff_module("thread"), &[], "handoff-loop", checks),
    );
}

/// The Rust control does not crash: glibc itself keeps the module (see `own_thread`).
#[test]
fn rust_std_thread_pins_and_its_control_is_pinned_by_glibc() {
    let so = || rust_module("broken");
    if is_child("rust_thread") {
        return own_thread(&so(), &[("mode", "std_thread")], "broken-spin", true);
    }
    if is_child("rust_thread_control") {
        return own_thread(&so(), &[("mode", "std_thread")], "broken-spin", false);
    }
    let test = "rust_std_thread_pins_and_its_control_is_pinned_by_glibc";
    child_passes(test, "rust_thread", CHILD_TIMEOUT, "child survived");
    child_passes(test, "rust_thread_control", CHILD_TIMEOUT, "child survived");
}

/// A module that stops and joins its own thread in `exit` unloads normally (C and Rust).
#[test]
fn joined_threads_unload() {
    if is_child("joined") {
        let host = host(true);
        for (so, params) in [
            (handoff_module("thread_joined"), vec![]),
            (rust_module("broken"), vec![("mode", "std_thread_joined")]),
        ] {
            let name = load(&host, &so, &params);
            std::thread::sleep(Duration::from_millis(20));
            let r = unload(&host, &name);
            assert_eq!(r.outcome, UnloadOutcome::Unloaded, "{name}");
        }
        println!("child survived");
        return;
    }
    child_passes(
        "joined_threads_unload",
        "joined",
        CHILD_TIMEOUT,
        "child survived",
    );
}

/// A thread started by a constructor, before the host could interpose anything: only the scan
/// of every thread's program counter and stack finds it.
#[test]
fn constructor_thread_is_found_by_the_stack_scan() {
    if is_child("ctor_thread") {
        let reason = pinned_case("ctor_thread");
        assert!(
            reason.contains("module code on its stack") || reason.contains("executing module code"),
            "{reason}"
        );
        assert!(
            reason.contains("handoff_ctor_thread+0x"),
            "an address in the module: {reason}"
        );
        println!("child survived");
        return;
    }
    child_passes(
        "constructor_thread_is_found_by_the_stack_scan",
        "ctor_thread",
        CHILD_TIMEOUT,
        "child survived",
    );
}

static APP_SIGNALS: AtomicU32 = AtomicU32::new(0);
extern "C" fn app_handler(_: libc::c_int) {
    APP_SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// The application handles SIGUSR2; the module installs its own handler over it. Unloading
/// gives the application's back; without the watch, the next SIGUSR2 jumps into unmapped code.
fn signal(checks: bool) {
    // SAFETY: installing a handler of this test's, which only counts.
    unsafe {
        libc::signal(
            libc::SIGUSR2,
            app_handler as *const () as libc::sighandler_t,
        )
    };
    let host = host(checks);
    let name = load(&host, &handoff_module("signal"), &[]);
    unload_undoing(
        &host,
        &name,
        checks,
        "signal 12 (User defined signal 2) disposition restored",
    );
    // SAFETY: raising a signal whose handler is this test's again (or, in the control, not).
    unsafe { libc::raise(libc::SIGUSR2) };
    assert_eq!(
        APP_SIGNALS.load(Ordering::Relaxed),
        1,
        "the application's handler ran"
    );
    println!("child survived");
}

#[test]
fn signal_disposition_is_restored_and_its_control_crashes() {
    case_and_control(
        "signal_disposition_is_restored_and_its_control_crashes",
        "signal",
        &signal,
    );
}

/// A handler installed by a constructor: the host never saw what it replaced, so it cannot
/// restore it; the kernel's word (the disposition points into the module) pins the module.
#[test]
fn constructor_signal_handler_pins() {
    if is_child("ctor_signal") {
        let reason = pinned_case("ctor_signal");
        assert!(reason.contains("signal 12 "), "{reason}");
        assert!(reason.contains("has its handler in the module"), "{reason}");
        println!("child survived");
        return;
    }
    child_passes(
        "constructor_signal_handler_pins",
        "ctor_signal",
        CHILD_TIMEOUT,
        "child survived",
    );
}

/// A thread holds a value for the module's key while the module unloads, then exits: glibc
/// would call the key's destructor, in the module. The host deletes the key at unload, whether
/// the module created it in `init` (interposed) or in a constructor (found in glibc's key table).
fn key(case: &str, checks: bool) {
    let host = host(checks);
    let name = load(&host, &handoff_module(case), &[]);
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (set_tx, set_rx) = std::sync::mpsc::channel::<()>();
    let hooks = &host;
    std::thread::scope(|s| {
        s.spawn(move || {
            hooks.call_hook("handoff.set", 2).expect("hook");
            set_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            // Exits holding the value: glibc runs the key's destructor now.
        });
        set_rx.recv().unwrap();
        unload_undoing(
            &host,
            &name,
            checks,
            "1 thread-specific-data key(s) deleted",
        );
        go_tx.send(()).unwrap();
    });
    println!("child survived");
}

#[test]
fn key_destructors_are_deleted_and_their_control_crashes() {
    let test = "key_destructors_are_deleted_and_their_control_crashes";
    for case in ["key", "ctor_key"] {
        if let Some(out) = case_and_control(test, case, &|checks| key(case, checks)) {
            assert!(
                !out.contains("key destructor ran"),
                "deleted, never run: {out}"
            );
        }
    }
}

/// A POSIX timer whose SIGEV_THREAD function is the module's, left running: deleted at unload.
fn timer(checks: bool) {
    let host = host(checks);
    let name = load(&host, &handoff_module("timer"), &[]);
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        host.call_hook("handoff.ticks", 0).unwrap() > 0,
        "the timer fired"
    );
    unload_undoing(&host, &name, checks, "1 POSIX timer(s) deleted");
    std::thread::sleep(Duration::from_millis(100));
    println!("child survived");
}

#[test]
fn timers_are_deleted_and_their_control_crashes() {
    case_and_control(
        "timers_are_deleted_and_their_control_crashes",
        "timer",
        &timer,
    );
}

/// `atexit` in a shared object registers with the module's handle: glibc runs it at dlclose.
/// `on_exit` has no handle: the host holds it and runs it at unload; without the host it would
/// run at process exit, in unmapped code. A `pthread_atfork` handler glibc unregisters at dlclose.
fn exit_handlers(checks: bool) {
    let host = host(checks);
    let name = load(&host, &handoff_module("atexit"), &[]);
    let r = unload(&host, &name);
    assert_eq!(r.outcome, UnloadOutcome::Unloaded);
    println!("after unload");
    // SAFETY: fork in a test child; the forked process only exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: leaving the forked child at once, without running exit handlers.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "fork after unload: {status:#x}");
    println!("child survived");
}

#[test]
fn exit_handlers_run_at_unload_and_their_control_crashes() {
    if is_child("atexit") {
        return exit_handlers(true);
    }
    if is_child("atexit_control") {
        return exit_handlers(false);
    }
    let test = "exit_handlers_run_at_unload_and_their_control_crashes";
    let out = child_passes(test, "atexit", CHILD_TIMEOUT, "child survived");
    let at = |s: &str| out.find(s).unwrap_or_else(|| panic!("{s} missing:\n{out}"));
    assert!(at("atexit handler ran") < at("after unload"), "{out}");
    assert!(at("on_exit handler ran") < at("after unload"), "{out}");
    crashed(test, "atexit_control");
}

/// An `exit` that blocks for 60 s: past the deadline the unload answers Pinned instead of
/// blocking its caller, and the host goes on loading, calling and unloading other modules.
#[test]
fn a_blocked_exit_is_pinned_at_the_deadline() {
    if is_child("slow_exit") {
        let host = Host::builder()
            .exit_deadline(Duration::from_millis(1500))
            .build()
            .unwrap();
        let name = load(&host, &handoff_module("slow_exit"), &[]);
        let r = unload(&host, &name);
        assert_eq!(
            pinned_reason(&r),
            "exit did not return within 1.5s",
            "{:?}",
            r.outcome
        );
        let other = load(&host, &handoff_module("thread_joined"), &[]);
        assert!(
            host.call_hook("handoff.ticks", 0).is_some(),
            "hooks still work"
        );
        assert_eq!(unload(&host, &other).outcome, UnloadOutcome::Unloaded);
        println!("child survived");
        return;
    }
    child_passes(
        "a_blocked_exit_is_pinned_at_the_deadline",
        "slow_exit",
        CHILD_TIMEOUT,
        "child survived",
    );
}

/// Inspection names each risky import before anything is loaded.
#[test]
fn inspection_lists_the_handoff_imports() {
    let host = Host::new().unwrap();
    for (case, what, symbol) in [
        ("thread", Handoff::Thread, "pthread_create"),
        ("signal", Handoff::Signal, "sigaction"),
        ("key", Handoff::TlsKey, "pthread_key_create"),
        ("timer", Handoff::Timer, "timer_create"),
        // In a shared object `atexit` and `pthread_atfork` are libc_nonshared.a stubs, which
        // pass the object's handle on to these.
        ("atexit", Handoff::ExitHandler, "__cxa_atexit"),
        ("atexit", Handoff::ExitHandler, "on_exit"),
        ("atexit", Handoff::ForkHandler, "__register_atfork"),
    ] {
        let i = host.inspect(&handoff_module(case)).unwrap();
        assert!(
            i.handoffs
                .iter()
                .any(|h| h.what == what && h.symbol == symbol),
            "{case}: {:?}",
            i.handoffs
        );
    }
    let quiet = host.inspect(&handoff_module("slow_exit")).unwrap();
    assert!(
        !quiet
            .handoffs
            .iter()
            .any(|h| h.what == Handoff::Signal || h.what == Handoff::Timer),
        "{:?}",
        quiet.handoffs
    );
    let rust = host.inspect(&rust_module("broken")).unwrap();
    assert!(
        rust.handoffs.iter().any(|h| h.what == Handoff::Thread),
        "{:?}",
        rust.handoffs
    );
}

/// A module whose hook goes 16 KiB deep in module code before it returns: deeper than what the
/// host runs after it (leaving the read section), so the return addresses of its calls stay on
/// the calling thread's stack below the frames that follow.
const DEEP_HOOK: &str = r#"#include "rcumod.h"
#include <unistd.h>
static __attribute__((noinline)) uint64_t down(int n, uint64_t a) {
    volatile char pad[2048];
    pad[0] = (char)n;
    if (n == 0)
        return (uint64_t)getpid() + a;
    return down(n - 1, a) + (uint64_t)pad[0];
}
static uint64_t deep(void *d, uint64_t a) { (void)d; return down(8, a); }
static int i(const struct rcumod_host_api *api, struct rcumod_ctx *c) {
    return api->hook_publish(c, "deep_hook.deep", deep, 0);
}
static void e(const struct rcumod_host_api *a, struct rcumod_ctx *c) { (void)a; (void)c; }
RCUMOD_MODINFO("name=deep_hook\0license=MIT\0");
RCUMOD_MODULE("deep_hook", i, e);
"#;

#[inline(never)]
fn call_the_hook(host: &Host) -> u64 {
    (0..10)
        .map(|a| std::hint::black_box(host.call_hook("deep_hook.deep", a)).unwrap())
        .sum()
}

/// Hold a frame over the stack the hook calls used, uninitialised (so their return addresses
/// stay in it), until told to go: blocked in a system call, or spinning in user space.
#[inline(never)]
fn hold_stale_frame(parked: &Sender<()>, go: &AtomicBool, spin: bool) {
    let mut frame = std::mem::MaybeUninit::<[usize; 8192]>::uninit();
    std::hint::black_box(&mut frame);
    parked.send(()).unwrap();
    while !go.load(Ordering::Acquire) {
        if spin {
            std::hint::spin_loop();
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    std::hint::black_box(&mut frame);
}

/// An application thread started after the load calls the module's hook, returns, and then
/// holds a frame whose uninitialised slots still carry the return addresses of the module's
/// own calls: nothing of the module runs on it any more. The stack walk sees that, and the
/// unload ends `Unloaded`; the control reads stacks conservatively only, and the stale words
/// pin the module.
fn stale_return_addresses(walk: bool, spin: bool) -> UnloadReport {
    let host = Host::builder()
        .stack_walk_for_testing(walk)
        .build()
        .unwrap();
    let so = c_module_from_source("deep_hook", DEEP_HOOK, &[]);
    let name = load(&host, &so, &[]);
    let go = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            call_the_hook(&host);
            hold_stale_frame(&tx, &go, spin);
        });
        rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let r = unload(&host, &name);
        go.store(true, Ordering::Release);
        r
    })
}

#[test]
fn stale_return_addresses_do_not_pin() {
    const SCENARIOS: [(&str, bool, bool); 4] = [
        ("stale_blocked", true, false),
        ("stale_running", true, true),
        ("stale_blocked_control", false, false),
        ("stale_running_control", false, true),
    ];
    for (scenario, walk, spin) in SCENARIOS {
        if is_child(scenario) {
            let r = stale_return_addresses(walk, spin);
            if walk {
                assert_eq!(r.outcome, UnloadOutcome::Unloaded);
            } else {
                let reason = pinned_reason(&r);
                assert!(reason.contains("deep_hook+0x"), "{reason}");
            }
            println!("child survived");
            return;
        }
    }
    if std::env::var_os(rcumod_tests::modules::CHILD_ENV).is_some() {
        return;
    }
    for (scenario, ..) in SCENARIOS {
        child_passes(
            "stale_return_addresses_do_not_pin",
            scenario,
            CHILD_TIMEOUT,
            "child survived",
        );
    }
}
