//! Loading and unloading the sample modules (Rust through the SDK, and C) while reader threads
//! call their hooks: every unload must follow the protocol and end `Unloaded` (verified unmapped),
//! readers must never crash or see a half-swapped hook table, and callbacks must balance.

use module_loader::{Host, HostEvent, ModuleState, Step, UnloadMode, UnloadOutcome};
use rcumod_tests::modules::{c_module, rust_module};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Reader threads calling `hook` until stopped; returns (calls, hits).
fn readers(
    host: &Arc<Host>,
    hook: &'static str,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(u64, u64)>> {
    (0..n)
        .map(|_| {
            let (host, stop) = (Arc::clone(host), Arc::clone(stop));
            std::thread::spawn(move || {
                let (mut calls, mut hits) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    calls += 1;
                    if host.call_hook(hook, 0).is_some() {
                        hits += 1;
                    }
                }
                (calls, hits)
            })
        })
        .collect()
}

fn cycle(
    host: &Arc<Host>,
    path: &std::path::Path,
    name: &str,
    hook: &'static str,
    mode: UnloadMode,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let rs = readers(host, hook, 2, &stop);
    let info = host
        .load(path, &params(&[("count", "64"), ("period_us", "50")]))
        .expect("load");
    assert_eq!(info.state, ModuleState::Live);
    assert_eq!(info.name, name);
    std::thread::sleep(Duration::from_millis(100));
    let sum = host.call_hook(hook, 0).expect("hook published once live");
    assert!(sum > 0);
    let report = host.unload(name, mode).expect("unload");
    stop.store(true, Ordering::Relaxed);
    let hits: u64 = rs.into_iter().map(|r| r.join().unwrap().1).sum();
    assert!(hits > 0, "readers reached the module's hook");
    assert_eq!(report.outcome, UnloadOutcome::Unloaded, "{report:#?}");
    assert_eq!(report.callbacks.pending(), 0);
    assert!(report.callbacks.posted > 0, "the module posted callbacks");
    assert_eq!(report.callbacks.late, 0);
    assert_eq!(report.callbacks.refused_after_stop, 0);
    assert!(report.barrier_rounds >= 1);
    assert_eq!(
        report.steps.iter().map(|s| s.step).collect::<Vec<_>>(),
        [
            Step::Unpublish,
            Step::StopPosting,
            Step::Barrier,
            Step::Verify,
            Step::Close
        ]
    );
    assert!(host.call_hook(hook, 0).is_none(), "hook withdrawn");
    assert!(host.info(name).is_none(), "module gone from the table");
    // (How many expedited rounds ran depends on whether the worker had already drained the
    // queues; loader_expedited.rs holds a reader to make that deterministic.)
    assert_eq!(report.expedite.is_some(), mode == UnloadMode::Expedited);
}

#[test]
fn rust_sample_loads_and_unloads_under_readers() {
    let host = Arc::new(Host::new().unwrap());
    let so = rust_module("rcu_list");
    for mode in [
        UnloadMode::Normal,
        UnloadMode::Expedited,
        UnloadMode::Normal,
    ] {
        cycle(&host, &so, "rcu_list", "rcu_list.sum", mode);
    }
}

#[test]
fn c_sample_loads_and_unloads_under_readers() {
    let host = Arc::new(Host::new().unwrap());
    let so = c_module("c_list", &[]);
    for mode in [UnloadMode::Normal, UnloadMode::Expedited] {
        cycle(&host, &so, "c_list", "c_list.sum", mode);
    }
}

#[test]
fn lsmod_params_events_and_dependencies() {
    let host = Host::new().unwrap();
    let events = host.subscribe();
    let so = rust_module("rcu_list");
    // Slow churn: the length read below is not taken between an unlink and the next link.
    host.load(&so, &params(&[("count", "5"), ("period_us", "10000000")]))
        .unwrap();
    let m = host.info("rcu_list").unwrap();
    assert_eq!(m.params.get("count").map(String::as_str), Some("5"));
    assert!(m.size > 0);
    assert_eq!(m.version.as_deref(), Some("1.0"));
    assert_eq!(host.call_hook("rcu_list.len", 0), Some(5));
    assert!(matches!(
        events.recv_timeout(Duration::from_secs(1)),
        Ok(HostEvent::Loaded { .. })
    ));

    // A module that depends on rcu_list (C, built with depends=rcu_list).
    let dep = rcumod_tests::modules::c_module_from_source(
        "needs_list",
        r#"#include "rcumod.h"
static int i(const struct rcumod_host_api *a, struct rcumod_ctx *c) { (void)a; (void)c; return 0; }
static void e(const struct rcumod_host_api *a, struct rcumod_ctx *c) { (void)a; (void)c; }
RCUMOD_MODINFO("name=needs_list\0license=MIT\0depends=rcu_list\0");
RCUMOD_MODULE("needs_list", i, e);
"#,
        &[],
    );
    host.load(&dep, &[]).unwrap();
    assert_eq!(host.info("rcu_list").unwrap().used_by, ["needs_list"]);
    let e = host.unload("rcu_list", UnloadMode::Normal).unwrap_err();
    assert_eq!(
        e.to_string(),
        "ERROR: Module rcu_list is in use by: needs_list"
    );
    host.unload("needs_list", UnloadMode::Normal).unwrap();
    host.unload("rcu_list", UnloadMode::Normal).unwrap();
    // And without its dependency it cannot load.
    let e = host.load(&dep, &[]).unwrap_err();
    assert!(
        e.to_string().contains("module rcu_list is not loaded"),
        "{e}"
    );
}

