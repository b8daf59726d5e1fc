//! Loading an unchanged module file again without reading and inspecting it again
//! (`HostBuilder::reuse_unchanged_files`, module-loader `library.rs`): the kept bytes are used
//! only for the very file they were read from, unchanged by its identity and timestamps, and only
//! if it was settled before it was read; a rewrite that hides behind a restored mtime, a file
//! read while it may still have been written, a pinned module, a fork and the builder switch all
//! take the full path.
//!
//! A file's change time cannot be set back, so a test cannot make a file old: it waits instead,
//! for a margin shortened with `reuse_margin_for_testing` (2 s by default; a test should not wait
//! that long for each file). Each scenario runs in its own process: the kept images are
//! per-process state (a fork anywhere in the process invalidates them, and other tests in one
//! process spawn children), and unmapping is too.

use module_loader::{Host, HostBuilder, UnloadMode, UnloadOutcome};
use rcumod_tests::modules::{
    child_passes, is_child, nodelete_module, pinned_allowed, rust_module, scratch_dir,
};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// The margin the scenarios that need an old file use, and how long they wait for a file to
/// become old: the margin plus far more than the kernel's timestamp step (a tick, 1–10 ms).
const MARGIN: Duration = Duration::from_millis(100);
const SETTLE: Duration = Duration::from_millis(300);

fn host(margin: Duration) -> HostBuilder {
    Host::builder().reuse_margin_for_testing(margin)
}

/// `greeter_v1` and `greeter_v2`, zero-padded to one length (the dynamic loader and the
/// inspection ignore bytes after the last header table), so that one can overwrite the other
/// in place without changing the file's size.
fn greeters() -> (Vec<u8>, Vec<u8>) {
    let mut v1 = std::fs::read(rust_module("greeter_v1")).unwrap();
    let mut v2 = std::fs::read(rust_module("greeter_v2")).unwrap();
    let len = v1.len().max(v2.len());
    v1.resize(len, 0);
    v2.resize(len, 0);
    (v1, v2)
}

/// Write `bytes` over the file at `path` from its start, creating it if needed; the file keeps
/// its inode, and its size when `bytes` is as long.
fn write_in_place(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

fn scratch(name: &str) -> PathBuf {
    scratch_dir().join(name)
}

fn version(host: &Host) -> Option<u64> {
    host.call_hook("greeter.version", 0)
}

/// Load `path` (the `greeter` module), check the version it runs, unload it expedited and check
/// it is verified gone; returns whether the load reused a kept image.
fn cycle(host: &Host, path: &Path, expected: u64) -> bool {
    let info = host.load(path, &[]).unwrap();
    assert_eq!(version(host), Some(expected), "the code that runs");
    let r = host.unload("greeter", UnloadMode::Expedited).unwrap();
    assert_eq!(r.outcome, UnloadOutcome::Unloaded, "{r:#?}");
    info.reused_image
}

fn in_child(test: &str, scenario: &str) {
    child_passes(test, scenario, CHILD_TIMEOUT, "child done");
}

#[test]
fn child_unchanged() {
    if !is_child("unchanged") {
        return;
    }
    let (v1, _) = greeters();
    let path = scratch("greeter-unchanged.so");
    write_in_place(&path, &v1);
    std::thread::sleep(SETTLE);
    let host = host(MARGIN).build().unwrap();
    assert!(!cycle(&host, &path, 1), "the first load reads the file");
    assert!(
        cycle(&host, &path, 1),
        "the unchanged file is not read again"
    );
    assert!(cycle(&host, &path, 1), "nor the time after");
    println!("child done");
}

/// An unchanged file that was old when it was read is loaded again from the kept image, and
/// runs the same code.
#[test]
fn an_unchanged_file_loads_again_from_the_kept_image() {
    in_child("child_unchanged", "unchanged");
}

#[test]
fn child_mtime_restored() {
    if !is_child("mtime_restored") {
        return;
    }
    let (v1, v2) = greeters();
    let path = scratch("greeter-mtime-restored.so");
    write_in_place(&path, &v1);
    std::thread::sleep(SETTLE);
    let host = host(MARGIN).build().unwrap();
    assert!(!cycle(&host, &path, 1));
    assert!(cycle(&host, &path, 1), "the image was kept");
    let before = std::fs::metadata(&path).unwrap();
    write_in_place(&path, &v2);
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(before.modified().unwrap()) // futimens, i.e. utimensat on the descriptor
        .unwrap();
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (after.ino(), after.size(), after.modified().unwrap()),
        (before.ino(), before.size(), before.modified().unwrap()),
        "the premise: same file, size and mtime"
    );
    assert_ne!(
        (after.ctime(), after.ctime_nsec()),
        (before.ctime(), before.ctime_nsec()),
        "the premise: the kernel moved the change time"
    );
    assert!(!cycle(&host, &path, 2), "the rewritten file is read again");
    println!("child done");
}

