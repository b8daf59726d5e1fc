//! The posting gate: step 1 of "RCU and Unloadable Modules" made enforceable.
//!
//! "Prevent any new RCU callbacks from being posted" is not a flag a poster may race past:
//! a poster that read the flag as open a moment ago may still be about to post (the 2020 LKML
//! discussion, loader-anchors.md pitfall 10). So every post *enters* the gate, checks that it
//! is open, posts, and *leaves*; closing sets the closed flag and then waits until no poster
//! that could have read it open is inside. After `close_and_wait` returns, no post can reach
//! the queues: a barrier that starts then waits for everything the module ever posted.
//!
//! "Wait until every poster inside has left" is a grace period, so the gate is one: entering
//! is a read section of a domain of the gate's own (memb: no fence, no shared write), closing
//! is a store and a `synchronize` of that domain. The first gate counted posters in one atomic
//! word; every post was then two read-modify-writes on a line all the module's posting
//! threads shared, which made posting slower with every thread added.

use rcu_core::{Flavor, Rcu, ReadGuard};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The domain every gate's posters read-lock: private, so that closing a gate waits for
/// posters only, not for any application reader.
fn domain() -> &'static Rcu {
    static GATES: OnceLock<Rcu> = OnceLock::new();
    GATES.get_or_init(|| {
        Rcu::builder()
            .flavor(Flavor::Memb)
            .name("rcumod-gates")
            .build()
    })
}

/// A module's posting gate.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    closed: AtomicBool,
}

/// Proof of being inside an open gate; leaving happens on drop.
#[derive(Debug)]
pub(crate) struct Pass {
    _section: ReadGuard<'static>,
}

impl Gate {
    /// Enter, or None if the gate is closed.
    #[inline]
    pub(crate) fn enter(&self) -> Option<Pass> {
        let section = domain().read_lock();
        // Acquire, and the read section: a poster that finds the gate open is inside a section
        // that `close_and_wait`'s grace period waits for (the section began before the grace
        // period, or it would have seen the flag set before the grace period began).
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        Some(Pass { _section: section })
    }

    /// Close, then wait until every poster that entered has left.
    pub(crate) fn close_and_wait(&self) {
        // SeqCst, then the grace period's own full fences (the writer side of memb pairs with
        // the readers' compiler barriers through membarrier or its fallback fence).
        self.closed.store(true, Ordering::SeqCst);
        domain().synchronize_expedited();
    }

    /// Is the gate closed?
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
