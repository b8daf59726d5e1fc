//! The module boundary: what a module pays for the host API, against rcu-core's own calls in
//! the same process (docs/performance.md, "Module boundary"; issue: modules at the speed of
//! the core). The module is `sample-modules/c/boundary.c`, built on `rcumod.h` alone and loaded
//! by an embedding `Host`; each of its hooks repeats one operation `n` times, so one hook
//! dispatch is spread over `n` operations.
//!
//! * `read-pair/{module,rcu-core}/{memb,qsbr}/{1t,2t}`: `rcumod_read_lock` + `dereference` +
//!   `rcumod_read_unlock` (the header's inline read side on memb; the API underneath on qsbr),
//!   against `Rcu::read_lock` + a load + drop on a domain of the same flavor; per pair, per
//!   thread. The table adds the same pair through `api->read_lock` / `api->read_unlock`.
//! * The table adds a Rust module's pair: `rcu_list.read_pairs`, `Module::read_lock` of the SDK
//!   (inline on memb) and an atomic load per section.
//! * `call/{module,module-entry,rcu-core-raw}/{1t,2t}`: `malloc` + `call_rcu` of an item with an
//!   embedded head that the callback frees (or `call_rcu_entry`), against Box + `call_raw` of
//!   the same shape; per post, per thread; the drain afterwards (a barrier) is untimed.
//! * `hook/{by-name,by-handle}`: `Host::call_hook`, and a call through the handle `Host::hook`
//!   resolved, of a hook that returns its argument plus one.
//!
//! At the end a table prints medians of repeated interleaved measurements and the ratios the
//! issue sets targets for. Run: `cargo bench -p rcumod-tests --bench boundary`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use module_loader::{Host, UnloadMode};
use rcu_core::{Flavor, Rcu};
use rcumod_tests::modules::{c_module, rust_module};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn host() -> Host {
    let host = Host::new().unwrap();
    host.load(&c_module("boundary", &[]), &[]).unwrap();
    // The Rust row: rcu_list's `read_pairs` hook, through the SDK's `Module::read_lock`.
    let slow_churn = [
        ("count".to_owned(), "4".to_owned()),
        ("period_us".to_owned(), "100000".to_owned()),
        ("bench_reads".to_owned(), "1".to_owned()),
    ];
    host.load(&rust_module("rcu_list"), &slow_churn).unwrap();
    host
}

/// `hook(per)` on `threads` threads at once; the slowest thread's time.
fn module_op(host: &Host, hook: &str, per: u64, threads: usize) -> Duration {
    let start = Barrier::new(threads + 1);
    let t = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                start.wait();
                std::hint::black_box(host.call_hook(hook, per).unwrap());
            });
        }
        start.wait();
        Instant::now()
    });
    // The scope joined every thread: `t.elapsed()` is the slowest thread's time.
    t.elapsed()
}

static VALUE: u64 = 42;
static SLOT: AtomicPtr<u64> = AtomicPtr::new(&VALUE as *const u64 as *mut u64);

/// rcu-core's own read pair on `rcu`, `per` times on each of `threads` threads.
fn core_pairs(rcu: &Rcu, per: u64, threads: usize) -> Duration {
    core_pairs_in(rcu, per, threads, false)
}

/// As [`core_pairs`], every pair nested in an outer section of the same domain: the shape of a
/// module's section inside a hook, which the host calls inside a section of domain 0.
fn core_pairs_nested(rcu: &Rcu, per: u64, threads: usize) -> Duration {
    core_pairs_in(rcu, per, threads, true)
}

fn core_pairs_in(rcu: &Rcu, per: u64, threads: usize, nested: bool) -> Duration {
    let start = Barrier::new(threads + 1);
    let t = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                rcu.register_thread();
                start.wait();
                let outer = nested.then(|| rcu.read_lock());
                let mut sum = 0u64;
                for _ in 0..per {
                    let g = rcu.read_lock();
                    // SAFETY: SLOT always points at a static.
                    sum += unsafe { *SLOT.load(Ordering::Acquire) };
                    drop(g);
                }
                std::hint::black_box(sum);
                drop(outer);
                if rcu.flavor() == Flavor::Qsbr {
                    rcu.thread_offline();
                }
            });
        }
        start.wait();
        Instant::now()
    });
    t.elapsed()
}

