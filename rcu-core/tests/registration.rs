//! Thread registration and domain lifetime.
//!
//! Grace periods wait only for registered threads, so the registry must be exact: explicit
//! and automatic registration are counted, exiting threads are removed (else grace periods
//! would wait on dead threads), a thread that exits with a leaked guard does not block grace
//! periods forever, misuse (unregistering inside a section) panics naming the domain, a domain
//! can be dropped under registered threads that then go on to use other domains, and the
//! fixed number of thread-local domain slots is reported as an error, not a crash.

mod common;

use common::{panic_message, within, Captured, Pending, HANG_GUARD};
use rcu_core::{DomainError, Flavor, Rcu, RcuCell, MAX_DOMAINS};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Two tests depend on which domain slots are free: they hold this lock for writing, and
/// every other test of the binary holds it for reading while it runs, so that no domain is
/// created or dropped under them.
static SLOTS: RwLock<()> = RwLock::new(());

fn slots_shared() -> RwLockReadGuard<'static, ()> {
    SLOTS.read().unwrap_or_else(|e| e.into_inner())
}

fn slots_exclusive() -> RwLockWriteGuard<'static, ()> {
    SLOTS.write().unwrap_or_else(|e| e.into_inner())
}

/// What rcu-core logs in this binary. A global subscriber, because the leaked-guard report
/// is logged from the exiting thread's thread-local destructors, where no scoped subscriber
/// is in effect.
fn log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        tracing::subscriber::set_global_default(log.subscriber())
            .expect("no other global subscriber in this binary");
        log
    })
}

#[test]
fn explicit_register_and_unregister_are_counted() {
    let _slots = slots_shared();
    for flavor in [Flavor::Memb, Flavor::Qsbr] {
        let rcu = Arc::new(Rcu::builder().flavor(flavor).build());
        within(HANG_GUARD, "registration", move || {
            assert_eq!(rcu.registered_threads(), 0);
            assert!(rcu.try_read_lock().is_none(), "not registered yet");
            rcu.register_thread();
            assert_eq!(rcu.registered_threads(), 1);
            rcu.register_thread();
            assert_eq!(rcu.registered_threads(), 1, "registering twice counts once");
            drop(rcu.try_read_lock().expect("registered"));

            let other = {
                let rcu = Arc::clone(&rcu);
                std::thread::spawn(move || {
                    drop(rcu.read_lock());
                    let n = rcu.registered_threads();
                    assert!(rcu.unregister_thread());
                    n
                })
            };
            assert_eq!(other.join().unwrap(), 2, "read_lock registers implicitly");

            assert!(rcu.unregister_thread());
            assert_eq!(rcu.registered_threads(), 0);
            assert!(!rcu.unregister_thread(), "not registered any more");
            assert!(rcu.try_read_lock().is_none());
            // An unregistered thread is not waited for, whatever its flavor.
            rcu.synchronize();
            drop(rcu.read_lock());
            assert_eq!(rcu.registered_threads(), 1, "read_lock registers again");
        });
    }
}

#[test]
fn exiting_threads_are_unregistered() {
    let _slots = slots_shared();
    const THREADS: usize = 3;
    for flavor in [Flavor::Memb, Flavor::Qsbr] {
        let rcu = Arc::new(Rcu::builder().flavor(flavor).build());
        let registered = Arc::new(Barrier::new(THREADS + 1));
        let exit = Arc::new(Barrier::new(THREADS + 1));
        let threads: Vec<_> = (0..THREADS)
            .map(|i| {
                let (rcu, registered, exit) =
                    (Arc::clone(&rcu), Arc::clone(&registered), Arc::clone(&exit));
                std::thread::spawn(move || {
                    if i == 0 {
                        rcu.register_thread();
                    } else {
                        drop(rcu.read_lock());
                    }
                    registered.wait();
                    exit.wait();
                })
            })
            .collect();
        registered.wait();
        assert_eq!(rcu.registered_threads(), THREADS, "{flavor}");
        exit.wait();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            rcu.registered_threads(),
            0,
            "{flavor}: exited threads still registered"
        );
        // Nor are they waited for (qsbr would wait forever for an online thread).
        within(
            HANG_GUARD,
            "synchronize after the threads exited",
            move || rcu.synchronize(),
        );
    }
}

