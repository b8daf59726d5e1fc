//! Is any thread executing module code, or holding it on its stack? Asked just before `dlclose`
//! of every thread that could be: those started since the module's `dlopen`, other than the
//! host's own, rcu-core's and those another module's code started (see [`scan`] for why the
//! others are safe to skip).
//!
//! The host knows the threads it started for a module (it joined them) and, through the
//! interposed `pthread_create` (handoffs.rs), the ones module code started. Neither covers a
//! thread a constructor started before the GOT was rewritten, one started through `dlsym` or a
//! raw `clone`, or an application thread that module code reached some other way (a handler, a
//! function pointer handed to another library). So the host looks at each thread itself:
//!
//! * **A thread blocked in a system call** is read without disturbing it:
//!   `/proc/self/task/<tid>/syscall` gives its stack pointer and program counter; its stack above
//!   that pointer is scanned from here, and the file is read again to confirm the thread did not
//!   move meanwhile.
//! * **A running thread** is sent a real-time signal ([`scan_signal`]). Its handler, host code,
//!   records the interrupted program counter and stack pointer from the signal context and
//!   sleeps on a futex while the unloader scans the stack, then returns.
//!
//! Stacks are read with `process_vm_readv` on this process, which reports a fault instead of
//! taking one (a thread blocked in a call may wake and exit, unmapping its stack, mid-read).
//!
//! The stack is read conservatively first: a word that points into the module's code counts if
//! the bytes before it are a call instruction (a return address), which keeps function pointers
//! held in locals from counting. Such a candidate may be a stale slot of a call that returned
//! long ago, so it is then checked by walking the stack copy with the objects' unwind tables
//! (unwind.rs): only a frame the walk passes, or a candidate above where the walk had to stop,
//! counts. The scan can err only towards `Pinned`. What it cannot see is a pointer kept
//! elsewhere (a heap structure of another library), the limit docs/design/unload-protocol.md
//! names.

use crate::library::CodeRange;
use crate::unwind::{self, End, Regs, Tables};
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// One thread found with module code: its id, its name and what was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) tid: i32,
    pub(crate) name: String,
    pub(crate) what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "thread {} ({}) {}", self.tid, self.name, self.what)
    }
}

/// The signal that stops a running thread for the scan: `SIGRTMAX - 1`, which glibc leaves to
/// applications (it reserves the lowest real-time signals).
pub(crate) fn scan_signal() -> c_int {
    libc::SIGRTMAX() - 1
}

/// The name of thread `tid` if it is alive (not gone, not a zombie).
pub(crate) fn alive(tid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // "tid (comm) S ...": the state follows the last ')'.
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    if matches!(state, 'Z' | 'X') {
        return None;
    }
    Some(thread_name(tid))
}

fn thread_name(tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// The threads alive now, and the time: what a module's `dlopen` is compared with. A thread of
/// the list is the same one later if it started no later than the time (its id was not reused).
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    tids: Vec<i32>,
    at: u64,
}

/// Take a [`Snapshot`]: one read of `/proc/self/task`.
pub(crate) fn snapshot() -> Snapshot {
    let at = now_ticks();
    let tids = std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default();
    Snapshot { tids, at }
}

/// The time now, in the clock a thread's start time is counted in (`/proc/<pid>/stat` field 22:
/// `USER_HZ` ticks since boot).
fn now_ticks() -> u64 {
    // SAFETY: clock_gettime writes the timespec we pass; sysconf has no preconditions.
    let (t, hz) = unsafe {
        let mut t: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t);
        (t, libc::sysconf(libc::_SC_CLK_TCK).max(1) as u64)
    };
    t.tv_sec as u64 * hz + t.tv_nsec as u64 * hz / 1_000_000_000
}

