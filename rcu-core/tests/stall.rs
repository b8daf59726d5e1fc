//! Stall warnings: a grace period held up past the domain's stall timeout names the culprit.
//!
//! A reader that never leaves its section (or a qsbr thread that never reports) turns every
//! `synchronize()` into a hang; the warning is how an operator finds the thread. It must name
//! the domain, the thread and its tid, repeat with back-off while the stall lasts, and for
//! qsbr say that a quiescent state is missing (the usual cause there is not a long section).
//! Output is captured through a `tracing` subscriber scoped to the synchronizing thread.

mod common;

use common::{within, Captured, HeldReader, Pending, HANG_GUARD};
use rcu_core::{Flavor, Rcu};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const STALL_TIMEOUT: Duration = Duration::from_millis(30);
/// How long the holder keeps the grace period waiting: several stall timeouts.
const HOLD: Duration = Duration::from_millis(250);

/// A thread named `stall-holder` holds up `rcu`'s grace periods for [`HOLD`], either inside
/// a read-side section or (qsbr) online without reporting, while this thread synchronizes.
/// Returns the holder's tid and what was logged.
fn stall(rcu: Arc<Rcu>, in_section: bool) -> (i32, String) {
    let log = Captured::default();
    let subscriber = log.subscriber();
    let (holding_tx, holding_rx) = mpsc::channel();
    let holder = {
        let rcu = Arc::clone(&rcu);
        std::thread::Builder::new()
            .name("stall-holder".into())
            .spawn(move || {
                // SAFETY: gettid takes no arguments and cannot fail.
                let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
                rcu.register_thread();
                let guard = in_section.then(|| rcu.read_lock());
                holding_tx.send(tid).unwrap();
                std::thread::sleep(HOLD);
                drop(guard);
                rcu.thread_offline();
            })
            .unwrap()
    };
    let tid = holding_rx.recv().unwrap();
    tracing::subscriber::with_default(subscriber, || rcu.synchronize());
    holder.join().unwrap();
    (tid, log.text())
}

fn assert_warned(flavor: Flavor, in_section: bool, expected: &str) {
    let rcu = Arc::new(
        Rcu::builder()
            .flavor(flavor)
            .name("stall-test")
            .stall_timeout(STALL_TIMEOUT)
            .build(),
    );
    let (tid, text) = within(HANG_GUARD, "a stalled synchronize", {
        let rcu = Arc::clone(&rcu);
        move || stall(rcu, in_section)
    });
    println!("{text}");
    for needle in [
        "rcu_core::stall",
        "stall-holder",
        "tid",
        &format!("tid {tid}"),
        "stall-test",
        expected,
    ] {
        assert!(
            text.contains(needle),
            "{flavor}: the stall warning does not mention {needle:?}:\n{text}"
        );
    }
    let stats = rcu.stats();
    assert!(
        stats.stall_warnings >= 2,
        "{flavor}: a stall of {HOLD:?} with a {STALL_TIMEOUT:?} timeout warned fewer than \
         twice: {stats:?}"
    );
    assert_eq!(
        text.matches("stall-holder (tid").count() as u64,
        stats.stall_warnings,
        "{flavor}: one logged warning per counted warning"
    );
}

#[test]
fn a_long_reader_is_named_with_back_off() {
    for flavor in [Flavor::Memb, Flavor::Mb] {
        assert_warned(flavor, true, "is still inside a read-side critical section");
    }
}

#[test]
fn a_silent_qsbr_thread_is_named_for_its_missing_quiescent_state() {
    assert_warned(Flavor::Qsbr, false, "has not passed a quiescent state");
}

#[test]
fn no_warning_before_the_timeout() {
    let rcu = Arc::new(
        Rcu::builder()
            .name("stall-quiet")
            .stall_timeout(Duration::from_secs(60))
            .build(),
    );
    let log = Captured::default();
    let subscriber = log.subscriber();
    let reader = HeldReader::enter(Arc::clone(&rcu));
    let waiter = {
        let rcu = Arc::clone(&rcu);
        Pending::spawn(move || tracing::subscriber::with_default(subscriber, || rcu.synchronize()))
    };
    waiter.assert_blocked("synchronize with a reader inside");
    reader.leave();
    waiter.join("synchronize after the reader left");
    assert_eq!(rcu.stats().stall_warnings, 0);
    let text = log.text();
    assert!(text.is_empty(), "unexpected output: {text}");
}
