//! Concurrent `synchronize()` callers share grace periods, and sharing never shortens a wait.
//!
//! Sharing (GpSeq snapshots: a caller is satisfied by any grace period that started after it
//! arrived) is what keeps N concurrent updaters from paying N grace periods. Its danger is
//! accepting a grace period that started too early; so besides counting grace periods we
//! check, for every call that began while a reader was inside its section, that the call did
//! not return before that section ended.

mod common;

use common::{within, HANG_GUARD};
use rcu_core::{Flavor, Rcu};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const CALLERS: u64 = 8;
const CALLS: u64 = 50;
/// The reader holds sections for `HOLD`, with `GAP` between them, until the callers are done;
/// callers pause `PAUSE` between calls, so that many calls begin inside a section.
const HOLD: Duration = Duration::from_millis(20);
const GAP: Duration = Duration::from_millis(5);
const PAUSE: Duration = Duration::from_millis(1);

#[test]
fn concurrent_synchronize_calls_share_grace_periods_and_still_wait() {
    for flavor in [Flavor::Memb, Flavor::Mb] {
        let (stats, calls_inside) =
            within(HANG_GUARD, "concurrent synchronize callers", move || {
                run(flavor)
            });
        println!(
            "{flavor}: {} synchronize calls, {calls_inside} began inside a reader section, \
             {} grace periods",
            CALLERS * CALLS,
            stats.grace_periods
        );
        assert!(
            calls_inside > 0,
            "{flavor}: no call overlapped a reader section; the ordering check was vacuous"
        );
        assert!(
            stats.grace_periods < CALLERS * CALLS,
            "{flavor}: {} grace periods for {} calls: no sharing",
            stats.grace_periods,
            CALLERS * CALLS
        );
    }
}

/// Returns the domain's stats and how many calls began while the reader was inside.
fn run(flavor: Flavor) -> (rcu_core::RcuStats, u64) {
    let rcu = Arc::new(Rcu::new(flavor));
    // 2k+1: the reader is inside section k; 2k+2: section k is about to end (the reader is
    // still inside when it stores this).
    let phase = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(CALLERS as usize + 1));
    let callers_done = Arc::new(AtomicBool::new(false));

    let reader = {
        let (rcu, phase, start) = (Arc::clone(&rcu), Arc::clone(&phase), Arc::clone(&start));
        let callers_done = Arc::clone(&callers_done);
        std::thread::spawn(move || {
            for k in 0.. {
                if callers_done.load(Ordering::SeqCst) {
                    break;
                }
                let guard = rcu.read_lock();
                phase.store(2 * k + 1, Ordering::SeqCst);
                if k == 0 {
                    // The callers start while the first section is held.
                    start.wait();
                }
                std::thread::sleep(HOLD);
                phase.store(2 * k + 2, Ordering::SeqCst);
                drop(guard);
                std::thread::sleep(GAP);
            }
        })
    };

    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (rcu, phase, start) = (Arc::clone(&rcu), Arc::clone(&phase), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let mut inside = 0;
                for _ in 0..CALLS {
                    let before = phase.load(Ordering::SeqCst);
                    rcu.synchronize();
                    let after = phase.load(Ordering::SeqCst);
                    if before % 2 == 1 {
                        inside += 1;
                        assert!(
                            after > before,
                            "synchronize() began inside reader section {} and returned \
                             before it ended",
                            before / 2
                        );
                    }
                    std::thread::sleep(PAUSE);
                }
                inside
            })
        })
        .collect();

    let inside = callers.into_iter().map(|c| c.join().unwrap()).sum();
    callers_done.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    (rcu.stats(), inside)
}