/// A thread's start time in `USER_HZ` ticks since boot, if it is alive.
fn start_ticks(tid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3, starttime field 22.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// How many times a thread with module code on its stack (but not executing it) is looked at.
const STACK_LOOKS: u32 = 4;
/// How long a thread that cannot be looked at is waited for (it is usually starting or exiting).
const UNKNOWN_PATIENCE: Duration = Duration::from_millis(500);

/// Threads the host itself runs (a module's timers and threads, its `init` and `exit`), by id
/// and start time; rcu-core's service threads are skipped for the same reason
/// (`rcu_core::service_threads`). They run host code that calls module code only as the
/// protocol accounts for: their module's are stopped and joined before any scan, and another
/// module's code reaches them only through hooks and callbacks.
///
/// An entry stays until its thread is gone (pruned by the next scan), not until its closure
/// returns: a thread on its way out still runs (thread-local destructors, glibc's exit path with
/// every signal blocked), and must not be taken for a foreign one then. The start time tells a
/// later thread that reused the id.
static HOST_THREADS: std::sync::Mutex<Vec<(i32, u64)>> = std::sync::Mutex::new(Vec::new());

/// Mark the calling thread as the host's, for the rest of its life.
pub(crate) fn mark_host_thread() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    if let Some(start) = start_ticks(tid) {
        HOST_THREADS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((tid, start));
    }
}

/// Has `tid` become one of the threads the scan skips since the scan began?
fn known_now(tid: i32) -> bool {
    HOST_THREADS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|(t, _)| *t == tid)
        || rcu_core::service_threads().contains(&tid)
        || crate::handoffs::started_threads().contains(&tid)
}

