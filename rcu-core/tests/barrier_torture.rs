//! Barrier torture, after the kernel's `rcu_torture_barrier`: `barrier()` waits for every
//! callback posted before it, on every kind of domain (memb, mb, qsbr, SRCU).
//!
//! liburcu's test suite never calls its barrier (rcu-anchors.md (d)), so this is where the
//! barrier's guarantee is checked:
//!
//! * **phases**: [`POSTERS`] threads each post exactly one callback per phase; a coordinator
//!   waits until all have posted, barriers, and requires the callback count to be exactly
//!   `POSTERS × phase` — one callback missing means the barrier returned early;
//! * **re-posting chains** defeat a single barrier (the seed's rcutorture `fullstop`, liburcu
//!   commit 90f72b8): what one barrier guarantees, and that stop-flag + `barrier_until_quiet()`
//!   drains every chain;
//! * **concurrent barrier callers** share barriers, and sharing never lets a caller return
//!   before its own earlier callbacks ran;
//! * **threads that exit** right after posting: their queues are adopted by the domain's
//!   default queue, and barriers still cover those callbacks, also when exits race with
//!   barriers (liburcu commit 51b98c3), and when a thread exits while the worker is invoking
//!   a batch of its callbacks (the batch's rest is then in no listed queue).

mod common;

