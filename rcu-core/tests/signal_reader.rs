//! Read-side sections in signal handlers.
//!
//! `try_read_lock` is documented async-signal-safe: on a registered thread it neither
//! allocates, locks nor registers, and on an unregistered one it returns `None`. A handler's
//! section may interrupt the thread's own `read_lock`/`read_unlock` halfway, so the reader
//! word must come out of the handler as it went in: the interrupted section stays a section
//! (a grace period still waits for it) and readers in the handler stay protected. We check
//! both deterministically, with `raise` inside and outside a section, and under stress, with
//! a thread signalling a torture reader thousands of times while a writer retires and
//! poisons nodes.

mod common;

use common::{check_node, dwell, within, Node, Pending, Writer, HANG_GUARD};
use rcu_core::{Rcu, RcuCell};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Once, OnceLock};
use std::time::Duration;

const SIGNAL: libc::c_int = libc::SIGUSR1;

/// The domain and cell the handler reads.
struct Target {
    rcu: Rcu,
    cell: RcuCell<Node>,
}

static TARGET: OnceLock<Target> = OnceLock::new();

/// What the handler saw.
static RUNS: AtomicU64 = AtomicU64::new(0);
static UNREGISTERED: AtomicU64 = AtomicU64::new(0);
static NESTED: AtomicU64 = AtomicU64::new(0);
static POISONED: AtomicU64 = AtomicU64::new(0);
static LAST_SEQ: AtomicU64 = AtomicU64::new(u64::MAX);

