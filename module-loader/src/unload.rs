//! The unload protocol ("rmmod"), enforced by the host in the order the kernel documents.
//!
//! "RCU and Unloadable Modules" (2007) gives three steps: prevent new callbacks, `rcu_barrier()`,
//! unload. The host adds what a userspace module system needs around them, each step a `tracing`
//! span with its duration in the [`UnloadReport`]:
//!
//! 1. **Unpublish**: withdraw the module's hooks and wait for a grace period, so no reader is
//!    still running hook code (a new reader cannot find them).
//! 2. **Stop posting**: cancel the module's timers (waiting for a running one — the document's
//!    "if your module invokes call_rcu() from timers, you will need to first cancel all the
//!    timers"), stop and join its threads, call its `exit` (which may post final frees), then
//!    close the posting gate and wait for posters already inside `call_rcu` (gate.rs). Posts
//!    after that are refused with `ESHUTDOWN`, counted, and handed back.
//! 3. **Barrier** every domain the module's callbacks went to — the host tracked them — and its
//!    own SRCU domains, repeated until the module's pending count is zero (one barrier can be
//!    outrun by a callback chain that re-posted before the gate closed); then destroy the SRCU
//!    domains. `synchronize()` would not do: it waits for readers, not for callbacks.
//! 4. **Verify**: nothing pending, no hook, timer or thread left.
//! 5. **Close**: `dlclose`, then check that the object is really gone. The result is
//!    [`UnloadOutcome::Unloaded`] or [`UnloadOutcome::Pinned`] with the reason — never a silent
//!    success.
//!
//! Step 5 is reachable only with a `Barriered` proof, which only step 3 (or the deliberately
//! broken test mode) can construct: `dlclose` of a module that may still have callbacks queued
//! does not type-check elsewhere in this crate.
//!
//! [`UnloadMode::Expedited`] is patent US9262234 applied here: step 1 uses an expedited grace
//! period and step 3 `barrier_expedited()` (forced quiescent states, boosting of readers that
//! hold the grace period up, ready callbacks invoked directly by the unloader), the unloader
//! runs the whole protocol at a boosted priority, and the report says which of these it used.

use crate::inspect::PinRisk;
use crate::library::Library;
use crate::runtime::{CallbackCounts, ModuleRuntime};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to unload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnloadMode {
    /// Normal grace periods and barriers.
    Normal,
    /// Expedited grace periods and `barrier_expedited` (patent US9262234).
    Expedited,
    /// **Deliberately broken**, for the negative-control tests only: skips the barrier and the
    /// pending check, so callbacks may be left queued into unmapped code (the process then
    /// crashes, or, in checked mode, reports late callbacks). Never use it otherwise.
    #[doc(hidden)]
    SkipBarrierForTesting,
}

/// What became of the module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnloadOutcome {
    /// Unmapped: verified gone from the loader's list and from `/proc/self/maps`.
    Unloaded,
    /// Still mapped (or not closed), and why.
    Pinned {
        /// The reason.
        reason: String,
    },
}

impl std::fmt::Display for UnloadOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnloadOutcome::Unloaded => f.write_str("unloaded"),
            UnloadOutcome::Pinned { reason } => write!(f, "pinned ({reason})"),
        }
    }
}

/// A protocol step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Hooks withdrawn, grace period.
    Unpublish,
    /// Timers, threads, exit, posting gate.
    StopPosting,
    /// Barriers until nothing is pending; SRCU domains destroyed.
    Barrier,
    /// Nothing pending, no host object pointing into the module.
    Verify,
    /// `dlclose` and the unmap check.
    Close,
}

/// How long a step took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepTiming {
    /// The step.
    pub step: Step,
    /// Its duration.
    pub duration: Duration,
}

/// What the expedited path did, summed over the unload: the expedited grace periods of step 1
/// and every `barrier_expedited` of step 3.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpediteSummary {
    /// Rounds of (expedited grace period, direct invocation).
    pub rounds: u32,
    /// Expedited grace periods driven.
    pub grace_periods: u32,
    /// Forced-quiescent-state requests sent.
    pub threads_forced: u32,
    /// Readers priority-boosted.
    pub threads_boosted: u32,
    /// Boosts refused by the kernel.
    pub boosts_denied: u32,
    /// Callbacks the unloader invoked directly.
    pub callbacks_inline: u64,
    /// The unloader ran the protocol at the boost priority (`rcu_core::BOOST_NICE`; a refusal
    /// counts in `boosts_denied`).
    pub unloader_boosted: bool,
}