/// rcu-core: Box + `call_raw`, `per` times on each of `threads` threads (drained after).
fn core_calls(rcu: &Rcu, per: u64, threads: usize) -> Duration {
    let start = Barrier::new(threads + 1);
    let t = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                // Registered, as the module's posting threads are with the host's domain 0
                // (the hook call's read section registers them).
                rcu.register_thread();
                start.wait();
                rcumod_tests::posts::post_items(rcu, per);
            });
        }
        start.wait();
        Instant::now()
    });
    let d = t.elapsed();
    rcu.barrier().unwrap();
    d
}

/// Wait until every callback posted so far on the host's domains ran: the module posts on the
/// host's domain 0, which a barrier of an unrelated domain does not drain, so this waits on the
/// callbacks' own counts instead (`Host::info`), bounded.
fn drained(host: &Host, d: Duration) -> Duration {
    let until = Instant::now() + Duration::from_secs(10);
    while host
        .info("boundary")
        .is_some_and(|m| m.callbacks.pending() > 0)
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    d
}

fn ns_per(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e9 / n as f64
}

fn benches(c: &mut Criterion) {
    let host = host();
    let memb = Arc::new(
        Rcu::builder()
            .flavor(Flavor::Memb)
            .name("bench-memb")
            .build(),
    );
    let qsbr = Arc::new(
        Rcu::builder()
            .flavor(Flavor::Qsbr)
            .name("bench-qsbr")
            .build(),
    );
    let mut g = c.benchmark_group("boundary");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10).measurement_time(Duration::from_secs(1));
    for threads in [1usize, 2] {
        for (flavor, hook, rcu) in [
            ("memb", "boundary.read_pair", &memb),
            ("qsbr", "boundary.read_pair_qsbr", &qsbr),
        ] {
            g.bench_function(format!("read-pair/module/{flavor}/{threads}t"), |b| {
                b.iter_custom(|iters| module_op(&host, hook, iters, threads))
            });
            g.bench_function(format!("read-pair/rcu-core/{flavor}/{threads}t"), |b| {
                b.iter_custom(|iters| core_pairs(rcu, iters, threads))
            });
        }
        g.bench_function(format!("call/module/{threads}t"), |b| {
            b.iter_custom(|iters| {
                drained(&host, module_op(&host, "boundary.call_rcu", iters, threads))
            })
        });
        g.bench_function(format!("call/rcu-core-raw/{threads}t"), |b| {
            b.iter_custom(|iters| core_calls(&memb, iters, threads))
        });
    }
    let nop = host.hook("boundary.nop").expect("published");
    g.bench_function("hook/by-handle", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            nop.call(i)
        })
    });
    g.bench_function("hook/by-name", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            host.call_hook("boundary.nop", i)
        })
    });
    g.finish();
    ratios(&host, &memb, &qsbr);
    host.unload("boundary", UnloadMode::Normal).unwrap();
    host.unload("rcu_list", UnloadMode::Normal).unwrap();
}