/// A file rewritten in place with the same size, its mtime then set back to what it was, loads
/// as new code: its change time moved, and no program can set that back.
#[test]
fn a_rewrite_behind_a_restored_mtime_loads_as_new_code() {
    in_child("child_mtime_restored", "mtime_restored");
}

#[test]
fn child_racy() {
    if !is_child("racy") {
        return;
    }
    let (v1, v2) = greeters();
    let path = scratch("greeter-racy.so");
    write_in_place(&path, &v1);
    // A margin no slow machine gets near between this write and the loads below, so that the
    // file is always "written just now" when it is read.
    let host = host(Duration::from_secs(600)).build().unwrap();
    let began = SystemTime::now();
    assert!(!cycle(&host, &path, 1));
    assert!(
        !cycle(&host, &path, 1),
        "a file read within the margin of its last change is never remembered"
    );
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    write_in_place(&path, &v2);
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert!(
        !cycle(&host, &path, 2),
        "the rewritten file loads as new code"
    );
    assert!(began.elapsed().unwrap() < Duration::from_secs(600));
    println!("child done");
}

/// A file read while it may still be being written (changed within the margin before the read
/// began) is never remembered, so neither an unchanged reload nor a same-size rewrite with its
/// mtime restored reuses it.
#[test]
fn a_file_read_inside_the_racy_window_is_never_reused() {
    in_child("child_racy", "racy");
}

#[test]
fn child_off() {
    if !is_child("off") {
        return;
    }
    let (v1, _) = greeters();
    let path = scratch("greeter-off.so");
    write_in_place(&path, &v1);
    std::thread::sleep(SETTLE);
    let host = host(MARGIN).reuse_unchanged_files(false).build().unwrap();
    for _ in 0..3 {
        assert!(!cycle(&host, &path, 1), "reuse is off");
    }
    println!("child done");
}

/// With `reuse_unchanged_files(false)` every load reads and inspects the file.
#[test]
fn with_reuse_off_nothing_is_reused() {
    in_child("child_off", "off");
}

#[test]
fn child_fork() {
    if !is_child("fork") {
        return;
    }
    let (v1, _) = greeters();
    let path = scratch("greeter-fork.so");
    write_in_place(&path, &v1);
    std::thread::sleep(SETTLE);
    let host = host(MARGIN).build().unwrap();
    assert!(!cycle(&host, &path, 1));
    // SAFETY: the child only calls `_exit`, which is async-signal-safe, so the other threads'
    // state at the fork (locks held by the RCU workers) cannot matter to it.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: ends the forked child at once, running nothing of the parent's.
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` outlives the call.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        !cycle(&host, &path, 1),
        "an image from before a fork may be mapped by the child: never reused"
    );
    assert!(cycle(&host, &path, 1), "one made after it is");
    println!("child done");
}

/// Nothing kept from before a fork is reused after it (the child may map the image).
#[test]
fn nothing_kept_before_a_fork_is_reused() {
    in_child("child_fork", "fork");
}

#[test]
fn child_pinned() {
    if !is_child("pinned") {
        return;
    }
    let host = host(MARGIN).policy(pinned_allowed()).build().unwrap();
    let so = nodelete_module();
    std::thread::sleep(SETTLE);
    for _ in 0..2 {
        let info = host.load(&so, &[]).unwrap();
        assert!(!info.reused_image, "a pinned module's image stays its own");
        let r = host.unload("nodelete", UnloadMode::Normal).unwrap();
        assert!(matches!(r.outcome, UnloadOutcome::Pinned { .. }), "{r:#?}");
    }
    println!("child done");
}

/// The image of a module that stayed mapped is never reused, however old its file.
#[test]
fn a_pinned_modules_image_is_never_reused() {
    in_child("child_pinned", "pinned");
}