use common::domains::{Domain, Kind};
use common::{wait_until, within, Pending, HANG_GUARD, SETTLE};
use rcu_core::Flavor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Poster threads in the phase test (the kernel's `n_barrier_cbs`).
const POSTERS: usize = 4;
/// Phases per domain kind.
const PHASES: u64 = 200;
/// Hang guard of one test on one kind.
const LIMIT: Duration = Duration::from_secs(30);

/// Generate one test per kind of domain: `$name::memb`, `::mb`, `::qsbr`, `::srcu`.
macro_rules! per_kind {
    ($name:ident, $harness:path) => {
        mod $name {
            use super::*;
            #[test]
            fn memb() {
                $harness(Kind::Rcu(Flavor::Memb));
            }
            #[test]
            fn mb() {
                $harness(Kind::Rcu(Flavor::Mb));
            }
            #[test]
            fn qsbr() {
                $harness(Kind::Rcu(Flavor::Qsbr));
            }
            #[test]
            fn srcu() {
                $harness(Kind::Srcu);
            }
        }
    };
}

/// A callback that counts itself.
fn count(dom: &Domain, ran: &Arc<AtomicU64>) {
    let ran = Arc::clone(ran);
    dom.call(move || {
        ran.fetch_add(1, Ordering::SeqCst);
    });
}

// ---------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------

/// rcu_torture_barrier: each phase, every poster posts one callback, then the coordinator
/// barriers and checks the count. Every fourth phase uses `barrier_expedited()`, which makes
/// the same promise.
fn phases(kind: Kind) {
    within(LIMIT, kind.label(), move || {
        let dom = Arc::new(kind.build());
        let ran = Arc::new(AtomicU64::new(0));
        // Two rendezvous per phase: "post now" and "all posted".
        let go = Arc::new(Barrier::new(POSTERS + 1));
        let posted = Arc::new(Barrier::new(POSTERS + 1));
        let stop = Arc::new(AtomicBool::new(false));
        let posters: Vec<_> = (0..POSTERS)
            .map(|_| {
                let (dom, ran, go, posted, stop) = (
                    Arc::clone(&dom),
                    Arc::clone(&ran),
                    Arc::clone(&go),
                    Arc::clone(&posted),
                    Arc::clone(&stop),
                );
                std::thread::spawn(move || loop {
                    go.wait();
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    count(&dom, &ran);
                    posted.wait();
                })
            })
            .collect();

        let mut expedited = 0u64;
        for phase in 1..=PHASES {
            go.wait();
            posted.wait();
            if phase % 4 == 0 {
                dom.barrier_expedited().unwrap();
                expedited += 1;
            } else {
                dom.barrier().unwrap();
            }
            let n = ran.load(Ordering::SeqCst);
            assert_eq!(
                n,
                POSTERS as u64 * phase,
                "{}: phase {phase}: the barrier returned before every callback posted before it \
                 had run",
                kind.label()
            );
            assert_eq!(dom.callback_stats().pending(), 0, "{}", kind.label());
        }
        stop.store(true, Ordering::SeqCst);
        go.wait();
        for p in posters {
            p.join().unwrap();
        }
        let stats = dom.callback_stats();
        println!("{}: {PHASES} phases: {stats:?}", kind.label());
        assert_eq!(stats.posted, POSTERS as u64 * PHASES);
        assert_eq!(stats.invoked, stats.posted);
        assert_eq!(
            (stats.barriers, stats.barriers_shared),
            (PHASES, 0),
            "one barrier per phase, none concurrent ({expedited} expedited)"
        );
    });
}

per_kind!(phases_exact_count, phases);

// ---------------------------------------------------------------------------------------
// Re-posting chains
// ---------------------------------------------------------------------------------------

/// Post the first link of a chain of `links` callbacks, each of which (counted in `ran`)
/// posts the next unless `stop` is set. `posts` counts every link posted.
fn post_chain(
    dom: &Arc<Domain>,
    links: u32,
    ran: &Arc<AtomicU64>,
    posts: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) {
    let (d, r, p, s) = (
        Arc::clone(dom),
        Arc::clone(ran),
        Arc::clone(posts),
        Arc::clone(stop),
    );
    posts.fetch_add(1, Ordering::SeqCst);
    dom.call(move || {
        r.fetch_add(1, Ordering::SeqCst);
        if links > 1 && !s.load(Ordering::SeqCst) {
            post_chain(&d, links - 1, &r, &p, &s);
        }
    });
}

/// A depth-5 chain: one barrier guarantees only the first link (the only one posted before
/// it). To make "not drained" certain rather than likely, the first link, after re-posting,
/// starts a reader that holds the grace period the second link needs; the barrier (whose
/// sentinel is behind the first link) then returns with the rest of the chain pending. Once
/// that reader leaves, `barrier_until_quiet()` — barriers until one saw no post — drains it.
///
/// The barrier must entrain before the first link runs (else it would rightly wait for the
/// second link too, behind the reader): a first reader holds the first link back while the
/// barrier starts. An attempt where the barrier was nevertheless late is recognised (it does
/// not return while the second reader is inside), undone, and retried.
fn one_barrier_vs_until_quiet(kind: Kind) {
    within(LIMIT, kind.label(), move || {
        for attempt in 1..=5 {
            if one_barrier_attempt(kind) {
                return;
            }
            println!(
                "{}: attempt {attempt} inconclusive (late barrier)",
                kind.label()
            );
        }
        panic!("{}: no conclusive attempt", kind.label());
    });
}

fn one_barrier_attempt(kind: Kind) -> bool {
    let dom = Arc::new(kind.build());
    let (ran, posts) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let never = Arc::new(AtomicBool::new(false));
    let second_reader = Arc::new(std::sync::Mutex::new(None));
    let first_reader = dom.hold_reader();
    {
        let (d, r, p, s, reader) = (
            Arc::clone(&dom),
            Arc::clone(&ran),
            Arc::clone(&posts),
            Arc::clone(&never),
            Arc::clone(&second_reader),
        );
        posts.fetch_add(1, Ordering::SeqCst);
        dom.call(move || {
            r.fetch_add(1, Ordering::SeqCst);
            post_chain(&d, 4, &r, &p, &s);
            *reader.lock().unwrap() = Some(d.hold_reader());
        });
    }
    let barrier = {
        let dom = Arc::clone(&dom);
        Pending::spawn(move || dom.barrier().unwrap())
    };
    barrier.assert_blocked("a barrier whose callback waits for a reader");
    first_reader.leave();
    wait_until(HANG_GUARD, "the first link", || {
        second_reader.lock().unwrap().is_some()
    });
    let start = Instant::now();
    while !barrier.is_done() && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let conclusive = barrier.is_done();
    if conclusive {
        let after_one = ran.load(Ordering::SeqCst);
        let pending = dom.callback_stats().pending();
        println!(
            "{}: depth-5 chain: {after_one} link(s) had run after one barrier, {pending} pending",
            kind.label()
        );
        assert_eq!(
            (after_one, pending),
            (1, 1),
            "{}: one barrier ran the first link only (the second waits for the reader)",
            kind.label()
        );
    }
    let reader = second_reader
        .lock()
        .unwrap()
        .take()
        .expect("the first link ran");
    reader.leave();
    barrier.join("the first barrier");
    let rounds = dom.barrier_until_quiet().unwrap();
    println!(
        "{}: barrier_until_quiet ran {rounds} barriers",
        kind.label()
    );
    assert_eq!(ran.load(Ordering::SeqCst), 5, "{}", kind.label());
    assert_eq!(posts.load(Ordering::SeqCst), 5);
    let stats = dom.callback_stats();
    assert_eq!((stats.posted, stats.pending()), (5, 0), "{stats:?}");
    conclusive
}

per_kind!(
    chain_single_barrier_vs_until_quiet,
    one_barrier_vs_until_quiet
);

/// The unload protocol with re-posting callbacks (rcutorture's cleanup): threads keep
/// starting depth-3 chains whose links re-post unless the stop flag is set. Set the flag, stop
/// the posting threads, `barrier_until_quiet()`: every link posted has run, nothing is
/// pending, and nothing runs afterwards.
fn stop_flag_then_until_quiet(kind: Kind) {
    within(LIMIT, kind.label(), move || {
        let dom = Arc::new(kind.build());
        let (ran, posts) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (dom, ran, posts, stop) = (
                    Arc::clone(&dom),
                    Arc::clone(&ran),
                    Arc::clone(&posts),
                    Arc::clone(&stop),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        post_chain(&dom, 3, &ran, &posts, &stop);
                        std::thread::sleep(Duration::from_micros(100));
                    }
                })
            })
            .collect();
        // Let chains be in every state: queued, invoking, re-posted.
        wait_until(HANG_GUARD, "some chains completing", || {
            ran.load(Ordering::SeqCst) >= 300
        });
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        let rounds = dom.barrier_until_quiet().unwrap();
        let (r, p) = (ran.load(Ordering::SeqCst), posts.load(Ordering::SeqCst));
        let stats = dom.callback_stats();
        println!(
            "{}: {p} links posted, {r} ran, {rounds} barrier(s): {stats:?}",
            kind.label()
        );
        assert_eq!(r, p, "{}: a posted link had not run", kind.label());
        assert_eq!((stats.posted, stats.invoked), (p, p), "{stats:?}");
        assert_eq!(stats.pending(), 0);
        std::thread::sleep(SETTLE);
        assert_eq!(
            ran.load(Ordering::SeqCst),
            r,
            "a callback ran after barrier_until_quiet returned"
        );
    });
}

