use rcu_core::{Flavor, Rcu, RcuCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn synchronize_waits_for_a_reader_every_flavor() {
    for flavor in [Flavor::Memb, Flavor::Mb, Flavor::Qsbr] {
        let rcu = Arc::new(Rcu::new(flavor));
        let inside = Arc::new(AtomicBool::new(false));
        let t = {
            let (rcu, inside) = (rcu.clone(), inside.clone());
            std::thread::spawn(move || {
                let g = rcu.read_lock();
                inside.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                drop(g);
                rcu.thread_offline();
            })
        };
        while !inside.load(Ordering::SeqCst) {}
        let t0 = Instant::now();
        rcu.synchronize();
        assert!(
            t0.elapsed() >= Duration::from_millis(50),
            "{flavor}: {:?}",
            t0.elapsed()
        );
        t.join().unwrap();
        let s = rcu.start_poll();
        let t0 = Instant::now();
        while !rcu.poll(s) {
            assert!(t0.elapsed() < Duration::from_secs(5));
        }
        rcu.synchronize_expedited();
        let cell = RcuCell::new_in(1u32, &rcu);
        let old = cell.publish(2);
        assert_eq!(*old.synchronize(), 1);
        println!("{flavor} ok {:?}", rcu.stats());
    }
}
