//! Bad inputs: each gives a clear, kmod-style error, nothing is lost, and the host keeps
//! running (after every failure a good module still loads, runs and unloads).

use module_loader::inspect::{InspectError, PinRisk};
use module_loader::{Host, LoadError, UnloadMode, UnloadOutcome};
use rcumod_tests::modules::{
    c_module, c_module_from_source, nodelete_module, pinned_allowed, rust_module, scratch_dir,
};
use std::path::PathBuf;

fn p(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

/// The host still works: load rcu_list, call its hook, unload it cleanly.
fn host_goes_on(host: &Host) {
    let so = rust_module("rcu_list");
    // The churn thread unlinks a node before it links the next: slow it down so the length
    // read below is not taken between the two.
    host.load(&so, &[p("count", "3"), p("period_us", "10000000")])
        .expect("a good module still loads");
    assert_eq!(host.call_hook("rcu_list.len", 0), Some(3));
    let r = host.unload("rcu_list", UnloadMode::Normal).unwrap();
    assert_eq!(r.outcome, UnloadOutcome::Unloaded);
}

fn inspect_err(e: LoadError) -> InspectError {
    match e {
        LoadError::Inspect { source, .. } => source,
        other => panic!("expected an inspection error, got {other:?}"),
    }
}

const EMPTY_MODULE: &str = r#"#include "rcumod.h"
static int i(const struct rcumod_host_api *a, struct rcumod_ctx *c) { (void)a; (void)c; return 0; }
static void e(const struct rcumod_host_api *a, struct rcumod_ctx *c) { (void)a; (void)c; }
"#;

fn copy_with(name: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(c_module("c_list", &[])).unwrap();
    f(&mut bytes);
    let out = scratch_dir().join(name);
    std::fs::write(&out, bytes).unwrap();
    out
}

#[test]
fn files_that_are_not_modules() {
    let host = Host::new().unwrap();
    let text = scratch_dir().join("notes.txt");
    std::fs::write(&text, "not a module\n").unwrap();
    let e = host.load(&text, &[]).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("Invalid module format (not an ELF file)"),
        "{e}"
    );
    assert!(matches!(inspect_err(e), InspectError::NotElf));

    let truncated = copy_with("truncated.so", |b| b.truncate(b.len() / 3));
    let e = inspect_err(host.load(&truncated, &[]).unwrap_err());
    assert!(
        matches!(
            e,
            InspectError::Malformed { .. } | InspectError::NoModinfo | InspectError::NoDescriptor
        ),
        "{e:?}"
    );

    let wrong_arch = copy_with("aarch64.so", |b| {
        let em: u16 = if cfg!(target_arch = "aarch64") {
            62
        } else {
            183
        };
        b[18..20].copy_from_slice(&em.to_le_bytes());
    });
    let e = host.load(&wrong_arch, &[]).unwrap_err();
    assert!(matches!(
        inspect_err(e),
        InspectError::WrongArchitecture { .. }
    ));

    let missing = scratch_dir().join("does-not-exist.so");
    assert!(matches!(
        inspect_err(host.load(&missing, &[]).unwrap_err()),
        InspectError::Io { .. }
    ));
    host_goes_on(&host);
}

