//! Unload costs (docs/performance.md, "Module loader"):
//!
//! * `unload/flood-100k/{normal,expedited}`: unloading the `torture` module with the 100,000
//!   callbacks its init posted all pending, while two reader threads call hooks. A helper
//!   thread holds a read section of the module's domain from before the load until t0, so none
//!   can run early (as in the callbacks bench's `barrier/pending-1e6`); the time is the whole
//!   unload protocol from t0, dominated by running the callbacks (the worker, with its batch
//!   limit and deferral, against the expedited unloader invoking them itself).
//! * `unload/preempted-reader-100k/{normal,expedited}`: the same flood, but the grace period is
//!   held by the patent's preemptible case: a nice-19 reader of the module's domain runs 1 ms
//!   of CPU work per read section, pinned to CPU 0 with the two hook readers (nice 0) that
//!   preempt it. A normal unload waits for that reader's sections to end at its own pace; the
//!   expedited one boosts it (nice −10, which needs CAP_SYS_NICE: the report's counts are
//!   printed) and invokes the callbacks itself.
//! * `cycle/{greeter_v1,rcu_list}/{rcumod-load+expedited-unload,raw-dlopen+dlclose}`: a full
//!   load (dlopen, init, and reading the file into an in-memory file and inspecting it unless
//!   the host kept both from the previous cycle) plus expedited unload (protocol, dlclose,
//!   unmap check), against a bare `dlopen` + `dlclose` of the same file. `greeter_v1`'s init
//!   publishes a hook; `rcu_list`'s also starts a thread the unload joins. The module files are
//!   cargo's build outputs, untouched while the bench runs, so once they are 2 s old every load
//!   reuses what the previous one kept (how many did is printed after each row).
//!   `…/rcumod-load+expedited-unload/reuse-off` is the same cycle on a host built with
//!   `reuse_unchanged_files(false)`, which reads and inspects the file every time.
//!
//! Run: `cargo bench -p rcumod-tests --bench unload`.

use criterion::{criterion_group, criterion_main, Criterion};
use module_loader::{Host, UnloadMode, UnloadOutcome};
use rcumod_tests::modules::rust_module;
use rcumod_tests::reads::HeldSection;
use rcumod_tests::sched::{pin_to, set_nice, thread_cpu};
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
                    let holder = HeldSection::enter(GlobalDomain(host.clone()));
                    host.load(&so, &[p("chains", "0"), p("flood", "100000")])
                        .unwrap();
                    let t = Instant::now();
                    holder.release();
                    let r = host.unload("torture", mode).unwrap();
                    total += t.elapsed();
                    holder.join();
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

/// The host's global domain, owned (for a thread that holds a section of it).
struct GlobalDomain(Arc<Host>);

impl std::ops::Deref for GlobalDomain {
    type Target = rcu_core::Rcu;
    fn deref(&self) -> &rcu_core::Rcu {
        self.0.domain(rcumod_abi::DOMAIN_GLOBAL).unwrap()
    }
}

fn preempted_reader(c: &mut Criterion) {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("unload/preempted-reader-100k: needs 2 CPUs; skipped");
        return;
    }
    let host = Arc::new(Host::new().unwrap());
    let so = rust_module("torture");
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop) = (host.clone(), stop.clone());
            std::thread::spawn(move || {
                pin_to(0);
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(host.call_hook("torture.count", 0));
                }
            })
        })
        .collect();
    threads.push({
        let (host, stop) = (host.clone(), stop.clone());
        std::thread::spawn(move || {
            pin_to(0);
            set_nice(19);
            let rcu = host.domain(rcumod_abi::DOMAIN_GLOBAL).unwrap();
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _g = rcu.read_lock();
                let t0 = thread_cpu();
                while thread_cpu() - t0 < Duration::from_millis(1) {
                    for i in 0..1_000u64 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                    }
                }
            }
        })
    });
    let mut g = c.benchmark_group("unload/preempted-reader-100k");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (label, mode) in [
        ("normal", UnloadMode::Normal),
        ("expedited", UnloadMode::Expedited),
    ] {
        let mut last = None;
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
                    last = Some(r);
                }
                total
            })
        });
        if let Some(r) = last {
            eprintln!(
                "unload/preempted-reader-100k/{label}: last report: total {:?}, steps {:?}, \
                 barrier rounds {}, expedite {:?}",
                r.total, r.steps, r.barrier_rounds, r.expedite
            );
        }
    }
    g.finish();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

fn cycle(c: &mut Criterion) {
    let host = Host::new().unwrap();
    let reading = Host::builder()
        .reuse_unchanged_files(false)
        .build()
        .unwrap();
    // `greeter_v1`'s init publishes one hook: the cycle is the loader's own work. `rcu_list`'s
    // init also starts a host-managed thread, which the unload must wake and join.
    type Params = Vec<(String, String)>;
    let modules: [(&str, &str, Params); 2] = [
        ("greeter_v1", "greeter", Vec::new()),
        (
            "rcu_list",
            "rcu_list",
            vec![p("count", "8"), p("period_us", "100000")],
        ),
    ];
    for (crate_name, module, params) in modules {
        let so = rust_module(crate_name);
        let mut g = c.benchmark_group(format!("cycle/{crate_name}"));
        g.sample_size(20).measurement_time(Duration::from_secs(5));
        for (label, host) in [
            ("rcumod-load+expedited-unload", &host),
            ("rcumod-load+expedited-unload/reuse-off", &reading),
        ] {
            let (mut loads, mut reused) = (0u64, 0u64);
            g.bench_function(label, |b| {
                b.iter(|| {
                    let info = host.load(&so, &params).unwrap();
                    let r = host.unload(module, UnloadMode::Expedited).unwrap();
                    assert_eq!(r.outcome, UnloadOutcome::Unloaded);
                    loads += 1;
                    reused += u64::from(info.reused_image);
                })
            });
            eprintln!("cycle/{crate_name}/{label}: {reused} of {loads} loads reused a kept image");
        }
        // The bare loader on a copy of its own (glibc would hand back a cached mapping of a
        // path it has open).
        let copy = rcumod_tests::modules::scratch_dir().join(format!("raw_{crate_name}.so"));
        std::fs::copy(&so, &copy).unwrap();
        g.bench_function("raw-dlopen+dlclose", |b| {
            b.iter(|| {
                // SAFETY: the sample module's initialisers are Rust std's, run as for any
                // dlopen; nothing of it is called.
                let lib = unsafe {
                    libloading::os::unix::Library::open(
                        Some(&copy),
                        libc::RTLD_NOW | libc::RTLD_LOCAL,
                    )
                }
                .unwrap();
                lib.close().unwrap();
            })
        });
        g.finish();
    }
}

criterion_group!(benches, flood, preempted_reader, cycle);
criterion_main!(benches);
