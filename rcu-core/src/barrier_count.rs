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
