//! The seed's point ("RCU and Unloadable Modules", LWN 2007): several back-to-back
//! `synchronize()` calls do not wait for callbacks; only `barrier()` does.
//!
//! "One might be tempted to try several back-to-back synchronize_rcu() calls, but this is
//! still not guaranteed to work. If there is a very heavy RCU-callback load, then some of the
//! callbacks might be deferred." rcu-core's worker defers exactly so: it invokes at most
//! `callback_batch` callbacks (or `callback_time_cap` worth) per pass, then yields. A
//! "module" here is a flag its callbacks check: a callback that runs after the module was
//! unloaded is the crash of the seed's picture.
//!
//! 1. The wrong protocol: post a flood of slow callbacks, `synchronize()` three times,
//!    "unload". Callbacks are still pending after the grace periods, and run after the unload.
//! 2. The right protocol: stop posting, `barrier()`, unload. Nothing runs after the unload.
//!
//! Invocation is deliberately slow (each callback spins for [`WORK`]; the flood is at least
//! [`FLOOD`] × [`WORK`] = 200 ms of worker time), and the flood is posted while a reader holds
//! the grace period, so no callback can run before the synchronizes begin; three grace periods
//! with no reader take microseconds. That makes "not all ran" certain, not a timing bet.

mod common;

use common::domains::Domain;
use common::{busy_for, cpu_heavy, within, HeldReader};
use rcu_core::{CallbackStats, Flavor, Rcu, Srcu};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Callbacks in the flood.
const FLOOD: u64 = 50_000;
/// Work done by each callback.
const WORK: Duration = Duration::from_micros(4);
/// Hang guard of one test.
const LIMIT: Duration = Duration::from_secs(30);

/// A loadable module: its callbacks must not run once it is unloaded.
#[derive(Default)]
struct Module {
    unloaded: AtomicBool,
    ran: AtomicU64,
    ran_after_unload: AtomicU64,
}

impl Module {
    fn post_flood(self: &Arc<Self>, dom: &Domain, n: u64) {
        for _ in 0..n {
            let m = Arc::clone(self);
            dom.call(move || {
                busy_for(WORK);
                if m.unloaded.load(Ordering::SeqCst) {
                    m.ran_after_unload.fetch_add(1, Ordering::SeqCst);
                }
                m.ran.fetch_add(1, Ordering::SeqCst);
            });
        }
    }

    fn unload(&self) {
        self.unloaded.store(true, Ordering::SeqCst);
    }
}

/// The seed's experiment on `dom`. `held` enters a read section of `dom` on another thread
/// (so the flood cannot start running while it is posted).
fn seed_experiment(dom: Arc<Domain>, held: impl Fn() -> HeldReader) -> (CallbackStats, u64) {
    // 1. The wrong protocol.
    let module = Arc::new(Module::default());
    let reader = held();
    module.post_flood(&dom, FLOOD);
    assert_eq!(
        dom.callback_stats().invoked,
        0,
        "a callback ran while a reader held its grace period"
    );
    reader.leave();
    let gps = dom.grace_periods();
    dom.synchronize();
    dom.synchronize();
    dom.synchronize();
    let after_sync = dom.callback_stats();
    module.unload();
    assert!(
        dom.grace_periods() >= gps + 3,
        "three back-to-back synchronize() calls are three grace periods"
    );
    assert!(
        after_sync.invoked < FLOOD,
        "{}: all {FLOOD} callbacks had run after three synchronize() calls, which do not wait \
         for callbacks: {after_sync:?}",
        dom.name()
    );
    dom.barrier().unwrap();
    let late = module.ran_after_unload.load(Ordering::SeqCst);
    println!(
        "{}: after 3 × synchronize(): {} of {FLOOD} callbacks had run; {late} ran after the \
         \"unload\"",
        dom.name(),
        after_sync.invoked
    );
    assert!(
        late > 0,
        "{}: the flood was still pending at the unload, so callbacks ran after it",
        dom.name()
    );
    assert_eq!(module.ran.load(Ordering::SeqCst), FLOOD);

    // 2. The right protocol: stop posting (done), barrier, unload.
    let module = Arc::new(Module::default());
    module.post_flood(&dom, FLOOD / 2);
    dom.barrier().unwrap();
    module.unload();
    assert_eq!(
        module.ran.load(Ordering::SeqCst),
        FLOOD / 2,
        "{}: barrier() returned before every callback posted before it had run",
        dom.name()
    );
    // Anything the barrier missed would run now, after the unload, and be counted.
    dom.barrier().unwrap();
    assert_eq!(module.ran_after_unload.load(Ordering::SeqCst), 0);
    let stats = dom.callback_stats();
    assert_eq!(stats.pending(), 0);
    (stats, after_sync.invoked)
}

#[test]
fn back_to_back_synchronize_does_not_wait_for_deferred_callbacks() {
    let _cpus = cpu_heavy();
    within(LIMIT, "the seed experiment (Rcu)", || {
        let rcu = Rcu::builder()
            .flavor(Flavor::Memb)
            .name("module")
            .callback_batch(100)
            .callback_time_cap(Duration::from_millis(1))
            .build();
        let dom = Arc::new(Domain::Rcu(rcu));
        let (stats, _) = seed_experiment(Arc::clone(&dom), || dom.hold_reader());
        println!("{stats:?}");
        assert!(
            stats.deferred_passes > 0,
            "a flood of {FLOOD} with a batch limit of 100 must defer: {stats:?}"
        );
    });
}

/// The same with SRCU (whose `srcu_barrier` the 2007 text's Quick Quiz #1 says cannot exist).
/// Its worker uses the default limits (10 000 callbacks or 2 ms per pass).
#[test]
fn back_to_back_srcu_synchronize_does_not_wait_for_deferred_callbacks() {
    let _cpus = cpu_heavy();
    within(LIMIT, "the seed experiment (Srcu)", || {
        let dom = Arc::new(Domain::Srcu(Srcu::new("module-srcu")));
        let (stats, _) = seed_experiment(Arc::clone(&dom), || dom.hold_reader());
        println!("{stats:?}");
        assert!(
            stats.deferred_passes > 0,
            "{FLOOD} callbacks of {WORK:?} exceed the 2 ms time cap: {stats:?}"
        );
    });
}
