//! Torture: readers never observe freed memory.
//!
//! Reader threads loop on read-side sections that load an `RcuCell<Node>`, check the node's
//! magic, dwell, and check it again. A writer publishes new nodes, waits for a grace period
//! (rotating through `Retired::synchronize`, `synchronize_expedited`, and
//! `start_poll` + `cond_synchronize` / `poll`), then poisons the node it replaced. Nodes are
//! quarantined, never freed during the run, so a grace period that returns too early shows up
//! as an observed poison rather than as undefined behaviour.
//!
//! It is the central safety property of RCU, so the harness proves it can fail: the same code
//! run on `Flavor::Busted` (whose grace periods do not wait) must observe poison.

mod common;

use common::{check_node, cpu_heavy, dwell, within, Node, Writer};
use rcu_core::{Flavor, Rcu, RcuBuilder, RcuCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const READERS: usize = 2;
/// Length of one harness run.
const RUN: Duration = Duration::from_millis(300);
/// Hang guard for one harness run.
const RUN_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Report {
    flavor: Flavor,
    updates: u64,
    reads: u64,
    errors: u64,
}

/// One harness run on a fresh domain from `builder`: [`READERS`] reader threads against one
/// writer for `run`. Returns what it saw; `errors` counts poisoned observations.
fn torture(builder: RcuBuilder, run: Duration) -> Report {
    let rcu = builder.build();
    let cell = RcuCell::new_in(Node::new(0), &rcu);
    let stop = AtomicBool::new(false);
    let (rcu, cell, stop) = (&rcu, &cell, &stop);

    let (writer, reads, errors) = std::thread::scope(|s| {
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                s.spawn(move || {
                    let (mut reads, mut errors) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        {
                            let guard = rcu.read_lock();
                            errors += check_node(cell.load(&guard), dwell(reads));
                        }
                        // A no-op except for qsbr, whose readers must announce it.
                        rcu.quiescent_state();
                        reads += 1;
                    }
                    (reads, errors)
                })
            })
            .collect();

        let mut writer = Writer::new(rcu, cell);
        let start = Instant::now();
        while start.elapsed() < run {
            writer.update();
        }
        stop.store(true, Ordering::Relaxed);

        let (mut reads, mut errors) = (0, 0);
        for r in readers {
            let (r, e) = r.join().unwrap();
            reads += r;
            errors += e;
        }
        (writer, reads, errors)
    });
    // Readers have stopped: nothing can see the quarantined nodes any more.
    let updates = writer.release();
    Report {
        flavor: rcu.flavor(),
        updates,
        reads,
        errors,
    }
}

/// Run the harness on `builder`'s flavor and assert that no reader saw a poisoned node.
fn assert_safe(label: &str, builder: RcuBuilder) -> Report {
    let _cpus = cpu_heavy();
    let report = within(RUN_LIMIT, label, move || torture(builder, RUN));
    println!("{label}: {report:?}");
    assert!(
        report.updates > 0 && report.reads > 0,
        "{label}: the run did nothing: {report:?}"
    );
    assert_eq!(
        report.errors, 0,
        "{label}: readers observed retired (poisoned) nodes: {report:?}"
    );
    report
}

#[test]
fn memb_readers_never_see_poison() {
    assert_safe("memb", Rcu::builder().flavor(Flavor::Memb));
}

#[test]
fn mb_readers_never_see_poison() {
    assert_safe("mb", Rcu::builder().flavor(Flavor::Mb));
}

#[test]
fn qsbr_readers_never_see_poison() {
    assert_safe("qsbr", Rcu::builder().flavor(Flavor::Qsbr));
}

#[test]
fn memb_fallback_readers_never_see_poison() {
    let report = assert_safe(
        "memb (forced fallback)",
        Rcu::builder().flavor(Flavor::Memb).force_fallback(true),
    );
    assert_eq!(report.flavor, Flavor::Mb, "the fallback was not taken");
}

/// The control: the same harness must catch a grace period that does not wait.
#[test]
fn busted_flavor_is_caught() {
    let _cpus = cpu_heavy();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut total = Report {
        flavor: Flavor::Busted,
        updates: 0,
        reads: 0,
        errors: 0,
    };
    while total.errors == 0 && Instant::now() < deadline {
        let report = within(RUN_LIMIT, "busted", || {
            torture(
                Rcu::builder().flavor(Flavor::Busted),
                Duration::from_millis(100),
            )
        });
        total.updates += report.updates;
        total.reads += report.reads;
        total.errors += report.errors;
    }
    println!("busted (control): {total:?}");
    assert!(
        total.errors > 0,
        "the torture harness did not catch Flavor::Busted, whose grace periods do not wait: \
         {total:?}"
    );
}