#[test]
fn contract_violations() {
    let host = Host::new().unwrap();
    let no_descriptor = c_module_from_source(
        "no_descriptor",
        &format!("{EMPTY_MODULE}RCUMOD_MODINFO(\"name=no_descriptor\\0license=MIT\\0\");\nvoid *keep_i = (void *)i, *keep_e = (void *)e;\n"),
        &[],
    );
    let e = host.load(&no_descriptor, &[]).unwrap_err();
    assert!(matches!(inspect_err(e), InspectError::NoDescriptor));

    let wrong_abi = c_module("wrong_abi", &[]);
    let e = host.load(&wrong_abi, &[]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("version magic"), "{msg}");
    assert!(matches!(
        inspect_err(e),
        InspectError::AbiMismatch { module: (2, 0), .. }
    ));

    let unknown = c_module_from_source(
        "unknown_sym",
        &format!("{EMPTY_MODULE}extern void rcumod_no_such_function(void);\nvoid use_it(void) {{ rcumod_no_such_function(); }}\nRCUMOD_MODINFO(\"name=unknown_sym\\0license=MIT\\0\");\nRCUMOD_MODULE(\"unknown_sym\", i, e);\n"),
        &[],
    );
    let e = host.load(&unknown, &[]).unwrap_err();
    assert!(
        e.to_string()
            .contains("Unknown symbol rcumod_no_such_function"),
        "{e}"
    );

    let nd = nodelete_module();
    let e = host.load(&nd, &[]).unwrap_err();
    assert!(e.to_string().contains("can never be unloaded"), "{e}");
    match inspect_err(e) {
        InspectError::Pinned { risks } => assert!(risks.contains(&PinRisk::NoDelete)),
        other => panic!("{other:?}"),
    }
    // Allowed on purpose, it loads, and its unload says what really happened.
    let lenient = Host::builder().policy(pinned_allowed()).build().unwrap();
    lenient.load(&nd, &[]).unwrap();
    match lenient
        .unload("nodelete", UnloadMode::Normal)
        .unwrap()
        .outcome
    {
        UnloadOutcome::Pinned { reason } => assert!(reason.contains("nodelete"), "{reason}"),
        o => panic!("a NODELETE module cannot be unmapped, yet the unload said {o}"),
    }

    let name_mismatch = c_module_from_source(
        "mismatch",
        &format!("{EMPTY_MODULE}RCUMOD_MODINFO(\"name=mismatch\\0license=MIT\\0\");\nRCUMOD_MODULE(\"other_name\", i, e);\n"),
        &[],
    );
    let e = host.load(&name_mismatch, &[]).unwrap_err();
    assert!(matches!(e, LoadError::Descriptor { .. }), "{e:?}");
    assert!(
        e.to_string().contains("descriptor names `other_name`"),
        "{e}"
    );
    host_goes_on(&host);
}

#[test]
fn parameters_are_checked_like_the_kernel_does() {
    let host = Host::new().unwrap();
    let so = rust_module("rcu_list");
    let e = host.load(&so, &[p("colour", "red")]).unwrap_err();
    assert!(e.to_string().ends_with("Unknown parameter `colour'"), "{e}");
    let e = host.load(&so, &[p("count", "-3")]).unwrap_err();
    assert!(
        e.to_string().contains("`-3' invalid for parameter `count'"),
        "{e}"
    );
    assert!(matches!(
        module_loader::parse_params(&["count".into()]),
        Err(LoadError::MalformedParameter { .. })
    ));
    assert!(host.list().is_empty(), "nothing was left behind");
    host_goes_on(&host);
}

