use rcu_core::{Flavor, Rcu, Srcu};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[test]
fn call_and_barrier_smoke() {
    for flavor in [Flavor::Memb, Flavor::Mb, Flavor::Qsbr] {
        let rcu = Rcu::new(flavor);
        let n = Arc::new(AtomicU64::new(0));
        for _ in 0..10_000 {
            let n = n.clone();
            rcu.call(move || {
                n.fetch_add(1, Ordering::Relaxed);
            });
        }
        let t = Instant::now();
        rcu.barrier().unwrap();
        assert_eq!(n.load(Ordering::Relaxed), 10_000, "{flavor}");
        println!(
            "{flavor}: barrier {:?} {:?}",
            t.elapsed(),
            rcu.callback_stats()
        );
        let t = Instant::now();
        rcu.barrier().unwrap();
        println!("{flavor}: empty barrier {:?}", t.elapsed());
        for _ in 0..10_000 {
            let n = n.clone();
            rcu.call(move || {
                n.fetch_add(1, Ordering::Relaxed);
            });
        }
        let r = rcu.barrier_expedited().unwrap();
        assert_eq!(n.load(Ordering::Relaxed), 20_000, "{flavor}");
        println!("{flavor}: {r:?}");
        // Threads that post then exit: adoption.
        let rcu = Arc::new(rcu);
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (rcu, n) = (rcu.clone(), n.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let n = n.clone();
                        rcu.call(move || {
                            n.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        rcu.barrier().unwrap();
        assert_eq!(n.load(Ordering::Relaxed), 24_000, "{flavor}");
        println!("{flavor}: {:?}", rcu.callback_stats());
    }
}

#[test]
fn srcu_smoke() {
    let s = Srcu::new("smoke");
    let n = Arc::new(AtomicU64::new(0));
    {
        let _g = s.read_lock();
        let _g2 = s.read_lock();
    }
    s.synchronize();
    for _ in 0..1000 {
        let n = n.clone();
        s.call(move || {
            n.fetch_add(1, Ordering::Relaxed);
        });
    }
    s.barrier().unwrap();
    assert_eq!(n.load(Ordering::Relaxed), 1000);
    let r = s.barrier_expedited().unwrap();
    println!("{r:?} {:?}", s.callback_stats());
}