per_kind!(stop_flag_drains_chains, stop_flag_then_until_quiet);

/// A chain that ignores every stop flag makes `barrier_until_quiet()` give up with
/// `NotQuiet` instead of hanging; the chain can then be stopped and drained.
#[test]
fn unstoppable_chain_is_reported_not_quiet() {
    within(LIMIT, "unstoppable chain", || {
        let dom = Arc::new(Kind::Rcu(Flavor::Memb).build());
        let (ran, posts) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        post_chain(&dom, u32::MAX, &ran, &posts, &stop);
        match dom.barrier_until_quiet() {
            Err(rcu_core::BarrierError::NotQuiet { domain, rounds }) => {
                assert_eq!(domain, dom.name());
                assert_eq!(rounds, 10_000);
            }
            other => panic!("expected NotQuiet, got {other:?}"),
        }
        stop.store(true, Ordering::SeqCst);
        dom.barrier_until_quiet().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), posts.load(Ordering::SeqCst));
        assert!(ran.load(Ordering::SeqCst) > 10_000);
    });
}

// ---------------------------------------------------------------------------------------
// Concurrent barrier callers
// ---------------------------------------------------------------------------------------

/// Barrier callers per domain.
const CALLERS: usize = 3;
/// Barriers each caller runs (at least).
const CALLS: u32 = 100;

