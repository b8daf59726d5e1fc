//! fork(): the child can go on using RCU, whatever the parent's threads were doing.
//!
//! At the moment of the fork the parent has: poster threads posting callbacks, a thread
//! looping on `barrier()` (blocked, mid-barrier, because a reader holds the grace period its
//! callbacks need), the callback and grace-period workers (the latter waiting for that
//! reader), a thread inside a memb read section, a thread inside an SRCU section, a reader
//! looping on short sections, and an online qsbr thread that never reports. None of those
//! threads exists in the child. The child must be able to `synchronize()`, `call()` +
//! `barrier()`, `barrier_expedited()`, SRCU `synchronize()` + `barrier()`, and use qsbr —
//! none of which may wait for a parent thread, or for a lock a parent thread held.
//!
//! Also: the forking thread itself inside a memb and an SRCU section; in the child it leaves
//! them, and only then do grace periods complete.
//!
//! The child reports the first failing step as its exit status (it must not print: a parent
//! thread may have held the stdout/stderr lock at the fork) and exits with `_exit`. The
//! parent kills a child that has not exited after [`CHILD_LIMIT`] and fails the test.

mod common;

use common::{within, HeldReader, SilentThread, HANG_GUARD};
use rcu_core::{Flavor, Rcu, Srcu};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Hang guard of one child.
const CHILD_LIMIT: Duration = Duration::from_secs(10);

/// One fork at a time in this binary.
static FORKS: Mutex<()> = Mutex::new(());

/// A failed step: its number becomes the child's exit status.
type Step = Result<(), u8>;

fn check(ok: bool, step: u8) -> Step {
    if ok {
        Ok(())
    } else {
        Err(step)
    }
}

/// Fork; run `child` in the child and exit with its status; in the parent, wait (at most
/// CHILD_LIMIT) and return the child's exit status.
fn fork_and_run(child: impl FnOnce() -> Step) -> i32 {
    // SAFETY: fork in a multi-threaded process: the child runs only `child`, which uses
    // rcu-core (whose pthread_atfork handlers make its state consistent), the allocator and
    // thread creation (fork-safe in glibc), and leaves with `_exit`, running no destructor
    // or atexit handler of state copied from other threads.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)) {
            Ok(Ok(())) => 0,
            Ok(Err(step)) => i32::from(step),
            Err(_) => 100,
        };
        // SAFETY: ends the child immediately, as above.
        unsafe { libc::_exit(code) };
    }
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid failed");
        if r == pid {
            assert!(
                libc::WIFEXITED(status),
                "the child did not exit normally (status {status:#x})"
            );
            return libc::WEXITSTATUS(status);
        }
        if start.elapsed() > CHILD_LIMIT {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("hang guard: the forked child did not finish within {CHILD_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What the child checks, step by step.
fn child_uses_every_domain(memb: &Rcu, qsbr: &Rcu, srcu: &Srcu) -> Step {
    // A parent thread was inside a memb section (and another loops on them): not here.
    memb.synchronize();
    memb.synchronize_expedited();
    // call + barrier; the parent's posters' queued callbacks were adopted and run too.
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = Arc::clone(&ran);
        memb.call(move || ran.store(true, Ordering::SeqCst));
    }
    check(memb.barrier().is_ok(), 2)?;
    check(ran.load(Ordering::SeqCst), 3)?;
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = Arc::clone(&ran);
        memb.call(move || ran.store(true, Ordering::SeqCst));
    }
    check(memb.barrier_expedited().is_ok(), 4)?;
    check(ran.load(Ordering::SeqCst), 5)?;
    // A new thread of the child reads and posts.
    let t = std::thread::scope(|s| {
        s.spawn(|| {
            drop(memb.read_lock());
            memb.call(|| {});
        })
        .join()
        .is_ok()
    });
    check(t, 6)?;
    check(memb.barrier().is_ok(), 7)?;
    check(memb.callback_stats().invoked > 0, 8)?;

    // A parent thread was inside an SRCU section: not here.
    srcu.synchronize();
    srcu.synchronize_expedited();
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = Arc::clone(&ran);
        srcu.call(move || ran.store(true, Ordering::SeqCst));
    }
    check(srcu.barrier().is_ok(), 10)?;
    check(ran.load(Ordering::SeqCst), 11)?;

    // A parent qsbr thread was online and silent: not here.
    qsbr.synchronize();
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = Arc::clone(&ran);
        qsbr.call(move || ran.store(true, Ordering::SeqCst));
    }
    check(qsbr.barrier().is_ok(), 20)?;
    check(ran.load(Ordering::SeqCst), 21)?;
    {
        let _g = qsbr.read_lock();
    }
    qsbr.quiescent_state();
    qsbr.synchronize();
    Ok(())
}

/// Parent threads that are busy with every domain while the test forks.
struct Busy {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    held_memb: HeldReader,
    held_srcu: HeldReader,
    silent: SilentThread,
    posted: Arc<AtomicU64>,
    ran: Arc<AtomicU64>,
}