#[test]
#[should_panic(
    expected = "unregisters from RCU domain `reg-unregister` inside a read-side \
                           critical section"
)]
fn unregister_inside_a_reader_panics() {
    let _slots = slots_shared();
    let rcu = Rcu::builder().name("reg-unregister").build();
    within(HANG_GUARD, "unregister inside a reader", move || {
        let _guard = rcu.read_lock();
        rcu.unregister_thread();
    });
}

#[test]
fn unregister_inside_a_reader_panics_and_leaves_the_thread_usable() {
    let _slots = slots_shared();
    for flavor in [Flavor::Memb, Flavor::Mb, Flavor::Qsbr] {
        let rcu = Rcu::builder()
            .flavor(flavor)
            .name("reg-unregister-2")
            .build();
        within(HANG_GUARD, "unregister inside a reader", move || {
            let message = panic_message(|| {
                let _outer = rcu.read_lock();
                let _inner = rcu.read_lock();
                rcu.unregister_thread();
            });
            assert!(
                message.contains("domain `reg-unregister-2`"),
                "{flavor}: {message}"
            );
            assert!(!rcu.in_read_section(), "{flavor}: the guards were dropped");
            assert_eq!(rcu.registered_threads(), 1, "{flavor}: still registered");
            rcu.quiescent_state();
            rcu.synchronize();
            assert!(rcu.unregister_thread());
            assert_eq!(rcu.registered_threads(), 0);
        });
    }
}

#[test]
fn a_thread_exiting_with_a_leaked_guard_does_not_block_grace_periods() {
    let _slots = slots_shared();
    for flavor in [Flavor::Memb, Flavor::Mb, Flavor::Qsbr] {
        let log = log();
        let name = format!("reg-leak-{flavor}");
        let rcu = Arc::new(Rcu::builder().flavor(flavor).name(&name).build());
        let leaker = {
            let rcu = Arc::clone(&rcu);
            std::thread::Builder::new()
                .name("guard-leaker".into())
                .spawn(move || std::mem::forget(rcu.read_lock()))
                .unwrap()
        };
        leaker
            .join()
            .expect("exiting inside a section is reported, not a panic");
        assert_eq!(rcu.registered_threads(), 0, "{flavor}");
        within(
            Duration::from_secs(2),
            "synchronize after a thread exited with a leaked guard",
            {
                let rcu = Arc::clone(&rcu);
                move || rcu.synchronize()
            },
        );
        let text = log.text();
        let report = text
            .lines()
            .find(|l| l.contains(&format!("domain={name}")))
            .unwrap_or_else(|| panic!("{flavor}: no report of the leaked guard in:\n{text}"));
        assert!(
            report.contains("exited inside an RCU read-side critical section")
                && report.contains("guard-leaker"),
            "{flavor}: {report}"
        );
    }
}