extern "C" fn on_signal(_: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno slot; saving and restoring it
    // keeps the interrupted code's errno intact.
    let errno = unsafe { *libc::__errno_location() };
    // Only atomics, `OnceLock::get` (an atomic load) and rcu-core's async-signal-safe read
    // side below.
    if let Some(t) = TARGET.get() {
        let nested = t.rcu.in_read_section();
        match t.rcu.try_read_lock() {
            Some(guard) => {
                let node = t.cell.load(&guard);
                if !node.is_alive() {
                    POISONED.fetch_add(1, Ordering::Relaxed);
                }
                LAST_SEQ.store(node.seq, Ordering::Relaxed);
                NESTED.fetch_add(u64::from(nested), Ordering::Relaxed);
                RUNS.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                UNREGISTERED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The handler state is process-wide: the tests of this binary take turns (which also keeps
/// the stress test from sharing the CPUs with another).
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The target, created (and the handler installed) on first use.
fn target() -> &'static Target {
    static INSTALL: Once = Once::new();
    let t = TARGET.get_or_init(|| {
        let rcu = Rcu::builder().name("signal-reader").build();
        let cell = RcuCell::new_in(Node::new(0), &rcu);
        Target { rcu, cell }
    });
    INSTALL.call_once(|| {
        // SAFETY: `sa` is zero-initialised, then its mask is initialised by sigemptyset; the
        // handler is an `extern "C" fn(c_int)` that is async-signal-safe (see `on_signal`);
        // a null old-action pointer is allowed.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(SIGNAL, &sa, std::ptr::null_mut())
        };
        assert_eq!(rc, 0, "sigaction: {}", std::io::Error::last_os_error());
    });
    t
}

/// Deliver the signal to the calling thread; the handler has run when this returns.
fn raise() {
    // SAFETY: raise takes a signal number; our handler for it is installed (`target`).
    let rc = unsafe { libc::raise(SIGNAL) };
    assert_eq!(rc, 0);
}

/// The `seq` of the node currently published in the target cell.
fn current_seq(t: &Target) -> u64 {
    t.cell.load(&t.rcu.read_lock()).seq
}

#[test]
fn a_handler_reads_outside_and_inside_a_section_without_breaking_it() {
    let _turn = exclusive();
    let t = target();
    within(HANG_GUARD, "signal handler reads", move || {
        t.rcu.register_thread();
        let seq = current_seq(t) + 1;
        assert_eq!(t.cell.publish(Node::new(seq)).synchronize().seq, seq - 1);
        let (runs, nested) = (RUNS.load(Ordering::Relaxed), NESTED.load(Ordering::Relaxed));

        // Outside a section.
        raise();
        assert_eq!(RUNS.load(Ordering::Relaxed), runs + 1);
        assert_eq!(LAST_SEQ.load(Ordering::Relaxed), seq);
        assert_eq!(NESTED.load(Ordering::Relaxed), nested);
        assert!(!t.rcu.in_read_section(), "the handler's section leaked");

        // Inside a section: the handler's section nests in ours.
        let outer = t.rcu.read_lock();
        raise();
        assert_eq!(RUNS.load(Ordering::Relaxed), runs + 2);
        assert_eq!(NESTED.load(Ordering::Relaxed), nested + 1);
        assert_eq!(LAST_SEQ.load(Ordering::Relaxed), seq);
        assert!(
            t.rcu.in_read_section(),
            "the handler ended the interrupted section"
        );

        // And ours still holds grace periods, also across a handler run while one waits.
        let outer_left = Arc::new(AtomicBool::new(false));
        let waiter = {
            let outer_left = Arc::clone(&outer_left);
            Pending::spawn(move || {
                target().rcu.synchronize();
                assert!(
                    outer_left.load(Ordering::SeqCst),
                    "synchronize returned before the section interrupted by the handler ended"
                );
            })
        };
        waiter.assert_blocked("synchronize while a section interrupted by a handler is open");
        raise();
        waiter.assert_blocked("synchronize after a second handler ran inside the section");
        outer_left.store(true, Ordering::SeqCst);
        drop(outer);
        waiter.join("synchronize after the interrupted section ended");

        assert_eq!(RUNS.load(Ordering::Relaxed), runs + 3);
        assert_eq!(POISONED.load(Ordering::Relaxed), 0);
    });
}

#[test]
fn try_read_lock_on_an_unregistered_thread_returns_none() {
    let _turn = exclusive();
    let t = target();
    within(HANG_GUARD, "try_read_lock unregistered", move || {
        assert!(t.rcu.try_read_lock().is_none());
        let (runs, unregistered) = (
            RUNS.load(Ordering::Relaxed),
            UNREGISTERED.load(Ordering::Relaxed),
        );
        let threads = t.rcu.registered_threads();
        raise();
        assert_eq!(UNREGISTERED.load(Ordering::Relaxed), unregistered + 1);
        assert_eq!(RUNS.load(Ordering::Relaxed), runs);
        assert_eq!(
            t.rcu.registered_threads(),
            threads,
            "try_read_lock registered the thread"
        );

        t.rcu.register_thread();
        assert!(t.rcu.try_read_lock().is_some());
        raise();
        assert_eq!(RUNS.load(Ordering::Relaxed), runs + 1);
    });
}

/// How many signals the stress test sends.
const SIGNALS: u32 = 20_000;

#[test]
fn signalled_torture_reader_never_sees_poison() {
    let _turn = exclusive();
    let t = target();
    let (runs, nested) = (RUNS.load(Ordering::Relaxed), NESTED.load(Ordering::Relaxed));
    let (reads, errors, updates) = within(Duration::from_secs(10), "signal stress", move || {
        let done = AtomicBool::new(false);
        let done = &done;
        let (thread_tx, thread_rx) = mpsc::channel();
        let mut writer = Writer::new(&t.rcu, &t.cell);
        let (reads, errors) = std::thread::scope(|s| {
            let reader = s.spawn(move || {
                t.rcu.register_thread();
                // SAFETY: pthread_self cannot fail.
                thread_tx.send(unsafe { libc::pthread_self() }).unwrap();
                let (mut reads, mut errors) = (0u64, 0u64);
                while !done.load(Ordering::Relaxed) {
                    let guard = t.rcu.read_lock();
                    errors += check_node(t.cell.load(&guard), dwell(reads));
                    drop(guard);
                    reads += 1;
                }
                (reads, errors)
            });
            s.spawn(move || {
                let reader = thread_rx.recv().unwrap();
                for _ in 0..SIGNALS / 16 {
                    for _ in 0..16 {
                        // SAFETY: `reader` is the reader thread's pthread_t; it runs until
                        // `done`, which is set only after the last signal is sent.
                        let rc = unsafe { libc::pthread_kill(reader, SIGNAL) };
                        assert_eq!(rc, 0, "pthread_kill");
                    }
                    std::thread::yield_now();
                }
                done.store(true, Ordering::Relaxed);
            });
            while !done.load(Ordering::Relaxed) {
                writer.update();
            }
            reader.join().unwrap()
        });
        (reads, errors, writer.release())
    });
    let handled = RUNS.load(Ordering::Relaxed) - runs;
    let nested = NESTED.load(Ordering::Relaxed) - nested;
    println!(
        "signal stress: {updates} updates, {reads} reads, {handled} handler runs \
         ({nested} inside a section), {errors} poisoned reads, {} poisoned handler reads",
        POISONED.load(Ordering::Relaxed)
    );
    assert!(updates > 0 && reads > 0);
    assert!(handled > 0, "the handler never ran");
    assert!(
        nested > 0,
        "no signal interrupted a section: the test was vacuous"
    );
    assert_eq!(errors, 0, "the reader saw a poisoned node");
    assert_eq!(
        POISONED.load(Ordering::Relaxed),
        0,
        "the handler saw a poisoned node"
    );
}
