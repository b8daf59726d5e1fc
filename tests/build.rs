//! Detects liburcu (memb and qsbr flavors) with pkg-config and, if found, compiles the C shim
//! `csrc/urcu_shim.c` that the comparative benchmarks call, then sets `cfg(have_liburcu)`.
//!
//! Without liburcu (no pkg-config, no `liburcu-dev`, no C compiler) nothing is compiled, a
//! cargo warning says so, and the benchmarks measure rcu-core alone.
//!
//! `RCUMOD_NO_LIBURCU=1` skips detection even where liburcu is installed, to check that the
//! crate builds without it (as on CI).

use std::env;

const SHIM: &str = "csrc/urcu_shim.c";
/// call_rcu / rcu_barrier measurements (benches/callbacks.rs).
const CALL_SHIM: &str = "csrc/urcu_call_shim.c";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={SHIM}");
    println!("cargo:rerun-if-changed={CALL_SHIM}");
    println!("cargo:rerun-if-env-changed=RCUMOD_NO_LIBURCU");

    if env::var_os("RCUMOD_NO_LIBURCU").is_some_and(|v| !v.is_empty() && v != "0") {
        println!(
            "cargo:warning=RCUMOD_NO_LIBURCU is set: liburcu comparisons are not built \
             (rcu-core is benchmarked alone)"
        );
        return;
    }

    let probe = |name: &str| {
        pkg_config::Config::new()
            .atleast_version("0.13")
            .cargo_metadata(false)
            .probe(name)
    };
    let (memb, qsbr) = match (probe("liburcu-memb"), probe("liburcu-qsbr")) {
        (Ok(m), Ok(q)) => (m, q),
        (Err(e), _) | (_, Err(e)) => {
            let first_line = e.to_string();
            let first_line = first_line.lines().next().unwrap_or("not found");
            println!(
                "cargo:warning=liburcu (memb and qsbr, >= 0.13) not found through pkg-config \
                 ({first_line}); liburcu comparisons are not built (install liburcu-dev to \
                 enable them)"
            );
            return;
        }
    };

    let mut build = cc::Build::new();
    build
        .file(SHIM)
        .file(CALL_SHIM)
        .includes(memb.include_paths.iter().chain(&qsbr.include_paths))
        // As the anchor harness (gcc -O2), whatever the cargo profile's opt-level.
        .opt_level(2)
        // Position-independent *executable* code, as Debian's gcc produces by default for the
        // anchors: the inlined read side then reaches liburcu's thread-local reader with the
        // initial-exec TLS model, not through the general-dynamic __tls_get_addr path that
        // -fPIC would select.
        .pic(false)
        .flag("-fPIE")
        // Loop placement must not depend on the size of the Rust code linked before the shim:
        // the qsbr read loop is 14 bytes, and where it straddled a 64-byte boundary it ran at
        // half speed (0.63 instead of 0.32 ns per pair, same C code, different Rust build).
        .flag("-falign-loops=32")
        .warnings(true)
        .extra_warnings(true);
    if let Err(e) = build.try_compile("urcu_shim") {
        println!(
            "cargo:warning=liburcu found, but compiling {SHIM} failed ({e}); liburcu \
             comparisons are not built"
        );
        return;
    }

    // After the shim (which cc has already asked to link), so that the linker sees the
    // libraries after the objects that need them.
    let mut dirs: Vec<&std::path::PathBuf> =
        memb.link_paths.iter().chain(&qsbr.link_paths).collect();
    dirs.dedup();
    for dir in dirs {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    for name in ["urcu-memb", "urcu-qsbr", "urcu-common"] {
        println!("cargo:rustc-link-lib=dylib={name}");
    }
    println!("cargo:rustc-cfg=have_liburcu");
}
