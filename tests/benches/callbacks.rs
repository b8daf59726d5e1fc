//! Callback and barrier costs, against liburcu's memb flavor in the same run where liburcu is
//! installed (docs/performance.md, "Callbacks and barriers"):
//!
//! * `call/enqueue/{1t,2t}`: `call_rcu` of a freshly allocated item that the callback frees
//!   (liburcu: `malloc` + `urcu_memb_call_rcu(free)`), per call; the drain afterwards is untimed.
//!   Flat sampling with samples of about 0.3 s of continuous posting: the anchors measured a
//!   0.5 s window, long enough for each library's worker to free concurrently with the posting
//!   (short bursts end inside liburcu's 10 ms worker sleep and measure it without its frees).
//! * `call/end-to-end-1e6`: one million items with an embedded head posted with `call_raw` (one
//!   allocation each, liburcu's shape), then a barrier, in total.
//! * `barrier/empty`: a barrier with nothing pending.
//! * `barrier/pending-1e6`: a reader holds the grace period while 1e6 such items are posted; it
//!   is released at t0 and a barrier is called; t1 − t0 (anchor table D).
//! * `barrier/flood-100k/{normal,expedited}`: rcu-core alone: 100k callbacks posted while two
//!   busy readers run short sections, held pending until t0 by a section opened before them;
//!   `barrier()` against `barrier_expedited()`.
//!
//! At the end a table prints medians (own repeated measurements) and the ratio rcu-core / liburcu;
//! the posting rows of both libraries are measured in turn, round after round, together with a
//! reference for the one-thread row: the same allocations freed by another thread with no RCU at
//! all (`cross_thread_free`), and its control, freed by the allocating thread.
//! Run: `cargo bench -p rcumod-tests --bench callbacks`.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use rcu_core::{Flavor, Rcu};
use rcumod_tests::reads::HeldSection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[cfg(have_liburcu)]
use rcumod_tests::liburcu_call as urcu;

fn domain() -> Rcu {
    Rcu::builder().flavor(Flavor::Memb).name("bench").build()
}

/// rcu-core: `n` calls of a boxed item freed by its callback; returns the posting time.
fn rcu_calls(rcu: &Rcu, n: u64) -> Duration {
    let t = Instant::now();
    for i in 0..n {
        let item = Box::new([i; 2]);
        rcu.call(move || drop(item));
    }
    t.elapsed()
}

/// rcu-core: `n` × (Box + `call_raw`), as liburcu's malloc + call_rcu(free).
fn rcu_calls_raw(rcu: &Rcu, n: u64) -> Duration {
    let t = Instant::now();
    rcumod_tests::posts::post_items(rcu, n);
    t.elapsed()
}

/// The shape of `rcumod_tests::posts`'s item without RCU: a link, a word where the callback
/// would be, the payload.
#[repr(C)]
struct Bare {
    next: *mut Bare,
    _func: usize,
    _payload: u64,
}

/// The reference for the one-thread posting rows: `n` × (a `Box` as big as that item, pushed
/// onto a lock-free stack with one CAS) while another thread takes the whole stack and frees
/// every item, over and over, with no grace period, list walk or lock. After each take the
/// consumer yields, or sleeps `cadence` (liburcu's worker sleeps 10 ms). Returns the posting
/// time.
///
/// It isolates what a design pays for freeing on another thread than the one that allocates:
/// each `malloc` pops from the glibc fastbin the other thread pushes onto, and gets a chunk
/// whose line that thread wrote last. rcu-core's worker and liburcu's both free that way.
fn cross_thread_free(n: u64, cadence: Duration) -> Duration {
    let free_all = |mut p: *mut Bare| {
        while !p.is_null() {
            // SAFETY: `p` came from `Box::into_raw` below and was taken off the stack once.
            let b = unsafe { Box::from_raw(p) };
            p = b.next;
        }
    };
    // Items are handed over whole by the CAS (Release) and taken whole by the swap (Acquire).
    let stack = std::sync::atomic::AtomicPtr::<Bare>::new(std::ptr::null_mut());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| loop {
            let stopping = done.load(Ordering::Acquire);
            free_all(stack.swap(std::ptr::null_mut(), Ordering::Acquire));
            if stopping {
                break;
            }
            if cadence.is_zero() {
                std::thread::yield_now();
            } else {
                std::thread::sleep(cadence);
            }
        });
        let t = Instant::now();
        for i in 0..n {
            let b = Box::into_raw(Box::new(Bare {
                next: std::ptr::null_mut(),
                _func: 0,
                _payload: i,
            }));
            let mut top = stack.load(Ordering::Relaxed);
            loop {
                // SAFETY: `b` is ours until the CAS publishes it.
                unsafe { (*b).next = top };
                match stack.compare_exchange_weak(top, b, Ordering::Release, Ordering::Relaxed) {
                    Ok(_) => break,
                    Err(now) => top = now,
                }
            }
        }
        let d = t.elapsed();
        done.store(true, Ordering::Release);
        d
    })
}