/// Every thread but the caller, and but those in `before` (the [`snapshot`] taken before the
/// module's `dlopen`) and the host's, with module code (in `code`) at its program counter or on its stack; `at`
/// names an address for the message.
///
/// Why only those: a thread that already ran before the module was mapped can reach its code
/// only through what the module handed it — a hook or callback (the grace period and barrier
/// of the protocol wait for those), a signal handler or key destructor (checked and undone by
/// handoffs.rs), or a function pointer handed to another library (the limit the host cannot
/// see). A thread started since may have been started by module code in ways the wrappers do
/// not see (a constructor, `dlsym`, a raw `clone`). Skipping the old threads also keeps the
/// scan's signals away from the application's busy threads.
pub(crate) fn scan(
    code: &[CodeRange],
    before: &Snapshot,
    at: &dyn Fn(usize) -> String,
    walk: bool,
) -> Vec<Finding> {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return vec![Finding {
            tid: 0,
            name: "?".into(),
            what: "could not be listed: /proc/self/task is unreadable".into(),
        }];
    };
    let t0 = Instant::now();
    let alive_now: Vec<i32> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .collect();
    let host: Vec<(i32, u64)> = {
        let mut h = HOST_THREADS.lock().unwrap_or_else(|e| e.into_inner());
        h.retain(|(t, _)| alive_now.contains(t));
        h.clone()
    };
    let service = rcu_core::service_threads();
    let started = crate::handoffs::started_threads();
    let mut maps: Option<Maps> = None;
    // Allocated before any thread is stopped: a stopped thread may hold the allocator's lock.
    let mut buf = vec![0usize; COPY_WORDS + CHUNK_WORDS];
    let mut tables = Tables::default();
    let mut found = Vec::new();
    let mut scanned = 0usize;
    for tid in alive_now
        .into_iter()
        .filter(|&t| t != me && !service.contains(&t) && !started.contains(&t))
        .filter(|&t| {
            let Some(start) = start_ticks(t) else {
                return false; // gone
            };
            // The host's own, or an old thread: in the snapshot, and started no later than it
            // (not a reused id).
            let old = before.tids.contains(&t) && start <= before.at;
            !(host.contains(&(t, start)) || old)
        })
    {
        scanned += 1;
        // A thread with module code on its stack but not at its PC may be leaving it (a stale
        // slot a walk could not rule out, a call about to return): look again a few times. A
        // thread that
        // cannot be looked at now is usually starting or exiting (glibc blocks every signal
        // then): look again until it has done so, within a bound.
        let mut last;
        let tt = Instant::now();
        let mut stack_hits = 0;
        loop {
            let m = maps.get_or_insert_with(Maps::read);
            let mut seen = look(tid, code, m, &mut buf, walk.then_some(&mut tables));
            if matches!(seen, Look::NoStack) {
                // A thread newer than our reading of the maps.
                let m = maps.insert(Maps::read());
                seen = look(tid, code, m, &mut buf, walk.then_some(&mut tables));
            }
            match seen {
                Look::Gone | Look::Clean | Look::NoStack => {
                    last = None;
                    break;
                }
                Look::Executing(pc) => {
                    last = Some(format!("is executing module code at {}", at(pc)));
                    break;
                }
                Look::OnStack(ret) => {
                    last = Some(format!(
                        "has module code on its stack (return address {})",
                        at(ret)
                    ));
                    stack_hits += 1;
                    if stack_hits == STACK_LOOKS {
                        break;
                    }
                }
                Look::Unknown(why) => {
                    // A thread just started blocks signals until it reaches its start routine,
                    // where it may make itself known (the host's, rcu-core's, or a module's
                    // recorded thread): the lists read above are from before.
                    if known_now(tid) {
                        last = None;
                        break;
                    }
                    last = Some(format!("could not be inspected: {why}"));
                    if tt.elapsed() >= UNKNOWN_PATIENCE {
                        break;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if tt.elapsed() > Duration::from_millis(20) {
            tracing::debug!(target: "rcumod", tid, name = %thread_name(tid), elapsed = ?tt.elapsed(),
                found = ?last, "slow thread scan");
        }
        if let Some(what) = last {
            if let Some(name) = alive(tid) {
                found.push(Finding { tid, name, what });
            }
        }
    }
    tracing::debug!(target: "rcumod", scanned, found = found.len(), elapsed = ?t0.elapsed(), "thread scan");
    found
}

enum Look {
    Gone,
    Clean,
    /// Its stack pointer lies in no mapping we read.
    NoStack,
    Executing(usize),
    OnStack(usize),
    Unknown(String),
}

/// Words of a stack copied for a walk (256 KiB), and of each further chunk scanned beyond it.
const COPY_WORDS: usize = 32 << 10;
const CHUNK_WORDS: usize = 1 << 10;

fn look(
    tid: i32,
    code: &[CodeRange],
    maps: &Maps,
    buf: &mut [usize],
    mut tables: Option<&mut Tables>,
) -> Look {
    for _ in 0..3 {
        match blocked_in_syscall(tid) {
            Syscall::Gone => return Look::Gone,
            Syscall::Blocked { sp, pc } => {
                let regs = Regs {
                    pc,
                    sp,
                    ..Regs::default()
                };
                let r = judge(regs, code, maps, buf);
                // The thread may have left the call while we read its stack: only a second
                // identical reading makes the scan a picture of one moment.
                if matches!(blocked_in_syscall(tid), Syscall::Blocked { sp: s2, pc: p2 } if s2 == sp && p2 == pc)
                {
                    match confirm(r, regs, code, buf, tables.as_deref_mut()) {
                        // The walk stopped for want of a register the passive read does not
                        // give (a frame addressed by its frame pointer: Rust's std is built
                        // with them): stop the thread to read them all. Rare, as it needs a
                        // word that looks like a return address first, and costs the thread
                        // at most an EINTR from a call that is not restarted (nanosleep,
                        // epoll_wait), which portable code retries.
                        (Look::OnStack(_), Walked::Unsure) => break,
                        (look, _) => return look,
                    }
                }
            }
            Syscall::Running => break,
        }
    }
    // One stopped thread at a time, from the signal to its release: the statics are the
    // scan's, and concurrent unloads scan too.
    let _one = SCANNING.lock().unwrap_or_else(|e| e.into_inner());
    match stop_and_read(tid) {
        Stopped::Gone => Look::Gone,
        Stopped::Timeout => {
            Look::Unknown("it neither took the scan signal nor sat in a system call".into())
        }
        Stopped::Parked(regs) => {
            let r = judge(regs, code, maps, buf);
            if release() {
                // The copy in `buf` is the picture of the parked moment; walking it needs the
                // allocator, so only now that the thread runs again.
                confirm(r, regs, code, buf, tables).0
            } else {
                Look::Unknown("it moved while its stack was read".into())
            }
        }
    }
}

/// What a conservative reading of a stack found, before the walk checks it.
enum Judged {
    Final(Look),
    /// Words that look like return addresses into the module: the highest such word's address
    /// and value, and how many words from the stack pointer up were copied to `buf`.
    Candidates {
        slot: usize,
        ret: usize,
        copied: usize,
    },
}

/// Read the stack above `regs.sp` conservatively, copying its first [`COPY_WORDS`] to `buf`.
/// Allocates nothing: the thread may be held.
fn judge(regs: Regs, code: &[CodeRange], maps: &Maps, buf: &mut [usize]) -> Judged {
    let inside = |a: usize| code.iter().any(|&(s, e)| a >= s && a < e);
    if inside(regs.pc) {
        return Judged::Final(Look::Executing(regs.pc));
    }
    let Some(end) = maps.end_of(regs.sp) else {
        return Judged::Final(Look::NoStack);
    };
    let word = std::mem::size_of::<usize>();
    let (copy, chunk) = buf.split_at_mut(COPY_WORDS);
    let base = regs.sp & !(word - 1);
    let copied = ((end - base) / word).min(COPY_WORDS);
    let mut highest = None;
    let mut p = base;
    let mut first = true;
    while p < end {
        let area: &mut [usize] = if first {
            &mut copy[..copied]
        } else {
            let n = ((end - p) / word).min(CHUNK_WORDS);
            &mut chunk[..n]
        };
        let Some(words) = read_words(p, area) else {
            // Unmapped meanwhile: a thread that left its system call and exited.
            return Judged::Final(Look::Gone);
        };
        if let Some((i, &w)) = words
            .iter()
            .enumerate()
            .rev()
            .find(|&(_, &w)| inside(w) && after_call(w, code))
        {
            highest = Some((p + i * word, w));
        }
        p += std::mem::size_of_val(words);
        first = false;
        if words.is_empty() {
            break;
        }
    }
    match highest {
        None => Judged::Final(Look::Clean),
        Some((slot, ret)) => Judged::Candidates { slot, ret, copied },
    }
}

/// How far a [`confirm`] could trust its walk.
enum Walked {
    /// The answer rests on the walk: a module frame it passed, or a walk that reached the
    /// outermost frame or went past every candidate.
    Sure,
    /// A candidate above the point where the walk stopped still counts, and the walk lacked a
    /// register (the frame pointer) it could have had from a stopped thread.
    Unsure,
}

/// Check conservative candidates by walking the copied stack (unwind.rs): a module frame the
/// walk passes is real; a candidate below the point where a complete walk went past it is a
/// stale slot; above the point where the walk stopped, it still counts.
fn confirm(
    judged: Judged,
    regs: Regs,
    code: &[CodeRange],
    buf: &[usize],
    tables: Option<&mut Tables>,
) -> (Look, Walked) {
    let (slot, ret, copied) = match judged {
        Judged::Final(look) => return (look, Walked::Sure),
        Judged::Candidates { slot, ret, copied } => (slot, ret, copied),
    };
    let Some(tables) = tables else {
        return (Look::OnStack(ret), Walked::Sure);
    };
    let inside = |a: usize| code.iter().any(|&(s, e)| a >= s && a < e);
    let copy = unwind::Copy {
        base: regs.sp & !(std::mem::size_of::<usize>() - 1),
        words: &buf[..copied],
    };
    let mut genuine = None;
    let end = unwind::walk(tables, regs, &copy, |pc| {
        if inside(pc) {
            genuine = Some(pc);
        }
        genuine.is_none()
    });
    if let Some(pc) = genuine {
        return (Look::OnStack(pc), Walked::Sure);
    }
    match end {
        End::StoppedAt(sp) if slot >= sp => {
            let unsure = if regs.fp.is_none() {
                Walked::Unsure
            } else {
                Walked::Sure
            };
            (Look::OnStack(ret), unsure)
        }
        End::Complete | End::StoppedAt(_) => (Look::Clean, Walked::Sure),
    }
}

/// Copy the words at `at` into `buf` with `process_vm_readv` on this process, which fails
/// (`EFAULT`) where a plain read would fault: a thread blocked in a system call may wake, exit,
/// and have its stack unmapped while we read it.
fn read_words(at: usize, buf: &mut [usize]) -> Option<&[usize]> {
    let bytes = std::mem::size_of_val(buf);
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: bytes,
    };
    let remote = libc::iovec {
        iov_base: at as *mut libc::c_void,
        iov_len: bytes,
    };
    // SAFETY: `local` is our buffer of `bytes` bytes; the remote range is only read, by the
    // kernel, which reports a fault instead of taking one.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (n >= 0 && n as usize == bytes).then_some(&*buf)
}

/// Do the bytes before `ret` (in `code`) end in a call instruction?
fn after_call(ret: usize, code: &[CodeRange]) -> bool {
    let Some(&(start, _)) = code.iter().find(|&&(s, e)| ret >= s && ret < e) else {
        return false;
    };
    let byte = |back: usize| -> Option<u8> {
        let a = ret.checked_sub(back).filter(|a| *a >= start)?;
        // SAFETY: `a` lies in the module's executable, mapped, readable range.
        Some(unsafe { std::ptr::read_volatile(a as *const u8) })
    };
    if cfg!(target_arch = "x86_64") {
        // call rel32 (E8), or an indirect call: FF /2 with a ModRM of 1 to 6 more bytes.
        if byte(5) == Some(0xE8) {
            return true;
        }
        (2..=7).any(|k| byte(k) == Some(0xFF) && byte(k - 1).is_some_and(|m| (m >> 3) & 7 == 2))
    } else if cfg!(target_arch = "aarch64") {
        let w = (1..=4)
            .rev()
            .filter_map(byte)
            .fold(0u32, |w, b| (w << 8) | u32::from(b));
        // BL imm26, or BLR Xn.
        w & 0xFC00_0000 == 0x9400_0000 || w & 0xFFFF_FC1F == 0xD63F_0000
    } else {
        true
    }
}

enum Syscall {
    Gone,
    Running,
    Blocked { sp: usize, pc: usize },
}

fn blocked_in_syscall(tid: i32) -> Syscall {
    let Ok(s) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return Syscall::Gone;
    };
    // "nr arg1 .. arg6 sp pc", or "-1 sp pc" (blocked, not in a call), or "running".
    let f: Vec<&str> = s.split_whitespace().collect();
    if f.first() == Some(&"running") || f.len() < 3 {
        return Syscall::Running;
    }
    let hex = |x: &str| usize::from_str_radix(x.trim_start_matches("0x"), 16).ok();
    match (hex(f[f.len() - 2]), hex(f[f.len() - 1])) {
        (Some(sp), Some(pc)) => Syscall::Blocked { sp, pc },
        _ => Syscall::Running,
    }
}

// ---- stopping a running thread -------------------------------------------------------------

const IDLE: u32 = 0;
const ARMED: u32 = 1;
const TAKEN: u32 = 2;
const PARKED: u32 = 3;
const RELEASED: u32 = 4;
/// The handler stopped waiting before it was released: the picture taken is no longer true.
const ABANDONED: u32 = 5;

/// The scan's state, a futex word: the scanner and the stopped thread sleep on it, neither
/// spins (a stopped thread boosted to a real-time priority would otherwise hold its CPU).
static STATE: AtomicU32 = AtomicU32::new(IDLE);
static TARGET: AtomicI32 = AtomicI32::new(0);
static PC: AtomicUsize = AtomicUsize::new(0);
static SP: AtomicUsize = AtomicUsize::new(0);
static FP: AtomicUsize = AtomicUsize::new(0);
static LR: AtomicUsize = AtomicUsize::new(0);
/// One stopped thread at a time (the statics above are its), held from the signal to the release.
static SCANNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sleep while STATE is `expected`, `ns` at most (async-signal-safe: a system call).
fn futex_wait(expected: u32, ns: u64) {
    let t = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT on a static word with a relative timeout; it returns at once if the
    // word is no longer `expected`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            STATE.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &t,
        )
    };
}