#[test]
fn hot_reload_swaps_hooks_without_blocking_readers() {
    let host = Arc::new(Host::new().unwrap());
    let so = rust_module("rcu_list");
    host.load(&so, &params(&[("count", "10"), ("period_us", "1000000")]))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let misses = Arc::new(AtomicU64::new(0));
    let rs: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop, misses) = (host.clone(), stop.clone(), misses.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // During a reload the hook is always present: old or new, never neither.
                    if host.call_hook("rcu_list.len", 0).is_none() {
                        misses.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for n in [20u64, 30, 40] {
        let (new, old) = host
            .reload(
                "rcu_list",
                &so,
                &params(&[("count", &n.to_string()), ("period_us", "1000000")]),
                UnloadMode::Expedited,
            )
            .unwrap();
        assert_eq!(new.state, ModuleState::Live);
        assert_eq!(old.outcome, UnloadOutcome::Unloaded, "{old:#?}");
        assert_eq!(host.call_hook("rcu_list.len", 0), Some(n));
    }
    stop.store(true, Ordering::Relaxed);
    for r in rs {
        r.join().unwrap();
    }
    assert_eq!(
        misses.load(Ordering::Relaxed),
        0,
        "a reader found no hook during a reload"
    );
    assert_eq!(host.list().len(), 1);
}

/// A module that walks its list under the host's qsbr domain (c_list with `domain=1`), called
/// from plain reader threads: the host brings those threads online only for the module's
/// sections, so the qsbr domain's grace periods (and the unload's barrier on it) still finish,
/// and nodes freed through that domain are never freed under a walker.
#[test]
fn module_sections_on_the_qsbr_domain_do_not_hold_it_up() {
    let host = Arc::new(Host::new().unwrap());
    let so = c_module("c_list", &[]);
    host.load(&so, &params(&[("period_us", "50"), ("domain", "1")]))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rs = readers(&host, "c_list.sum", 2, &stop);
    std::thread::sleep(Duration::from_millis(200));
    let qsbr = host.domain(1).unwrap();
    // A grace period completes (it never would if a hook caller had stayed online).
    let state = qsbr.start_poll();
    let t0 = std::time::Instant::now();
    while !qsbr.poll(state) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "a qsbr grace period is held up"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // A thread that is online in the qsbr domain on its own account stays online after a
    // module's section on it (only threads the host brought online are taken offline).
    qsbr.register_thread();
    assert!(qsbr.is_registered_online());
    assert!(host.call_hook("c_list.sum", 0).is_some());
    assert!(
        qsbr.is_registered_online(),
        "a module section took the caller offline"
    );
    qsbr.thread_offline();
    let r = host.unload("c_list", UnloadMode::Normal).unwrap();
    stop.store(true, Ordering::Relaxed);
    for r in rs {
        assert!(r.join().unwrap().1 > 0);
    }
    assert_eq!(r.outcome, UnloadOutcome::Unloaded);
    assert_eq!(r.callbacks.pending(), 0);
}

/// glibc matches loaded objects by name and by file identity, so a module file rewritten in
/// place (same path, same inode) must still load as new code: while the old version is live (a
/// reload) and after it is gone. Both ways the host loads: from in-memory files (reused after a
/// verified unload) and from copies in the work directory (the fallback without `memfd_create`),
/// which leaves nothing behind.
#[test]
fn a_file_rewritten_in_place_loads_as_new_code() {
    let (v1, v2) = (rust_module("greeter_v1"), rust_module("greeter_v2"));
    for copies in [false, true] {
        let work = rcumod_tests::modules::scratch_dir().join(format!("work-{copies}"));
        let host = Host::builder()
            .work_dir(&work)
            .work_dir_copies_for_testing(copies)
            .build()
            .unwrap();
        let path = rcumod_tests::modules::scratch_dir().join(format!("greeter-{copies}.so"));
        let version = || host.call_hook("greeter.version", 0);
        std::fs::copy(&v1, &path).unwrap();
        host.load(&path, &[]).unwrap();
        assert_eq!(version(), Some(1));
        std::fs::copy(&v2, &path).unwrap(); // truncates and rewrites the same inode
        let (_, old) = host
            .reload("greeter", &path, &[], UnloadMode::Expedited)
            .unwrap();
        assert_eq!(old.outcome, UnloadOutcome::Unloaded, "{old:#?}");
        assert_eq!(version(), Some(2), "copies: {copies}");
        let r = host.unload("greeter", UnloadMode::Expedited).unwrap();
        assert_eq!(r.outcome, UnloadOutcome::Unloaded, "{r:#?}");
        std::fs::copy(&v1, &path).unwrap();
        host.load(&path, &[]).unwrap();
        assert_eq!(version(), Some(1), "copies: {copies}");
        let r = host.unload("greeter", UnloadMode::Normal).unwrap();
        assert_eq!(r.outcome, UnloadOutcome::Unloaded, "{r:#?}");
        let left: Vec<_> = std::fs::read_dir(&work)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in the work directory: {left:?}");
        assert_eq!(
            std::fs::read_dir(&work).is_ok(),
            copies,
            "the work directory is made only when needed"
        );
    }
}