/// Everything an unload did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnloadReport {
    /// The module.
    pub name: String,
    /// The mode.
    pub mode: UnloadMode,
    /// The result.
    pub outcome: UnloadOutcome,
    /// Each step that ran, in order.
    pub steps: Vec<StepTiming>,
    /// The module's callback counters at the end.
    pub callbacks: CallbackCounts,
    /// Barrier rounds run (each over every domain the module used).
    pub barrier_rounds: u32,
    /// Domains barriered (host domains and module SRCU domains).
    pub domains_barriered: u32,
    /// The expedited path's work, in expedited mode.
    pub expedite: Option<ExpediteSummary>,
    /// Hooks withdrawn.
    pub hooks_unpublished: usize,
    /// Timers cancelled.
    pub timers_cancelled: usize,
    /// Threads stopped.
    pub threads_stopped: usize,
    /// Module SRCU domains destroyed.
    pub srcu_destroyed: usize,
    /// What module code had handed libc and the host took back after `exit` (timers deleted,
    /// signal dispositions restored, thread-specific-data keys deleted), one line each.
    pub libc_undone: Vec<String>,
    /// Total time.
    pub total: Duration,
}

impl UnloadReport {
    /// The duration of `step`, if it ran.
    pub fn step(&self, step: Step) -> Option<Duration> {
        self.steps
            .iter()
            .find(|s| s.step == step)
            .map(|s| s.duration)
    }
}

/// Proof that the barrier step completed (or, in the broken test mode, was skipped on
/// purpose). Its field is private to this module: nothing else can make one.
#[derive(Debug)]
pub(crate) struct Barriered {
    _private: (),
}

/// What the protocol needs from the host.
pub(crate) struct Ctx<'a> {
    pub(crate) host: &'a crate::host::HostInner,
    pub(crate) rt: &'a Arc<ModuleRuntime>,
    pub(crate) lib: Library,
    pub(crate) mode: UnloadMode,
    /// Call the module's exit (false when unwinding a failed init, as the kernel does).
    pub(crate) call_exit: bool,
    pub(crate) pin_risks: &'a [PinRisk],
}

