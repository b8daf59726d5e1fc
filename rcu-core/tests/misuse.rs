//! Misuse is an error you can read: each misuse panics with a message naming the domain.
//!
//! Waiting for a grace period inside a read-side section of the same domain would wait for
//! itself forever; reading on an offline qsbr thread or announcing a quiescent state inside a
//! section would break the grace-period guarantee silently; a guard of one domain does not
//! protect a cell of another. Each must panic (a deadlock or a use-after-free is the
//! alternative), the panic must be catchable (no abort), and the thread must stay usable.
//! Legitimate neighbours of these misuses (waiting for another domain inside a reader) must
//! keep working.

mod common;

use common::{panic_message, within, HANG_GUARD};
use rcu_core::{Flavor, Rcu, RcuCell};

const FLAVORS: [Flavor; 3] = [Flavor::Memb, Flavor::Mb, Flavor::Qsbr];

fn named(flavor: Flavor) -> Rcu {
    Rcu::builder().flavor(flavor).name("misuse-test").build()
}

/// Assert that `f`, run on `rcu`, panics with a message naming the domain and `what`, then
/// that the calling thread can still leave its sections and wait for a grace period.
fn assert_misuse(rcu: &Rcu, what: &str, f: impl FnOnce(&Rcu)) {
    let message = panic_message(|| f(rcu));
    assert!(
        message.contains("`misuse-test`") && message.contains(what),
        "{}: the panic for {what} should name it and the domain: {message}",
        rcu.flavor()
    );
    assert!(
        !rcu.in_read_section(),
        "the guards were dropped while unwinding"
    );
    rcu.quiescent_state();
    rcu.synchronize();
}

#[test]
fn waiting_inside_a_reader_of_the_same_domain_panics() {
    within(HANG_GUARD, "synchronize inside a reader", || {
        for flavor in FLAVORS {
            let rcu = named(flavor);
            assert_misuse(&rcu, "synchronize()", |rcu| {
                let _guard = rcu.read_lock();
                rcu.synchronize();
            });
            assert_misuse(&rcu, "synchronize_expedited()", |rcu| {
                let _guard = rcu.read_lock();
                rcu.synchronize_expedited();
            });
            assert_misuse(&rcu, "cond_synchronize()", |rcu| {
                let state = rcu.get_state();
                let _guard = rcu.read_lock();
                rcu.cond_synchronize(state);
            });
            // Nested: the inner guard does not hide the outer section.
            assert_misuse(&rcu, "synchronize()", |rcu| {
                let _outer = rcu.read_lock();
                drop(rcu.read_lock());
                rcu.synchronize();
            });
        }
    });
}

#[test]
fn waiting_for_another_domain_inside_a_reader_is_allowed() {
    within(
        HANG_GUARD,
        "synchronize of another domain inside a reader",
        || {
            for reader_flavor in FLAVORS {
                for writer_flavor in FLAVORS {
                    let reading = Rcu::new(reader_flavor);
                    let writing = Rcu::new(writer_flavor);
                    let cell = RcuCell::new_in(1u32, &writing);
                    let _guard = reading.read_lock();
                    writing.synchronize();
                    writing.synchronize_expedited();
                    writing.cond_synchronize(writing.get_state());
                    assert_eq!(*cell.publish(2).synchronize(), 1);
                    assert!(reading.in_read_section());
                }
            }
        },
    );
}

#[test]
fn reclaiming_a_retired_value_inside_a_reader_of_its_domain_panics() {
    within(HANG_GUARD, "Retired::synchronize inside a reader", || {
        for flavor in FLAVORS {
            let rcu = named(flavor);
            let cell = RcuCell::new_in(String::from("v1"), &rcu);
            assert_misuse(&rcu, "Retired value", |rcu| {
                let _guard = rcu.read_lock();
                let _ = cell.publish(String::from("v2")).synchronize();
            });
            assert_misuse(&rcu, "Retired value", |rcu| {
                let _guard = rcu.read_lock();
                let _ = cell.publish(String::from("v3")).synchronize_expedited();
            });
            // Dropping a Retired waits too.
            assert_misuse(&rcu, "Retired value", |rcu| {
                let _guard = rcu.read_lock();
                drop(cell.publish(String::from("v4")));
            });
            // An unrelated panic inside a reader, with a Retired alive: unwinding drops the
            // Retired inside the section. That must not turn into an abort.
            let message = panic_message(|| {
                let _guard = rcu.read_lock();
                let _retired = cell.publish(String::from("v5"));
                panic!("unrelated failure");
            });
            assert_eq!(message, "unrelated failure");
            assert_eq!(*cell.publish(String::from("v6")).synchronize(), "v5");
        }
    });
}

#[test]
fn quiescent_state_inside_a_qsbr_reader_panics() {
    within(HANG_GUARD, "quiescent_state inside a reader", || {
        let rcu = named(Flavor::Qsbr);
        assert_misuse(&rcu, "quiescent_state()", |rcu| {
            let _guard = rcu.read_lock();
            rcu.quiescent_state();
        });
        assert_misuse(&rcu, "thread_offline()", |rcu| {
            let _guard = rcu.read_lock();
            rcu.thread_offline();
        });
    });
}

#[test]
fn read_lock_on_an_offline_qsbr_thread_panics() {
    within(HANG_GUARD, "read_lock while offline", || {
        let rcu = named(Flavor::Qsbr);
        rcu.register_thread();
        rcu.thread_offline();
        assert_misuse(&rcu, "while offline", |rcu| drop(rcu.read_lock()));
        // The signal-safe form refuses instead: a panic in a signal handler would abort.
        assert!(
            rcu.try_read_lock().is_none(),
            "try_read_lock on an offline qsbr thread"
        );
        rcu.thread_online();
        assert!(rcu.try_read_lock().is_some());
        drop(rcu.read_lock());
    });
}

#[test]
fn loading_a_cell_with_a_guard_of_another_domain_panics() {
    within(HANG_GUARD, "load with a foreign guard", || {
        let owner = Rcu::builder().name("misuse-owner").build();
        let other = named(Flavor::Memb);
        let cell = RcuCell::new_in(7u32, &owner);
        assert_misuse(&other, "RcuCell of domain `misuse-owner`", |other| {
            let guard = other.read_lock();
            let _ = cell.load(&guard);
        });
        assert_eq!(*cell.load(&owner.read_lock()), 7);
    });
}