#[test]
fn init_failures_are_unwound() {
    let host = Host::new().unwrap();
    let so = rust_module("broken");
    for mode in ["fail_init", "panic_init"] {
        let e = host.load(&so, &[p("mode", mode)]).unwrap_err();
        match &e {
            LoadError::InitFailed { code, unwound, .. } => {
                let expected = if mode == "fail_init" {
                    rcumod_abi::EINVAL
                } else {
                    rcumod_abi::sdk::EPANIC
                };
                assert_eq!(*code, expected, "{e}");
                assert_eq!(*unwound, UnloadOutcome::Unloaded, "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(host.list().is_empty(), "{mode}: nothing stays registered");
        assert!(
            host.hooks().is_empty(),
            "{mode}: staged hooks never became visible"
        );
    }
    host_goes_on(&host);
}

#[test]
fn misbehaving_modules_do_not_take_the_host_down() {
    let host = Host::new().unwrap();
    let so = rust_module("broken");

    // A panic in a callback is caught in the module; the other callbacks run.
    host.load(&so, &[p("mode", "panic_callback")]).unwrap();
    let r = host.unload("broken", UnloadMode::Normal).unwrap();
    assert_eq!(r.outcome, UnloadOutcome::Unloaded);
    assert_eq!(r.callbacks.posted, 10);
    assert_eq!(r.callbacks.invoked, 10);

    // A panic in exit is caught; the unload completes.
    host.load(&so, &[p("mode", "panic_exit")]).unwrap();
    let r = host.unload("broken", UnloadMode::Expedited).unwrap();
    assert_eq!(r.outcome, UnloadOutcome::Unloaded);

    // Posting after stop is refused, counted and handed back; nothing is lost or crashes. The
    // chain is cut exactly once: its next link is refused and handed back to the module.
    host.load(&so, &[p("mode", "post_after_stop")]).unwrap();
    let r = host.unload("broken", UnloadMode::Normal).unwrap();
    assert_eq!(r.outcome, UnloadOutcome::Unloaded);
    assert_eq!(r.callbacks.refused_after_stop, 1, "{r:#?}");
    assert!(r.callbacks.posted >= 1);
    assert_eq!(r.callbacks.pending(), 0);

    // synchronize() inside a read section is refused with EDEADLK instead of hanging.
    host.load(&so, &[p("mode", "sync_in_reader")]).unwrap();
    assert_eq!(
        host.call_hook("broken.result", 0).map(|v| v as i64),
        Some(i64::from(rcumod_abi::EDEADLK))
    );
    host.unload("broken", UnloadMode::Normal).unwrap();

    // barrier() from one of its own callbacks is refused with EDEADLK instead of deadlocking
    // the callback worker.
    host.load(&so, &[p("mode", "barrier_in_callback")]).unwrap();
    assert_eq!(
        host.call_hook("broken.result", 0).map(|v| v as i64),
        Some(i64::from(rcumod_abi::EDEADLK))
    );
    host.unload("broken", UnloadMode::Normal).unwrap();

    // A callback whose function is not module code is refused with EFAULT.
    host.load(&so, &[p("mode", "foreign_callback")]).unwrap();
    assert_eq!(
        host.call_hook("broken.result", 0).map(|v| v as i64),
        Some(i64::from(rcumod_abi::EFAULT))
    );
    let r = host.unload("broken", UnloadMode::Normal).unwrap();
    assert_eq!(r.callbacks.refused_foreign, 1);
    assert_eq!(r.callbacks.posted, 1, "the genuine callback was accepted");
    host_goes_on(&host);
}

/// A module that sets its own library search path (here `-Wl,-rpath`, a DT_RUNPATH with
/// Debian's default new-dtags) could make an allowed library name resolve to another file: it is
/// refused, unless the policy allows it, in which case the path is reported.
#[test]
fn a_module_with_its_own_search_path_is_refused() {
    let src = format!(
        "{EMPTY_MODULE}RCUMOD_MODINFO(\"name=runpath_mod\\0license=MIT\\0\");\nRCUMOD_MODULE(\"runpath_mod\", i, e);\n"
    );
    let so = c_module_from_source("runpath_mod", &src, &["-Wl,-rpath,/opt/elsewhere"]);
    let host = Host::new().unwrap();
    let e = host.load(&so, &[]).unwrap_err();
    assert!(e.to_string().contains("search path"), "{e}");
    match inspect_err(e) {
        InspectError::SearchPath { entry } => {
            assert!(entry.ends_with("=/opt/elsewhere"), "{entry}")
        }
        other => panic!("{other:?}"),
    }
    let lenient = Host::builder()
        .policy(module_loader::inspect::InspectPolicy {
            allow_search_paths: true,
            ..Default::default()
        })
        .build()
        .unwrap();
    let info = lenient.inspect(&so).unwrap();
    assert_eq!(info.search_paths.len(), 1, "{:?}", info.search_paths);
    lenient.load(&so, &[]).unwrap();
    assert_eq!(
        lenient
            .unload("runpath_mod", UnloadMode::Normal)
            .unwrap()
            .outcome,
        UnloadOutcome::Unloaded
    );
    host_goes_on(&host);
}
