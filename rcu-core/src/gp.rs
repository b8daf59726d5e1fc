//! Grace periods: `synchronize()` and the driver behind every waiting primitive.
//!
//! A *driver* takes a domain's grace-period lock, snapshots the registry, advances the counter
//! to a new target ([`handshake::advance`]), executes Fence A, and waits until no snapshotted
//! reader [`handshake::blocks`] the target; then it publishes the target as completed.
//!
//! Sharing. Callers first take a [`GpSeq`] snapshot and return as soon as the completed number
//! reaches it, whoever drove the grace period: callers that queue on the lock behind a running
//! driver are all satisfied by the next driver, so N concurrent callers cost at most two grace
//! periods (the kernel's `rcu_seq_snap`/`rcu_seq_done`, liburcu's `gp_waiters` queue).
//! Normal and expedited drivers have separate locks and may run concurrently: each waits for
//! the readers older than its own target, and completion is monotone (seq.rs), so neither can
//! publish a completion the other has not earned.
//!
//! Waiting. Most read sections last nanoseconds, so a driver first spins on the reader word.
//! Then a normal driver raises the domain's sleep flag, executes Fence E, re-checks, and sleeps
//! on the futex until a leaving reader wakes it; an expedited one keeps polling (and, for qsbr,
//! forces quiescent states: expedited.rs). The only timeout is the next stall-warning deadline.

use crate::domain::Shared;
use crate::handshake;
use crate::membarrier;
use crate::reader::Reader;
use crate::seq::GpSeq;
use crate::stall::StallClock;
use crate::{futex, Flavor, Rcu};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

/// How a driver waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Spin briefly, then sleep until woken.
    Normal,
    /// The same, and while a reader holds the grace period: force quiescent states where the
    /// flavor allows, and boost a reader that stays inside its section.
    Expedited,
}

/// Spins on a reader word before a driver stops polling. About 2–5 µs on this machine kind:
/// longer than a typical read section, shorter than the 13.5 µs membarrier IPI that arming
/// the sleep flag costs for memb.
const SPINS: u32 = 2000;

/// Spins an expedited qsbr driver gives a blocking thread to report by itself before it forces
/// a quiescent state (about 1-2 µs).
const FORCE_AFTER_SPINS: u32 = 500;

/// What one driver pass did, for the expedited report (part of the barrier's report).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DriveReport {
    /// Whether this call drove a grace period itself (false: another driver's covered it).
    pub(crate) drove: bool,
    /// Rounds of forcing (expedited qsbr: signals sent in rounds).
    pub(crate) rounds: u32,
    /// Threads sent a forced-quiescent-state request.
    pub(crate) forced: u32,
    /// Readers priority-boosted.
    pub(crate) boosted: u32,
    /// Boosts refused by the kernel.
    pub(crate) boost_denied: u32,
}

impl Shared {
    /// The snapshot a caller arriving now needs.
    pub(crate) fn snap(&self) -> GpSeq {
        GpSeq::snap(self.gp.ctr.load(Ordering::Acquire))
    }

    /// The highest completed grace-period target.
    pub(crate) fn completed(&self) -> GpSeq {
        // Acquire: pairs with the Release in `complete`, so that a caller that sees its
        // snapshot done also sees everything the driver's scan synchronized with.
        GpSeq(self.completed.load(Ordering::Acquire))
    }