fn futex_wake() {
    // SAFETY: FUTEX_WAKE on a static word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            STATE.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}

enum Stopped {
    Gone,
    Timeout,
    Parked(Regs),
}

fn install() -> bool {
    static ONCE: Once = Once::new();
    static OK: AtomicBool = AtomicBool::new(false);
    ONCE.call_once(|| {
        // SAFETY: a query, then installing host code (never unmapped) on a signal no one else
        // handles; zeroed sigactions are valid.
        let ok = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(scan_signal(), std::ptr::null(), &mut old);
            if old.sa_sigaction != libc::SIG_DFL {
                tracing::warn!(target: "rcumod", signo = scan_signal(),
                    "the scan signal is taken: running threads are not inspected");
                false
            } else {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_scan_signal as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(scan_signal(), &sa, std::ptr::null_mut()) == 0
            }
        };
        OK.store(ok, Ordering::Relaxed);
    });
    // call_once orders the store before this load.
    OK.load(Ordering::Relaxed)
}

/// Does thread `tid` block the scan signal now (`SigBlk` of its status)? A thread on its way in
/// or out does: glibc blocks every signal around a thread's first and last steps.
fn blocks_scan_signal(tid: i32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))?
        .trim();
    let mask = u64::from_str_radix(mask, 16).ok()?;
    Some(mask & (1u64 << (scan_signal() - 1)) != 0)
}

