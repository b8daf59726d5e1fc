//! Per-domain counters, read with [`Rcu::stats`](crate::Rcu::stats).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) grace_periods: AtomicU64,
    pub(crate) expedited: AtomicU64,
    pub(crate) stall_warnings: AtomicU64,
    pub(crate) forced_quiescent_states: AtomicU64,
}

/// A snapshot of a domain's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RcuStats {
    /// Normal grace periods driven.
    pub grace_periods: u64,
    /// Expedited grace periods driven.
    pub expedited_grace_periods: u64,
    /// Stall warnings emitted (one per blocking thread per warning round).
    pub stall_warnings: u64,
    /// Forced-quiescent-state requests sent to qsbr threads by expedited grace periods.
    pub forced_quiescent_states: u64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> RcuStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RcuStats {
            grace_periods: get(&self.grace_periods),
            expedited_grace_periods: get(&self.expedited),
            stall_warnings: get(&self.stall_warnings),
            forced_quiescent_states: get(&self.forced_quiescent_states),
        }
    }
}
