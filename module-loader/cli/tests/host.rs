//! `rcumod host` and its clients end to end: insmod with parameters, lsmod, hooks, reload,
//! rmmod (expedited, unknown module, in use, `--wait`), a failed insmod that leaves the host
//! running, shutdown; `--reread-unchanged`; the socket's mode (0600); and the peer-credential
//! check — directly (`authorized`, `peer_cred`) and, when the test runs as root, from a forked
//! client that switched to uid 65534, which must be refused and logged.

mod common;

use common::{rcumod, text, TempDir, RCUMOD};
use rcumod::cmd::host::{authorized, peer_cred};
use rcumod_tests::modules::{c_module_from_source, rust_module};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// A host child process, killed (by its pid) if the test fails before shutting it down.
struct HostProc {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl HostProc {
    fn start(dir: &Path) -> HostProc {
        HostProc::start_with(dir, &[])
    }

    /// A host with more `rcumod host` options.
    fn start_with(dir: &Path, options: &[&str]) -> HostProc {
        let socket = dir.join("s.sock");
        let log = dir.join("host.log");
        let child = Command::new(RCUMOD)
            .args(["host", "--readers", "2"])
            .args(options)
            .arg("--socket")
            .arg(&socket)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn rcumod host");
        let h = HostProc {
            child: Some(child),
            socket,
            log,
        };
        let t0 = Instant::now();
        while UnixStream::connect(&h.socket).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the host did not start listening:\n{}",
                h.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        h
    }

    fn sock(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `rcumod shutdown`, then wait for the process to exit 0.
    fn shutdown(mut self) -> String {
        let o = rcumod(&["shutdown", "--socket", self.sock()], LIMIT);
        assert!(o.status.success(), "{:?}", text(&o));
        let mut child = self.child.take().unwrap();
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the host did not exit after shutdown"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self.log_text();
        assert!(status.success(), "host exit status {status}:\n{log}");
        assert!(
            !self.socket.exists(),
            "the socket file is removed at shutdown"
        );
        log
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A C module that depends on rcu_list (so rcu_list is "in use" while it is loaded).
const NEEDS_LIST: &str = r#"#include "rcumod.h"
static int i(const struct rcumod_host_api *a, struct rcumod_ctx *c) { (void)a; (void)c; return 0; }
static void e(const struct rcumod_host_api *a, struct rcumod_ctx *c) { (void)a; (void)c; }
RCUMOD_MODINFO("name=needs_list\0license=MIT\0depends=rcu_list\0");
RCUMOD_MODULE("needs_list", i, e);
"#;

#[test]
fn host_and_clients() {
    let so = rust_module("rcu_list");
    let so = so.to_str().unwrap();
    let dep = c_module_from_source("needs_list", NEEDS_LIST, &[]);
    let dir = TempDir::new("host");
    let host = HostProc::start(dir.path());
    let s = host.sock();

    // The socket: a socket file, mode 0600.
    let md = std::fs::symlink_metadata(&host.socket).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o777, 0o600, "socket mode");

    // insmod with parameters; lsmod shows it Live; its hooks are published.
    let o = rcumod(
        &["insmod", "--socket", s, so, "count=16", "period_us=100"],
        LIMIT,
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let o = rcumod(&["lsmod", "--socket", s], LIMIT);
    let (out, _) = text(&o);
    assert!(o.status.success());
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("Module ")
            && header.contains("Size")
            && header.contains("Used by")
            && header.contains("State"),
        "{out}"
    );
    let row = lines.find(|l| l.starts_with("rcu_list ")).expect(&out);
    assert!(row.ends_with("Live"), "{out}");
    let o = rcumod(&["hooks", "--socket", s], LIMIT);
    assert!(text(&o).0.contains("rcu_list.sum"), "{:?}", text(&o));

    // Hot reload with new parameters.
    let o = rcumod(&["reload", "--socket", s, "rcu_list", so, "count=4"], LIMIT);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("old version rcu_list: Unloaded (normal"),
        "{out}"
    );

    // In use: a dependent module holds it; rmmod refuses in kmod's words.
    let o = rcumod(&["insmod", "--socket", s, dep.to_str().unwrap()], LIMIT);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = rcumod(&["rmmod", "--socket", s, "rcu_list"], LIMIT);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o).1,
        "rcumod: ERROR: Module rcu_list is in use by: needs_list\n"
    );
    let o = rcumod(&["lsmod", "--socket", s], LIMIT);
    let (out, _) = text(&o);
    let row = out
        .lines()
        .find(|l| l.starts_with("rcu_list "))
        .expect(&out);
    assert!(row.contains(" 1 needs_list "), "Used by: {out}");
    // --wait: retries while it is in use; the holder goes away meanwhile.
    let waiter = {
        let s = s.to_owned();
        std::thread::spawn(move || {
            rcumod(
                &["rmmod", "--socket", &s, "--wait", "10000", "rcu_list"],
                LIMIT,
            )
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let o = rcumod(&["rmmod", "--socket", s, "needs_list"], LIMIT);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = waiter.join().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "rmmod --wait: {out}{err}");
    assert!(out.starts_with("rcu_list: Unloaded (normal, "), "{out}");

    // Load again, then rmmod --expedite with the report's step timings.
    let o = rcumod(&["insmod", "--socket", s, so, "count=8"], LIMIT);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = rcumod(
        &["rmmod", "--socket", s, "--expedite", "-v", "rcu_list"],
        LIMIT,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.starts_with("rcu_list: Unloaded (expedited, "), "{out}");
    for step in [
        "Unpublish",
        "StopPosting",
        "Barrier",
        "Verify",
        "Close",
        "total",
    ] {
        assert!(out.contains(step), "step {step} in:\n{out}");
    }
    assert!(out.contains("expedited: "), "{out}");

    // rmmod of a module that is not loaded: kmod's message, exit 1.
    let o = rcumod(&["rmmod", "--socket", s, "rcu_list"], LIMIT);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o).1,
        "rcumod: ERROR: Module rcu_list is not currently loaded\n"
    );