fn stop_and_read(tid: i32) -> Stopped {
    if !install() {
        return Stopped::Timeout;
    }
    // A thread still returning from this handler (the previous look) blocks the signal for a
    // few microseconds more: wait that out, briefly.
    let mut tries = 0;
    loop {
        match blocks_scan_signal(tid) {
            None => return Stopped::Gone,
            Some(false) => break,
            Some(true) if tries == 20 => return Stopped::Timeout,
            Some(true) => {
                tries += 1;
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }
    TARGET.store(tid, Ordering::Relaxed);
    // Release pairs with the handler's Acquire compare-exchange: it sees TARGET.
    STATE.store(ARMED, Ordering::Release);
    // SAFETY: a signal to a thread of this process; the handler is installed.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, scan_signal()) };
    if rc != 0 {
        STATE.store(IDLE, Ordering::Relaxed);
        return Stopped::Gone;
    }
    // Bounded whatever the handler does: it may never run (the signal blocked while the thread
    // runs), or give up its own wait.
    let deadline = Instant::now() + Duration::from_millis(200);
    loop {
        // Acquire pairs with the handler's Release store of PARKED: PC and SP are its.
        let now = STATE.load(Ordering::Acquire);
        if now == PARKED {
            let known = |w: &AtomicUsize| Some(w.load(Ordering::Relaxed)).filter(|&v| v != 0);
            return Stopped::Parked(Regs {
                pc: PC.load(Ordering::Relaxed),
                sp: SP.load(Ordering::Relaxed),
                fp: known(&FP),
                lr: known(&LR),
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // Disarm, unless the handler took it meanwhile (then it parks at once).
            match STATE.compare_exchange(ARMED, IDLE, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) | Err(IDLE | RELEASED | ABANDONED) => {
                    STATE.store(IDLE, Ordering::Release);
                    return Stopped::Timeout;
                }
                Err(_) => {}
            }
        }
        futex_wait(now, left.as_nanos().clamp(50_000, 5_000_000) as u64);
        // A thread that began to exit after the signal was sent never takes it: see it go.
        // (Not by its signal mask: a thread entering the handler blocks the signal too.)
        if now == ARMED
            && alive(tid).is_none()
            && STATE
                .compare_exchange(ARMED, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Stopped::Gone;
        }
    }
}

/// Let the parked thread go, and wait until it has left the handler (bounded: it leaves by
/// itself after its own deadline). False if it had already stopped waiting, so the thread may
/// have moved while its stack was read.
fn release() -> bool {
    if STATE
        .compare_exchange(PARKED, RELEASED, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        STATE.store(IDLE, Ordering::Release);
        return false;
    }
    futex_wake();
    let deadline = Instant::now() + Duration::from_secs(2);
    while STATE.load(Ordering::Acquire) == RELEASED && Instant::now() < deadline {
        futex_wait(RELEASED, 1_000_000);
    }
    STATE.store(IDLE, Ordering::Release);
    true
}

extern "C" fn on_scan_signal(_sig: c_int, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // Only async-signal-safe calls here: gettid, futex, clock_gettime.
    // SAFETY: this thread's errno, restored before returning.
    let saved = unsafe { *libc::__errno_location() };
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    if TARGET.load(Ordering::Relaxed) == me
        && STATE
            .compare_exchange(ARMED, TAKEN, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        let r = context(uc);
        PC.store(r.pc, Ordering::Relaxed);
        SP.store(r.sp, Ordering::Relaxed);
        FP.store(r.fp.unwrap_or(0), Ordering::Relaxed);
        LR.store(r.lr.unwrap_or(0), Ordering::Relaxed);
        STATE.store(PARKED, Ordering::Release);
        futex_wake();
        let start = now_ns();
        // Bounded: a scanner that died does not keep this thread here for more than 1 s.
        while STATE.load(Ordering::Acquire) == PARKED {
            if now_ns().saturating_sub(start) >= 1_000_000_000 {
                // A wait that timed out says so (the scanner then discards what it read).
                let _ =
                    STATE.compare_exchange(PARKED, ABANDONED, Ordering::AcqRel, Ordering::Relaxed);
                break;
            }
            futex_wait(PARKED, 10_000_000);
        }
        if STATE
            .compare_exchange(RELEASED, IDLE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            futex_wake();
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

fn now_ns() -> u64 {
    // SAFETY: clock_gettime writes the timespec we pass.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The interrupted registers a walk starts from.
fn context(uc: *mut libc::c_void) -> Regs {
    let uc = uc.cast::<libc::ucontext_t>();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler.
    unsafe {
        let g = &(*uc).uc_mcontext.gregs;
        Regs {
            pc: g[libc::REG_RIP as usize] as usize,
            sp: g[libc::REG_RSP as usize] as usize,
            fp: Some(g[libc::REG_RBP as usize] as usize),
            lr: None,
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above.
    unsafe {
        let m = &(*uc).uc_mcontext;
        Regs {
            pc: m.pc as usize,
            sp: m.sp as usize,
            fp: Some(m.regs[29] as usize),
            lr: Some(m.regs[30] as usize),
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = uc;
        Regs::default()
    }
}

/// The readable mappings of the process, to bound a stack scan to the mapping its stack pointer
/// lies in.
struct Maps(Vec<(usize, usize)>);

impl Maps {
    fn read() -> Maps {
        let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let hex = |x: &str| usize::from_str_radix(x, 16).ok();
        Maps(
            text.lines()
                .filter_map(|l| {
                    let mut f = l.split_whitespace();
                    let (range, perms) = (f.next()?, f.next()?);
                    let (a, b) = range.split_once('-')?;
                    perms.starts_with('r').then_some((hex(a)?, hex(b)?))
                })
                .collect(),
        )
    }

    fn end_of(&self, addr: usize) -> Option<usize> {
        self.0
            .iter()
            .find(|&&(s, e)| addr >= s && addr < e)
            .map(|&(_, e)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A thread asleep in short calls and a thread spinning in user space are both stopped and
    /// read, again and again (a thread still leaving the handler of the previous look is waited
    /// for, not reported).
    #[test]
    fn running_and_sleeping_threads_are_stopped_and_released() {
        for sleepy in [true, false] {
            let stop = Arc::new(AtomicBool::new(false));
            let s2 = Arc::clone(&stop);
            let (tx, rx) = std::sync::mpsc::channel();
            let t = std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tx.send(unsafe { libc::gettid() }).unwrap();
                while !s2.load(Ordering::Relaxed) {
                    if sleepy {
                        std::thread::sleep(Duration::from_micros(100));
                    } else {
                        std::hint::spin_loop();
                    }
                }
            });
            let tid = rx.recv().unwrap();
            for _ in 0..50 {
                let _one = SCANNING.lock().unwrap();
                match stop_and_read(tid) {
                    Stopped::Parked(regs) => {
                        assert_ne!(regs.sp, 0);
                        assert!(release(), "released while still parked");
                    }
                    Stopped::Timeout => panic!("sleepy={sleepy}: the thread was not stopped"),
                    Stopped::Gone => panic!("sleepy={sleepy}: the thread is alive"),
                }
            }
            stop.store(true, Ordering::Relaxed);
            t.join().unwrap();
        }
    }

    /// The control for the scan: a word pointing just after a call instruction counts as a
    /// return address; a function's entry (a pointer held in a local) does not.
    #[test]
    fn only_words_after_a_call_count() {
        // A small code buffer of our own: `call rel32` then `ret`, then a lone `ret`.
        let code = [0xE8u8, 0, 0, 0, 0, 0xC3, 0x90, 0xC3];
        let start = code.as_ptr() as usize;
        let range = [(start, start + code.len())];
        if cfg!(target_arch = "x86_64") {
            assert!(after_call(start + 5, &range), "after the call");
            assert!(
                !after_call(start + 7, &range),
                "after a nop is not a return address"
            );
        }
        assert!(!after_call(start + 100, &range), "outside the code");
    }
}