/// Run the protocol. The module must already be out of the host's tables (state Going).
pub(crate) fn run(c: Ctx<'_>) -> UnloadReport {
    let t0 = Instant::now();
    let rt = c.rt;
    let mut r = UnloadReport {
        name: rt.name().to_owned(),
        mode: c.mode,
        outcome: UnloadOutcome::Unloaded,
        steps: Vec::new(),
        callbacks: CallbackCounts::default(),
        barrier_rounds: 0,
        domains_barriered: 0,
        expedite: (c.mode == UnloadMode::Expedited).then(ExpediteSummary::default),
        hooks_unpublished: 0,
        timers_cancelled: 0,
        threads_stopped: 0,
        srcu_destroyed: 0,
        libc_undone: Vec::new(),
        total: Duration::ZERO,
    };
    let span = tracing::info_span!("unload", module = %rt.name(), mode = ?c.mode);
    let _e = span.enter();
    let expedited = c.mode == UnloadMode::Expedited;
    // An expedited unload runs at the boost priority, restored when `run` returns. Otherwise
    // an unloader sharing a CPU with a busy application thread waits for it a scheduler slice
    // at a time: milliseconds on the 2-vCPU guest of docs/performance.md with two busy
    // readers, for steps that take microseconds alone. The normal unload stays at the
    // caller's priority: it is the polite one.
    let _boost = r.expedite.as_mut().and_then(|s| {
        let b = rcu_core::boost_current_thread().keep(&mut s.boosts_denied);
        s.unloader_boosted = b.is_some();
        b
    });
    let hooks_rcu = c.host.hook_domain();

    // 1. Unpublish.
    timed(&mut r, Step::Unpublish, |r| {
        *rt.staged_hooks.lock().unwrap_or_else(|e| e.into_inner()) = None;
        r.hooks_unpublished = c
            .host
            .hooks
            .swap_module(hooks_rcu, Some(rt), Vec::new())
            .unwrap_or(0);
        let signal_hooks = crate::signals::remove_module(rt);
        r.hooks_unpublished += signal_hooks;
        if expedited {
            add(r, hooks_rcu.synchronize_expedited_report());
        } else {
            hooks_rcu.synchronize();
        }
        if signal_hooks > 0 {
            // Signal handlers run module hooks inside read sections of the process domain.
            let process = rcu_core::Rcu::global();
            if expedited {
                add(r, process.synchronize_expedited_report());
            } else {
                process.synchronize();
            }
        }
    });

    // 2. Stop posting.
    let stuck = timed(&mut r, Step::StopPosting, |r| {
        r.timers_cancelled = rt.timer_cancel(None);
        // A watcher thread only where there is something to wait for.
        let (n, stuck) = if rt.has_activity() {
            stall_watch(rt.name(), "stopping the module's threads", || {
                rt.stop_threads(c.host.exit_deadline)
            })
        } else {
            rt.stop_threads(c.host.exit_deadline)
        };
        r.threads_stopped = n - stuck.len();
        if !stuck.is_empty() {
            return Some(format!(
                "module threads did not stop within {:?}: {}",
                c.host.exit_deadline,
                stuck.join(", ")
            ));
        }
        if c.call_exit {
            if let Some(exit) = c.lib.descriptor.exit {
                if let Err(reason) = crate::entry::call_exit(exit, rt, c.host.exit_deadline) {
                    return Some(reason);
                }
            }
        }
        // What the module's code handed libc and its exit did not take back.
        if c.host.foreign_checks {
            if let Some(h) = &c.lib.handed {
                r.libc_undone = h.undo();
            }
        }
        rt.gate.close_and_wait();
        None
    });
    if let Some(reason) = stuck {
        r.outcome = UnloadOutcome::Pinned { reason };
        std::mem::forget(c.lib); // still running module code: never close it
        return finish(r, rt, t0);
    }

    // 3. Barrier.
    let proof = timed(&mut r, Step::Barrier, |r| barrier_step(&c, r));
    let proof = match proof {
        Ok(p) => p,
        Err(reason) => {
            r.outcome = UnloadOutcome::Pinned { reason };
            std::mem::forget(c.lib);
            return finish(r, rt, t0);
        }
    };

    // 4. Verify.
    let verified = timed(&mut r, Step::Verify, |_| {
        if c.mode == UnloadMode::SkipBarrierForTesting {
            return Ok(());
        }
        let pending = rt.counts().pending();
        let hooks = c.host.hooks.owned_by(hooks_rcu, rt);
        if pending != 0 {
            Err(format!("{pending} callbacks still pending"))
        } else if hooks != 0 {
            Err(format!("{hooks} hooks still published"))
        } else if rt.has_activity() {
            Err("timers or threads still registered".to_owned())
        } else if c.host.foreign_checks {
            foreign_code(&c.lib, c.host.stack_walk)
        } else {
            Ok(())
        }
    });
    if let Err(reason) = verified {
        r.outcome = UnloadOutcome::Pinned { reason };
        std::mem::forget(c.lib);
        return finish(r, rt, t0);
    }

    // 5. Close. The module's code ranges leave the host's tables first: once `dlclose`
    // unmaps them, a module loaded concurrently may be mapped at the same addresses, and its
    // callbacks must not be counted for this one (owners.rs).
    c.host.forget_code(rt);
    debug_assert!(
        c.lib
            .code
            .iter()
            .all(|&(s, _)| crate::owners::find(s).is_none()),
        "{}: code ranges still attributed at dlclose",
        rt.name()
    );
    let lib = c.lib;
    let outcome = timed(&mut r, Step::Close, |_| match lib.close(proof) {
        Ok(None) => {
            rt.mapped.store(false, Ordering::Release);
            UnloadOutcome::Unloaded
        }
        Ok(Some(still)) => UnloadOutcome::Pinned {
            reason: format!("{still}: {}", pin_cause(c.pin_risks)),
        },
        Err(e) => UnloadOutcome::Pinned {
            reason: format!("dlclose failed: {e}"),
        },
    });
    r.outcome = outcome;
    finish(r, rt, t0)
}

use crate::entry::STALL_WARNING;

/// Run `f`, warning once (from a watcher thread) if it is still running after
/// [`STALL_WARNING`], naming the module and the step.
fn stall_watch<T>(module: &str, step: &'static str, f: impl FnOnce() -> T) -> T {
    let (tx, rx) = crossbeam_channel::bounded::<()>(0);
    let module = module.to_owned();
    let watcher = std::thread::Builder::new()
        .name("rcumod-stall".into())
        .spawn(move || {
            // The host's own: the thread scan of a concurrent unload must not take it for one
            // a module started.
            crate::threadscan::mark_host_thread();
            if rx.recv_timeout(STALL_WARNING) == Err(crossbeam_channel::RecvTimeoutError::Timeout) {
                tracing::warn!(target: "rcumod", module = %module, step,
                    "unload stalled: still {step} after {STALL_WARNING:?}");
            }
        });
    let out = f();
    drop(tx);
    if let Ok(w) = watcher {
        let _ = w.join();
    }
    out
}

