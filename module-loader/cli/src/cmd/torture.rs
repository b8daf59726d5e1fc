//! `rcumod torture`: the RCU pipe torture test (after the kernel's rcutorture and liburcu's
//! `rcutorture.h`) on one flavor, written against rcu-core's public API only, so that it
//! tests what applications get.
//!
//! A writer keeps a pipe of [`PIPE_LEN`] elements. Each update takes the next element, resets
//! its age (`pipe_count`) to 0, publishes it through an [`RcuCell`] (`rcu_assign_pointer`),
//! ages every other element by one, then waits for a grace period — rotating through
//! `Retired::synchronize`, `call` + waiting for that callback, `Retired::synchronize_expedited`,
//! `call` + `barrier`, and `start_poll` + `poll`. Readers load the current element inside a
//! read-side section (nesting a second one, as liburcu's reader does), dwell, and record its
//! age: 0 while current, 1 if it was replaced during the section. An age of 2 or more means a
//! grace period ended while a reader that saw the element was still inside — the pass
//! condition (rcutorture's "Reader Pipe" histogram with nothing past the second bucket), along
//! with no reader ever seeing an element half re-initialised (`rtmbe`).
//!
//! Replaced values are quarantined, not freed, until the readers stop (so a broken grace
//! period shows up as a wrong age rather than as a use-after-free); memory therefore grows
//! with the number of updates, a few tens of bytes each.
//!
//! `--flavor busted` runs the same harness on `Flavor::Busted`, whose grace periods do not
//! wait: it must report FAILURE, which shows the harness can fail.

use crate::cli::TortureArgs;
use rcu_core::{Flavor, Rcu, RcuCell};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Elements in the pipe (liburcu's `RCU_STRESS_PIPE_LEN`).
pub const PIPE_LEN: usize = 10;
/// Hang guard beyond the requested duration.
const HANG_GUARD: Duration = Duration::from_secs(30);

struct Element {
    /// Updates since this element was replaced (0 while it is current).
    pipe_count: AtomicU64,
    /// Cleared while the writer re-initialises the element.
    mbtest: AtomicBool,
}

/// How the writer waits for a grace period after an update, in rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GpWait {
    Synchronize,
    CallAndWait,
    SynchronizeExpedited,
    CallAndBarrier,
    Poll,
}

const WAITS: [GpWait; 5] = [
    GpWait::Synchronize,
    GpWait::CallAndWait,
    GpWait::SynchronizeExpedited,
    GpWait::CallAndBarrier,
    GpWait::Poll,
];

/// What a run saw.
#[derive(Debug, Default, Clone)]
pub struct TortureReport {
    /// Updates (rcutorture's `ver`).
    pub updates: u64,
    /// Reads (rcutorture's `nt`).
    pub reads: u64,
    /// Reads by observed age; the last bucket collects every age ≥ PIPE_LEN.
    pub histogram: [u64; PIPE_LEN + 1],
    /// Reads that found their element half re-initialised (rcutorture's `rtmbe`).
    pub mberrors: u64,
    /// Writer waits of each kind: synchronize, call, expedited, barrier, poll.
    pub waits: [u64; 5],
}

impl TortureReport {
    /// Reads that saw an element older than one grace period.
    pub fn too_old(&self) -> u64 {
        self.histogram[2..].iter().sum()
    }

    /// The pass condition.
    pub fn passed(&self) -> bool {
        self.too_old() == 0 && self.mberrors == 0 && self.updates > 0 && self.reads > 0
    }
}

/// A reader's section length in spins: mostly short and varied, now and then long (as
/// rcutorture's readers sometimes delay), so that a grace period that does not wait is caught.
fn dwell(reads: u64) -> u32 {
    if reads % 256 == 255 {
        20_000
    } else {
        50 + (reads.wrapping_mul(37) % 150) as u32
    }
}

