//! Nested read-side sections: a grace period waits for the outermost guard, not the inner one.
//!
//! Nesting is counted in the reader word (memb, mb) or a thread-local count (qsbr). If an
//! inner `read_unlock` were taken for the outermost one, a grace period could end while the
//! outer section still uses references, so the section would be unprotected for the rest of
//! its length. For qsbr the same holds for an expedited grace period: a forced quiescent state
//! arriving inside nested sections must be deferred to the outermost unlock.

mod common;

use common::Pending;
use rcu_core::{Flavor, Rcu};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Synchronize,
    Expedited,
}

impl Wait {
    fn run(self, rcu: &Rcu) {
        match self {
            Wait::Synchronize => rcu.synchronize(),
            Wait::Expedited => rcu.synchronize_expedited(),
        }
    }
}

/// Hold three nested guards on this thread while another thread runs `wait`; drop them
/// innermost first and check that `wait` is blocked until the outermost one is gone.
fn assert_waits_for_outermost(flavor: Flavor, wait: Wait) {
    let rcu = Arc::new(Rcu::new(flavor));
    let outer_left = Arc::new(AtomicBool::new(false));
    let outer = rcu.read_lock();
    let middle = rcu.read_lock();
    let inner = rcu.read_lock();
    assert!(rcu.in_read_section());

    let waiter = {
        let (rcu, outer_left) = (Arc::clone(&rcu), Arc::clone(&outer_left));
        Pending::spawn(move || {
            wait.run(&rcu);
            assert!(
                outer_left.load(Ordering::SeqCst),
                "{flavor}: {wait:?} returned before the outermost guard was dropped"
            );
        })
    };
    waiter.assert_blocked(&format!("{flavor}: {wait:?} with three guards held"));
    drop(inner);
    waiter.assert_blocked(&format!(
        "{flavor}: {wait:?} after the innermost guard dropped"
    ));
    drop(middle);
    assert!(
        rcu.in_read_section(),
        "{flavor}: the outer section ended early"
    );
    waiter.assert_blocked(&format!(
        "{flavor}: {wait:?} with only the outer guard held"
    ));

    outer_left.store(true, Ordering::SeqCst);
    drop(outer);
    assert!(!rcu.in_read_section());
    // A qsbr thread reports a quiescent state only when it says so (or goes offline); an
    // expedited grace period must not need it, as the outermost unlock reports for it.
    if wait == Wait::Synchronize {
        rcu.quiescent_state();
    }
    waiter.join(&format!(
        "{flavor}: {wait:?} after the outermost guard dropped"
    ));
    // The nesting count went back to zero: a new grace period does not wait for us.
    rcu.quiescent_state();
    rcu.synchronize();
}

#[test]
fn synchronize_waits_for_the_outermost_guard() {
    for flavor in [Flavor::Memb, Flavor::Mb, Flavor::Qsbr] {
        assert_waits_for_outermost(flavor, Wait::Synchronize);
    }
}

#[test]
fn expedited_waits_for_the_outermost_guard() {
    for flavor in [Flavor::Memb, Flavor::Mb, Flavor::Qsbr] {
        assert_waits_for_outermost(flavor, Wait::Expedited);
    }
}

#[test]
fn qsbr_quiescent_state_after_nested_sections_releases_the_grace_period() {
    let rcu = Arc::new(Rcu::new(Flavor::Qsbr));
    rcu.register_thread();
    {
        let _outer = rcu.read_lock();
        let _inner = rcu.read_lock();
    }
    // Outside every section, but no quiescent state yet: a grace period must wait for one.
    let waiter = {
        let rcu = Arc::clone(&rcu);
        Pending::spawn(move || rcu.synchronize())
    };
    waiter.assert_blocked("qsbr synchronize before the thread's quiescent state");
    rcu.quiescent_state();
    waiter.join("qsbr synchronize after quiescent_state");
}
