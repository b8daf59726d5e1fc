//! The expedited unload (patent US9262234) where a normal unload could not finish:
//!
//! * the module's callbacks are queued on the host's qsbr domain;
//! * a reader thread of that domain, at nice 19 and pinned with two busy nice-0 threads to one
//!   CPU (the preemptible case: a reader preempted inside its section), does CPU work inside a
//!   read section, then stays online without ever announcing a quiescent state.
//!
//! A normal barrier would wait for that quiescent state forever. The expedited unload boosts the
//! preempted reader (so its section ends in milliseconds instead of seconds), forces its
//! quiescent state with a signal once it is out of the section, invokes the ready callbacks
//! itself, and reports each of these.

use module_loader::{Host, UnloadMode, UnloadOutcome};
use rcumod_tests::modules::c_module;
use rcumod_tests::sched::{pin_to, set_nice, thread_cpu};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn expedited_unload_boosts_forces_and_invokes() {
    let two_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    let host = Arc::new(Host::new().unwrap());
    let so = c_module("c_list", &[]);
    host.load(
        &so,
        &[
            ("period_us".into(), "50".into()),
            ("domain".into(), "1".into()),
        ],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));

    let stop = Arc::new(AtomicBool::new(false));
    let in_section = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                pin_to(0);
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let reader = {
        let (host, stop, in_section) = (host.clone(), stop.clone(), in_section.clone());
        std::thread::spawn(move || {
            pin_to(0);
            set_nice(19);
            let rcu = host.domain(1).unwrap();
            {
                let _g = rcu.read_lock();
                in_section.store(true, Ordering::SeqCst);
                // About 20 ms of CPU work: seconds at nice 19 against two busy threads.
                let t = Instant::now();
                let mut x = 0u64;
                let mut cpu = Duration::ZERO;
                while cpu < Duration::from_millis(20) && t.elapsed() < Duration::from_secs(20) {
                    for i in 0..10_000u64 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                    }
                    std::hint::black_box(x);
                    cpu = thread_cpu();
                }
            }
            in_section.store(false, Ordering::SeqCst);
            // Online, out of any section, never announcing a quiescent state.
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            rcu.thread_offline();
        })
    };
    while !in_section.load(Ordering::SeqCst) {
        std::hint::spin_loop();
    }
    if two_cpus {
        pin_to(1);
    }
    let t0 = Instant::now();
    let report = host.unload("c_list", UnloadMode::Expedited).unwrap();
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    for b in busy {
        b.join().unwrap();
    }
    println!("expedited unload took {took:?}: {:#?}", report.expedite);
    assert_eq!(report.outcome, UnloadOutcome::Unloaded, "{report:#?}");
    assert_eq!(report.callbacks.pending(), 0);
    let e = report.expedite.expect("expedited summary");
    assert!(e.grace_periods >= 1 && e.rounds >= 1, "{e:?}");
    assert!(
        e.threads_forced >= 1,
        "the online qsbr reader had to be forced: {e:?}"
    );
    assert!(
        e.callbacks_inline >= 1,
        "ready callbacks were invoked by the unloader: {e:?}"
    );
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        assert!(
            e.threads_boosted >= 1,
            "the preempted reader was boosted: {e:?}"
        );
        assert!(e.unloader_boosted, "the unloader ran boosted: {e:?}");
    } else {
        assert!(
            e.threads_boosted + e.boosts_denied >= 1,
            "a boost was attempted: {e:?}"
        );
        assert!(
            e.unloader_boosted || e.boosts_denied >= 2,
            "the unloader's own boost was attempted: {e:?}"
        );
    }
}