    // insmod of a file that is not a module: exit 1; the host goes on.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a module\n").unwrap();
    let o = rcumod(&["insmod", "--socket", s, notes.to_str().unwrap()], LIMIT);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        format!(
            "rcumod: ERROR: could not insert module {}: Invalid module format (not an ELF file)\n",
            notes.display()
        )
    );
    let o = rcumod(&["insmod", "--socket", s, so], LIMIT);
    assert!(
        o.status.success(),
        "a good module still loads: {:?}",
        text(&o)
    );
    let o = rcumod(&["lsmod", "--socket", s, "--json"], LIMIT);
    let (out, _) = text(&o);
    common::assert_json(&out);
    assert!(
        out.contains(r#""name":"rcu_list""#) && out.contains(r#""state":"Live""#),
        "{out}"
    );

    // Shutdown unloads what is left and removes the socket.
    let log = host.shutdown();
    assert!(log.contains("host listening"), "{log}");
    assert!(log.contains("unloaded at shutdown"), "{log}");
    assert!(log.contains("host stopped"), "{log}");

    // Nothing listens any more: a client says so, exit 1.
    let o = rcumod(
        &[
            "lsmod",
            "--socket",
            dir.path().join("s.sock").to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o)
        .1
        .starts_with("rcumod: ERROR: cannot reach the rcumod host at "));
}

/// `rcumod host --reread-unchanged`: a module loaded twice from a settled, unchanged file is
/// read again both times. The control is a default host, which must reuse the kept image the
/// second time; otherwise the check could pass by never reusing anything.
#[test]
fn reread_unchanged_reads_the_file_at_every_load() {
    let files = TempDir::new("reread-files");
    let so = files.path().join("greeter_v1.so");
    std::fs::copy(rust_module("greeter_v1"), &so).unwrap();
    // A file is remembered only once its change time is 2 s older than the read (library.rs);
    // a copy's change time is now and cannot be set back, so wait.
    std::thread::sleep(Duration::from_millis(2300));
    let so = so.to_str().unwrap();
    let loads = |options: &[&str]| -> Vec<String> {
        let dir = TempDir::new("reread-host");
        let host = HostProc::start_with(dir.path(), options);
        let s = host.sock();
        for step in [
            &["insmod", "--socket", s, so][..],
            &["rmmod", "--socket", s, "greeter"],
        ]
        .into_iter()
        .cycle()
        .take(3)
        {
            let o = rcumod(step, LIMIT);
            assert!(o.status.success(), "{step:?}: {:?}", text(&o));
        }
        let log = host.shutdown();
        log.lines()
            .filter(|l| l.contains("module loaded") && l.contains("greeter"))
            .map(|l| {
                let v = l.split("reused_image=").nth(1).expect(l);
                v.split_whitespace().next().unwrap_or_default().to_owned()
            })
            .collect()
    };
    assert_eq!(
        loads(&[]),
        ["false", "true"],
        "the control: a default host reuses the image"
    );
    assert_eq!(
        loads(&["--reread-unchanged"]),
        ["false", "false"],
        "--reread-unchanged reads the file at every load"
    );
}

