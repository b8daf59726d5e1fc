//! Every sample module loads, does what it is for while reader threads call its hooks, and
//! unloads cleanly — alternately normal and expedited — with nothing pending, nothing late and
//! nothing refused. Hot reload of `greeter` v1 ↔ v2 never leaves callers without a greeter.

use module_loader::{Host, UnloadMode, UnloadOutcome};
use rcumod_tests::modules::{c_module, rust_module};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn p(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

/// Readers that call every published hook; registered with the process domain so that signal
/// hooks (profiler) can run on them.
fn start_readers(host: &Arc<Host>, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<u64>> {
    (0..2)
        .map(|_| {
            let (host, stop) = (host.clone(), stop.clone());
            std::thread::spawn(move || {
                rcu_core::Rcu::global().register_thread();
                let mut calls = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for (h, _) in host.hooks() {
                        host.call_hook(&h, 3);
                        calls += 1;
                    }
                }
                calls
            })
        })
        .collect()
}

/// Wait up to 5 s for `hook` to satisfy `ok`.
fn eventually(host: &Host, hook: &str, ok: impl Fn(u64) -> bool) {
    let t0 = Instant::now();
    loop {
        if host.call_hook(hook, 0).is_some_and(&ok) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{hook} never got there"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A module file, its load parameters, its name, and a hook whose value moves while it works.
type Case = (
    std::path::PathBuf,
    Vec<(String, String)>,
    &'static str,
    &'static str,
);

#[test]
fn every_sample_module_loads_works_and_unloads_cleanly() {
    let host = Arc::new(Host::new().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let readers = start_readers(&host, &stop);
    let cases: Vec<Case> = vec![
        (
            rust_module("rcu_list"),
            vec![p("period_us", "100")],
            "rcu_list",
            "rcu_list.sum",
        ),
        (
            rust_module("torture"),
            vec![p("chains", "4"), p("flood", "20000")],
            "torture",
            "torture.count",
        ),
        (
            rust_module("timer_poster"),
            vec![p("period_us", "200")],
            "timer_poster",
            "timer_poster.freed",
        ),
        (
            rust_module("srcu_user"),
            vec![p("period_us", "300")],
            "srcu_user",
            "srcu_user.version",
        ),
        (
            rust_module("greeter_v1"),
            vec![],
            "greeter",
            "greeter.version",
        ),
        (
            rust_module("profiler"),
            vec![p("period_us", "500"), p("swap_ms", "5")],
            "profiler",
            "profiler.ticks",
        ),
        (
            c_module("c_list", &[]),
            vec![p("period_us", "100")],
            "c_list",
            "c_list.sum",
        ),
    ];
    for (i, (path, params, name, hook)) in cases.iter().enumerate() {
        host.load(path, params)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // Each module shows it is working: its counter moves.
        let first = {
            eventually(&host, hook, |v| v > 0);
            host.call_hook(hook, 0).unwrap()
        };
        if *name != "greeter" {
            eventually(&host, hook, |v| v != first);
        }
        let mode = if i % 2 == 0 {
            UnloadMode::Normal
        } else {
            UnloadMode::Expedited
        };
        let r = host.unload(name, mode).unwrap();
        assert_eq!(r.outcome, UnloadOutcome::Unloaded, "{name}: {r:#?}");
        assert_eq!(r.callbacks.pending(), 0, "{name}");
        assert_eq!(r.callbacks.late, 0, "{name}");
        assert_eq!(
            r.callbacks.refused_after_stop, 0,
            "{name}: a module posted after stop"
        );
        assert!(r.callbacks.posted > 0, "{name} posted callbacks");
        if *name == "srcu_user" {
            assert_eq!(
                r.srcu_destroyed, 1,
                "the module's SRCU domain was barriered and destroyed"
            );
            assert!(r.domains_barriered >= 1);
        }
        if *name == "profiler" {
            assert!(
                r.hooks_unpublished >= 4,
                "signal hook withdrawn with the others: {r:#?}"
            );
        }
        if *name == "torture" {
            // The chains stopped at their stop flag; the barrier rounds drained them.
            assert!(r.callbacks.posted >= 20_000);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let calls: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(calls > 0);
    assert!(host.list().is_empty());
    let (signal_calls, _missed) = module_loader::signal_stats();
    assert!(signal_calls > 0, "the profiler's signal hook ran");
}

#[test]
fn greeter_hot_reload_v1_v2() {
    let host = Arc::new(Host::new().unwrap());
    let (v1, v2) = (rust_module("greeter_v1"), rust_module("greeter_v2"));
    host.load(&v1, &[]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let checkers: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop) = (host.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = [0u64; 3];
                while !stop.load(Ordering::Relaxed) {
                    let v = host
                        .call_hook("greeter.version", 0)
                        .expect("a greeter is always there");
                    let g = host
                        .call_hook("greeter.greet", 7)
                        .expect("a greeter is always there");
                    assert!(v == 1 || v == 2);
                    assert!(g == 71 || g == 72, "greet from a real version: {g}");
                    seen[v as usize] += 1;
                }
                seen
            })
        })
        .collect();
    for round in 0..6 {
        let (file, want) = if round % 2 == 0 { (&v2, 2) } else { (&v1, 1) };
        let (_, old) = host
            .reload("greeter", file, &[], UnloadMode::Normal)
            .unwrap();
        assert_eq!(old.outcome, UnloadOutcome::Unloaded);
        assert_eq!(host.call_hook("greeter.version", 0), Some(want));
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for c in checkers {
        let seen = c.join().unwrap();
        assert!(
            seen[1] > 0 && seen[2] > 0,
            "callers saw both versions: {seen:?}"
        );
    }
}

/// A hook resolved once (`Host::hook`) is called by readers on other threads while `greeter`
/// is hot-reloaded v1 → v2 → v1: every call reaches a real version, both are seen, and after the
/// unload the handle answers `None` instead of calling into the unmapped module.
#[test]
fn a_resolved_hook_follows_reload_and_is_gone_after_unload() {
    let host = Host::new().unwrap();
    let (v1, v2) = (rust_module("greeter_v1"), rust_module("greeter_v2"));
    host.load(&v1, &[]).unwrap();
    assert!(host.hook("greeter.nonesuch").is_none());
    let greet = host.hook("greeter.greet").expect("published");
    assert_eq!(greet.name(), "greeter.greet");
    assert_eq!(greet.call(7), Some(71));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (greet, stop) = (greet.clone(), &stop);
                s.spawn(move || {
                    let mut seen = [0u64; 2];
                    while !stop.load(Ordering::Relaxed) {
                        match greet.call(7).expect("a greeter is always there") {
                            71 => seen[0] += 1,
                            72 => seen[1] += 1,
                            g => panic!("greet from a real version: {g}"),
                        }
                    }
                    seen
                })
            })
            .collect();
        for file in [&v2, &v1, &v2] {
            let (_, old) = host
                .reload("greeter", file, &[], UnloadMode::Normal)
                .unwrap();
            assert_eq!(old.outcome, UnloadOutcome::Unloaded);
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            let seen = r.join().unwrap();
            assert!(
                seen[0] > 0 && seen[1] > 0,
                "callers saw both versions: {seen:?}"
            );
        }
    });
    assert_eq!(
        greet.call(7),
        Some(72),
        "the handle follows the last reload"
    );
    let r = host.unload("greeter", UnloadMode::Normal).unwrap();
    assert_eq!(r.outcome, UnloadOutcome::Unloaded);
    assert_eq!(greet.call(7), None, "gone after unload");
    host.load(&v1, &[]).unwrap();
    assert_eq!(
        greet.call(7),
        Some(71),
        "and back once a module publishes it again"
    );
}
