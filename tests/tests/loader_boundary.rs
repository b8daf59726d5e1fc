//! The module boundary's fast paths keep their answers and their accounting
//! (sample-modules/c/boundary.c; the speed is measured in benches/boundary.rs):
//!
//! * misuse through the per-call entries gets the ABI's errors: a foreign or null context,
//!   an unlock outside a section, an unknown domain;
//! * callbacks posted as they are (no host wrapper) by many threads at once, more threads than
//!   the per-thread counters have slots, are all counted posted and invoked, and the unload
//!   proves pending == 0; in checked mode (the wrapper path) the same holds.

use module_loader::{Host, UnloadMode, UnloadOutcome};
use rcumod_abi as abi;
use rcumod_tests::modules::c_module;

fn load(host: &Host) {
    host.load(&c_module("boundary", &[]), &[]).unwrap();
}

#[test]
fn misuse_gets_the_abi_errors_through_the_fast_paths() {
    let host = Host::new().unwrap();
    load(&host);
    let r = host.call_hook("boundary.misuse", 0).unwrap();
    let byte = |i: u32| -i32::from((r >> (8 * i)) as u8);
    assert_eq!(byte(0), abi::EINVAL, "read_lock with a foreign context");
    assert_eq!(byte(1), abi::EINVAL, "read_unlock with a foreign context");
    assert_eq!(byte(2), abi::EINVAL, "call_rcu with a foreign context");
    assert_eq!(byte(3), abi::EINVAL, "call_rcu with a null context");
    assert_eq!(byte(4), abi::EINVAL, "read_unlock outside a section");
    assert_eq!(byte(5), abi::EINVAL, "call_rcu on an unknown domain");
    assert_eq!(
        byte(6),
        abi::EOPNOTSUPP,
        "no inline reader of a qsbr domain"
    );
    assert_eq!(
        byte(7),
        abi::EOPNOTSUPP,
        "no inline reader of the process domain"
    );
    // The inline read side and the API's give the same answers.
    for hook in [
        "boundary.read_pair",
        "boundary.read_pair_api",
        "boundary.read_pair_qsbr",
    ] {
        assert_eq!(host.call_hook(hook, 1000), Some(42_000), "{hook}");
    }
    let info = host.info("boundary").unwrap();
    assert_eq!(
        info.callbacks.posted, 0,
        "nothing refused was counted: {info:?}"
    );
    let u = host.unload("boundary", UnloadMode::Normal).unwrap();
    assert_eq!(u.outcome, UnloadOutcome::Unloaded);
}

fn many_posters(host: &Host, threads: u64, each: u64, entry: bool) {
    load(host);
    let hook = if entry {
        "boundary.call_rcu_entry"
    } else {
        "boundary.call_rcu"
    };
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| assert_eq!(host.call_hook(hook, each), Some(0), "none refused"));
        }
    });
    let u = host.unload("boundary", UnloadMode::Normal).unwrap();
    assert_eq!(u.outcome, UnloadOutcome::Unloaded);
    assert_eq!(u.callbacks.posted, threads * each, "{:?}", u.callbacks);
    assert_eq!(u.callbacks.invoked, threads * each, "{:?}", u.callbacks);
    assert_eq!(u.callbacks.pending(), 0);
}

#[test]
fn callbacks_of_many_threads_are_all_counted() {
    // 70 threads: more than the 32 per-thread slots, so the shared overflow slot counts too.
    let host = Host::new().unwrap();
    many_posters(&host, 70, 2_000, false);
    many_posters(&host, 70, 2_000, true);
    let checked = Host::builder().checked(true).build().unwrap();
    many_posters(&checked, 8, 2_000, false);
    many_posters(&checked, 8, 2_000, true);
}

/// A Rust module's `Module::read_lock` enters its sections inline (ABI 1.1) and reads what
/// the API would: `rcu_list.read_pairs` reads the head's value once per section.
#[test]
fn rust_sections_through_the_sdk_read_the_list() {
    let host = Host::new().unwrap();
    let slow_churn = [
        ("count".to_owned(), "4".to_owned()),
        ("period_us".to_owned(), "10000000".to_owned()),
        ("bench_reads".to_owned(), "1".to_owned()),
    ];
    host.load(&rcumod_tests::modules::rust_module("rcu_list"), &slow_churn)
        .unwrap();
    let head = host.call_hook("rcu_list.read_pairs", 1).unwrap();
    assert_eq!(
        host.call_hook("rcu_list.read_pairs", 1000),
        Some(head * 1000)
    );
    let u = host.unload("rcu_list", UnloadMode::Expedited).unwrap();
    assert_eq!(u.outcome, UnloadOutcome::Unloaded);
}
