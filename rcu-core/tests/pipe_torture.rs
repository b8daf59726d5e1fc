//! Pipe torture, after the kernel's rcutorture and liburcu's `rcutorture.h` stress test:
//! grace-period waits — including the callback-based ones — never end early.
//!
//! A writer keeps a pipe of [`PIPE_LEN`] elements. Each update it takes the next element,
//! resets its age (`pipe_count`) to 0, publishes it as current, and bumps the age of every
//! other element; then it waits for a grace period, rotating through `synchronize()`,
//! `call()` + waiting for that callback, `synchronize_expedited()`, and `call()` + `barrier()`.
//! An element's age is thus the number of updates since it was replaced, each but the first
//! separated from the replacement by a full grace period. Readers load the current element in
//! a read-side section, dwell, and record its age in a histogram: 0 while current, 1 if it
//! was replaced during the section. An age of 2 or more means a grace period ended while a
//! reader that saw the element was still inside: the pass condition is that histogram
//! buckets ≥ 2 stay 0 (and that no reader sees an element being re-initialised: `mbtest`).
//!
//! Run on memb, mb, qsbr, memb's forced fallback, and SRCU (whose readers sometimes sleep
//! inside their sections). THE CONTROL: the same harness on `Flavor::Busted`, whose grace
//! periods do not wait, must see an age above 1.

mod common;

use common::domains::{Domain, Kind};
use common::{cpu_heavy, dwell, within};
use rcu_core::Flavor;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Elements in the pipe (liburcu's `RCU_STRESS_PIPE_LEN`).
const PIPE_LEN: usize = 10;
const READERS: usize = 2;
/// Length of one run.
const RUN: Duration = Duration::from_millis(600);
/// Hang guard of one run.
const RUN_LIMIT: Duration = Duration::from_secs(15);

struct Element {
    /// Updates since this element was replaced (0 while it is current).
    pipe_count: AtomicU64,
    /// Cleared while the writer re-initialises the element.
    mbtest: AtomicBool,
}

struct Pipe {
    elements: [Element; PIPE_LEN],
    /// Index of the current element (the RCU-protected pointer).
    current: AtomicUsize,
}

/// What a run saw.
#[derive(Debug, Default)]
struct Report {
    updates: u64,
    reads: u64,
    /// Reads by observed age; the last bucket collects every age ≥ PIPE_LEN.
    histogram: [u64; PIPE_LEN + 1],
    /// Reads that found the element half-initialised.
    mberrors: u64,
}

impl Report {
    fn too_old(&self) -> u64 {
        self.histogram[2..].iter().sum()
    }
}

/// How the writer waits for a grace period after an update, in rotation (liburcu's
/// `writer_state`).
#[derive(Clone, Copy, Debug)]
enum Wait {
    Synchronize,
    /// A callback that signals the writer: its invocation must be after a grace period.
    Callback,
    SynchronizeExpedited,
    /// A callback, then `barrier()`: the barrier returns after that callback ran.
    CallbackThenBarrier,
}

const WAITS: [Wait; 4] = [
    Wait::Synchronize,
    Wait::Callback,
    Wait::SynchronizeExpedited,
    Wait::CallbackThenBarrier,
];

fn wait_for_gp(dom: &Domain, how: Wait) {
    match how {
        Wait::Synchronize => dom.synchronize(),
        Wait::SynchronizeExpedited => dom.synchronize_expedited(),
        Wait::Callback => {
            let (tx, rx) = mpsc::channel();
            dom.call(move || {
                let _ = tx.send(());
            });
            rx.recv_timeout(RUN_LIMIT)
                .expect("hang guard: the callback was not invoked");
        }
        Wait::CallbackThenBarrier => {
            dom.call(|| {});
            dom.barrier().unwrap();
        }
    }
}

/// One run: [`READERS`] readers against the writer for `run`.
fn pipe_torture(dom: &Domain, run: Duration) -> Report {
    let pipe = Pipe {
        elements: std::array::from_fn(|_| Element {
            pipe_count: AtomicU64::new(0),
            mbtest: AtomicBool::new(true),
        }),
        current: AtomicUsize::new(0),
    };
    let stop = AtomicBool::new(false);
    let (pipe, stop) = (&pipe, &stop);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                s.spawn(move || {
                    let mut histogram = [0u64; PIPE_LEN + 1];
                    let (mut reads, mut mberrors) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let (age, initialised) = dom.read(|| {
                            // rcu_dereference.
                            let e = &pipe.elements[pipe.current.load(Ordering::Acquire)];
                            let initialised = e.mbtest.load(Ordering::Relaxed);
                            dom.read(|| ()); // a nested section, as liburcu's reader does
                            for _ in 0..dwell(reads) {
                                std::hint::spin_loop();
                            }
                            if dom.sleepable() && reads % 128 == 0 {
                                std::thread::sleep(Duration::from_micros(100));
                            }
                            (e.pipe_count.load(Ordering::Relaxed), initialised)
                        });
                        dom.quiescent_state();
                        histogram[(age as usize).min(PIPE_LEN)] += 1;
                        mberrors += u64::from(!initialised);
                        reads += 1;
                    }
                    (histogram, reads, mberrors)
                })
            })
            .collect();

        let mut report = Report::default();
        let mut idx = 0;
        let start = Instant::now();
        while start.elapsed() < run {
            let i = (idx + 1) % PIPE_LEN;
            let e = &pipe.elements[i];
            e.mbtest.store(false, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            e.pipe_count.store(0, Ordering::Relaxed);
            e.mbtest.store(true, Ordering::Relaxed);
            // rcu_assign_pointer.
            pipe.current.store(i, Ordering::Release);
            idx = i;
            for (j, other) in pipe.elements.iter().enumerate() {
                if j != idx {
                    other.pipe_count.fetch_add(1, Ordering::Relaxed);
                }
            }
            wait_for_gp(dom, WAITS[(report.updates % WAITS.len() as u64) as usize]);
            report.updates += 1;
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            let (h, reads, mberrors) = r.join().unwrap();
            for (sum, n) in report.histogram.iter_mut().zip(h) {
                *sum += n;
            }
            report.reads += reads;
            report.mberrors += mberrors;
        }
        report
    })
}