    fn complete(&self, target: u64) {
        let mut cur = self.completed.load(Ordering::Relaxed);
        while !GpSeq(target).done(GpSeq(cur)) {
            match self.completed.compare_exchange_weak(
                cur,
                target,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
    }

    /// Fence A (and Fence E): pairs with Fence B (and D) of the readers (handshake.rs).
    fn heavy_fence(&self) {
        match self.kind {
            Flavor::Memb => membarrier::barrier(),
            _ => fence(Ordering::SeqCst),
        }
    }

    /// Wait until grace period `snap` has completed, driving one if needed.
    pub(crate) fn synchronize_to(&self, snap: GpSeq, mode: Mode) -> DriveReport {
        let mut report = DriveReport::default();
        if self.kind == Flavor::Busted {
            // The control flavor: advance the books, wait for nobody.
            let target = handshake::advance(&self.gp.ctr);
            self.complete(target);
            self.engine.gp_completed();
            return report;
        }
        if snap.done(self.completed()) {
            return report;
        }
        let lock_of_mode = match mode {
            Mode::Normal => &self.gp_lock,
            Mode::Expedited => &self.exp_lock,
        };
        let mut snapshot = lock_of_mode.lock();
        while !snap.done(self.completed()) {
            report.drove = true;
            snapshot.clear();
            // Threads that register after this copy are ordered after it by the registry lock,
            // hence after every update that preceded this call: they need not be waited for.
            snapshot.extend(self.readers().iter().cloned());
            let target = handshake::advance(&self.gp.ctr);
            // Fence A: pairs with Fence B in handshake::lock / qsbr_online.
            self.heavy_fence();
            self.wait_for_readers(&snapshot, target, mode, &mut report);
            snapshot.clear();
            self.complete(target);
            self.engine.gp_completed();
            match mode {
                Mode::Normal => self.stats.grace_periods.fetch_add(1, Ordering::Relaxed),
                Mode::Expedited => self.stats.expedited.fetch_add(1, Ordering::Relaxed),
            };
        }
        report
    }

    fn wait_for_readers(
        &self,
        readers: &[Arc<Reader>],
        target: u64,
        mode: Mode,
        report: &mut DriveReport,
    ) {
        let blocking = |r: &Reader| handshake::blocks(handshake::scan(&r.word), target);
        let mut first = readers.iter().position(|r| blocking(r));
        if first.is_none() {
            return;
        }
        let mut stall = StallClock::start(self.stall_timeout);
        let forcing = mode == Mode::Expedited && self.kind.is_qsbr();
        let mut forced_at = std::time::Instant::now();
        // Readers boosted by this grace period; their priority is restored when it ends.
        let mut boosts = crate::boost::WaitBoosts::default();
        // The first forcing round waits for a short spin: a qsbr thread that announces
        // quiescent states often will usually do so within a microsecond or two, and a signal
        // costs it far more (docs/performance.md: 17-36 % of expedited grace periods forced a
        // thread that was about to report anyway).
        let mut forced_yet = false;
        while let Some(i) = first {
            let r = &readers[i];
            let mut spins = 0;
            // When to consider boosting `r`, as time since the wait began (`WaitBoosts`).
            let mut boost_at = crate::boost::BOOST_AFTER;
            while blocking(r) {
                if spins < SPINS {
                    spins += 1;
                    if forcing && !forced_yet && spins == FORCE_AFTER_SPINS {
                        crate::expedited::force_round(self, readers, target, report);
                        forced_yet = true;
                        forced_at = std::time::Instant::now();
                    }
                    std::hint::spin_loop();
                    continue;
                }
                if forcing && !forced_yet {
                    crate::expedited::force_round(self, readers, target, report);
                    forced_yet = true;
                    forced_at = std::time::Instant::now();
                }
                // How long to sleep: until the reader leaves (its unlock wakes us), or the
                // next stall warning, boost or forcing round is due.
                let mut nap = stall.until_next();
                if mode == Mode::Expedited {
                    if self.inside_section(r) {
                        let next = boosts.consider(r, stall.elapsed(), &mut boost_at, report);
                        nap = nap.min(next.unwrap_or(nap));
                    }
                    if forcing {
                        if forced_at.elapsed() >= crate::expedited::REFORCE_AFTER {
                            crate::expedited::force_round(self, readers, target, report);
                            forced_at = std::time::Instant::now();
                        }
                        nap = nap.min(
                            crate::expedited::REFORCE_AFTER.saturating_sub(forced_at.elapsed()),
                        );
                    }
                }
                // An expedited driver sleeps here too. It used to yield instead, but a yield
                // can hand the CPU to a busy thread until the next scheduler tick: with two busy
                // readers on the 2-vCPU guest of docs/performance.md, expedited grace periods
                // took 3.3-4 ms behind a hook reader, and the boost (then due after 0.5 ms) was
                // never tried because the driver itself was off the CPU. Asleep it takes no CPU
                // from the reader it waits for, and wakes at that reader's unlock or when the
                // boost is due.
                self.gp.sleepers.store(1, Ordering::Relaxed);
                // Fence E: pairs with Fence D in handshake::unlock / qsbr_*. Either the re-check
                // below sees the reader gone, or the reader sees the flag.
                self.heavy_fence();
                if !blocking(r) {
                    break;
                }
                futex::wait(
                    &self.gp.sleepers,
                    1,
                    Some(nap.max(std::time::Duration::from_micros(20))),
                );
                if stall.due() {
                    self.warn_stall(readers, target, &stall);
                    stall.back_off();
                }
            }
            first = readers[i..].iter().position(|r| blocking(r)).map(|j| i + j);
        }
    }

    /// Is `r` inside a read-side section (rather than merely not having reported)?
    fn inside_section(&self, r: &Reader) -> bool {
        if self.kind.is_qsbr() {
            r.qsbr_depth() != 0
        } else {
            handshake::in_section(r.word.load(Ordering::Relaxed))
        }
    }

    fn warn_stall(&self, readers: &[Arc<Reader>], target: u64, stall: &StallClock) {
        for r in readers {
            let word = handshake::scan(&r.word);
            if !handshake::blocks(word, target) {
                continue;
            }
            self.stats.stall_warnings.fetch_add(1, Ordering::Relaxed);
            let what = if self.kind.is_qsbr() {
                "has not passed a quiescent state (call quiescent_state() or go offline)"
            } else {
                "is still inside a read-side critical section"
            };
            tracing::warn!(
                target: "rcu_core::stall",
                domain = %self.name,
                flavor = %self.kind,
                grace_period = target / handshake::GP_INC,
                thread = %r.name,
                tid = r.tid,
                waited_ms = stall.elapsed().as_millis() as u64,
                "RCU grace period stall: thread {} {what}, for at least {:?}",
                r.label(),
                stall.elapsed(),
            );
        }
    }
}

impl Rcu {
    /// Wait for a grace period: every read-side critical section of this domain that began
    /// before the call has ended when it returns (`synchronize_rcu`).
    ///
    /// Concurrent callers share grace periods. It waits for readers, **not** for callbacks
    /// posted with `call` (that is `barrier`'s job).
    ///
    /// # Panics
    ///
    /// Inside a read-side critical section of this domain (it would wait for itself). A qsbr
    /// thread that is online is taken offline for the duration, as liburcu does.
    pub fn synchronize(&self) {
        self.assert_not_in_reader("synchronize");
        self.offline(|| {
            self.shared.synchronize_to(self.shared.snap(), Mode::Normal);
        })
    }

    /// Like [`synchronize`](Rcu::synchronize), but drive the grace period at once: spin on
    /// readers, for qsbr force each thread that has not reported to pass a quiescent state (a
    /// signal whose handler reports unless the thread is inside a section, in which case its
    /// outermost `read_unlock` reports), repeated until the grace period ends, and boost a
    /// reader that stays inside its section for 50 µs to real-time priority until it leaves it
    /// (patent US9262234's preemptible case; boost.rs). Between those steps it sleeps until
    /// the reader it waits for leaves. Costs CPU; use it where latency matters (module unload).
    ///
    /// # Panics
    ///
    /// As [`synchronize`](Rcu::synchronize).
    pub fn synchronize_expedited(&self) {
        self.assert_not_in_reader("synchronize_expedited");
        self.offline(|| {
            self.shared
                .synchronize_to(self.shared.snap(), Mode::Expedited);
        })
    }

    /// [`synchronize_expedited`](Rcu::synchronize_expedited), reporting what it took: threads
    /// forced, readers boosted (or boosts refused), and the time. `grace_periods` is 0 when a
    /// concurrent caller's grace period covered this one; `rounds` is 0 (no callback runs).
    /// For callers that account for an expedited operation as a whole, as the module loader's
    /// expedited unload does; the plain call skips the clock reads.
    ///
    /// # Panics
    ///
    /// As [`synchronize`](Rcu::synchronize).
    pub fn synchronize_expedited_report(&self) -> crate::ExpediteReport {
        self.assert_not_in_reader("synchronize_expedited_report");
        let t0 = std::time::Instant::now();
        let d = self.offline(|| {
            self.shared
                .synchronize_to(self.shared.snap(), Mode::Expedited)
        });
        crate::ExpediteReport {
            grace_periods: d.drove as u32,
            threads_forced: d.forced,
            threads_boosted: d.boosted,
            boosts_denied: d.boost_denied,
            elapsed: t0.elapsed(),
            ..crate::ExpediteReport::default()
        }
    }
}
