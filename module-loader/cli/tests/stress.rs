//! `rcumod stress` end to end: the sample modules (Rust rcu_list, C c_list) loaded, reloaded
//! and unloaded in cycles under reader threads; the run must end "End of test: SUCCESS" with
//! exit status 0, no callback lost or late; `--json` must parse; `--plot` writes an SVG; with
//! no `--module` the bundled samples are found next to the executable.

mod common;

use common::{assert_json, rcumod, text, TempDir};
use rcumod_tests::modules::{c_module, rust_module};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// The value after `key` in the summary line that has it (`key: value`).
fn field(out: &str, key: &str) -> u64 {
    let pat = format!(" {key}: ");
    let line = out
        .lines()
        .find(|l| l.contains(&pat))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{out}"));
    let rest = &line[line.find(&pat).unwrap() + pat.len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn stress_sample_modules_succeeds() {
    let rust = rust_module("rcu_list");
    let c = c_module("c_list", &[]);
    let dir = TempDir::new("stress");
    let svg = dir.path().join("latency.svg");
    let o = rcumod(
        &[
            "stress",
            "--cycles",
            "6",
            "--readers",
            "2",
            "--seed",
            "42",
            "--checked",
            "--module",
            rust.to_str().unwrap(),
            "--module",
            c.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
        LIMIT,
    );
    let (out, err) = text(&o);
    println!("{out}{err}");
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        out.trim_end().ends_with("--- End of test: SUCCESS"),
        "{out}"
    );
    assert!(out.contains("modules=rcu_list,c_list"), "{out}");
    assert_eq!(field(&out, "cycles"), 12, "6 cycles of each module: {out}");
    assert_eq!(field(&out, "loads"), 12, "{out}");
    assert_eq!(field(&out, "unloads"), 12, "{out}");
    assert_eq!(field(&out, "reloads"), 4, "every 3rd cycle reloads: {out}");
    assert_eq!(field(&out, "lost"), 0, "{out}");
    assert_eq!(field(&out, "late"), 0, "{out}");
    assert!(
        field(&out, "posted") > 0,
        "the modules posted callbacks: {out}"
    );
    assert_eq!(field(&out, "posted"), field(&out, "invoked"), "{out}");
    assert!(field(&out, "calls") > 0, "readers called hooks: {out}");
    assert!(out.contains("unload latency normal: n="), "{out}");
    assert!(out.contains("unload latency expedited: n="), "{out}");

    let svg = std::fs::read_to_string(&svg).expect("--plot wrote the SVG");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("expedited (n=") && svg.contains("normal (n="));
}

#[test]
fn bundled_modules_and_json() {
    // Build the Rust sample into the target directory the binary lives in; `stress` with no
    // --module finds it there (and compiles c_list from the workspace sources).
    rust_module("rcu_list");
    let o = rcumod(
        &["stress", "--cycles", "3", "--readers", "1", "--json"],
        LIMIT,
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert_json(&out);
    assert!(out.contains(r#""result":"SUCCESS""#), "{out}");
    assert!(out.contains(r#""modules":["rcu_list""#), "{out}");
    assert!(
        out.contains(r#""lost":0"#) && out.contains(r#""late":0"#),
        "{out}"
    );
}

#[test]
fn a_bad_module_path_is_an_error() {
    let dir = TempDir::new("stress-bad");
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a module\n").unwrap();
    let o = rcumod(
        &[
            "stress",
            "--cycles",
            "1",
            "--module",
            notes.to_str().unwrap(),
        ],
        LIMIT,
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("Invalid module format (not an ELF file)"),
        "{err}"
    );
}
