//! Stall warnings: a grace period that waits too long names the threads holding it.
//!
//! liburcu says nothing when a reader never leaves (rcu-anchors.md); the kernel prints an RCU
//! CPU stall warning after 21 s. Here a waiting driver warns, through `tracing` at target
//! `rcu_core::stall`, once its wait exceeds the domain's stall timeout, naming each blocking
//! thread with its tid and a lower bound on how long it has been inside its section (it
//! entered before this grace period started waiting), then again at 2×, 4×, … the timeout.

use std::time::{Duration, Instant};

/// A waiting driver's stall deadline.
#[derive(Debug)]
pub(crate) struct StallClock {
    start: Instant,
    next: Duration,
}

impl StallClock {
    pub(crate) fn start(timeout: Duration) -> StallClock {
        StallClock {
            start: Instant::now(),
            next: timeout,
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Is a warning due?
    pub(crate) fn due(&self) -> bool {
        self.elapsed() >= self.next
    }

    /// Time left until the next warning is due (the futex timeout of a sleeping driver).
    pub(crate) fn until_next(&self) -> Duration {
        self.next
            .saturating_sub(self.elapsed())
            .max(Duration::from_micros(50))
    }

    /// After a warning: the next one at twice the deadline.
    pub(crate) fn back_off(&mut self) {
        self.next = self.next.saturating_mul(2);
    }
}
