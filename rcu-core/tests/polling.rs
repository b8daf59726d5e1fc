//! Polling grace periods: `get_state`, `start_poll`, `poll`, `cond_synchronize`, `gp_seq`.
//!
//! Polling lets an updater defer reclamation without blocking, so its contract matters in
//! both directions: a state must not read as done before a full grace period has elapsed
//! (that would free memory under readers), and a state from `start_poll` must eventually read
//! as done without anyone else calling `synchronize` (else deferred work leaks). States are
//! bound to their domain, and the sequence numbers behind them are ordered.

mod common;

use common::{wait_until, HeldReader, Pending, HANG_GUARD};
use rcu_core::{Flavor, Rcu};
use std::sync::Arc;

const FLAVORS: [Flavor; 3] = [Flavor::Memb, Flavor::Mb, Flavor::Qsbr];

#[test]
fn start_poll_completes_without_any_synchronize() {
    for flavor in FLAVORS {
        let rcu = Rcu::new(flavor);
        let state = rcu.start_poll();
        wait_until(
            HANG_GUARD,
            "the worker completing start_poll()'s grace period",
            || rcu.poll(state),
        );
        assert!(
            rcu.stats().grace_periods >= 1,
            "{flavor}: poll() is true but no grace period was driven: {:?}",
            rcu.stats()
        );
    }
}

#[test]
fn start_poll_waits_for_a_pre_existing_reader() {
    for flavor in FLAVORS {
        let rcu = Arc::new(Rcu::new(flavor));
        let reader = HeldReader::enter(Arc::clone(&rcu));
        let state = rcu.start_poll();
        let waiter = {
            let rcu = Arc::clone(&rcu);
            Pending::spawn(move || {
                while !rcu.poll(state) {
                    std::thread::yield_now();
                }
            })
        };
        waiter.assert_blocked(&format!("{flavor}: poll() true while a reader is inside"));
        reader.leave();
        waiter.join("poll() after the reader left");
    }
}

#[test]
fn get_state_alone_does_not_start_a_grace_period() {
    for flavor in FLAVORS {
        let rcu = Rcu::new(flavor);
        let state = rcu.get_state();
        assert!(!rcu.poll(state), "{flavor}: a fresh state is already done");
        let before = rcu.gp_seq();
        // Nothing drives grace periods in this domain: give a (wrong) worker time to act.
        std::thread::sleep(common::SETTLE);
        assert!(
            !rcu.poll(state),
            "{flavor}: get_state() completed by itself"
        );
        assert_eq!(
            rcu.gp_seq(),
            before,
            "{flavor}: get_state() started a grace period"
        );
        assert_eq!(rcu.stats().grace_periods, 0);

        rcu.synchronize();
        assert!(
            rcu.poll(state),
            "{flavor}: synchronize() did not complete the state"
        );
        assert!(
            !rcu.poll(rcu.get_state()),
            "{flavor}: a state taken after the last grace period is already done"
        );
    }
}

#[test]
#[should_panic(expected = "a PollState of another RCU domain was passed to domain `poll-b`")]
fn poll_with_a_state_of_another_domain_panics() {
    let a = Rcu::builder().name("poll-a").build();
    let b = Rcu::builder().name("poll-b").build();
    let state = a.get_state();
    b.poll(state);
}

#[test]
#[should_panic(expected = "a PollState of another RCU domain was passed to domain `poll-b`")]
fn cond_synchronize_with_a_state_of_another_domain_panics() {
    let a = Rcu::builder().name("poll-a").build();
    let b = Rcu::builder().name("poll-b").build();
    let state = a.get_state();
    a.synchronize();
    b.cond_synchronize(state);
}

#[test]
fn cond_synchronize_on_a_completed_state_returns_at_once() {
    for flavor in FLAVORS {
        let rcu = Arc::new(Rcu::new(flavor));
        let state = rcu.get_state();
        rcu.synchronize();
        let before = rcu.stats();
        // A reader inside now would block any new grace period: returning proves none is
        // driven.
        let reader = HeldReader::enter(Arc::clone(&rcu));
        let left = reader.left_flag();
        common::within(HANG_GUARD, "cond_synchronize on a completed state", {
            let rcu = Arc::clone(&rcu);
            move || rcu.cond_synchronize(state)
        });
        assert!(!left.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            rcu.stats().grace_periods,
            before.grace_periods,
            "{flavor}: cond_synchronize drove a grace period for a completed state"
        );
        reader.leave();
    }
}

#[test]
fn cond_synchronize_on_a_pending_state_waits_for_it() {
    for flavor in FLAVORS {
        let rcu = Arc::new(Rcu::new(flavor));
        let reader = HeldReader::enter(Arc::clone(&rcu));
        let state = rcu.get_state();
        let waiter = {
            let rcu = Arc::clone(&rcu);
            Pending::spawn(move || rcu.cond_synchronize(state))
        };
        waiter.assert_blocked(&format!("{flavor}: cond_synchronize with a reader inside"));
        reader.leave();
        waiter.join("cond_synchronize");
        assert!(rcu.poll(state));
        assert!(rcu.stats().grace_periods >= 1);
    }
}

#[test]
fn gp_seq_orders_states_and_grace_periods() {
    let rcu = Rcu::new(Flavor::Memb);
    let (current, completed) = rcu.gp_seq();
    assert!(
        completed.started(current),
        "completed {completed} is ahead of the current grace period {current}"
    );

    let s1 = rcu.get_state();
    assert_eq!(
        s1,
        rcu.get_state(),
        "no grace period in between: same state"
    );
    assert!(s1.seq().number() > current.number());
    assert!(
        !s1.seq().started(current),
        "{} is the next grace period",
        s1.seq()
    );
    assert!(!s1.seq().done(completed));

    rcu.synchronize();
    let (current2, completed2) = rcu.gp_seq();
    assert!(current2.number() > current.number());
    assert!(completed2.number() > completed.number());
    assert!(s1.seq().started(current2));
    assert!(s1.seq().done(completed2));
    assert!(completed2.started(current2));

    let s2 = rcu.get_state();
    assert!(s2.seq().number() > s1.seq().number());
    assert!(!s2.seq().done(completed2));
    // Completion is monotone: a later grace period's completion implies the earlier one's.
    rcu.synchronize();
    let (_, completed3) = rcu.gp_seq();
    assert!(s1.seq().done(completed3) && s2.seq().done(completed3));
    assert!(rcu.poll(s1) && rcu.poll(s2));
    assert_eq!(
        format!("{completed3}"),
        format!("gp#{}", completed3.number())
    );
}
