//! Building sample modules for tests: Rust cdylibs through cargo, C modules through the system
//! C compiler, and running a test scenario in a child process.
//!
//! Unload tests that check unmapping run one per process (they share the dynamic loader's
//! state; loader-anchors.md pitfall 14), and crash tests must observe the crash from outside:
//! [`run_child`] re-executes the current test binary on one test, with an environment variable
//! that tells that test it is the child.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, OnceLock};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Build the Rust sample module `package` (a cdylib in `sample-modules/`) with the same
/// profile as the running test, and return the path of its `.so`.
pub fn rust_module(package: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(package) {
        return p.clone();
    }
    let release = !cfg!(debug_assertions);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--quiet")
        .arg("-p")
        .arg(package)
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"));
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    let so = target_dir()
        .join(if release { "release" } else { "debug" })
        .join(format!("lib{package}.so"));
    assert!(so.exists(), "{} was not built", so.display());
    built.insert(package.to_owned(), so.clone());
    so
}

/// A directory private to this process for built fixtures.
pub fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("rcumod-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// Compile `sample-modules/c/<name>.c` into a shared object with extra compiler `args`.
pub fn c_module(name: &str, args: &[&str]) -> PathBuf {
    let src = workspace_root().join(format!("sample-modules/c/{name}.c"));
    compile_c(&src, name, args)
}

/// The C fixture `sample-modules/c/handoff.c` built for `case` (`thread`, `signal`, `key`, …):
/// a module named `handoff_<case>` that hands libc code of its own for later in that way.
pub fn handoff_module(case: &str) -> PathBuf {
    let name = format!("handoff_{case}");
    let src = workspace_root().join("sample-modules/c/handoff.c");
    compile_c(
        &src,
        &name,
        &[
            &format!("-DCASE_{}", case.to_uppercase()),
            &format!("-DMODNAME=\"{name}\""),
            "-Wno-unused-function",
            "-Wno-unused-variable",
        ],
    )
}

/// Compile C `source` text into a shared object named `name`.
pub fn c_module_from_source(name: &str, source: &str, args: &[&str]) -> PathBuf {
    let src = scratch_dir().join(format!("{name}.c"));
    std::fs::write(&src, source).expect("write C source");
    compile_c(&src, name, args)
}

fn compile_c(src: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = scratch_dir().join(format!("lib{name}.so"));
    // Built under a name of this thread's, then renamed over `out`: tests of one process that
    // build the same module at once never see each other's half-written file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = scratch_dir().join(format!(".lib{name}.so.{n}"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let o = Command::new(cc)
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-pthread", "-I"])
        .arg(workspace_root().join("module-abi/include"))
        .args(args)
        .arg("-o")
        .arg(&tmp)
        .arg(src)
        .output()
        .expect("a C compiler (cc) is needed");
    assert!(
        o.status.success(),
        "compiling {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, &out).expect("rename the built module into place");
    out
}

/// The environment variable that marks a child scenario.
pub const CHILD_ENV: &str = "RCUMOD_TEST_CHILD";

/// Is this process the child running scenario `name`?
pub fn is_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(name)
}

/// The C sample `nodelete`, linked `-z nodelete`: the dynamic loader never unmaps it, so every
/// unload of it ends `Pinned`.
pub fn nodelete_module() -> PathBuf {
    c_module("nodelete", &["-Wl,-z,nodelete"])
}

/// An inspection policy that admits modules the inspection finds will pin (the default refuses
/// them), for tests that load one on purpose.
pub fn pinned_allowed() -> module_loader::inspect::InspectPolicy {
    module_loader::inspect::InspectPolicy {
        allow_pinned: true,
        ..Default::default()
    }
}

/// Run the child scenario (as [`run_child`]) and assert that it exited successfully and printed
/// `expect`; returns its output.
#[track_caller]
pub fn child_passes(
    test: &str,
    scenario: &str,
    timeout: std::time::Duration,
    expect: &str,
) -> String {
    let (st, out) = run_child(test, scenario, timeout);
    assert!(st.success(), "status {st:?}\n{out}");
    assert!(out.contains(expect), "{out}");
    out
}

/// Run test `test` of the current binary in a child process as scenario `scenario`, with a
/// time bound; returns its exit status and combined output.
pub fn run_child(test: &str, scenario: &str, timeout: std::time::Duration) -> (ExitStatus, String) {
    let exe = std::env::current_exe().expect("current test binary");
    let mut child = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, scenario)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child test process");
    let t0 = std::time::Instant::now();
    loop {
        if let Some(_st) = child.try_wait().expect("wait child") {
            break;
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect child");
            panic!(
                "child scenario {scenario} hung for {timeout:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("collect child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}