/// The control of [`cross_thread_free`]: the same `n` allocations, freed by the allocating
/// thread itself, 1024 at a time. Returns the whole time.
fn same_thread_free(n: u64) -> Duration {
    let mut held: Vec<Box<Bare>> = Vec::with_capacity(1024);
    let t = Instant::now();
    for i in 0..n {
        held.push(Box::new(Bare {
            next: std::ptr::null_mut(),
            _func: 0,
            _payload: i,
        }));
        if held.len() == held.capacity() {
            held.clear();
        }
    }
    t.elapsed()
}

/// `threads` threads posting `n` calls in all (boxed closures); wall time of the posting.
fn rcu_calls_parallel(rcu: &Arc<Rcu>, n: u64, threads: u64) -> Duration {
    rcu_parallel(rcu, n, threads, rcu_calls)
}

/// As [`rcu_calls_parallel`] with `call_raw` (one allocation per call, liburcu's shape).
fn rcu_calls_raw_parallel(rcu: &Arc<Rcu>, n: u64, threads: u64) -> Duration {
    rcu_parallel(rcu, n, threads, rcu_calls_raw)
}

fn rcu_parallel(rcu: &Arc<Rcu>, n: u64, threads: u64, post: fn(&Rcu, u64) -> Duration) -> Duration {
    let start = Arc::new(Barrier::new(threads as usize + 1));
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (rcu, start) = (rcu.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                post(&rcu, n / threads);
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    for h in hs {
        h.join().unwrap();
    }
    t.elapsed()
}

#[cfg(have_liburcu)]
fn urcu_calls_parallel(n: u64, threads: u64) -> Duration {
    let start = Arc::new(Barrier::new(threads as usize + 1));
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                urcu::register_thread();
                start.wait();
                urcu::call_loop(n / threads);
                urcu::unregister_thread();
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    for h in hs {
        h.join().unwrap();
    }
    t.elapsed()
}

fn enqueue(c: &mut Criterion) {
    let rcu = Arc::new(domain());
    let mut g = c.benchmark_group("call/enqueue");
    g.throughput(Throughput::Elements(1));
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    g.bench_function("rcu-core/1t", |b| {
        b.iter_custom(|iters| {
            let d = rcu_calls(&rcu, iters);
            rcu.barrier().unwrap();
            d
        })
    });
    g.bench_function("rcu-core-raw/1t", |b| {
        b.iter_custom(|iters| {
            let d = rcu_calls_raw(&rcu, iters);
            rcu.barrier().unwrap();
            d
        })
    });
    g.bench_function("rcu-core/2t", |b| {
        b.iter_custom(|iters| {
            let d = rcu_calls_parallel(&rcu, iters.max(2), 2);
            rcu.barrier().unwrap();
            d
        })
    });
    g.bench_function("rcu-core-raw/2t", |b| {
        b.iter_custom(|iters| {
            let d = rcu_calls_raw_parallel(&rcu, iters.max(2), 2);
            rcu.barrier().unwrap();
            d
        })
    });
    #[cfg(have_liburcu)]
    {
        urcu::register_thread();
        g.bench_function("liburcu/1t", |b| {
            b.iter_custom(|iters| {
                let d = urcu::call_loop(iters);
                urcu::barrier();
                d
            })
        });
        g.bench_function("liburcu/2t", |b| {
            b.iter_custom(|iters| {
                let d = urcu_calls_parallel(iters.max(2), 2);
                urcu::barrier();
                d
            })
        });
    }
    g.finish();
}

fn rcu_end_to_end(rcu: &Rcu, n: u64) -> Duration {
    let t = Instant::now();
    rcu_calls_raw(rcu, n);
    rcu.barrier().unwrap();
    t.elapsed()
}

/// A reader holds `rcu`'s grace period while `n` callbacks are posted; returns the barrier time
/// measured from the reader's release.
fn rcu_barrier_pending(rcu: &Arc<Rcu>, n: u64) -> Duration {
    let holder = HeldSection::enter(rcu.clone());
    rcu_calls_raw(rcu, n);
    let t = Instant::now();
    holder.release();
    rcu.barrier().unwrap();
    let d = t.elapsed();
    holder.join();
    d
}

fn barriers(c: &mut Criterion) {
    let rcu = Arc::new(domain());
    let mut g = c.benchmark_group("call");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("end-to-end-1e6/rcu-core", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rcu_end_to_end(&rcu, 1_000_000)).sum())
    });
    #[cfg(have_liburcu)]
    g.bench_function("end-to-end-1e6/liburcu", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| urcu::end_to_end(1_000_000)).sum())
    });
    g.finish();

    let mut g = c.benchmark_group("barrier");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("empty/rcu-core", |b| b.iter(|| rcu.barrier().unwrap()));
    #[cfg(have_liburcu)]
    g.bench_function("empty/liburcu", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| urcu::barrier()).sum())
    });
    g.bench_function("pending-1e6/rcu-core", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| rcu_barrier_pending(&rcu, 1_000_000))
                .sum()
        })
    });
    #[cfg(have_liburcu)]
    g.bench_function("pending-1e6/liburcu", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| urcu::barrier_pending(1_000_000)).sum())
    });
    g.finish();
}

