//! Helpers shared by the integration tests: the torture node and its poison check, the
//! update side of the torture harness (publish, wait for a grace period, poison, quarantine),
//! a reader held inside a section on request, and hang guards.
//!
//! Every test binary compiles this module but uses only part of it.
//!
//! [`domains`] puts `Rcu` domains of every flavor and `Srcu` behind one interface, for the
//! callback and barrier harnesses that run on every kind of domain.
#![allow(dead_code)]

pub(crate) mod domains;

use rcu_core::{Rcu, RcuCell, Retired};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `Node::magic` of a node that readers may legitimately see.
pub(crate) const ALIVE: u64 = 0xA11C_E0A1_1CE0_A11C;
/// `Node::magic` of a node the writer has retired after a grace period.
pub(crate) const DEAD: u64 = 0xDEAD_DEAD_DEAD_DEAD;

/// A published value. The writer poisons it (magic = [`DEAD`]) once a grace period says no
/// reader can still see it, and never frees it while readers run, so a broken grace period
/// shows up as an observed poison instead of undefined behaviour.
#[derive(Debug)]
pub(crate) struct Node {
    magic: AtomicU64,
    /// Publication number (0 for the initial node).
    pub(crate) seq: u64,
}

impl Node {
    pub(crate) fn new(seq: u64) -> Node {
        Node {
            magic: AtomicU64::new(ALIVE),
            seq,
        }
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.magic.load(Ordering::Relaxed) == ALIVE
    }

    fn poison(&self) {
        self.magic.store(DEAD, Ordering::Relaxed);
    }
}

/// What a torture reader does with the node it loaded inside one section: check it, dwell
/// for `dwell` spins (so the section overlaps the writer's retire-and-poison), check again.
/// Returns the number of poisoned observations.
pub(crate) fn check_node(node: &Node, dwell: u32) -> u64 {
    let mut errors = u64::from(!node.is_alive());
    for _ in 0..dwell {
        std::hint::spin_loop();
    }
    errors += u64::from(!node.is_alive());
    errors
}

/// A section length between 50 and 199 spins, varied from read to read.
pub(crate) fn dwell(reads: u64) -> u32 {
    50 + (reads.wrapping_mul(37) % 150) as u32
}

/// How the writer waits, after publishing, before it poisons the node it replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitKind {
    /// `Retired::synchronize`.
    Synchronize,
    /// `Retired::synchronize_expedited`.
    Expedited,
    /// `Rcu::start_poll`, then `Rcu::cond_synchronize` on that state.
    StartPollCond,
    /// `Rcu::start_poll`, then `Rcu::poll` until it says done (the worker drives).
    StartPollSpin,
}

impl WaitKind {
    pub(crate) const ALL: [WaitKind; 4] = [
        WaitKind::Synchronize,
        WaitKind::Expedited,
        WaitKind::StartPollCond,
        WaitKind::StartPollSpin,
    ];
}

/// A replaced node, poisoned, kept until the readers have stopped.
enum Quarantined {
    /// Reclaimed through `Retired::synchronize*`.
    Owned(Box<Node>),
    /// A grace period was waited for through the polling API; the `Retired` still owns it.
    Polled(Retired<Node>),
}

/// The update side of the torture harness.
pub(crate) struct Writer<'a> {
    rcu: &'a Rcu,
    cell: &'a RcuCell<Node>,
    quarantine: Vec<Quarantined>,
    /// Updates performed so far.
    updates: u64,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(rcu: &'a Rcu, cell: &'a RcuCell<Node>) -> Self {
        Writer {
            rcu,
            cell,
            quarantine: Vec::new(),
            updates: 0,
        }
    }

    /// Publish a new node, wait for a grace period (rotating through [`WaitKind::ALL`]), then
    /// poison the replaced node and quarantine it.
    pub(crate) fn update(&mut self) {
        self.updates += 1;
        let seq = self.updates;
        let old = self.cell.publish(Node::new(seq));
        let kind = WaitKind::ALL[(seq % WaitKind::ALL.len() as u64) as usize];
        let retired = match kind {
            WaitKind::Synchronize => Quarantined::Owned(old.synchronize()),
            WaitKind::Expedited => Quarantined::Owned(old.synchronize_expedited()),
            WaitKind::StartPollCond => {
                let state = self.rcu.start_poll();
                self.rcu.cond_synchronize(state);
                Quarantined::Polled(old)
            }
            WaitKind::StartPollSpin => {
                let state = self.rcu.start_poll();
                while !self.rcu.poll(state) {
                    std::thread::yield_now();
                }
                Quarantined::Polled(old)
            }
        };
        match &retired {
            Quarantined::Owned(node) => node.poison(),
            // SAFETY: the `Retired` owns the node and frees it only when it is dropped or
            // reclaimed, and it stays in the quarantine until `release`; the poison store goes
            // through a shared reference to an atomic, as readers' loads do.
            Quarantined::Polled(old) => unsafe { &*old.as_ptr() }.poison(),
        }
        self.quarantine.push(retired);
    }

    /// Free the quarantine. Call only once every reader has stopped.
    pub(crate) fn release(self) -> u64 {
        // Dropping a `Polled` entry waits for one more grace period, which no reader holds.
        drop(self.quarantine);
        self.updates
    }
}

/// Run `f` on a new thread and return its result; fail the test if it has not finished
/// within `limit`. A hang guard, not a performance assertion: limits are generous. A panic in
/// `f` is propagated with its payload (so `#[should_panic(expected = ...)]` still matches).
pub(crate) fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        // Join so that the thread's exit (and RCU unregistration) is complete on return.
        Ok(value) => {
            handle.join().expect("the thread sent its result");
            value
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => unreachable!("the thread ended without sending its result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("hang guard: {what} did not finish within {limit:?}")
        }
    }
}

