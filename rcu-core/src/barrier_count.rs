//! The barrier's outstanding-sentinel count, and the premature-completion race it prevents.
//!
//! A barrier entrains sentinels one queue at a time while the worker may already be invoking
//! them. If the count started at zero, the first sentinel could run (1 → 0) before the second
//! was counted, and the barrier would complete while callbacks behind the second sentinel are
//! still queued — the race of the seed document's Quick Quiz ("what prevents the first CPU's
//! callback from completing before the last CPU has posted its own?"). So the count starts at
//! one, each sentinel adds one *before* it becomes visible to the invoker, and the entraining
//! barrier drops its own unit only when every sentinel is in place. Written against the
//! primitive shim so the loom model below checks this very code.

use crate::primitive::{AtomicU32, Ordering};

#[derive(Debug, Default)]
pub(crate) struct BarrierCount {
    count: AtomicU32,
}

impl BarrierCount {
    /// A barrier starts entraining: the entrainer's own unit.
    pub(crate) fn begin(&self) {
        self.count.store(1, Ordering::Relaxed);
    }

    /// A sentinel is about to be posted (call before it becomes visible to the invoker).
    pub(crate) fn add(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A sentinel ran. True if it was the last one out (the caller wakes the barrier).
    pub(crate) fn sentinel_ran(&self) -> bool {
        // AcqRel: everything the invoker did before this sentinel (the callbacks ahead of it)
        // happens-before the barrier's return.
        self.count.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// The entrainer is done posting. True if every sentinel already ran.
    pub(crate) fn release_guard(&self) -> bool {
        self.count.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Sentinels (and guard) outstanding; Acquire pairs with `sentinel_ran`.
    pub(crate) fn outstanding(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    /// The futex word the barrier sleeps on.
    #[cfg(not(loom))]
    pub(crate) fn word(&self) -> &std::sync::atomic::AtomicU32 {
        &self.count
    }

    /// fork(), child: no barrier is in flight.
    #[cfg(not(loom))]
    pub(crate) fn reset(&self) {
        self.count.store(0, Ordering::Relaxed);
    }
}

/// loom models of the premature-completion race (the seed's Quick Quiz #3). Run with
/// `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p rcu-core --release --lib
/// barrier_count`.
///
/// The model: the entrainer (the barrier) calls `begin`, then for each of two queues counts a
/// sentinel (`add`) and posts it — a Release flag plus a wake-up of the invoker, standing for
/// the queue lock under which the sentinel becomes visible and the worker's futex kick — and
/// finally drops its unit (`release_guard`). An invoker runs each posted sentinel: first the
/// callback queued ahead of it (a plain write to a loom `UnsafeCell`, so loom also checks that
/// the barrier's later read is ordered after it), then `sentinel_ran`. Completion is signalled
/// as the count's contract says and as the kernel's `rcu_barrier` does (an edge,
/// `complete()`): whoever sees the count reach zero — a `sentinel_ran` or the `release_guard`
/// returning true — raises the barrier's completion flag and wakes it. Once the barrier sees
/// the flag, both callbacks must have run, the count must read zero, and exactly one party may
/// have seen the count reach zero.
///
/// Waits are `loom::sync::Notify` (a futex-like park with a latched permit and spurious
/// wake-ups, so every wait re-checks its flag), not yield loops, which would multiply the
/// explored branches.
///
/// Two shapes: one invoker running both sentinels (rcu-core serializes invocation under the
/// engine's invoker lock), and one invoker per queue (nothing orders the two invokers but the
/// count itself), which checks the count's AcqRel/Acquire orderings on their own.
///
/// Bound: `LOOM_MAX_PREEMPTIONS`, 3 when unset. The premature completion needs a single
/// preemption (the invoker running sentinel 0 between the entrainer's two posts), so the
/// control is caught well within the bound.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicBool, AtomicUsize};
    use loom::sync::{Arc, Notify};
    use loom::thread;

    const SENTINELS: usize = 2;

    struct World {
        count: BarrierCount,
        /// Sentinel `i` has been entrained (is visible to its invoker).
        posted: [AtomicBool; SENTINELS],
        /// Wakes invoker `j` (one waiter each).
        kick: Vec<Notify>,
        /// The callback queued ahead of sentinel `i` has run.
        callback_ran: [UnsafeCell<bool>; SENTINELS],
        /// The barrier's completion (set by whoever saw the count reach zero), and its wake-up.
        complete: AtomicBool,
        wake_barrier: Notify,
        /// How many parties saw the count reach zero.
        last_ones_out: AtomicUsize,
    }

    impl World {
        fn signal_complete(&self) {
            self.last_ones_out.fetch_add(1, Ordering::Relaxed);
            self.complete.store(true, Ordering::Release);
            self.wake_barrier.notify();
        }
    }

    fn builder() -> loom::model::Builder {
        let mut b = loom::model::Builder::new();
        if b.preemption_bound.is_none() {
            b.preemption_bound = Some(3);
        }
        b
    }

    /// `correct`: the real protocol. Otherwise the count starts at zero (no `begin` unit) and
    /// the entrainer never drops a unit (no `release_guard`).
    fn barrier_model(correct: bool, invokers: usize) {
        builder().check(move || {
            let w = Arc::new(World {
                count: BarrierCount::default(),
                posted: std::array::from_fn(|_| AtomicBool::new(false)),
                kick: (0..invokers).map(|_| Notify::new()).collect(),
                callback_ran: std::array::from_fn(|_| UnsafeCell::new(false)),
                complete: AtomicBool::new(false),
                wake_barrier: Notify::new(),
                last_ones_out: AtomicUsize::new(0),
            });
            let handles: Vec<_> = (0..invokers)
                .map(|j| {
                    let w = w.clone();
                    thread::spawn(move || {
                        for i in (0..SENTINELS).filter(|i| i % invokers == j) {
                            while !w.posted[i].load(Ordering::Acquire) {
                                w.kick[j].wait();
                            }
                            // SAFETY: only this invoker writes the cell; the barrier reads it
                            // only after completion, which must be ordered after this write
                            // (that ordering is what loom checks).
                            w.callback_ran[i].with_mut(|p| unsafe { *p = true });
                            if w.count.sentinel_ran() {
                                w.signal_complete();
                            }
                        }
                    })
                })
                .collect();

            // The entrainer.
            if correct {
                w.count.begin();
            }
            for i in 0..SENTINELS {
                w.count.add();
                w.posted[i].store(true, Ordering::Release);
                w.kick[i % invokers].notify();
            }
            if correct && w.count.release_guard() {
                w.signal_complete();
            }
            // The barrier waits for its completion.
            while !w.complete.load(Ordering::Acquire) {
                w.wake_barrier.wait();
            }
            for i in 0..SENTINELS {
                // SAFETY: as above; a read racing with the write is what loom reports.
                let ran = w.callback_ran[i].with(|p| unsafe { *p });
                assert!(ran, "the barrier completed before sentinel {i} ran");
            }
            assert_eq!(
                w.count.outstanding(),
                0,
                "completed with sentinels outstanding"
            );
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(
                w.last_ones_out.load(Ordering::Relaxed),
                1,
                "the count reached zero more than once"
            );
        });
    }

    #[test]
    fn barrier_completes_after_every_sentinel_one_invoker() {
        barrier_model(true, 1);
    }

    #[test]
    fn barrier_completes_after_every_sentinel_two_invokers() {
        barrier_model(true, 2);
    }

    /// The control: without the entrainer's unit, the first sentinel can run before the
    /// second is counted, and the barrier completes early; loom must find that interleaving
    /// (and fail on it for that reason, not another).
    #[test]
    fn count_starting_at_zero_is_caught() {
        let payload = std::panic::catch_unwind(|| barrier_model(false, 1)).expect_err(
            "the loom model failed to catch a barrier count without the entrainer's unit",
        );
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        assert!(
            msg.contains("completed before sentinel") || msg.contains("outstanding"),
            "the control failed for another reason than premature completion: {msg}"
        );
    }
}
