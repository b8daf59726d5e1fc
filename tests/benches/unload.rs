//! Unload costs (docs/performance.md, "Module loader"):
//!
//! * `unload/flood-100k/{normal,expedited}`: unloading the `torture` module right after it
//!   posted 100,000 callbacks, while two reader threads call hooks; the time is the whole
//!   unload protocol, dominated by running the callbacks (the worker, with its batch limit and
//!   deferral, against the expedited unloader invoking them itself).
//! * `cycle/{rcumod-load+expedited-unload,raw-dlopen+dlclose}`: a full load (inspection, private
//!   copy, dlopen, init) plus expedited unload (protocol, dlclose, unmap check) of `rcu_list`,
//!   against a bare `dlopen` + `dlclose` of the same file.
//!
//! Run: `cargo bench -p rcumod-tests --bench unload`.

use criterion::{criterion_group, criterion_main, Criterion};
use module_loader::{Host, UnloadMode, UnloadOutcome};
use rcumod_tests::modules::rust_module;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn p(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

fn flood(c: &mut Criterion) {
    let host = Arc::new(Host::new().unwrap());
    let so = rust_module("torture");
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop) = (host.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(host.call_hook("torture.count", 0));
                }
            })
        })
        .collect();
    let mut g = c.benchmark_group("unload/flood-100k");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (label, mode) in [
        ("normal", UnloadMode::Normal),
        ("expedited", UnloadMode::Expedited),
    ] {
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    host.load(&so, &[p("chains", "0"), p("flood", "100000")])
                        .unwrap();
                    let t = Instant::now();
                    let r = host.unload("torture", mode).unwrap();
                    total += t.elapsed();
                    assert_eq!(r.outcome, UnloadOutcome::Unloaded);
                    assert_eq!(r.callbacks.pending(), 0);
                }
                total
            })
        });
    }
    g.finish();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
}

fn cycle(c: &mut Criterion) {
    let host = Host::new().unwrap();
    let so = rust_module("rcu_list");
    let mut g = c.benchmark_group("cycle");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("rcumod-load+expedited-unload", |b| {
        b.iter(|| {
            host.load(&so, &[p("count", "8"), p("period_us", "100000")])
                .unwrap();
            let r = host.unload("rcu_list", UnloadMode::Expedited).unwrap();
            assert_eq!(r.outcome, UnloadOutcome::Unloaded);
        })
    });
    // The bare loader on a private copy too (glibc would hand back a cached mapping otherwise).
    let copy = rcumod_tests::modules::scratch_dir().join("raw_rcu_list.so");
    std::fs::copy(&so, &copy).unwrap();
    g.bench_function("raw-dlopen+dlclose", |b| {
        b.iter(|| {
            // SAFETY: the sample module's initialisers are Rust std's, run as for any dlopen;
            // nothing of it is called.
            let lib = unsafe {
                libloading::os::unix::Library::open(Some(&copy), libc::RTLD_NOW | libc::RTLD_LOCAL)
            }
            .unwrap();
            lib.close().unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, flood, cycle);
criterion_main!(benches);
