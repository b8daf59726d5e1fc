//! Grace-period latency: `synchronize` with 0 readers and with 1 busy reader, for rcu-core and
//! (when built with liburcu, `cfg(have_liburcu)`) liburcu 0.13, memb and qsbr; plus rcu-core's
//! `synchronize_expedited` in the same shapes (liburcu 0.13 has no expedited grace period).
//!
//! Shapes (criterion group names), as in the anchors' table B (`../shared/anchors/BASELINE.md`):
//!
//! * `sync_{memb,qsbr}_0r`: the benchmark thread (registered; qsbr: offline, as in the anchors)
//!   calls synchronize back to back; no other thread of the process runs.
//! * `sync_{memb,qsbr}_1r`: the same while one busy reader thread loops short read sections
//!   (lock, dereference, unlock). qsbr readers announce a quiescent state after *every* read,
//!   as the anchors' synchronize table did (`qs_each_read = 1` in its `bench_sync`).
//!
//! Every call is timed on its own (clock read before and after, as in the anchors); criterion
//! gets the sum, and the ratio table also shows the per-call median and p99.
//!
//! Run: `cargo bench -p rcumod-tests --bench grace_period`.

mod common;

use common::{bench_calls, print_ratio_table, Row, Unit};
use rcu_core::Flavor;
use rcumod_tests::reads::{self, BusyReader};
use std::time::Duration;

fn main() {
    let mut c = common::criterion(Duration::from_secs(2));

    let (memb, memb_cell) = reads::leaked_domain(Flavor::Memb, "bench-memb");
    let (qsbr, qsbr_cell) = reads::leaked_domain(Flavor::Qsbr, "bench-qsbr");
    // The updater (this thread) is registered; qsbr: offline, so it never holds up a grace
    // period (as in the anchors).
    memb.register_thread();
    qsbr.register_thread();
    qsbr.thread_offline();
    #[cfg(have_liburcu)]
    let (lib_memb, lib_qsbr) = {
        let m = rcumod_tests::liburcu::memb::register_thread();
        let q = rcumod_tests::liburcu::qsbr::register_thread();
        q.offline();
        (m, q)
    };

    for readers in [0, 1] {
        let busy = readers == 1;

        let name = format!("sync_memb_{readers}r");
        let mut g = c.benchmark_group(&name);
        {
            let _reader = busy.then(|| {
                BusyReader::spawn("rcu-core memb reader", move |stop| {
                    reads::reader_until(memb, memb_cell, stop, true)
                })
            });
            bench_calls(&mut g, &name, "rcu-core", || memb.synchronize());
            bench_calls(&mut g, &name, "rcu-core-expedited", || {
                memb.synchronize_expedited()
            });
        }
        #[cfg(have_liburcu)]
        {
            let _reader = busy.then(|| {
                BusyReader::spawn(
                    "liburcu memb reader",
                    rcumod_tests::liburcu::memb::reader_until,
                )
            });
            bench_calls(
                &mut g,
                &name,
                "liburcu",
                rcumod_tests::liburcu::memb::synchronize,
            );
        }
        g.finish();

        let name = format!("sync_qsbr_{readers}r");
        let mut g = c.benchmark_group(&name);
        {
            let _reader = busy.then(|| {
                BusyReader::spawn("rcu-core qsbr reader", move |stop| {
                    reads::reader_until(qsbr, qsbr_cell, stop, true)
                })
            });
            bench_calls(&mut g, &name, "rcu-core", || qsbr.synchronize());
            bench_calls(&mut g, &name, "rcu-core-expedited", || {
                qsbr.synchronize_expedited()
            });
        }
        #[cfg(have_liburcu)]
        {
            let _reader = busy.then(|| {
                BusyReader::spawn("liburcu qsbr reader", |stop| {
                    rcumod_tests::liburcu::qsbr::reader_until(stop, true)
                })
            });
            bench_calls(
                &mut g,
                &name,
                "liburcu",
                rcumod_tests::liburcu::qsbr::synchronize,
            );
        }
        g.finish();
    }

    c.final_summary();

    #[cfg(have_liburcu)]
    drop((lib_memb, lib_qsbr));

    let rows = [
        Row {
            label: "memb synchronize, 0 readers",
            ours: "sync_memb_0r/rcu-core",
            theirs: "sync_memb_0r/liburcu",
        },
        Row {
            label: "memb synchronize, 1 busy reader",
            ours: "sync_memb_1r/rcu-core",
            theirs: "sync_memb_1r/liburcu",
        },
        Row {
            label: "qsbr synchronize, 0 readers",
            ours: "sync_qsbr_0r/rcu-core",
            theirs: "sync_qsbr_0r/liburcu",
        },
        Row {
            label: "qsbr synchronize, 1 busy reader (QS after every read)",
            ours: "sync_qsbr_1r/rcu-core",
            theirs: "sync_qsbr_1r/liburcu",
        },
        Row {
            label: "memb synchronize_expedited vs liburcu synchronize, 0 readers",
            ours: "sync_memb_0r/rcu-core-expedited",
            theirs: "sync_memb_0r/liburcu",
        },
        Row {
            label: "memb synchronize_expedited vs liburcu synchronize, 1 busy reader",
            ours: "sync_memb_1r/rcu-core-expedited",
            theirs: "sync_memb_1r/liburcu",
        },
        Row {
            label: "qsbr synchronize_expedited vs liburcu synchronize, 0 readers",
            ours: "sync_qsbr_0r/rcu-core-expedited",
            theirs: "sync_qsbr_0r/liburcu",
        },
        Row {
            label: "qsbr synchronize_expedited vs liburcu synchronize, 1 busy reader",
            ours: "sync_qsbr_1r/rcu-core-expedited",
            theirs: "sync_qsbr_1r/liburcu",
        },
    ];
    print_ratio_table("Grace-period latency", &rows, Unit::Us, true);
}