#[test]
fn credential_check_function() {
    assert!(authorized(1000, 1000));
    assert!(authorized(0, 0));
    assert!(!authorized(1001, 1000), "another user");
    assert!(!authorized(0, 1000), "root is refused by a non-root host");
    assert!(!authorized(1000, 0), "a root host accepts only root");

    // The SO_PEERCRED wrapper reads the peer's real credentials.
    let (a, _b) = UnixStream::pair().unwrap();
    let cred = peer_cred(&a).unwrap();
    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    assert_eq!(cred.uid, uid);
    assert_eq!(cred.gid, gid);
    assert_eq!(cred.pid, std::process::id() as i32);
}

/// What a forked client running as another uid saw.
#[derive(Debug, PartialEq, Eq)]
enum Foreign {
    /// `connect` failed with this errno.
    ConnectFailed(i32),
    /// The host's answer.
    Answer(String),
}

/// Fork a child that switches to `uid`/`gid`, connects to `socket`, sends `request` and
/// reports what happened through a pipe. Only async-signal-safe calls run in the child (the
/// test process is multi-threaded): everything is prepared before `fork`.
fn connect_as(uid: u32, socket: &Path, request: &[u8]) -> Foreign {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;

    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let p = socket.as_os_str().as_bytes();
    assert!(p.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(p) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fork in a multi-threaded process: the child calls only async-signal-safe
    // functions (setgroups, setgid, setuid, socket, connect, write, read, _exit) on data
    // prepared before the fork, and never returns into Rust code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: the child, as described above; every buffer is valid for its length.
        unsafe {
            libc::close(fds[0]);
            let w = fds[1];
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                libc::write(w, b"U".as_ptr().cast(), 1);
                libc::_exit(2);
            }
            let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if libc::connect(s, (&addr as *const libc::sockaddr_un).cast(), len) != 0 {
                let errno = *libc::__errno_location();
                let mut msg = [b'C', 0, 0, 0, 0];
                msg[1..].copy_from_slice(&errno.to_le_bytes());
                libc::write(w, msg.as_ptr().cast(), msg.len());
                libc::_exit(3);
            }
            libc::write(s, request.as_ptr().cast(), request.len());
            libc::write(w, b"R".as_ptr().cast(), 1);
            let mut buf = [0u8; 1024];
            loop {
                let n = libc::read(s, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                libc::write(w, buf.as_ptr().cast(), n as usize);
            }
            libc::_exit(0);
        }
    }
    // SAFETY: the parent's copy of the write end, ours to close; the read end is ours to own.
    unsafe { libc::close(fds[1]) };
    // SAFETY: fds[0] is an open fd owned by nothing else.
    let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match out.first() {
        Some(b'C') => Foreign::ConnectFailed(i32::from_le_bytes(out[1..5].try_into().unwrap())),
        Some(b'R') => Foreign::Answer(String::from_utf8_lossy(&out[1..]).into_owned()),
        _ => panic!("the child could not switch to uid {uid}: {out:?} (status {status})"),
    }
}

#[test]
fn another_user_is_refused() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "another_user_is_refused: not root, cannot switch uid; the check itself is tested \
             by credential_check_function"
        );
        return;
    }
    const NOBODY: u32 = 65534;
    let dir = TempDir::new("peercred");
    // uid 65534 must be able to reach the socket file's directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = HostProc::start(dir.path());

    // First guard: the socket is 0600 and root's, so another user cannot even connect.
    assert_eq!(
        connect_as(NOBODY, &host.socket, b"lsmod\n"),
        Foreign::ConnectFailed(libc::EACCES)
    );

    // Second guard: with the mode opened up, the peer credential check refuses the request.
    std::fs::set_permissions(&host.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let Foreign::Answer(answer) = connect_as(NOBODY, &host.socket, b"insmod\t/tmp/x.so\n") else {
        panic!("the foreign client could not connect");
    };
    assert!(
        answer.starts_with("err\tdenied\tpermission denied: ")
            && answer.contains("not from uid 65534"),
        "{answer:?}"
    );
    // The host is unharmed: our own requests still work.
    let o = rcumod(&["lsmod", "--socket", host.sock()], LIMIT);
    assert!(o.status.success(), "{:?}", text(&o));

    let log = host.shutdown();
    assert!(
        log.contains("refused a connection from uid 65534"),
        "the refusal is logged:\n{log}"
    );
}