/// Medians of interleaved rounds, and the ratios the targets are stated in.
fn ratios(host: &Host, memb: &Rcu, qsbr: &Rcu) {
    const ROUNDS: usize = 7;
    let reads = 10_000_000u64;
    let posts = 1_000_000u64;
    let by_name = || {
        let t = Instant::now();
        for i in 0..1_000_000u64 {
            std::hint::black_box(host.call_hook("boundary.nop", i));
        }
        t.elapsed()
    };
    let nop = host.hook("boundary.nop").expect("published");
    let by_handle = || {
        let t = Instant::now();
        for i in 0..1_000_000u64 {
            std::hint::black_box(nop.call(i));
        }
        t.elapsed()
    };
    let module = |hook: &'static str, n: u64, threads: usize| {
        move || drained(host, module_op(host, hook, n, threads))
    };
    type Row<'a> = (&'a str, u64, Box<dyn Fn() -> Duration + 'a>);
    fn row<'a>(name: &'a str, n: u64, f: impl Fn() -> Duration + 'a) -> Row<'a> {
        (name, n, Box::new(f))
    }
    let rows: Vec<Row> = vec![
        row(
            "module read pair memb 1t",
            reads,
            module("boundary.read_pair", reads, 1),
        ),
        row(
            "module read pair memb 2t",
            reads,
            module("boundary.read_pair", reads, 2),
        ),
        row(
            "Rust module read pair memb 1t",
            reads,
            module("rcu_list.read_pairs", reads, 1),
        ),
        row(
            "module tls read pair memb 1t",
            reads,
            module("boundary.read_pair_tls", reads, 1),
        ),
        row(
            "module API read pair memb 1t",
            reads,
            module("boundary.read_pair_api", reads, 1),
        ),
        row("rcu-core read pair memb 1t", reads, || {
            core_pairs(memb, reads, 1)
        }),
        row("rcu-core read pair memb 2t", reads, || {
            core_pairs(memb, reads, 2)
        }),
        row("rcu-core nested read pair memb 1t", reads, || {
            core_pairs_nested(memb, reads, 1)
        }),
        row(
            "module read pair qsbr 1t",
            reads,
            module("boundary.read_pair_qsbr", reads, 1),
        ),
        row(
            "module read pair qsbr 2t",
            reads,
            module("boundary.read_pair_qsbr", reads, 2),
        ),
        row("rcu-core read pair qsbr 1t", reads, || {
            core_pairs(qsbr, reads, 1)
        }),
        row(
            "module call_rcu 1t",
            posts,
            module("boundary.call_rcu", posts, 1),
        ),
        row(
            "module call_rcu 2t",
            posts,
            module("boundary.call_rcu", posts, 2),
        ),
        row(
            "module call_rcu_entry 1t",
            posts,
            module("boundary.call_rcu_entry", posts, 1),
        ),
        row("rcu-core call_raw 1t", posts, || core_calls(memb, posts, 1)),
        row("rcu-core call_raw 2t", posts, || core_calls(memb, posts, 2)),
        row("hook by name", 1_000_000, by_name),
        row("hook by handle", 1_000_000, by_handle),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); rows.len()];
    for _ in 0..ROUNDS {
        for (i, (_, _, f)) in rows.iter().enumerate() {
            samples[i].push(f());
        }
    }
    let med: Vec<f64> = samples
        .into_iter()
        .zip(&rows)
        .map(|(mut v, (_, n, _))| {
            v.sort();
            ns_per(v[v.len() / 2], *n)
        })
        .collect();
    println!(
        "\nmodule boundary, medians of {ROUNDS} interleaved rounds (ns per operation per thread)"
    );
    for ((name, ..), m) in rows.iter().zip(&med) {
        println!("  {name:<30} {m:>7.2}");
    }
    let at = |name: &str| med[rows.iter().position(|r| r.0 == name).expect("a row")];
    let ratio = |a: &str, b: &str| at(a) / at(b);
    println!("ratios (target):");
    for (what, a, b, target) in [
        (
            "module/rcu-core read pair memb 1t",
            "module read pair memb 1t",
            "rcu-core read pair memb 1t",
            "<= 1.5",
        ),
        (
            "Rust module/rcu-core read pair memb 1t",
            "Rust module read pair memb 1t",
            "rcu-core read pair memb 1t",
            "<= 1.5",
        ),
        (
            "  the same, tls lookup per call",
            "module tls read pair memb 1t",
            "rcu-core read pair memb 1t",
            "",
        ),
        (
            "  the same, through the API",
            "module API read pair memb 1t",
            "rcu-core read pair memb 1t",
            "",
        ),
        (
            "  against rcu-core nested in a section",
            "module read pair memb 1t",
            "rcu-core nested read pair memb 1t",
            "",
        ),
        (
            "module read pair memb 2t/1t",
            "module read pair memb 2t",
            "module read pair memb 1t",
            "<= 1.2",
        ),
        (
            "rcu-core read pair memb 2t/1t",
            "rcu-core read pair memb 2t",
            "rcu-core read pair memb 1t",
            "",
        ),
        (
            "module/rcu-core read pair qsbr 1t",
            "module read pair qsbr 1t",
            "rcu-core read pair qsbr 1t",
            "<= 1.5",
        ),
        (
            "module read pair qsbr 2t/1t",
            "module read pair qsbr 2t",
            "module read pair qsbr 1t",
            "<= 1.2",
        ),
        (
            "module call_rcu / call_raw 1t",
            "module call_rcu 1t",
            "rcu-core call_raw 1t",
            "<= 1.3",
        ),
        (
            "module call_rcu 2t/1t",
            "module call_rcu 2t",
            "module call_rcu 1t",
            "<= 1.5",
        ),
        (
            "rcu-core call_raw 2t/1t",
            "rcu-core call_raw 2t",
            "rcu-core call_raw 1t",
            "",
        ),
    ] {
        println!("  {what:<36} {:>6.2}x  {target}", ratio(a, b));
    }
    for (name, target) in [
        ("hook by name", "<= 10"),
        ("hook by handle", "<= 3 + the hook's work"),
    ] {
        println!("  {name:<36} {:>6.2} ns {target}", at(name));
    }
}

criterion_group!(boundary, benches);
criterion_main!(boundary);
