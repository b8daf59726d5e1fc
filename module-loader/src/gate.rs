//! The posting gate: step 1 of "RCU and Unloadable Modules" made enforceable.
//!
//! "Prevent any new RCU callbacks from being posted" is not a flag a poster may race past:
//! a poster that read the flag as open a moment ago may still be about to post (the 2020 LKML
//! discussion, loader-anchors.md pitfall 10). So every post *enters* the gate (one atomic add),
//! checks that it is open, posts, and *leaves*; closing sets the closed bit and then waits until
//! no poster is inside. After `close_and_wait` returns, no post can reach the queues: a barrier
//! that starts then waits for everything the module ever posted.

use std::sync::atomic::{AtomicU64, Ordering};

const CLOSED: u64 = 1 << 63;

/// A module's posting gate.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// Bit 63: closed. Low bits: posters inside.
    state: AtomicU64,
}

/// Proof of being inside an open gate; leaving happens on drop.
#[derive(Debug)]
pub(crate) struct Pass<'a> {
    gate: &'a Gate,
}

impl Gate {
    /// Enter, or None if the gate is closed.
    pub(crate) fn enter(&self) -> Option<Pass<'_>> {
        // AcqRel: pairs with the closer's read of the count.
        let s = self.state.fetch_add(1, Ordering::AcqRel);
        if s & CLOSED != 0 {
            self.state.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Pass { gate: self })
    }

    /// Close, then wait until every poster that entered has left.
    pub(crate) fn close_and_wait(&self) {
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
        let mut spins = 0u32;
        while self.state.load(Ordering::Acquire) & !CLOSED != 0 {
            // A poster inside is between two atomic operations of `post`: nanoseconds.
            if spins < 1000 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Is the gate closed?
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.gate.state.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn close_waits_for_posters_inside() {
        let g = Arc::new(Gate::default());
        let inside = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let t = {
            let (g, inside, release) = (g.clone(), inside.clone(), release.clone());
            std::thread::spawn(move || {
                let _p = g.enter().unwrap();
                inside.store(true, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
            })
        };
        while !inside.load(Ordering::SeqCst) {}
        let closer = {
            let g = g.clone();
            std::thread::spawn(move || g.close_and_wait())
        };
        while !g.is_closed() {}
        assert!(g.enter().is_none(), "closed gate refuses");
        assert!(!closer.is_finished(), "close waits for the poster inside");
        release.store(true, Ordering::SeqCst);
        closer.join().unwrap();
        t.join().unwrap();
    }
}
