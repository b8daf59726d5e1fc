//! Polling grace periods: `get_state` / `start_poll` / `poll` / `cond_synchronize`.
//!
//! A state is a [`GpSeq`] snapshot; `poll` compares it with the domain's completed number —
//! two loads, no worker round trip (liburcu's poll API is driven by a call_rcu callback and
//! inherits its worker's 10 ms batching). `start_poll` also asks the domain's grace-period
//! worker, a thread started on first request, to drive grace periods until the snapshot
//! completes; it wakes on a futex and never sleeps for a fixed time.

use crate::domain::lock;
use crate::futex;
use crate::gp::Mode;
use crate::ops::DomainOps;
use crate::seq::GpSeq;
use crate::Rcu;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

/// A grace-period cookie from [`Rcu::get_state`] or [`Rcu::start_poll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PollState {
    seq: GpSeq,
    domain: u64,
}

impl PollState {
    /// The grace period this state waits for.
    pub fn seq(self) -> GpSeq {
        self.seq
    }
}

/// The domain's grace-period worker (the kernel's GP kthread, in miniature).
#[derive(Debug, Default)]
pub(crate) struct GpWorker {
    /// Highest requested snapshot; 0 = none yet.
    requested: AtomicU64,
    /// Futex word, bumped on every request and on stop.
    kick: AtomicU32,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GpWorker {
    /// fork(): hold the thread-handle lock across the fork.
    pub(crate) fn fork_prepare(&self, held: &mut Vec<crate::ops::Held>) {
        // SAFETY: the worker belongs to a published domain (see `fork::hold`).
        held.push(unsafe { crate::fork::hold(lock(&self.thread)) });
    }

    /// fork(), child: the worker thread does not exist here; start a new one on demand.
    pub(crate) fn fork_child(&self) {
        if let Some(h) = lock(&self.thread).take() {
            // Dropping would detach a pthread that does not exist in this process.
            std::mem::forget(h);
        }
        self.stop.store(false, Ordering::Relaxed);
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.kick.fetch_add(1, Ordering::Release);
        futex::wake_all(&self.kick);
        if let Some(t) = lock(&self.thread).take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl GpWorker {
    /// Ask for grace periods until `snap` completes (asynchronously).
    pub(crate) fn request(&self, ops: &dyn DomainOps, snap: GpSeq) {
        request(ops, snap);
    }
}

fn request(ops: &dyn DomainOps, snap: GpSeq) {
    if snap.done(ops.completed()) {
        return;
    }
    let w = ops.gp_worker();
    let mut cur = w.requested.load(Ordering::Relaxed);
    while cur == 0 || !snap.done(GpSeq(cur)) {
        match w
            .requested
            .compare_exchange_weak(cur, snap.0, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => break,
            Err(now) => cur = now,
        }
    }
    w.kick.fetch_add(1, Ordering::Release);
    futex::wake_all(&w.kick);
    let mut t = lock(&w.thread);
    if t.is_none() && !w.stop.load(Ordering::Acquire) {
        let Some(owner) = ops.arc() else { return };
        let spawned = std::thread::Builder::new()
            .name(format!("rcu-gp/{}", ops.name()))
            .spawn(move || {
                let _service = crate::service::ServiceThread::enter();
                worker_loop(&*owner)
            });
        match spawned {
            Ok(handle) => *t = Some(handle),
            Err(e) => {
                drop(t);
                tracing::error!(
                    target: "rcu_core",
                    domain = ops.name(),
                    "cannot start the grace-period worker ({e}); driving the grace period \
                     synchronously"
                );
                ops.drive(snap, Mode::Normal);
            }
        }
    }
}

fn worker_loop(ops: &dyn DomainOps) {
    let w = ops.gp_worker();
    loop {
        let kick = w.kick.load(Ordering::Acquire);
        if w.stop.load(Ordering::Acquire) {
            return;
        }
        let req = GpSeq(w.requested.load(Ordering::Acquire));
        if req.0 != 0 && !req.done(ops.completed()) {
            ops.drive(req, Mode::Normal);
            continue;
        }
        futex::wait(&w.kick, kick, None);
    }
}

impl Rcu {
    fn poll_state(&self) -> PollState {
        PollState {
            seq: self.shared.snap(),
            domain: self.shared.id,
        }
    }

    fn check_state(&self, state: PollState) {
        assert!(
            state.domain == self.shared.id,
            "rcu-core: a PollState of another RCU domain was passed to domain `{}`",
            self.shared.name
        );
    }

    /// The grace period that must complete before pre-existing readers are all done
    /// (`get_state_synchronize_rcu`). Does not start one: pair it with
    /// [`start_poll`](Rcu::start_poll) or some other caller's grace periods.
    pub fn get_state(&self) -> PollState {
        self.poll_state()
    }

    /// Like [`get_state`](Rcu::get_state), and ask the domain's worker to drive grace periods
    /// until that one completes (`start_poll_synchronize_rcu`). Never blocks.
    pub fn start_poll(&self) -> PollState {
        let state = self.poll_state();
        request(&*self.shared, state.seq);
        state
    }

    /// Has the grace period of `state` completed? Two loads; never blocks.
    ///
    /// # Panics
    ///
    /// If `state` comes from another domain.
    pub fn poll(&self, state: PollState) -> bool {
        self.check_state(state);
        state.seq.done(self.shared.completed())
    }

    /// Wait until the grace period of `state` has completed: return at once if it has,
    /// otherwise drive or join one (`cond_synchronize_rcu`).
    ///
    /// # Panics
    ///
    /// As [`synchronize`](Rcu::synchronize), and if `state` comes from another domain.
    pub fn cond_synchronize(&self, state: PollState) {
        if self.poll(state) {
            return;
        }
        self.assert_not_in_reader("cond_synchronize");
        self.offline(|| {
            self.shared.synchronize_to(state.seq, Mode::Normal);
        });
    }

    /// The domain's current counter and completed grace period, for diagnostics.
    pub fn gp_seq(&self) -> (GpSeq, GpSeq) {
        (
            GpSeq(self.shared.gp.ctr.load(Ordering::Acquire)),
            self.shared.completed(),
        )
    }
}
