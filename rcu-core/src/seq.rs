//! `GpSeq`: grace-period sequence numbers, the currency of sharing and polling.
//!
//! Every grace period of a domain has a number. A grace period is *started* when a driver
//! advances the domain's counter to its number, and *completed* when every reader that could
//! have started before that advance has left its read-side critical section. Because a later
//! grace period waits for a superset of the readers an earlier one waits for, completion is
//! monotone: "grace period N completed" implies every grace period below N completed too.
//!
//! That monotonicity is what lets callers share work, as the kernel's `rcu_seq_snap()` /
//! `rcu_seq_done()` do (kernel/rcu/rcu.h): a caller takes a *snapshot* — the number of the
//! first grace period that starts after the snapshot — and is satisfied as soon as the
//! completed number reaches it, whoever drove the grace period. Concurrent `synchronize()`
//! callers therefore pay for at most two grace periods between them, and polling is a
//! comparison of two integers, with no worker round trip (liburcu's poll API inherits its
//! call_rcu worker's 10 ms batching; see docs/design/grace-periods.md).
//!
//! Numbers are compared with wrapping arithmetic, so a counter that wraps still orders
//! correctly as long as two compared numbers are less than 2^62 apart.

use crate::handshake::GP_INC;

/// A grace-period number as seen by [`Rcu::get_state`](crate::Rcu::get_state),
/// [`Rcu::start_poll`](crate::Rcu::start_poll) and friends.
///
/// The low bits of the value are the reader nesting count of the domain's counter
/// (the handshake, `handshake.rs`); only the high bits number grace periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GpSeq(pub(crate) u64);

impl GpSeq {
    /// The snapshot for a counter whose current value is `ctr`: the number of the first
    /// grace period that starts after this moment. Readers that began before the snapshot
    /// carry a number strictly below it.
    pub(crate) fn snap(ctr: u64) -> GpSeq {
        GpSeq(ctr.wrapping_add(GP_INC))
    }

    /// Has a grace period at least as new as `self` completed, given the domain's
    /// completed number?
    pub fn done(self, completed: GpSeq) -> bool {
        completed.0.wrapping_sub(self.0) as i64 >= 0
    }

    /// Has a grace period at least as new as `self` been started, given the domain's
    /// current counter?
    pub fn started(self, current: GpSeq) -> bool {
        current.0.wrapping_sub(self.0) as i64 >= 0
    }

    /// The grace-period ordinal (the counter without its nesting bits), for humans.
    pub fn number(self) -> u64 {
        self.0 / GP_INC
    }
}

impl std::fmt::Display for GpSeq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gp#{}", self.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_needs_the_next_grace_period() {
        let ctr = 5 * GP_INC + 1;
        let s = GpSeq::snap(ctr);
        assert!(
            !s.done(GpSeq(ctr)),
            "the current counter has not completed a later GP"
        );
        assert!(s.done(GpSeq(ctr + GP_INC)));
        assert!(s.done(GpSeq(ctr + 7 * GP_INC)), "completion is monotone");
        assert!(!s.started(GpSeq(ctr)));
        assert!(s.started(GpSeq(ctr + GP_INC)));
    }

    #[test]
    fn comparison_survives_wraparound() {
        let ctr = u64::MAX - GP_INC + 2;
        let s = GpSeq::snap(ctr);
        assert!(s.0 < ctr, "the snapshot wrapped");
        assert!(!s.done(GpSeq(ctr)));
        assert!(s.done(GpSeq(s.0)));
        assert!(s.done(GpSeq(s.0.wrapping_add(GP_INC))));
    }
}