fn flood(c: &mut Criterion) {
    let rcu = Arc::new(domain());
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (rcu, stop) = (rcu.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let g = rcu.read_lock();
                    std::hint::black_box(&g);
                    drop(g);
                }
            })
        })
        .collect();
    let mut g = c.benchmark_group("barrier/flood-100k");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    // The flood is held pending until t0 by a section opened before it (as `pending-1e6`), so
    // both barriers start from the same 100k callbacks; otherwise the worker runs a varying
    // part of them while they are posted (50-100% left at t0 in one probe).
    let flood = |barrier: &dyn Fn(&Rcu)| {
        let holder = HeldSection::enter(rcu.clone());
        rcu_calls(&rcu, 100_000);
        let t = Instant::now();
        holder.release();
        barrier(&rcu);
        let d = t.elapsed();
        holder.join();
        d
    };
    g.bench_function("normal", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| flood(&|r| r.barrier().unwrap())).sum())
    });
    g.bench_function("expedited", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    flood(&|r| {
                        r.barrier_expedited().unwrap();
                    })
                })
                .sum()
        })
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
}

/// The median of `reps` measurements by `f`.
fn median_of(reps: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..reps).map(|_| f()).collect();
    v.sort();
    v[v.len() / 2]
}

/// The medians of `reps` rounds of every measurement in `fs`, taken in turn within each round.
/// On this 2-vCPU guest, where the host places the vCPUs changes between minutes and moves the
/// posting rows 2-4x (docs/performance.md); measured in turn, both libraries see the same
/// placements.
fn medians_interleaved<const N: usize>(
    reps: usize,
    mut fs: [&mut dyn FnMut() -> Duration; N],
) -> [Duration; N] {
    let mut samples: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(reps));
    for _ in 0..reps {
        for (f, v) in fs.iter_mut().zip(samples.iter_mut()) {
            v.push(f());
        }
    }
    samples.map(|mut v| {
        v.sort();
        v[v.len() / 2]
    })
}

