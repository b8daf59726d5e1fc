//! Read-side cost: one lock + dereference + unlock pair, in ns, for rcu-core and (when built
//! with liburcu, `cfg(have_liburcu)`) liburcu 0.13, memb and qsbr, with 1 and 2 readers.
//!
//! Shapes (criterion group names), as in the anchors' table A (`../shared/anchors/BASELINE.md`):
//!
//! * `read_{memb,qsbr}_{1,2}r`: the benchmark thread runs `iters` pairs in batches of 1024
//!   (qsbr: a quiescent state after every batch), adding the object's field to a sum. With 2
//!   readers a second thread runs the same loop concurrently; the figure is the benchmark
//!   thread's. The liburcu loops run entirely in C (`csrc/urcu_shim.c`, read side inlined).
//!
//! Run: `cargo bench -p rcumod-tests --bench read_side`. After criterion's report, prints the
//! rcu-core / liburcu ratio table (docs/performance.md).

mod common;

use common::{bench_loop, print_ratio_table, Row, Unit};
use rcu_core::Flavor;
use rcumod_tests::reads::{self, BusyReader};
use std::time::Duration;

fn main() {
    let mut c = common::criterion(Duration::from_secs(2));

    let (memb, memb_cell) = reads::leaked_domain(Flavor::Memb, "bench-memb");
    let (qsbr, qsbr_cell) = reads::leaked_domain(Flavor::Qsbr, "bench-qsbr");
    // The benchmark thread reads in both domains (a registered qsbr thread is online).
    memb.register_thread();
    qsbr.register_thread();
    #[cfg(have_liburcu)]
    let (lib_memb, lib_qsbr) = (
        rcumod_tests::liburcu::memb::register_thread(),
        rcumod_tests::liburcu::qsbr::register_thread(),
    );

    for readers in [1, 2] {
        let second = readers == 2;

        let name = format!("read_memb_{readers}r");
        let mut g = c.benchmark_group(&name);
        {
            let _other = second.then(|| {
                BusyReader::spawn("rcu-core memb reader 2", move |stop| {
                    reads::reader_until(memb, memb_cell, stop, false)
                })
            });
            bench_loop(&mut g, &name, "rcu-core", |iters| {
                reads::read_loop(memb, memb_cell, iters)
            });
        }
        #[cfg(have_liburcu)]
        {
            let _other = second.then(|| {
                BusyReader::spawn(
                    "liburcu memb reader 2",
                    rcumod_tests::liburcu::memb::reader_until,
                )
            });
            bench_loop(&mut g, &name, "liburcu", |iters| lib_memb.read_loop(iters));
        }
        g.finish();

        let name = format!("read_qsbr_{readers}r");
        let mut g = c.benchmark_group(&name);
        {
            let _other = second.then(|| {
                BusyReader::spawn("rcu-core qsbr reader 2", move |stop| {
                    reads::reader_until(qsbr, qsbr_cell, stop, false)
                })
            });
            bench_loop(&mut g, &name, "rcu-core", |iters| {
                reads::read_loop(qsbr, qsbr_cell, iters)
            });
        }
        #[cfg(have_liburcu)]
        {
            let _other = second.then(|| {
                BusyReader::spawn("liburcu qsbr reader 2", |stop| {
                    rcumod_tests::liburcu::qsbr::reader_until(stop, false)
                })
            });
            bench_loop(&mut g, &name, "liburcu", |iters| lib_qsbr.read_loop(iters));
        }
        g.finish();
    }

    c.final_summary();

    #[cfg(have_liburcu)]
    drop((lib_memb, lib_qsbr));

    let rows = [
        Row {
            label: "memb, 1 reader",
            ours: "read_memb_1r/rcu-core",
            theirs: "read_memb_1r/liburcu",
        },
        Row {
            label: "memb, 2 readers",
            ours: "read_memb_2r/rcu-core",
            theirs: "read_memb_2r/liburcu",
        },
        Row {
            label: "qsbr (QS every 1024 reads), 1 reader",
            ours: "read_qsbr_1r/rcu-core",
            theirs: "read_qsbr_1r/liburcu",
        },
        Row {
            label: "qsbr (QS every 1024 reads), 2 readers",
            ours: "read_qsbr_2r/rcu-core",
            theirs: "read_qsbr_2r/liburcu",
        },
    ];
    print_ratio_table("Read-side pair cost", &rows, Unit::Ns, false);
}
