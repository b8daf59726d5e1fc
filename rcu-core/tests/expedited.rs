//! Expedited grace periods: as safe as normal ones, and able to hurry qsbr threads.
//!
//! `synchronize_expedited` must wait for pre-existing readers exactly like `synchronize`, on
//! every flavor. For qsbr it must also finish although a registered, online thread never calls
//! `quiescent_state()` (it forces a quiescent state by signal, where a normal grace period
//! would wait forever), yet never cut short a read-side section: a thread found inside one is
//! asked to report from its outermost `read_unlock`.

mod common;

use common::{assert_waits_for_reader, within, Pending, SilentThread};
use rcu_core::{Flavor, Rcu, RcuCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

#[test]
fn expedited_waits_for_a_pre_existing_reader() {
    for flavor in [Flavor::Memb, Flavor::Mb, Flavor::Qsbr] {
        let rcu = Arc::new(Rcu::new(flavor));
        assert_waits_for_reader(&rcu, "synchronize_expedited", |rcu| {
            rcu.synchronize_expedited()
        });
        let cell = Arc::new(RcuCell::new_in(1u32, &rcu));
        assert_waits_for_reader(&rcu, "Retired::synchronize_expedited", move |_| {
            assert_eq!(*cell.publish(2).synchronize_expedited(), 1);
        });
        let stats = rcu.stats();
        assert!(stats.expedited_grace_periods >= 2, "{flavor}: {stats:?}");
        assert_eq!(
            stats.grace_periods, 0,
            "{flavor}: a normal grace period ran"
        );
        if flavor != Flavor::Qsbr {
            assert_eq!(stats.forced_quiescent_states, 0, "{flavor}: {stats:?}");
        }
    }
}

#[test]
fn qsbr_expedited_forces_a_thread_that_never_reports() {
    let rcu = Arc::new(Rcu::new(Flavor::Qsbr));
    let silent = SilentThread::start(Arc::clone(&rcu));

    // The contrast: a normal grace period (driven by the worker) waits for the silent thread.
    let state = rcu.start_poll();
    std::thread::sleep(common::SETTLE);
    assert!(
        !rcu.poll(state),
        "a normal qsbr grace period completed although an online thread never reported"
    );

    within(
        Duration::from_secs(2),
        "synchronize_expedited with an online qsbr thread that never reports",
        {
            let rcu = Arc::clone(&rcu);
            move || rcu.synchronize_expedited()
        },
    );
    let stats = rcu.stats();
    println!("{stats:?}");
    assert!(stats.forced_quiescent_states > 0, "{stats:?}");
    assert!(stats.expedited_grace_periods >= 1, "{stats:?}");
    assert!(
        rcu.poll(state),
        "the expedited grace period, which started later, completed the earlier state"
    );
    assert_eq!(
        rcu.registered_threads(),
        1,
        "the silent thread is still registered"
    );
    silent.stop();
}

/// Block (or unblock) rcu-core's forcing signal on the calling thread.
fn mask_forcing_signal(how: libc::c_int) {
    // SAFETY: `set` is a zero-initialised sigset_t that sigemptyset/sigaddset initialise
    // before pthread_sigmask reads it; a null old-set pointer is allowed.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, rcu_core::forcing_signal());
        libc::pthread_sigmask(how, &set, std::ptr::null_mut())
    };
    assert_eq!(rc, 0, "pthread_sigmask");
}

/// The hint path in isolation: the reader blocks the forcing signal, so its handler never
/// runs and the only way for it to report is its outermost `read_unlock`, which must notice
/// the expedited grace period's request. After the section it stays online and silent.
#[test]
fn qsbr_expedited_waits_for_a_section_then_its_unlock_reports() {
    let rcu = Arc::new(Rcu::new(Flavor::Qsbr));
    let left = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (inside_tx, inside_rx) = mpsc::channel();
    let (leave_tx, leave_rx) = mpsc::channel::<()>();
    let holder = {
        let (rcu, left, stop) = (Arc::clone(&rcu), Arc::clone(&left), Arc::clone(&stop));
        std::thread::spawn(move || {
            mask_forcing_signal(libc::SIG_BLOCK);
            {
                let _guard = rcu.read_lock();
                inside_tx.send(()).unwrap();
                leave_rx.recv().unwrap();
                left.store(true, Ordering::SeqCst);
            }
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_micros(100));
            }
            mask_forcing_signal(libc::SIG_UNBLOCK);
        })
    };
    inside_rx.recv().unwrap();

    let waiter = {
        let (rcu, left) = (Arc::clone(&rcu), Arc::clone(&left));
        Pending::spawn(move || {
            rcu.synchronize_expedited();
            assert!(
                left.load(Ordering::SeqCst),
                "synchronize_expedited returned while a qsbr reader was inside its section"
            );
        })
    };
    waiter.assert_blocked("synchronize_expedited while a qsbr reader is inside");
    assert!(
        rcu.stats().forced_quiescent_states > 0,
        "the expedited grace period did not ask the reader to report"
    );
    leave_tx.send(()).unwrap();
    waiter.join("synchronize_expedited after the reader's outermost read_unlock");
    assert_eq!(
        rcu.registered_threads(),
        1,
        "the holder is still registered (and online): its read_unlock reported"
    );
    stop.store(true, Ordering::Relaxed);
    holder.join().unwrap();
}