/// A replaced value, kept until the readers have stopped. Nothing a reader may have loaded
/// is freed during the run, so a grace period that ends too early (`busted`) shows up as a
/// wrong age instead of as a use-after-free.
enum Quarantined {
    /// Reclaimed through `Retired::synchronize*`.
    Owned(#[allow(dead_code)] Box<usize>),
    /// A grace period was waited for otherwise; the `Retired` still owns it (dropping it at
    /// the end waits for one more, idle, grace period).
    Retired(#[allow(dead_code)] rcu_core::Retired<usize>),
}

fn wait_for_gp(
    rcu: &Rcu,
    how: GpWait,
    old: rcu_core::Retired<usize>,
) -> Result<Quarantined, String> {
    Ok(match how {
        GpWait::Synchronize => Quarantined::Owned(old.synchronize()),
        GpWait::SynchronizeExpedited => Quarantined::Owned(old.synchronize_expedited()),
        GpWait::CallAndWait => {
            let (tx, rx) = mpsc::channel();
            rcu.call(move || {
                let _ = tx.send(());
            });
            rx.recv_timeout(HANG_GUARD)
                .map_err(|_| format!("a callback was not invoked within {HANG_GUARD:?}"))?;
            Quarantined::Retired(old)
        }
        GpWait::CallAndBarrier => {
            rcu.call(|| {});
            rcu.barrier().map_err(|e| e.to_string())?;
            Quarantined::Retired(old)
        }
        GpWait::Poll => {
            let state = rcu.start_poll();
            let t0 = Instant::now();
            while !rcu.poll(state) {
                if t0.elapsed() > HANG_GUARD {
                    return Err(format!(
                        "a polled grace period did not end within {HANG_GUARD:?}"
                    ));
                }
                std::thread::yield_now();
            }
            Quarantined::Retired(old)
        }
    })
}

/// One run of `readers` readers against the writer on `rcu` for `run`.
pub fn pipe_torture(rcu: &Rcu, readers: usize, run: Duration) -> Result<TortureReport, String> {
    let pipe: [Element; PIPE_LEN] = std::array::from_fn(|_| Element {
        pipe_count: AtomicU64::new(0),
        mbtest: AtomicBool::new(true),
    });
    let current = RcuCell::new_in(0usize, rcu);
    let stop = AtomicBool::new(false);
    let (pipe, current, stop) = (&pipe, &current, &stop);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..readers)
            .map(|_| {
                s.spawn(move || {
                    let mut histogram = [0u64; PIPE_LEN + 1];
                    let (mut reads, mut mberrors) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let (age, initialised) = {
                            let g = rcu.read_lock();
                            // rcu_dereference.
                            let e = &pipe[*current.load(&g)];
                            let initialised = e.mbtest.load(Ordering::Relaxed);
                            drop(rcu.read_lock()); // a nested section
                            for _ in 0..dwell(reads) {
                                std::hint::spin_loop();
                            }
                            (e.pipe_count.load(Ordering::Relaxed), initialised)
                        };
                        // A no-op except for qsbr, whose readers must announce it.
                        rcu.quiescent_state();
                        histogram[(age as usize).min(PIPE_LEN)] += 1;
                        mberrors += u64::from(!initialised);
                        reads += 1;
                    }
                    // A qsbr reader that stops announcing must not hold grace periods up.
                    rcu.unregister_thread();
                    (histogram, reads, mberrors)
                })
            })
            .collect();

        let mut report = TortureReport::default();
        let mut idx = 0;
        let start = Instant::now();
        let mut failure = None;
        let mut quarantine: Vec<Quarantined> = Vec::new();
        while start.elapsed() < run {
            let i = (idx + 1) % PIPE_LEN;
            let e = &pipe[i];
            e.mbtest.store(false, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            e.pipe_count.store(0, Ordering::Relaxed);
            e.mbtest.store(true, Ordering::Relaxed);
            // rcu_assign_pointer.
            let old = current.publish(i);
            idx = i;
            for (j, other) in pipe.iter().enumerate() {
                if j != idx {
                    other.pipe_count.fetch_add(1, Ordering::Relaxed);
                }
            }
            let k = (report.updates % WAITS.len() as u64) as usize;
            match wait_for_gp(rcu, WAITS[k], old) {
                Ok(q) => quarantine.push(q),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            report.waits[k] += 1;
            report.updates += 1;
        }
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let (hist, reads, mberrors) = h.join().map_err(|_| "a reader panicked".to_owned())?;
            for (sum, n) in report.histogram.iter_mut().zip(hist) {
                *sum += n;
            }
            report.reads += reads;
            report.mberrors += mberrors;
        }
        // The readers have stopped: nothing can hold a quarantined value now.
        drop(quarantine);
        match failure {
            Some(e) => Err(e),
            None => Ok(report),
        }
    })
}