#[test]
fn dropping_a_domain_detaches_its_idle_threads() {
    let _slots = slots_shared();
    const THREADS: usize = 2;
    let old = Arc::new(Rcu::builder().flavor(Flavor::Qsbr).name("reg-old").build());
    let (registered_tx, registered_rx) = mpsc::channel();
    let mut next = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..THREADS {
        let (next_tx, next_rx) = mpsc::channel::<(Arc<Rcu>, Arc<RcuCell<u64>>)>();
        let (old, registered_tx) = (Arc::clone(&old), registered_tx.clone());
        next.push(next_tx);
        threads.push(std::thread::spawn(move || {
            // Online in a qsbr domain, and silent: every grace period of `old` waits for us.
            old.register_thread();
            drop(old);
            registered_tx.send(()).unwrap();
            let (new, cell) = next_rx.recv().unwrap();
            let value = *cell.load(&new.read_lock());
            new.thread_offline();
            registered_tx.send(()).unwrap();
            // Stay registered until the sender is dropped.
            assert!(next_rx.recv().is_err());
            value
        }));
    }
    for _ in 0..THREADS {
        registered_rx.recv().unwrap();
    }
    assert_eq!(old.registered_threads(), THREADS);
    // A grace period of the worker's is now waiting for the idle threads.
    let state = old.start_poll();
    assert!(!old.poll(state));

    let old = Arc::into_inner(old).expect("the threads dropped their handles");
    within(
        HANG_GUARD,
        "dropping a domain with registered idle threads",
        move || drop(old),
    );

    let new = Arc::new(Rcu::builder().flavor(Flavor::Qsbr).name("reg-new").build());
    let cell = Arc::new(RcuCell::new_in(42u64, &new));
    for tx in &next {
        tx.send((Arc::clone(&new), Arc::clone(&cell))).unwrap();
    }
    for _ in 0..THREADS {
        registered_rx.recv().unwrap();
    }
    assert_eq!(new.registered_threads(), THREADS);
    within(HANG_GUARD, "synchronize on the new domain", {
        let new = Arc::clone(&new);
        move || new.synchronize()
    });
    drop(next);
    for t in threads {
        assert_eq!(t.join().unwrap(), 42);
    }
    assert_eq!(new.registered_threads(), 0);
}

#[test]
fn too_many_domains_is_an_error() {
    let _slots = slots_exclusive();
    let mut domains = Vec::new();
    let error = loop {
        match Rcu::builder().name("reg-filler").try_build() {
            Ok(rcu) => domains.push(rcu),
            Err(e) => break e,
        }
        assert!(
            domains.len() <= MAX_DOMAINS,
            "more than MAX_DOMAINS ({MAX_DOMAINS}) domains alive at once"
        );
    };
    assert_eq!(error, DomainError::TooManyDomains { max: MAX_DOMAINS });
    assert!(!domains.is_empty());
    assert!(
        error.to_string().contains(&MAX_DOMAINS.to_string()),
        "{error}"
    );
    // The slots are usable: one domain of the lot still works.
    let last = domains.last().unwrap();
    drop(last.read_lock());
    last.synchronize();
    assert!(last.unregister_thread());

    drop(domains.pop());
    let again = Rcu::builder().try_build().expect("a slot was freed");
    drop(domains);
    drop(again);
}

/// A `Retired` (like its cell) keeps only its domain's state alive, so it may outlive the
/// `Rcu`, whose thread-local slot a newer domain then reuses. Reclaiming it there must not
/// mistake the newer domain's reader record for its own: for a live memb domain that would
/// clear the reader word of a thread inside a section (a grace period then frees memory
/// under it); for a live qsbr domain it reports a misuse that is not one.
#[test]
fn reclaiming_a_retired_value_of_a_dropped_domain_leaves_the_slot_reuser_alone() {
    let _slots = slots_exclusive();
    for live_flavor in [Flavor::Memb, Flavor::Mb, Flavor::Qsbr] {
        let dead = Rcu::builder().flavor(Flavor::Qsbr).name("reg-dead").build();
        let cell = RcuCell::new_in(1u32, &dead);
        let retired = cell.publish(2);
        dead.register_thread();
        drop(dead);
        // Slots are handed out lowest first, and no other test creates or drops a domain
        // meanwhile: the new domain takes the slot `dead` had.
        let live = Arc::new(Rcu::new(live_flavor));
        let guard = live.read_lock();
        assert_eq!(*retired.synchronize(), 1, "{live_flavor}");
        assert!(
            live.in_read_section(),
            "{live_flavor}: the section was ended"
        );

        let waiter = {
            let live = Arc::clone(&live);
            Pending::spawn(move || live.synchronize())
        };
        waiter.assert_blocked(&format!(
            "{live_flavor}: synchronize while this thread is inside a section, after \
             reclaiming a value of a dropped domain"
        ));
        drop(guard);
        live.quiescent_state();
        waiter.join("synchronize after the section ended");
        assert!(live.unregister_thread());
    }
}
