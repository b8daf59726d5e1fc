//! The benchmark loops written against rcu-core, mirroring the C shim's loops, and a
//! busy-reader thread usable with either implementation.

use rcu_core::{Flavor, Rcu, RcuCell};
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Reads between two checks (of the iteration count, of the stop flag, and for qsbr the
/// place of the per-batch quiescent state): as in the anchors and the C shim.
pub const BATCH: u64 = 1024;

/// The object behind the protected pointer (the C shim's `struct shim_obj`).
#[derive(Debug)]
pub struct Obj {
    /// The field every read adds to its sum.
    pub val: u64,
    /// Padding, as in the anchors' object.
    pub pad: u64,
}

/// A new domain of `flavor` named `name`, and a cell in it, both leaked so that reader
/// threads can borrow them for `'static`. Panics if a memb domain fell back to mb (no
/// membarrier): the comparison would be meaningless.
pub fn leaked_domain(flavor: Flavor, name: &str) -> (&'static Rcu, &'static RcuCell<Obj>) {
    let rcu: &'static Rcu = Box::leak(Box::new(Rcu::builder().flavor(flavor).name(name).build()));
    assert_eq!(
        rcu.flavor(),
        flavor,
        "rcu-core domain `{name}` runs as {} instead of {flavor}",
        rcu.flavor()
    );
    let cell = Box::leak(Box::new(RcuCell::new_in(Obj { val: 42, pad: 0 }, rcu)));
    (rcu, cell)
}

/// `n` read-side pairs: lock, load, add the object's field to `sum`, unlock — the C shim's
/// loop body. Every loaded value is consumed through the sum, which the callers pass through
/// `black_box` after each batch (and the section boundaries are compiler fences, so no load
/// can be hoisted or merged). `black_box` on each loaded reference instead would add a stack
/// store and reload per read (about 0.25 ns here) that the C loop does not have.
#[inline(always)]
fn reads(rcu: &Rcu, cell: &RcuCell<Obj>, mut sum: u64, n: u64) -> u64 {
    for _ in 0..n {
        let guard = rcu.read_lock();
        sum = sum.wrapping_add(cell.load(&guard).val);
        drop(guard);
    }
    sum
}

/// `iters` read-side pairs on the calling thread in batches of [`BATCH`], with (qsbr) a
/// quiescent state after every batch. Returns the elapsed time. A qsbr caller must be online
/// (a registered qsbr thread is).
#[inline(never)]
pub fn read_loop(rcu: &Rcu, cell: &RcuCell<Obj>, iters: u64) -> Duration {
    let qsbr = rcu.flavor() == Flavor::Qsbr;
    let mut sum = 0u64;
    let t0 = Instant::now();
    for _ in 0..iters / BATCH {
        sum = black_box(reads(rcu, cell, sum, BATCH));
        if qsbr {
            rcu.quiescent_state();
        }
    }
    sum = black_box(reads(rcu, cell, sum, iters % BATCH));
    if qsbr {
        rcu.quiescent_state();
    }
    let elapsed = t0.elapsed();
    black_box(sum);
    elapsed
}

/// A busy reader: registers the calling thread, runs read-side pairs until `stop` is nonzero,
/// announcing (qsbr) a quiescent state after every read (`qs_each_read`) or after every
/// [`BATCH`] reads; then goes offline and unregisters. Returns the number of reads.
#[inline(never)]
pub fn reader_until(rcu: &Rcu, cell: &RcuCell<Obj>, stop: &AtomicU32, qs_each_read: bool) -> u64 {
    let qsbr = rcu.flavor() == Flavor::Qsbr;
    rcu.register_thread();
    let mut count = 0u64;
    let mut sum = 0u64;
    while stop.load(Ordering::Relaxed) == 0 {
        if qsbr && qs_each_read {
            for _ in 0..BATCH {
                sum = reads(rcu, cell, sum, 1);
                rcu.quiescent_state();
            }
        } else {
            sum = reads(rcu, cell, sum, BATCH);
            if qsbr {
                rcu.quiescent_state();
            }
        }
        sum = black_box(sum);
        count += BATCH;
    }
    rcu.thread_offline();
    rcu.unregister_thread();
    black_box(sum);
    count
}

/// A thread running a busy-reader function (rcu-core's [`reader_until`] or the liburcu shim's)
/// until [`BusyReader::stop`].
#[derive(Debug)]
pub struct BusyReader {
    stop: Arc<AtomicU32>,
    started: Instant,
    handle: Option<JoinHandle<u64>>,
}

impl BusyReader {
    /// Spawn a thread named `name` that runs `body(stop_flag)`; `body` must return (the
    /// number of reads it did) soon after the flag becomes nonzero. Returns once the thread
    /// has had a few milliseconds to register and enter its loop.
    pub fn spawn(name: &str, body: impl FnOnce(&AtomicU32) -> u64 + Send + 'static) -> Self {
        let stop = Arc::new(AtomicU32::new(0));
        let ready = Arc::new(Barrier::new(2));
        let handle = {
            let (stop, ready) = (Arc::clone(&stop), Arc::clone(&ready));
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    ready.wait();
                    body(&stop)
                })
                .expect("spawn busy reader")
        };
        ready.wait();
        std::thread::sleep(Duration::from_millis(10));
        BusyReader {
            stop,
            started: Instant::now(),
            handle: Some(handle),
        }
    }

    /// Stop and join the thread. Returns its average cost per read in ns (over the whole
    /// time since `spawn`, so it is only indicative).
    pub fn stop(mut self) -> f64 {
        self.finish()
    }

    fn finish(&mut self) -> f64 {
        let Some(handle) = self.handle.take() else {
            return f64::NAN;
        };
        self.stop.store(1, Ordering::Relaxed);
        let reads = handle.join().expect("busy reader panicked");
        self.started.elapsed().as_nanos() as f64 / reads.max(1) as f64
    }
}

impl Drop for BusyReader {
    fn drop(&mut self) {
        // A benchmark that panics still stops its reader (no thread keeps spinning).
        if self.handle.is_some() && !std::thread::panicking() {
            self.finish();
        } else {
            self.stop.store(1, Ordering::Relaxed);
        }
    }
}

/// A thread inside a read-side section of a domain until released: holds up its grace
/// periods, so callbacks posted meanwhile stay pending (the anchors' "reader released at t0").
///
/// It sleeps in its section (memb and mb readers may block) rather than spinning: a spinning
/// holder is one more runnable thread on a 2-vCPU guest already running busy readers, and when
/// the scheduler had it preempted at t0 it left its section milliseconds late, in either unload
/// mode alike.
#[derive(Debug)]
pub struct HeldSection {
    release: Arc<std::sync::atomic::AtomicBool>,
    thread: JoinHandle<()>,
}

impl HeldSection {
    /// Start the thread and return once it is inside its section of `domain`.
    pub fn enter<D>(domain: D) -> HeldSection
    where
        D: std::ops::Deref<Target = Rcu> + Send + 'static,
    {
        let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let entered = Arc::new(Barrier::new(2));
        let thread = {
            let (release, entered) = (release.clone(), entered.clone());
            std::thread::spawn(move || {
                let g = domain.read_lock();
                entered.wait();
                while !release.load(Ordering::Acquire) {
                    std::thread::park();
                }
                drop(g);
            })
        };
        entered.wait();
        HeldSection { release, thread }
    }

    /// Leave the section (the thread then exits).
    pub fn release(&self) {
        self.release.store(true, Ordering::Release);
        self.thread.thread().unpark();
    }

    /// Release, and wait for the thread.
    pub fn join(self) {
        self.release();
        self.thread.join().unwrap();
    }
}