/// Run `torture`; returns the exit status.
pub fn run(args: &TortureArgs) -> u8 {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        eprintln!("rcumod: ERROR: --duration must be a positive number of seconds");
        return 2;
    }
    if args.readers == 0 {
        eprintln!("rcumod: ERROR: --readers must be at least 1");
        return 2;
    }
    let flavor: Flavor = args.flavor.flavor();
    let run_for = Duration::from_secs_f64(args.duration);
    let rcu = match Rcu::builder()
        .flavor(flavor)
        .name(format!("torture-{flavor}"))
        .try_build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rcumod: ERROR: cannot create an RCU domain: {e}");
            return 1;
        }
    };
    println!(
        "rcu-torture: --- Start of test: flavor={flavor} (running as {}) readers={} duration={:.2}s",
        rcu.flavor(),
        args.readers,
        run_for.as_secs_f64()
    );

    // Hang guard: a grace period that never ends is a failure too, and must not hang the
    // caller forever.
    let done = std::sync::Arc::new(AtomicBool::new(false));
    {
        let done = std::sync::Arc::clone(&done);
        let limit = run_for + HANG_GUARD;
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if t0.elapsed() > limit {
                    println!("rcu-torture: !!! the test did not finish within {limit:?} (a grace period hangs?)");
                    println!("rcu-torture: --- End of test: FAILURE");
                    std::process::exit(1);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    }

    let t0 = Instant::now();
    let result = pipe_torture(&rcu, args.readers, run_for);
    let barrier = rcu.barrier();
    done.store(true, Ordering::SeqCst);
    let elapsed = t0.elapsed();
    let report = match (result, barrier) {
        (Ok(r), Ok(())) => r,
        (Err(e), _) => {
            println!("rcu-torture: !!! {e}");
            println!("rcu-torture: --- End of test: FAILURE");
            return 1;
        }
        (_, Err(e)) => {
            println!("rcu-torture: !!! final barrier failed: {e}");
            println!("rcu-torture: --- End of test: FAILURE");
            return 1;
        }
    };
    print!("{}", render(&rcu, &report, elapsed));
    if report.passed() {
        println!("rcu-torture: --- End of test: SUCCESS");
        0
    } else {
        println!("rcu-torture: --- End of test: FAILURE");
        1
    }
}

/// The report, rcutorture-style.
fn render(rcu: &Rcu, r: &TortureReport, elapsed: Duration) -> String {
    let stats = rcu.stats();
    let mut out = String::new();
    out.push_str(&format!(
        "rcu-torture: ver: {} nt: {} rtmbe: {} gps: {} egps: {} ({:.0} updates/s, {:.0} reads/s)\n",
        r.updates,
        r.reads,
        r.mberrors,
        stats.grace_periods,
        stats.expedited_grace_periods,
        r.updates as f64 / elapsed.as_secs_f64(),
        r.reads as f64 / elapsed.as_secs_f64(),
    ));
    out.push_str("rcu-torture: Reader Pipe: ");
    for n in r.histogram {
        out.push_str(&format!(" {n}"));
    }
    out.push('\n');
    out.push_str(&format!(
        "rcu-torture: Writer waits: synchronize {} call {} expedited {} barrier {} poll {}\n",
        r.waits[0], r.waits[1], r.waits[2], r.waits[3], r.waits[4]
    ));
    if r.too_old() > 0 {
        out.push_str(&format!(
            "rcu-torture: !!! {} read(s) saw an element aged 2 or more: a grace period ended \
             under a reader\n",
            r.too_old()
        ));
    }
    if r.mberrors > 0 {
        out.push_str(&format!(
            "rcu-torture: !!! {} read(s) saw an element being re-initialised\n",
            r.mberrors
        ));
    }
    if r.updates == 0 || r.reads == 0 {
        out.push_str("rcu-torture: !!! the run did nothing (no updates or no reads)\n");
    }
    out
}