/// The ratio table, from repeated measurements in this same run.
fn ratios(_c: &mut Criterion) {
    let rcu = Arc::new(domain());
    let reps = 5;
    let per_call = |d: Duration, n: u64| d.as_secs_f64() * 1e9 / n as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    // Posting windows of 0.1-0.4 s, as the anchors' 0.5 s: both workers free concurrently with
    // the posting for most of the window (see the module documentation).
    let n = 5_000_000;
    // Each posting measurement drains with a barrier afterwards, untimed.
    let drained = |d: Duration| {
        rcu.barrier().unwrap();
        d
    };
    #[cfg(have_liburcu)]
    urcu::register_thread();
    #[cfg(have_liburcu)]
    let udrained = |d: Duration| {
        urcu::barrier();
        d
    };
    #[cfg(have_liburcu)]
    let (mut u1f, mut u2f) = (
        || udrained(urcu::call_loop(n)),
        || udrained(urcu_calls_parallel(n, 2)),
    );
    #[cfg(not(have_liburcu))]
    let (mut u1f, mut u2f) = (|| Duration::ZERO, || Duration::ZERO);
    let [r1, r1raw, r2, r2raw, u1, u2, pipe, pipe10, own] = medians_interleaved(
        reps,
        [
            &mut || drained(rcu_calls(&rcu, n)),
            &mut || drained(rcu_calls_raw(&rcu, n)),
            &mut || drained(rcu_calls_parallel(&rcu, n, 2)),
            &mut || drained(rcu_calls_raw_parallel(&rcu, n, 2)),
            &mut u1f,
            &mut u2f,
            &mut || cross_thread_free(n, Duration::ZERO),
            &mut || cross_thread_free(n, Duration::from_millis(10)),
            &mut || same_thread_free(n),
        ],
    );
    let e2e = median_of(3, || rcu_end_to_end(&rcu, 1_000_000));
    let empty = median_of(101, || {
        let t = Instant::now();
        rcu.barrier().unwrap();
        t.elapsed()
    });
    let pend = median_of(3, || rcu_barrier_pending(&rcu, 1_000_000));
    #[cfg(have_liburcu)]
    let theirs = {
        [
            Some(u1),
            Some(u2),
            Some(median_of(3, || urcu::end_to_end(1_000_000))),
            Some(median_of(11, urcu::barrier)),
            Some(median_of(3, || urcu::barrier_pending(1_000_000))),
        ]
    };
    #[cfg(not(have_liburcu))]
    let theirs: [Option<Duration>; 5] = {
        let _ = (u1, u2);
        [None; 5]
    };
    let [u1, u2, ue2e, uempty, upend] = theirs;
    // Posting rows: ns per call, against liburcu's one- or two-thread figure.
    let (one, two) = (u1.map(|d| per_call(d, n)), u2.map(|d| per_call(d, n)));
    let posting = [
        ("call enqueue, 1 thread (ns/call)", r1, one),
        (
            "call_raw enqueue (embedded head, one allocation), 1 thread (ns/call)",
            r1raw,
            one,
        ),
        (
            "reference, no RCU: malloc + push, another thread takes and frees, yields (ns/call)",
            pipe,
            one,
        ),
        (
            "reference, no RCU: the same, the other thread sleeps 10 ms per take (ns/call)",
            pipe10,
            one,
        ),
        (
            "control, no RCU: malloc, freed by the same thread (ns/call)",
            own,
            one,
        ),
        ("call enqueue, 2 threads (ns/call, wall)", r2, two),
        ("call_raw enqueue, 2 threads (ns/call, wall)", r2raw, two),
    ];
    let rows = posting
        .into_iter()
        .map(|(name, d, theirs)| (name, per_call(d, n), theirs))
        .chain([
            ("1e6 callbacks end to end (ms)", ms(e2e), ue2e.map(ms)),
            ("barrier, nothing pending (µs)", us(empty), uempty.map(us)),
            (
                "barrier, 1e6 pending after reader release (ms)",
                ms(pend),
                upend.map(ms),
            ),
        ]);
    println!("\n| measure | rcu-core | liburcu memb | rcu-core / liburcu |");
    println!("|---|---|---|---|");
    for (name, ours, theirs) in rows {
        match theirs {
            Some(t) => println!("| {name} | {ours:.3} | {t:.3} | {:.3} |", ours / t),
            None => println!("| {name} | {ours:.3} | (liburcu not built) | — |"),
        }
    }
    // The one-thread row against the simplest way to free on another thread, without RCU.
    let (ours, pipe) = (per_call(r1raw, n), per_call(pipe.min(pipe10), n));
    println!(
        "\none-thread call_raw: rcu-core {ours:.1} ns/call = {:.2}x the no-RCU cross-thread \
         reference ({pipe:.1} ns/call)",
        ours / pipe
    );
    if let Some(u) = u1 {
        let target = per_call(u, n) / 2.0;
        println!(
            "target <= 0.5x liburcu = {target:.1} ns/call = {:.2}x that reference",
            target / pipe
        );
    }
}

criterion_group!(benches, enqueue, barriers, flood, ratios);
criterion_main!(benches);