impl Busy {
    fn start(memb: &Arc<Rcu>, qsbr: &Arc<Rcu>, srcu: &Arc<Srcu>) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let (posted, ran) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let held_memb = HeldReader::enter(Arc::clone(memb));
        let held_srcu = {
            let srcu = Arc::clone(srcu);
            HeldReader::hold(move |inside| {
                let _g = srcu.read_lock();
                inside();
            })
        };
        let silent = SilentThread::start(Arc::clone(qsbr));
        let mut threads = Vec::new();
        // Posters on every domain.
        for _ in 0..2 {
            let (memb, qsbr, srcu) = (Arc::clone(memb), Arc::clone(qsbr), Arc::clone(srcu));
            let (stop, posted, ran) = (Arc::clone(&stop), Arc::clone(&posted), Arc::clone(&ran));
            threads.push(std::thread::spawn(move || {
                let count = || {
                    let ran = Arc::clone(&ran);
                    posted.fetch_add(1, Ordering::Relaxed);
                    move || {
                        ran.fetch_add(1, Ordering::Relaxed);
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    memb.call(count());
                    qsbr.call(count());
                    srcu.call(count());
                    std::thread::sleep(Duration::from_micros(50));
                }
            }));
        }
        // Barriers in flight: memb's blocks on the held reader; SRCU's on the held section.
        {
            let (memb, stop) = (Arc::clone(memb), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    memb.barrier().unwrap();
                }
            }));
        }
        {
            let (srcu, stop) = (Arc::clone(srcu), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    srcu.barrier().unwrap();
                }
            }));
        }
        // Short memb sections, in and out.
        {
            let (memb, stop) = (Arc::clone(memb), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _g = memb.read_lock();
                    std::hint::spin_loop();
                }
            }));
        }
        Busy {
            stop,
            threads,
            held_memb,
            held_srcu,
            silent,
            posted,
            ran,
        }
    }

    /// Stop everything; every callback the parent posted runs.
    fn stop(self, memb: &Rcu, qsbr: &Rcu, srcu: &Srcu) {
        self.stop.store(true, Ordering::Relaxed);
        self.held_memb.leave();
        self.held_srcu.leave();
        self.silent.stop();
        for t in self.threads {
            t.join().unwrap();
        }
        memb.barrier().unwrap();
        qsbr.barrier().unwrap();
        srcu.barrier().unwrap();
        assert_eq!(
            self.ran.load(Ordering::Relaxed),
            self.posted.load(Ordering::Relaxed),
            "the parent's callbacks"
        );
    }
}

#[test]
fn child_uses_rcu_whatever_the_parent_was_doing() {
    let _forks = FORKS.lock().unwrap_or_else(|e| e.into_inner());
    within(Duration::from_secs(60), "fork test", || {
        let memb = Arc::new(
            Rcu::builder()
                .flavor(Flavor::Memb)
                .name("fork-memb")
                .build(),
        );
        let qsbr = Arc::new(
            Rcu::builder()
                .flavor(Flavor::Qsbr)
                .name("fork-qsbr")
                .build(),
        );
        let srcu = Arc::new(Srcu::new("fork-srcu"));
        let busy = Busy::start(&memb, &qsbr, &srcu);
        for i in 0..5u64 {
            // Vary the moment of the fork relative to the parent's threads.
            std::thread::sleep(Duration::from_millis(2 + 3 * i));
            let status = fork_and_run(|| child_uses_every_domain(&memb, &qsbr, &srcu));
            assert_eq!(status, 0, "fork {i}: the child failed at step {status}");
        }
        assert!(
            busy.posted.load(Ordering::Relaxed) > 0,
            "the parent's posters were running"
        );
        busy.stop(&memb, &qsbr, &srcu);
    });
}

#[test]
fn forking_inside_read_sections() {
    let _forks = FORKS.lock().unwrap_or_else(|e| e.into_inner());
    within(HANG_GUARD, "fork inside sections", || {
        let memb = Rcu::builder()
            .flavor(Flavor::Memb)
            .name("fork-in-memb")
            .build();
        let srcu = Srcu::new("fork-in-srcu");
        let (g, s) = (memb.read_lock(), srcu.read_lock());
        let (memb, srcu) = (&memb, &srcu);
        // The guards move into the closure: the child drops its copies; in the parent the
        // closure is dropped unrun, which ends the parent's sections.
        let status = fork_and_run(move || {
            // The child's copy of this thread is inside both sections: grace periods wait
            // for it (checked from a helper thread), and complete once it leaves.
            let (tx, rx) = mpsc::channel();
            let helper = std::thread::scope(|sc| {
                let h = sc.spawn(|| {
                    memb.synchronize();
                    srcu.synchronize();
                    let _ = tx.send(());
                });
                std::thread::sleep(Duration::from_millis(30));
                let early = rx.try_recv().is_ok();
                drop(g);
                drop(s);
                let done = rx.recv_timeout(Duration::from_secs(5)).is_ok();
                let _ = h.join();
                (early, done)
            });
            check(!helper.0, 30)?;
            check(helper.1, 31)?;
            check(!memb.in_read_section() && !srcu.in_read_section(), 32)?;
            Ok(())
        });
        assert_eq!(status, 0, "the child failed at step {status}");
        assert!(!memb.in_read_section() && !srcu.in_read_section());
        memb.synchronize();
        srcu.synchronize();
    });
}