fn assert_pipe_safe(kind: Kind) {
    let _cpus = cpu_heavy();
    let report = within(RUN_LIMIT, kind.label(), move || {
        let dom = kind.build();
        let report = pipe_torture(&dom, RUN);
        dom.barrier().unwrap();
        report
    });
    println!(
        "{}: {} updates, {} reads, pipe histogram {:?}, mberrors {}",
        kind.label(),
        report.updates,
        report.reads,
        report.histogram,
        report.mberrors
    );
    assert!(
        report.updates >= WAITS.len() as u64 && report.reads > 0,
        "{}: the run did nothing: {report:?}",
        kind.label()
    );
    assert_eq!(
        report.too_old(),
        0,
        "{}: readers saw elements aged 2 or more (a grace period ended under a reader): \
         {report:?}",
        kind.label()
    );
    assert_eq!(report.mberrors, 0, "{}: {report:?}", kind.label());
}

#[test]
fn memb_pipe() {
    assert_pipe_safe(Kind::Rcu(Flavor::Memb));
}

#[test]
fn mb_pipe() {
    assert_pipe_safe(Kind::Rcu(Flavor::Mb));
}

#[test]
fn qsbr_pipe() {
    assert_pipe_safe(Kind::Rcu(Flavor::Qsbr));
}

#[test]
fn memb_fallback_pipe() {
    assert_pipe_safe(Kind::MembFallback);
}

#[test]
fn srcu_pipe() {
    assert_pipe_safe(Kind::Srcu);
}

/// The control: grace periods that do not wait must show up as ages above 1.
#[test]
fn busted_pipe_is_caught() {
    let _cpus = cpu_heavy();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut total = Report::default();
    let mut runs = 0;
    while total.too_old() == 0 && Instant::now() < deadline {
        let r = within(RUN_LIMIT, "busted", || {
            let dom = Kind::Rcu(Flavor::Busted).build();
            let report = pipe_torture(&dom, Duration::from_millis(100));
            dom.barrier().unwrap();
            report
        });
        runs += 1;
        total.updates += r.updates;
        total.reads += r.reads;
        total.mberrors += r.mberrors;
        for (sum, n) in total.histogram.iter_mut().zip(r.histogram) {
            *sum += n;
        }
    }
    println!(
        "busted (control), {runs} run(s): {} updates, {} reads, pipe histogram {:?}, mberrors {}",
        total.updates, total.reads, total.histogram, total.mberrors
    );
    assert!(
        total.too_old() > 0,
        "the pipe harness did not catch Flavor::Busted, whose grace periods do not wait: \
         {total:?}"
    );
}