/// Poll `cond` until it holds; fail the test after `limit` (a hang guard).
pub(crate) fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "hang guard: {what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// How long a blocked wait is given to (wrongly) finish before we check it is still blocked.
/// Only a broken implementation could finish at all, so this is not a timing assumption.
pub(crate) const SETTLE: Duration = Duration::from_millis(30);

/// Generous bound for a wait that must finish.
pub(crate) const HANG_GUARD: Duration = Duration::from_secs(5);

/// A blocking call (typically a grace-period wait) running on its own thread, observed by a
/// thread that controls what it waits for.
pub(crate) struct Pending {
    done: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Pending {
    pub(crate) fn spawn(f: impl FnOnce() + Send + 'static) -> Pending {
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let handle = std::thread::spawn(move || {
            f();
            flag.store(true, Ordering::SeqCst);
        });
        Pending { done, handle }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// Give the call [`SETTLE`] to finish, and assert it has not: it must not, because
    /// something it has to wait for is still in place.
    pub(crate) fn assert_blocked(&self, why: &str) {
        std::thread::sleep(SETTLE);
        assert!(!self.is_done(), "returned early: {why}");
    }

    /// Wait (at most [`HANG_GUARD`]) for the call to finish; propagate its panic.
    pub(crate) fn join(self, what: &str) {
        wait_until(HANG_GUARD, what, || self.handle.is_finished());
        if let Err(payload) = self.handle.join() {
            std::panic::resume_unwind(payload);
        }
    }
}

/// A thread inside a read-side critical section of a domain until told to leave. Just
/// before it leaves (still inside) it raises its `left` flag, so a grace-period wait that
/// sees the flag down on return did not wait for it.
pub(crate) struct HeldReader {
    leave: mpsc::Sender<()>,
    left: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl HeldReader {
    /// Start the thread; returns once it is inside the section. The thread exits (and so
    /// unregisters) when it leaves, which also releases a qsbr grace period.
    pub(crate) fn enter(rcu: Arc<Rcu>) -> HeldReader {
        HeldReader::hold(move |inside| {
            let _guard = rcu.read_lock();
            inside();
        })
    }

    /// The general form, for any kind of read-side section: `section` runs on a new thread,
    /// enters its section and calls `inside` there; `inside` returns when the reader is told
    /// to leave (with the `left` flag raised), and `section` then ends its section.
    pub(crate) fn hold(section: impl FnOnce(&dyn Fn()) + Send + 'static) -> HeldReader {
        let (leave, leave_rx) = mpsc::channel::<()>();
        let (inside_tx, inside_rx) = mpsc::channel();
        let left = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&left);
        let handle = std::thread::Builder::new()
            .name("held-reader".into())
            .spawn(move || {
                section(&|| {
                    inside_tx.send(()).unwrap();
                    let _ = leave_rx.recv();
                    flag.store(true, Ordering::SeqCst);
                });
            })
            .unwrap();
        inside_rx.recv().expect("the reader entered its section");
        HeldReader {
            leave,
            left,
            handle,
        }
    }

    /// The flag raised just before the section ends.
    pub(crate) fn left_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.left)
    }

    /// Leave the section and let the thread exit.
    pub(crate) fn leave(self) {
        self.leave.send(()).unwrap();
        self.handle.join().unwrap();
    }
}

/// Assert that `wait(rcu)`, started while another thread is inside a read-side section of
/// `rcu`, stays blocked until that section ends, and then returns.
pub(crate) fn assert_waits_for_reader(
    rcu: &Arc<Rcu>,
    what: &str,
    wait: impl FnOnce(&Rcu) + Send + 'static,
) {
    let reader = HeldReader::enter(Arc::clone(rcu));
    let left = reader.left_flag();
    let waiter = {
        let rcu = Arc::clone(rcu);
        let what = what.to_owned();
        Pending::spawn(move || {
            wait(&rcu);
            assert!(
                left.load(Ordering::SeqCst),
                "{what} on {} returned while a reader that entered before it was still inside",
                rcu.flavor()
            );
        })
    };
    waiter.assert_blocked(&format!("{what} while a reader is inside"));
    reader.leave();
    waiter.join(what);
}

/// Run `f`, which must panic, and return the panic message.
pub(crate) fn panic_message(f: impl FnOnce()) -> String {
    let payload = std::panic::catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        String::from("<non-string panic payload>")
    }
}

/// Spin (without sleeping) for at least `d`: the "little work" of a callback that makes
/// invocation measurably slow, independent of the build profile.
pub(crate) fn busy_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Tests that keep both CPUs busy take this lock, so that a binary's tests, which the
/// harness runs in parallel, do not oversubscribe a 2-core machine.
pub(crate) fn cpu_heavy() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `tracing` writer that appends to a shared buffer, to check what rcu-core logs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// A plain-text `fmt` subscriber writing here.
    pub(crate) fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::fmt().with_writer(self.clone()).finish()
    }

    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// A thread that registers with a qsbr domain (so it is online) and then runs until stopped
/// without ever announcing a quiescent state, outside any read-side section: only an
/// expedited grace period, which forces quiescent states, can get past it.
pub(crate) struct SilentThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl SilentThread {
    pub(crate) fn start(rcu: Arc<Rcu>) -> SilentThread {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                rcu.register_thread();
                ready_tx.send(()).unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if i & 1023 == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    } else {
                        std::hint::spin_loop();
                    }
                    i += 1;
                }
            })
        };
        ready_rx.recv().unwrap();
        SilentThread { stop, handle }
    }

    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap();
    }
}
