//! Callback and barrier contracts that are not about load: failure containment, refusal of
//! calls that would hang, independence of domains, the intrusive `call_raw`, SRCU's sleeping
//! readers, and teardown.
//!
//! * a panicking callback is caught and counted; later callbacks and the worker carry on;
//! * `barrier()` from a callback, or inside a read section of the same domain, returns an
//!   error instead of hanging (liburcu deadlocks in the first case and silently does not
//!   wait in the second: rcu-anchors.md (b) 6);
//! * one domain's barrier never waits for another domain's grace periods (in particular SRCU
//!   and RCU do not wait for each other);
//! * an empty barrier costs no grace period;
//! * `call_raw` with an `RcuHead` embedded in a `#[repr(C)]` object, freed by an
//!   `extern "C"` callback through `offset_of!` (the seed's `container_of`);
//! * an SRCU reader may sleep inside its section, and SRCU grace periods wait for it;
//! * dropping a domain runs its pending callbacks first.

mod common;

use common::domains::{Domain, Kind};
use common::{busy_for, within, HeldReader, HANG_GUARD};
use rcu_core::{BarrierError, Flavor, Rcu, RcuHead, Srcu};
use std::mem::offset_of;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

fn counter(dom: &Domain, n: &Arc<AtomicU64>) {
    let n = Arc::clone(n);
    dom.call(move || {
        n.fetch_add(1, Ordering::SeqCst);
    });
}

// ---------------------------------------------------------------------------------------
// Panics
// ---------------------------------------------------------------------------------------

#[test]
fn a_panicking_callback_is_caught_and_counted() {
    for kind in [Kind::Rcu(Flavor::Memb), Kind::Rcu(Flavor::Qsbr), Kind::Srcu] {
        let dom = kind.build();
        let n = Arc::new(AtomicU64::new(0));
        counter(&dom, &n);
        dom.call(|| panic!("deliberate panic in an RCU callback (test)"));
        counter(&dom, &n);
        within(HANG_GUARD, "barrier after a panicking callback", {
            let dom = Arc::new(dom);
            move || {
                dom.barrier().unwrap();
                let stats = dom.callback_stats();
                assert_eq!(stats.panicked, 1, "{stats:?}");
                assert_eq!((stats.posted, stats.invoked), (3, 3), "{stats:?}");
                // The worker survived: later callbacks, and an expedited barrier, still run.
                let m = Arc::new(AtomicU64::new(0));
                counter(&dom, &m);
                dom.call(|| panic!("deliberate panic in an RCU callback (test, 2)"));
                dom.barrier_expedited().unwrap();
                assert_eq!(m.load(Ordering::SeqCst), 1);
                assert_eq!(dom.callback_stats().panicked, 2);
            }
        });
        assert_eq!(n.load(Ordering::SeqCst), 2, "{}", kind.label());
    }
}

// ---------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------

/// What a callback saw when it tried to barrier.
#[derive(Debug)]
struct FromCallback {
    in_callback: bool,
    own: Result<(), BarrierError>,
    own_expedited: Result<(), BarrierError>,
    own_until_quiet: Result<(), BarrierError>,
    other: Result<(), BarrierError>,
}

#[test]
fn barrier_from_a_callback_is_refused() {
    for kind in Kind::CALLBACK_KINDS {
        let dom = Arc::new(kind.build());
        let other = Arc::new(Kind::Rcu(Flavor::Mb).build());
        let (tx, rx) = mpsc::channel();
        {
            let (d, o) = (Arc::clone(&dom), Arc::clone(&other));
            dom.call(move || {
                let _ = tx.send(FromCallback {
                    in_callback: rcu_core::in_callback(),
                    own: d.barrier(),
                    own_expedited: d.barrier_expedited().map(|_| ()),
                    own_until_quiet: d.barrier_until_quiet().map(|_| ()),
                    other: o.barrier(),
                });
            });
        }
        let seen = rx
            .recv_timeout(HANG_GUARD)
            .expect("hang guard: the callback calling barrier() never finished");
        assert!(seen.in_callback, "in_callback() is false inside a callback");
        assert!(!rcu_core::in_callback());
        for (what, r, name) in [
            ("barrier", &seen.own, dom.name()),
            ("barrier_expedited", &seen.own_expedited, dom.name()),
            ("barrier_until_quiet", &seen.own_until_quiet, dom.name()),
            ("another domain's barrier", &seen.other, other.name()),
        ] {
            match r {
                Err(BarrierError::FromCallback { domain }) => assert_eq!(domain, name),
                r => panic!("{}: {what} from a callback returned {r:?}", kind.label()),
            }
        }
        let msg = seen.own.unwrap_err().to_string();
        assert!(
            msg.contains(dom.name()) && msg.contains("callback"),
            "{msg}"
        );
        // Outside the callback the same calls work.
        dom.barrier().unwrap();
        other.barrier().unwrap();
    }
}

