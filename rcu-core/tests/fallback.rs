//! The memb → mb fallback, forced by the builder or by `RCU_CORE_FORCE_MB=1`.
//!
//! Where membarrier is unavailable, memb domains silently run as mb; the forcing switches
//! exist so that this path is tested on machines that have membarrier. A domain must report
//! both the flavor it asked for and the one in effect, the fallback must affect only memb,
//! and the fallback domain must still wait for readers.
//!
//! The environment variable is read when a domain is built. Setting it in this process would
//! race with the other tests' threads (mutating the environment of a multi-threaded process
//! is unsound), so those checks run this test binary again as a child process with the
//! variable set, and read what the child's domains report.

mod common;

use common::assert_waits_for_reader;
use rcu_core::{Flavor, Rcu};
use std::process::Command;
use std::sync::Arc;

const FORCE_MB: &str = "RCU_CORE_FORCE_MB";
/// Set in the child, so that `child_reports_flavors` knows it is one.
const CHILD: &str = "RCU_CORE_FALLBACK_TEST_CHILD";
/// Marks the child's report in its output (libtest may print on the same line).
const MARK: &str = "flavor report: ";

#[test]
fn force_fallback_turns_memb_into_mb() {
    let rcu = Rcu::builder()
        .flavor(Flavor::Memb)
        .force_fallback(true)
        .name("fallback")
        .build();
    assert_eq!(rcu.flavor(), Flavor::Mb);
    assert_eq!(rcu.requested_flavor(), Flavor::Memb);
    assert_eq!(rcu.name(), "fallback");
}

#[test]
fn force_fallback_leaves_other_flavors_alone() {
    for flavor in [Flavor::Mb, Flavor::Qsbr, Flavor::Busted] {
        let rcu = Rcu::builder().flavor(flavor).force_fallback(true).build();
        assert_eq!(rcu.flavor(), flavor);
        assert_eq!(rcu.requested_flavor(), flavor);
    }
}

#[test]
fn a_fallback_domain_waits_for_readers() {
    let rcu = Arc::new(Rcu::builder().force_fallback(true).build());
    assert_waits_for_reader(&rcu, "synchronize", Rcu::synchronize);
    assert_waits_for_reader(&rcu, "synchronize_expedited", Rcu::synchronize_expedited);
}

/// Not a test of its own: `environment_variable_forces_the_fallback` runs it in a child
/// process, and checks what it prints about the child's domains. Outside that child (say,
/// under `--include-ignored`) it does nothing.
#[test]
#[ignore = "run in a child process by environment_variable_forces_the_fallback"]
fn child_reports_flavors() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let report = |label: &str, rcu: &Rcu| {
        println!(
            "{MARK}{label}: flavor={} requested={}",
            rcu.flavor(),
            rcu.requested_flavor()
        );
    };
    report("memb", &Rcu::new(Flavor::Memb));
    report(
        "memb-unforced",
        &Rcu::builder().force_fallback(false).build(),
    );
    report("qsbr", &Rcu::new(Flavor::Qsbr));
    report("global", Rcu::global());
}

/// Run `child_reports_flavors` in a child process with `RCU_CORE_FORCE_MB` set to `force`
/// (or unset), and return its report lines.
fn child(force: Option<&str>) -> Vec<String> {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary's path"));
    cmd.args([
        "child_reports_flavors",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD, "1");
    match force {
        Some(value) => cmd.env(FORCE_MB, value),
        None => cmd.env_remove(FORCE_MB),
    };
    let out = cmd.output().expect("run the test binary as a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child with {FORCE_MB}={force:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.split_once(MARK).map(|(_, report)| report.to_owned()))
        .collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    lines
}

#[test]
fn environment_variable_forces_the_fallback() {
    let forced = child(Some("1"));
    assert_eq!(
        forced,
        [
            "memb: flavor=mb requested=memb",
            "memb-unforced: flavor=mb requested=memb",
            "qsbr: flavor=qsbr requested=qsbr",
            "global: flavor=mb requested=memb",
        ],
        "{FORCE_MB}=1 forces every memb domain, the global one included, onto mb"
    );

    // Only "1" forces: "0" behaves as unset.
    let unset = child(None);
    assert_eq!(
        child(Some("0")),
        unset,
        "{FORCE_MB}=0 must not force the fallback"
    );
    assert!(
        unset[0].ends_with("requested=memb"),
        "unexpected report: {unset:?}"
    );
    // Unless this process is itself run with the variable, a child without it sees what we
    // see: memb where membarrier works, mb where it does not.
    if std::env::var_os(FORCE_MB).is_none() {
        let native = Rcu::new(Flavor::Memb).flavor();
        assert_eq!(unset[0], format!("memb: flavor={native} requested=memb"));
    }
}