/// Step 4's look at what the host did not start: signal handlers, key destructors, threads the
/// module started, and every thread's program counter and stack (threadscan.rs).
fn foreign_code(lib: &Library, walk: bool) -> Result<(), String> {
    let mut why = lib.handed.as_ref().map(|h| h.check()).unwrap_or_default();
    let at = |a: usize| match &lib.handed {
        Some(h) => h.where_(a),
        None => format!("{a:#x}"),
    };
    for f in crate::threadscan::scan(&lib.code, &lib.threads_before, &at, walk) {
        // A thread the module started is already named; its stack is the detail.
        if let Some(w) = why
            .iter_mut()
            .find(|w| w.starts_with(&format!("thread {} ", f.tid)))
        {
            w.push_str(&format!(", and {}", f.what));
        } else {
            why.push(f.to_string());
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

fn pin_cause(risks: &[PinRisk]) -> String {
    if risks.is_empty() {
        "thread-local destructors registered by module code (Rust thread_local! values with \
         Drop on a host thread), or another reference to the object"
            .to_owned()
    } else {
        risks
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn barrier_step(c: &Ctx<'_>, r: &mut UnloadReport) -> Result<Barriered, String> {
    let rt = c.rt;
    if c.mode == UnloadMode::SkipBarrierForTesting {
        return Ok(Barriered { _private: () });
    }
    let domains: Vec<_> = rt
        .domains_used()
        .into_iter()
        .filter_map(|d| c.host.domain_ref(d))
        .collect();
    let srcus: Vec<_> = rt.srcu.lock().unwrap_or_else(|e| e.into_inner()).clone();
    r.domains_barriered = (domains.len() + srcus.len()) as u32;
    for round in 1..=c.host.max_barrier_rounds {
        r.barrier_rounds = round;
        for d in &domains {
            if c.mode == UnloadMode::Expedited {
                let e = d.barrier_expedited().map_err(|e| e.to_string())?;
                add(r, e);
            } else {
                d.barrier().map_err(|e| e.to_string())?;
            }
        }
        for s in &srcus {
            if c.mode == UnloadMode::Expedited {
                let e = s.barrier_expedited().map_err(|e| e.to_string())?;
                add(r, e);
            } else {
                s.barrier().map_err(|e| e.to_string())?;
            }
        }
        if rt.counts().pending() == 0 {
            break;
        }
    }
    // Destroy the module's SRCU domains (their drop barriers once more).
    drop(srcus);
    let owned: Vec<_> = rt
        .srcu
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    r.srcu_destroyed = owned.len();
    drop(owned);
    let pending = rt.counts().pending();
    if pending != 0 {
        return Err(format!(
            "{pending} callbacks still pending after {} barrier rounds",
            r.barrier_rounds
        ));
    }
    Ok(Barriered { _private: () })
}

fn add(r: &mut UnloadReport, e: rcu_core::ExpediteReport) {
    let s = r.expedite.get_or_insert_with(ExpediteSummary::default);
    s.rounds += e.rounds;
    s.grace_periods += e.grace_periods;
    s.threads_forced += e.threads_forced;
    s.threads_boosted += e.threads_boosted;
    s.boosts_denied += e.boosts_denied;
    s.callbacks_inline += e.callbacks_inline;
    s.unloader_boosted |= e.invoker_boosted;
}

fn timed<T>(r: &mut UnloadReport, step: Step, f: impl FnOnce(&mut UnloadReport) -> T) -> T {
    let span = tracing::debug_span!("step", ?step);
    let _e = span.enter();
    let t = Instant::now();
    let out = f(r);
    let duration = t.elapsed();
    tracing::debug!(target: "rcumod", ?step, ?duration, "unload step done");
    r.steps.push(StepTiming { step, duration });
    out
}

fn finish(mut r: UnloadReport, rt: &ModuleRuntime, t0: Instant) -> UnloadReport {
    r.callbacks = rt.counts();
    r.total = t0.elapsed();
    r
}