#[test]
fn barrier_inside_a_read_section_of_the_same_domain_is_refused() {
    for kind in Kind::CALLBACK_KINDS {
        let dom = kind.build();
        let other = Kind::Rcu(Flavor::Memb).build();
        let n = Arc::new(AtomicU64::new(0));
        counter(&other, &n);
        dom.read(|| {
            for (what, r) in [
                ("barrier", dom.barrier()),
                ("barrier_expedited", dom.barrier_expedited().map(|_| ())),
                ("barrier_until_quiet", dom.barrier_until_quiet().map(|_| ())),
            ] {
                match r {
                    Err(BarrierError::InsideReader { domain }) => {
                        assert_eq!(domain, dom.name())
                    }
                    r => panic!("{}: {what} inside a reader returned {r:?}", kind.label()),
                }
            }
            // Another domain's barrier inside this section is legitimate, and waits.
            other.barrier().unwrap();
            assert_eq!(n.load(Ordering::SeqCst), 1);
        });
        dom.quiescent_state();
        dom.barrier().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Independence of domains
// ---------------------------------------------------------------------------------------

/// Domain A's grace period is held by a reader of A (on another thread) with callbacks of A
/// pending; B's barrier still completes with B's callbacks, and A's are still pending.
#[test]
fn a_barrier_does_not_wait_for_another_domain() {
    for a_kind in Kind::CALLBACK_KINDS {
        for b_kind in Kind::CALLBACK_KINDS {
            let a = Arc::new(a_kind.build());
            let b = Arc::new(b_kind.build());
            let (na, nb) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let reader = a.hold_reader();
            for _ in 0..100 {
                counter(&a, &na);
                counter(&b, &nb);
            }
            let label = format!(
                "{} barrier while a {} reader holds A",
                b_kind.label(),
                a_kind.label()
            );
            within(HANG_GUARD, &label.clone(), {
                let (b, nb) = (Arc::clone(&b), Arc::clone(&nb));
                move || {
                    b.barrier().unwrap();
                    b.barrier_expedited().unwrap();
                    assert_eq!(nb.load(Ordering::SeqCst), 100);
                }
            });
            assert_eq!(
                na.load(Ordering::SeqCst),
                0,
                "{label}: A's callbacks ran while A's reader was inside"
            );
            reader.leave();
            a.barrier().unwrap();
            assert_eq!(na.load(Ordering::SeqCst), 100, "{label}");
        }
    }
}

/// With nothing pending, `barrier()` needs no grace period (the fast path).
#[test]
fn an_empty_barrier_needs_no_grace_period() {
    for kind in Kind::CALLBACK_KINDS {
        let dom = kind.build();
        for _ in 0..10 {
            dom.barrier().unwrap();
        }
        assert_eq!(dom.barrier_until_quiet().unwrap(), 1);
        let stats = dom.callback_stats();
        assert_eq!(dom.grace_periods(), 0, "{}: {stats:?}", kind.label());
        assert_eq!(stats.barriers, 11, "{stats:?}");
    }
}

// ---------------------------------------------------------------------------------------
// call_raw: the intrusive head
// ---------------------------------------------------------------------------------------

/// An object with an embedded head, not at offset 0, so that finding the object from the
/// head needs `offset_of!` (the kernel's `container_of`).
#[repr(C)]
struct Object {
    value: u64,
    head: RcuHead,
    sum: Arc<AtomicU64>,
    freed: Arc<AtomicU64>,
}

impl Drop for Object {
    fn drop(&mut self) {
        self.freed.fetch_add(1, Ordering::SeqCst);
    }
}

/// The seed's `p_callback`: container_of, then free.
unsafe extern "C" fn free_object(head: *mut RcuHead) {
    // SAFETY: every head posted with this function is the `head` field of an `Object`
    // allocated by `Box::into_raw` in `post_objects`, invoked once after a grace period, so
    // stepping back by the field's offset gives that object, which we own now.
    let obj = unsafe { Box::from_raw(head.byte_sub(offset_of!(Object, head)).cast::<Object>()) };
    obj.sum.fetch_add(obj.value, Ordering::SeqCst);
}

fn post_objects(dom: &Domain, n: u64, sum: &Arc<AtomicU64>, freed: &Arc<AtomicU64>) {
    for value in 1..=n {
        let obj = Box::into_raw(Box::new(Object {
            value,
            head: RcuHead::new(),
            sum: Arc::clone(sum),
            freed: Arc::clone(freed),
        }));
        // SAFETY: `obj` is a fresh allocation, never posted, and stays allocated and unmoved
        // until `free_object` frees it; `free_object` does not unwind and is part of this
        // binary (never unloaded).
        unsafe {
            let head = std::ptr::addr_of_mut!((*obj).head);
            match dom {
                Domain::Rcu(r) => r.call_raw(head, free_object),
                Domain::Srcu(s) => s.call_raw(head, free_object),
            }
        }
    }
}

#[test]
fn call_raw_frees_the_containing_object() {
    const N: u64 = 1000;
    for kind in Kind::CALLBACK_KINDS {
        let dom = kind.build();
        let (sum, freed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        post_objects(&dom, N, &sum, &freed);
        dom.barrier().unwrap();
        assert_eq!(
            sum.load(Ordering::SeqCst),
            N * (N + 1) / 2,
            "{}",
            kind.label()
        );
        assert_eq!(freed.load(Ordering::SeqCst), N, "{}", kind.label());
        let stats = dom.callback_stats();
        assert_eq!((stats.posted, stats.invoked), (N, N), "{stats:?}");
    }
}

// ---------------------------------------------------------------------------------------
// SRCU: sleeping readers
// ---------------------------------------------------------------------------------------

/// An SRCU reader that sleeps 50 ms inside its section holds up `synchronize()` (normal and
/// expedited) and the callbacks posted meanwhile, until it leaves.
#[test]
fn srcu_synchronize_waits_for_a_sleeping_reader() {
    let srcu = Arc::new(Srcu::new("sleepy"));
    for expedited in [false, true] {
        let left = Arc::new(AtomicBool::new(false));
        let (inside_tx, inside_rx) = mpsc::channel();
        let reader = {
            let (srcu, left) = (Arc::clone(&srcu), Arc::clone(&left));
            std::thread::spawn(move || {
                let _g = srcu.read_lock();
                inside_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                left.store(true, Ordering::SeqCst);
            })
        };
        inside_rx.recv().unwrap();
        let early = Arc::new(AtomicBool::new(false));
        {
            let (left, early) = (Arc::clone(&left), Arc::clone(&early));
            srcu.call(move || early.store(!left.load(Ordering::SeqCst), Ordering::SeqCst));
        }
        within(HANG_GUARD, "srcu synchronize", {
            let (srcu, left) = (Arc::clone(&srcu), Arc::clone(&left));
            move || {
                if expedited {
                    srcu.synchronize_expedited();
                } else {
                    srcu.synchronize();
                }
                assert!(
                    left.load(Ordering::SeqCst),
                    "SRCU synchronize (expedited: {expedited}) returned while a reader that \
                     entered before it was still inside"
                );
            }
        });
        srcu.barrier().unwrap();
        assert!(
            !early.load(Ordering::SeqCst),
            "an SRCU callback ran under a reader"
        );
        reader.join().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Teardown
// ---------------------------------------------------------------------------------------

/// Dropping a domain (either kind) with callbacks still pending runs them first.
#[test]
fn dropping_a_domain_runs_its_pending_callbacks() {
    const N: u64 = 5_000;
    for kind in Kind::CALLBACK_KINDS {
        let dom = kind.build();
        let n = Arc::new(AtomicU64::new(0));
        for _ in 0..N {
            let n = Arc::clone(&n);
            dom.call(move || {
                busy_for(Duration::from_micros(2));
                n.fetch_add(1, Ordering::SeqCst);
            });
        }
        let before = dom.callback_stats().invoked;
        within(
            HANG_GUARD,
            "dropping a domain with callbacks pending",
            move || drop(dom),
        );
        println!(
            "{}: {before} of {N} had run when the domain was dropped",
            kind.label()
        );
        assert_eq!(n.load(Ordering::SeqCst), N, "{}", kind.label());
    }
}

/// The same, when the callbacks' grace period is held up by a reader until just before the
/// drop: nothing has run yet when the drop begins.
#[test]
fn dropping_a_domain_right_after_its_reader_left_runs_everything() {
    let rcu = Arc::new(Rcu::builder().flavor(Flavor::Memb).name("drop").build());
    let n = Arc::new(AtomicU64::new(0));
    let reader = HeldReader::enter(Arc::clone(&rcu));
    for _ in 0..1000 {
        let n = Arc::clone(&n);
        rcu.call(move || {
            n.fetch_add(1, Ordering::SeqCst);
        });
    }
    assert_eq!(n.load(Ordering::SeqCst), 0);
    reader.leave();
    let rcu = Arc::into_inner(rcu).expect("the reader thread has exited");
    within(HANG_GUARD, "dropping the domain", move || drop(rcu));
    assert_eq!(n.load(Ordering::SeqCst), 1000);
}
