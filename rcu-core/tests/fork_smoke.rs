use rcu_core::{Flavor, Rcu, Srcu};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[test]
fn child_uses_rcu_after_fork() {
    let rcu = Arc::new(Rcu::new(Flavor::Memb));
    let srcu = Arc::new(Srcu::new("fork"));
    let stop = Arc::new(AtomicBool::new(false));
    let n = Arc::new(AtomicU64::new(0));
    let poster = {
        let (rcu, stop, n) = (rcu.clone(), stop.clone(), n.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _g = rcu.read_lock();
                let n = n.clone();
                rcu.call(move || {
                    n.fetch_add(1, Ordering::Relaxed);
                });
            }
        })
    };
    let holder = {
        let (srcu, stop) = (srcu.clone(), stop.clone());
        std::thread::spawn(move || {
            let _g = srcu.read_lock();
            while !stop.load(Ordering::Relaxed) {
                std::thread::yield_now();
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    // SAFETY: the child only uses async-signal-unsafe functions that glibc makes fork-safe
    // (malloc, thread creation) and exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rcu.synchronize();
            let m = Arc::new(AtomicU64::new(0));
            let m2 = m.clone();
            rcu.call(move || {
                m2.fetch_add(1, Ordering::Relaxed);
            });
            rcu.barrier().unwrap();
            assert_eq!(m.load(Ordering::Relaxed), 1);
            srcu.synchronize();
            srcu.call(|| {});
            srcu.barrier().unwrap();
        }))
        .is_ok();
        // SAFETY: _exit ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    stop.store(true, Ordering::Relaxed);
    poster.join().unwrap();
    holder.join().unwrap();
    rcu.barrier().unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status}"
    );
}