/// Two posters post continuously while three threads barrier in a loop. Before each barrier a
/// caller reads how many callbacks had been posted (counted after `call` returned); when the
/// barrier returns at least that many must have run, whoever did the barrier's work. Every
/// call is accounted for as a barrier run or a barrier shared.
fn concurrent_callers(kind: Kind) {
    within(LIMIT, kind.label(), move || {
        let dom = Arc::new(kind.build());
        let (ran, posted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let posters: Vec<_> = (0..2)
            .map(|_| {
                let (dom, ran, posted, stop) = (
                    Arc::clone(&dom),
                    Arc::clone(&ran),
                    Arc::clone(&posted),
                    Arc::clone(&stop),
                );
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        count(&dom, &ran);
                        posted.fetch_add(1, Ordering::SeqCst);
                        i += 1;
                        if i & 7 == 0 {
                            std::thread::sleep(Duration::from_micros(20));
                        }
                    }
                })
            })
            .collect();
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (dom, ran, posted) = (Arc::clone(&dom), Arc::clone(&ran), Arc::clone(&posted));
                std::thread::spawn(move || {
                    for _ in 0..CALLS {
                        let before = posted.load(Ordering::SeqCst);
                        dom.barrier().unwrap();
                        let after = ran.load(Ordering::SeqCst);
                        assert!(
                            after >= before,
                            "a barrier returned with {after} callbacks run, but {before} had \
                             been posted before it was called"
                        );
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        for p in posters {
            p.join().unwrap();
        }
        dom.barrier().unwrap();
        let stats = dom.callback_stats();
        println!("{}: concurrent barriers: {stats:?}", kind.label());
        assert_eq!(ran.load(Ordering::SeqCst), posted.load(Ordering::SeqCst));
        assert_eq!(stats.posted, posted.load(Ordering::SeqCst));
        assert_eq!(stats.pending(), 0);
        // How many calls shared a barrier depends on timing (most of these barriers find
        // little to wait for); `sharing_is_safe` forces the shared case.
        assert_eq!(
            stats.barriers + stats.barriers_shared,
            CALLERS as u64 * u64::from(CALLS) + 1
        );
    });
}

per_kind!(concurrent_barrier_callers, concurrent_callers);

/// Sharing never shortens a wait, forced: barrier A is held up (a reader holds the grace
/// period its callback needs); B and C each post a callback and call `barrier()` while A
/// waits, so at most one of them can run its own barrier after A and the other shares it.
/// Each must find its own callback run on return.
fn sharing_never_shortens_a_wait(kind: Kind) {
    within(LIMIT, kind.label(), move || {
        let dom = Arc::new(kind.build());
        // The shared outcome depends on B and C both waiting for the barrier lock before A
        // finishes; they have SETTLE × 3 for it, and a retry covers a descheduled thread.
        for attempt in 1..=3 {
            let before = dom.callback_stats();
            let reader = dom.hold_reader();
            let callers: Vec<Pending> = (0..3)
                .map(|i| {
                    let dom = Arc::clone(&dom);
                    let mine = Arc::new(AtomicBool::new(false));
                    let p = Pending::spawn(move || {
                        let flag = Arc::clone(&mine);
                        dom.call(move || flag.store(true, Ordering::SeqCst));
                        dom.barrier().unwrap();
                        assert!(
                            mine.load(Ordering::SeqCst),
                            "caller {i}: barrier() returned before the callback it posted ran"
                        );
                    });
                    if i == 0 {
                        p.assert_blocked("barrier A while a reader holds its grace period");
                    }
                    p
                })
                .collect();
            std::thread::sleep(SETTLE * 3);
            assert!(
                callers.iter().all(|c| !c.is_done()),
                "a barrier returned while a reader held the grace period its callback needs"
            );
            reader.leave();
            for c in callers {
                c.join("barrier callers after the reader left");
            }
            let after = dom.callback_stats();
            let (ran, shared) = (
                after.barriers - before.barriers,
                after.barriers_shared - before.barriers_shared,
            );
            println!(
                "{} attempt {attempt}: {ran} barrier(s) ran, {shared} shared",
                kind.label()
            );
            assert_eq!(ran + shared, 3);
            if shared >= 1 {
                return;
            }
        }
        panic!("{}: B and C never shared a barrier", kind.label());
    });
}

per_kind!(sharing_is_safe, sharing_never_shortens_a_wait);

// ---------------------------------------------------------------------------------------
// Posters that exit
// ---------------------------------------------------------------------------------------

/// Threads post and exit while a reader holds the grace period, so nothing they posted can
/// have run when they exit: every callback is adopted by the default queue, and a barrier
/// (which waits while the reader is inside) runs them all.
fn exited_posters_are_adopted(kind: Kind) {
    const THREADS: u64 = 4;
    const EACH: u64 = 50;
    within(LIMIT, kind.label(), move || {
        let dom = Arc::new(kind.build());
        let ran = Arc::new(AtomicU64::new(0));
        let reader = dom.hold_reader();
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (dom, ran) = (Arc::clone(&dom), Arc::clone(&ran));
                std::thread::spawn(move || {
                    for _ in 0..EACH {
                        count(&dom, &ran);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = dom.callback_stats();
        assert_eq!(
            (stats.posted, stats.adopted, stats.invoked),
            (THREADS * EACH, THREADS * EACH, 0),
            "{}: every exited thread's callbacks are adopted, none has run: {stats:?}",
            kind.label()
        );
        let barrier = {
            let dom = Arc::clone(&dom);
            let ran = Arc::clone(&ran);
            Pending::spawn(move || {
                dom.barrier().unwrap();
                assert_eq!(ran.load(Ordering::SeqCst), THREADS * EACH);
            })
        };
        barrier.assert_blocked("barrier over adopted callbacks while a reader is inside");
        reader.leave();
        barrier.join("barrier over adopted callbacks");
        assert_eq!(dom.callback_stats().pending(), 0);
    });
}

per_kind!(exited_posters_adopted, exited_posters_are_adopted);

/// Thread exits (adoption) racing with barriers: short-lived threads post a few callbacks
/// and exit, continuously, while a coordinator barriers; every callback posted before a
/// barrier began has run when it returns.
fn exits_race_with_barriers(kind: Kind) {
    within(LIMIT, kind.label(), move || {
        let dom = Arc::new(kind.build());
        let (ran, posted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let spawner = {
            let (dom, ran, posted, stop) = (
                Arc::clone(&dom),
                Arc::clone(&ran),
                Arc::clone(&posted),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut previous: Option<std::thread::JoinHandle<()>> = None;
                while !stop.load(Ordering::SeqCst) {
                    let (dom, ran, posted) =
                        (Arc::clone(&dom), Arc::clone(&ran), Arc::clone(&posted));
                    let t = std::thread::spawn(move || {
                        for _ in 0..5 {
                            count(&dom, &ran);
                            posted.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                    // Two generations alive at a time: one exits while the next posts.
                    if let Some(p) = previous.replace(t) {
                        p.join().unwrap();
                    }
                    n += 1;
                }
                if let Some(p) = previous {
                    p.join().unwrap();
                }
                n
            })
        };
        let mut barriers = 0;
        let start = Instant::now();
        // At least 100 barriers, and at least 200 posting threads (1000 callbacks) seen.
        while barriers < 100 || posted.load(Ordering::SeqCst) < 1000 {
            assert!(
                start.elapsed() < HANG_GUARD,
                "hang guard: posting threads stalled"
            );
            let before = posted.load(Ordering::SeqCst);
            dom.barrier().unwrap();
            let after = ran.load(Ordering::SeqCst);
            assert!(
                after >= before,
                "{}: barrier returned with {after} run of {before} posted before it",
                kind.label()
            );
            barriers += 1;
            std::thread::sleep(Duration::from_micros(20));
        }
        stop.store(true, Ordering::SeqCst);
        let threads = spawner.join().unwrap();
        dom.barrier().unwrap();
        let stats = dom.callback_stats();
        assert_eq!(ran.load(Ordering::SeqCst), posted.load(Ordering::SeqCst));
        assert_eq!(
            (stats.posted, stats.pending()),
            (posted.load(Ordering::SeqCst), 0)
        );
        println!(
            "{}: {threads} short-lived posters, {barriers} barriers: {stats:?}",
            kind.label()
        );
        assert!(threads > 0);
    });
}

per_kind!(exits_racing_barriers, exits_race_with_barriers);

/// A thread exits while the worker is invoking a batch of its callbacks: the rest of that
/// batch is in flight, no longer in any listed queue. A barrier (normal, then expedited)
/// called then must still wait for it (the deterministic form of the race
/// `exits_racing_barriers` found).
fn exit_while_a_batch_is_in_flight(kind: Kind) {
    within(LIMIT, kind.label(), move || {
        for expedited in [false, true] {
            exit_during_invocation_then_barrier(kind, expedited);
        }
    });
}

fn exit_during_invocation_then_barrier(kind: Kind, expedited: bool) {
    let dom = Arc::new(kind.build());
    let ran = Arc::new(AtomicU64::new(0));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
    let poster = {
        let (dom, ran) = (Arc::clone(&dom), Arc::clone(&ran));
        std::thread::spawn(move || {
            // One slow callback, then a quick one: both become ready together and are
            // (almost always) extracted in the same batch. If not, the quick one is still
            // queued when the thread exits, is adopted, and the check is merely weaker.
            dom.call(move || {
                let _ = started_tx.send(());
                std::thread::sleep(Duration::from_millis(50));
            });
            count(&dom, &ran);
            exit_rx.recv().unwrap();
        })
    };
    started_rx.recv().unwrap();
    exit_tx.send(()).unwrap();
    poster.join().unwrap();
    assert_eq!(dom.callback_stats().posted, 2);
    if expedited {
        dom.barrier_expedited().unwrap();
    } else {
        dom.barrier().unwrap();
    }
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "{}: barrier (expedited: {expedited}) returned while a callback posted before it \
         (in the batch being invoked when its thread exited) had not run",
        kind.label()
    );
}

per_kind!(exit_during_invocation, exit_while_a_batch_is_in_flight);
