//! `rcumod modinfo`: the fields of a real module (kmod's layout, `parm` lines as
//! `name:description (type)`), `-F`, `--json` (which must parse), and the one-line kmod-style
//! error with exit status 1 on a file that is not a module.

mod common;

use common::{assert_json, rcumod, text, TempDir};
use rcumod_tests::modules::rust_module;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn lists_the_fields_of_rcu_list() {
    let so = rust_module("rcu_list");
    let o = rcumod(&["modinfo", so.to_str().unwrap()], LIMIT);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no `{key}:` line in:\n{out}"))
            .to_owned()
    };
    assert!(line("filename").ends_with("librcu_list.so"), "{out}");
    assert_eq!(line("name"), format!("{:<16}rcu_list", "name:"));
    assert!(line("license").contains("MIT"), "{out}");
    assert!(line("abi").ends_with("1.1"), "{out}");
    assert!(
        out.contains("parm:           count:initial number of nodes (uint)\n"),
        "{out}"
    );
    assert!(
        out.contains("parm:           period_us:churn period in microseconds (uint)\n"),
        "{out}"
    );
    // What the ELF says, beyond .modinfo.
    assert!(line("build_id").len() > "build_id:".len() + 8, "{out}");
    assert!(line("needed").contains(".so"), "{out}");
    assert!(line("tls").ends_with("yes"), "a Rust cdylib has TLS: {out}");
    assert!(line("pin_risk").ends_with("none"), "{out}");
    // A Rust cdylib's std creates thread-specific-data keys: named as a warning, not a
    // refusal.
    assert!(
        out.lines().any(|l| l.starts_with("warning:")
            && l.contains("pthread_key_create (thread-specific-data key)")),
        "{out}"
    );
    let undefined: usize = line("undefined")["undefined:".len()..]
        .trim()
        .parse()
        .unwrap();
    assert!(undefined > 0, "{out}");
}

#[test]
fn field_prints_only_values() {
    let so = rust_module("rcu_list");
    let o = rcumod(&["modinfo", "-F", "name", so.to_str().unwrap()], LIMIT);
    assert!(o.status.success());
    assert_eq!(text(&o).0, "rcu_list\n");

    let o = rcumod(&["modinfo", "-F", "parm", so.to_str().unwrap()], LIMIT);
    assert_eq!(
        text(&o).0,
        "count:initial number of nodes (uint)\nperiod_us:churn period in microseconds (uint)\n\
         bench_reads:nonzero: publish rcu_list.read_pairs, for the boundary benchmark (uint)\n"
    );
    // kmod: an absent field prints nothing and is not an error.
    let o = rcumod(
        &["modinfo", "-F", "no_such_field", so.to_str().unwrap()],
        LIMIT,
    );
    assert!(o.status.success());
    assert_eq!(text(&o).0, "");
}

#[test]
fn json_parses() {
    let so = rust_module("rcu_list");
    let o = rcumod(&["modinfo", "--json", so.to_str().unwrap()], LIMIT);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(out.lines().count(), 1, "one object on one line: {out}");
    assert_json(&out);
    for needle in [
        r#""name":"rcu_list""#,
        r#""version":"1.0""#,
        r#""abi":"1.1""#,
        r#""depends":[]"#,
        r#"{"name":"count","type":"uint","description":"initial number of nodes"}"#,
        r#""tls":true"#,
        r#""pin_risks":[]"#,
        r#"{"symbol":"pthread_key_create","kind":"thread-specific-data key","consequence":"#,
        r#""undefined_count":"#,
    ] {
        assert!(out.contains(needle), "missing {needle} in {out}");
    }
}

#[test]
fn a_text_file_is_refused_in_one_line() {
    let dir = TempDir::new("modinfo");
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a module\n").unwrap();
    let o = rcumod(&["modinfo", notes.to_str().unwrap()], LIMIT);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "rcumod: ERROR: could not read module {}: Invalid module format (not an ELF file)\n",
            notes.display()
        )
    );
}

#[test]
fn json_checker_rejects_bad_input() {
    assert_json(r#"{"a":[1,-2.5e3,true,null,"x\n\u00e9"],"b":{}}"#);
    for bad in [r#"{"a":}"#, "[1,]", r#""unterminated"#, "1x", "{} {}"] {
        assert!(
            std::panic::catch_unwind(|| assert_json(bad)).is_err(),
            "{bad}"
        );
    }
}

/// As kmod's modinfo shows any module, `rcumod modinfo` describes one the loader would refuse,
/// listing why (here: another ABI and an unknown symbol) as `problem:` lines, exit status 0.
#[test]
fn describes_a_module_the_loader_would_refuse() {
    let so = rcumod_tests::modules::c_module_from_source(
        "modinfo_refused",
        r#"#include "rcumod.h"
static int i(const struct rcumod_host_api *a, struct rcumod_ctx *c) { (void)a; (void)c; return 0; }
static void e(const struct rcumod_host_api *a, struct rcumod_ctx *c) { (void)a; (void)c; }
extern void rcumod_missing_fn(void);
void use_it(void) { rcumod_missing_fn(); }
__attribute__((section(".modinfo"), used)) static const char mi[] = "name=modinfo_refused\0license=MIT\0abi=2.0\0";
RCUMOD_MODULE("modinfo_refused", i, e);
"#,
        &[],
    );
    let o = rcumod(&["modinfo", so.to_str().unwrap()], LIMIT);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("name:           modinfo_refused\n"), "{out}");
    assert!(
        out.contains("problem:        version magic 'rcumod-abi 2.0' should be 'rcumod-abi 1.1'\n"),
        "{out}"
    );
    assert!(
        out.contains("problem:        Unknown symbol rcumod_missing_fn (err -2)\n"),
        "{out}"
    );
    let o = rcumod(&["modinfo", "--json", so.to_str().unwrap()], LIMIT);
    let (out, _) = text(&o);
    assert_json(out.trim());
    assert!(out.contains("\"problems\":[\""), "{out}");
}
