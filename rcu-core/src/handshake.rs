//! The grace-period handshake: what a reader publishes, what a writer waits for.
//!
//! Each registered thread has one 64-bit *reader word* per domain; each domain has one 64-bit
//! *grace-period counter*. Both hold a grace-period number in their high bits and a nesting
//! count in their low [`NEST_BITS`] bits (the counter's count is always 1, so a reader copies it
//! with one store — liburcu's `URCU_GP_COUNT` trick).
//!
//! * memb / mb reader: the outermost `lock` copies the counter into the word (number + count 1),
//!   nested locks add one, the outermost `unlock` stores 0. One word, one store per transition:
//!   a signal handler that interrupts the read-modify-write and runs its own reader restores the
//!   word before returning, so readers nest correctly across signal handlers.
//! * qsbr reader: the word is the counter value at the thread's last quiescent state, or 0 while
//!   the thread is offline. Read-side sections do not touch it.
//! * writer: [`advance`] the counter to a new number `T` (the grace period's target), execute
//!   Fence A, then wait until every reader word is not [`blocks`]`(word, T)`: either 0, or
//!   carrying a number ≥ `T` (the reader began, or passed a quiescent state, after the advance).
//!
//! Why one phase is enough (liburcu's memb needs two parity flips because its reader word holds
//! a single phase bit): the words here carry the full number, so a reader that sampled an old
//! counter is recognisably old forever, however long it was preempted between sampling and
//! storing. A 48-bit number wraps after 2^47 grace periods (nine years at 500k GP/s) at the
//! earliest; comparisons are wrapping, so only a reader stalled for 2^47 grace periods could be
//! misjudged.
//!
//! Memory ordering (docs/design/memory-ordering.md has the full argument). The labels are used at
//! every fence in this crate:
//!
//! * **Fence A** (writer, after `advance`, before scanning): `membarrier()` for memb, a SeqCst
//!   fence otherwise. Pairs with **Fence B** (reader, after storing its word on entry: a compiler
//!   fence for memb, a SeqCst fence for mb and qsbr-online). Either the writer sees the reader's
//!   word, or the reader's critical section sees every update made before Fence A.
//! * **Release/Acquire R**: the counter is advanced with Release and sampled by readers with
//!   Acquire, so a reader that sampled the new number sees the updates made before the advance
//!   and need not be waited for.
//! * **Release/Acquire C**: readers leave (or announce a quiescent state) with a Release store and
//!   the writer scans with Acquire loads, so a critical section that the writer saw end
//!   happens-before the writer's return (and its free). This replaces liburcu's second
//!   membarrier per grace period: memb pays one IPI round, not two.
//! * **Fence D** (reader, after its leaving store, before reading the writer's sleep flag) pairs
//!   with **Fence E** (writer, after raising the sleep flag, before its last re-scan): either the
//!   writer's re-scan sees the reader gone, or the reader sees the flag and wakes the writer.

use crate::primitive::{fence, AtomicU64, Ordering};

/// Bits of nesting count at the bottom of reader words and the counter.
pub(crate) const NEST_BITS: u32 = 16;
/// Mask of the nesting count.
pub(crate) const NEST_MASK: u64 = (1 << NEST_BITS) - 1;
/// One grace period, as a counter increment.
pub(crate) const GP_INC: u64 = 1 << NEST_BITS;
/// Initial counter value: grace period 1, nesting count 1.
pub(crate) const GP_INIT: u64 = GP_INC | 1;

/// Does a reader whose word is `word` hold up the grace period whose target is `target`?
#[inline]
pub(crate) fn blocks(word: u64, target: u64) -> bool {
    word & NEST_MASK != 0 && (word.wrapping_sub(target) as i64) < 0
}

/// Fence B / Fence D on the reader side. memb relies on the writer's membarrier, so a compiler
/// fence suffices; loom cannot express membarrier and models memb as mb (see tests below).
#[inline(always)]
#[cfg_attr(loom, allow(unused_variables))]
fn reader_fence(full: bool) {
    #[cfg(not(loom))]
    if !full {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        return;
    }
    // mb is the fallback: keep memb's path straight (the fence is costly anyway).
    crate::primitive::cold();
    fence(Ordering::SeqCst);
}

/// Enter a read-side critical section (memb, mb): see the module documentation.
#[inline(always)]
pub(crate) fn lock(word: &AtomicU64, gp: &AtomicU64, full: bool) {
    let tmp = word.load(Ordering::Relaxed);
    if tmp & NEST_MASK == 0 {
        // Acquire R: pairs with the Release in `advance`.
        word.store(gp.load(Ordering::Acquire), Ordering::Relaxed);
        // Fence B: pairs with Fence A in `Shared::drive` (gp.rs).
        reader_fence(full);
    } else {
        // Nesting is the rare case: lay the outermost section out straight.
        crate::primitive::cold();
        if tmp & NEST_MASK == NEST_MASK {
            nesting_overflow();
        }
        word.store(tmp + 1, Ordering::Relaxed);
    }
}

/// Leave a read-side critical section (memb, mb). Returns true when this was the outermost
/// section; the caller then checks whether a writer sleeps (Fence D has been executed).
#[inline(always)]
pub(crate) fn unlock(word: &AtomicU64, full: bool) -> bool {
    let tmp = word.load(Ordering::Relaxed);
    if tmp & NEST_MASK == 1 {
        // Release C: the section's loads happen-before a writer's Acquire scan that sees 0.
        word.store(0, Ordering::Release);
        // Fence D: pairs with Fence E in `Shared::wait_for_readers` (gp.rs).
        reader_fence(full);
        true
    } else {
        crate::primitive::cold();
        debug_assert!(tmp & NEST_MASK > 1, "unbalanced read_unlock");
        word.store(tmp - 1, Ordering::Relaxed);
        false
    }
}

/// Is a memb/mb reader word inside a critical section?
#[inline(always)]
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn in_section(word: u64) -> bool {
    word & NEST_MASK != 0
}

/// qsbr: announce a quiescent state. Returns false on the fast path (no grace period was
/// started since the last announcement), true if the word changed (Fence D executed).
#[inline(always)]
pub(crate) fn qsbr_quiescent(word: &AtomicU64, gp: &AtomicU64) -> bool {
    // Acquire R: pairs with the Release in `advance`.
    let g = gp.load(Ordering::Acquire);
    if word.load(Ordering::Relaxed) == g {
        return false;
    }
    // Release C: everything this thread read before the quiescent state happens-before a
    // writer's scan that sees the new number.
    word.store(g, Ordering::Release);
    // Fence D: pairs with Fence E.
    fence(Ordering::SeqCst);
    true
}

/// qsbr: come online (the word becomes the current counter).
#[inline]
pub(crate) fn qsbr_online(word: &AtomicU64, gp: &AtomicU64) {
    word.store(gp.load(Ordering::Acquire), Ordering::Relaxed);
    // Fence B: pairs with Fence A. A writer that did not see us online must have made its
    // updates visible to the reads we are about to make.
    fence(Ordering::SeqCst);
}

/// qsbr: go offline (the word becomes 0). Fence D executed.
#[inline]
pub(crate) fn qsbr_offline(word: &AtomicU64) {
    // Release C.
    word.store(0, Ordering::Release);
    // Fence D: pairs with Fence E.
    fence(Ordering::SeqCst);
}

/// Writer: start a new grace period and return its target.
#[inline]
pub(crate) fn advance(gp: &AtomicU64) -> u64 {
    // Release R: pairs with the readers' Acquire sampling. AcqRel because concurrent drivers
    // (normal and expedited) advance the same counter.
    gp.fetch_add(GP_INC, Ordering::AcqRel).wrapping_add(GP_INC)
}

/// Writer: Acquire C load of a reader word during the scan.
#[inline]
pub(crate) fn scan(word: &AtomicU64) -> u64 {
    word.load(Ordering::Acquire)
}

#[cold]
#[inline(never)]
fn nesting_overflow() -> ! {
    panic!("rcu-core: read-side critical sections nested more than {NEST_MASK} deep")
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn nesting_and_blocking() {
        let gp = AtomicU64::new(GP_INIT);
        let w = AtomicU64::new(0);
        lock(&w, &gp, true);
        lock(&w, &gp, true);
        let target = advance(&gp);
        assert!(blocks(w.load(Ordering::Relaxed), target));
        assert!(!unlock(&w, true), "inner unlock is not outermost");
        assert!(blocks(w.load(Ordering::Relaxed), target));
        assert!(unlock(&w, true));
        assert!(!blocks(w.load(Ordering::Relaxed), target));
        // A reader that starts after the advance does not hold the grace period up.
        lock(&w, &gp, true);
        assert!(!blocks(w.load(Ordering::Relaxed), target));
        unlock(&w, true);
    }

    #[test]
    fn qsbr_words() {
        let gp = AtomicU64::new(GP_INIT);
        let w = AtomicU64::new(0);
        qsbr_online(&w, &gp);
        let target = advance(&gp);
        assert!(blocks(w.load(Ordering::Relaxed), target));
        assert!(qsbr_quiescent(&w, &gp));
        assert!(
            !qsbr_quiescent(&w, &gp),
            "second announcement takes the fast path"
        );
        assert!(!blocks(w.load(Ordering::Relaxed), target));
        qsbr_offline(&w);
        assert!(!blocks(w.load(Ordering::Relaxed), advance(&gp)));
    }
}

/// loom models of the handshake. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p rcu-core --release --lib handshake` (see .ci/run).
///
/// What loom can express: the counter flavors with SeqCst fences on both sides (mb), qsbr, and
/// a writer that does not wait (the busted control). What it cannot: `membarrier()`, a fence the
/// writer executes on the readers' behalf; memb is modelled by its symmetric equivalent (mb),
/// which is exactly the guarantee membarrier documents (a full barrier on every running thread,
/// ordered with the caller's). loom also does not explore load buffering, and bounds preemptions
/// (LOOM_MAX_PREEMPTIONS), so the models are backed by the torture tests.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::atomic::{AtomicBool, AtomicUsize};
    use loom::sync::Arc;
    use loom::thread;

    struct World {
        gp: AtomicU64,
        word: AtomicU64,
        /// Index of the published version: 0 (old) or 1 (new).
        published: AtomicUsize,
        /// The old version's memory has been freed.
        old_freed: AtomicBool,
    }

    fn world() -> Arc<World> {
        Arc::new(World {
            gp: AtomicU64::new(GP_INIT),
            word: AtomicU64::new(0),
            published: AtomicUsize::new(0),
            old_freed: AtomicBool::new(false),
        })
    }

    /// Writer: unpublish the old version, wait for a grace period (unless `busted`), free.
    fn writer(w: &World, busted: bool) {
        w.published.store(1, Ordering::Release);
        let target = advance(&w.gp);
        fence(Ordering::SeqCst); // Fence A (mb, and memb's symmetric model)
        if !busted {
            while blocks(scan(&w.word), target) {
                thread::yield_now();
            }
        }
        w.old_freed.store(true, Ordering::Relaxed);
    }

    /// A reader section that dereferences whatever is published; the old version must not
    /// have been freed while it is in use.
    fn read_once(w: &World) {
        if w.published.load(Ordering::Acquire) == 0 {
            assert!(
                !w.old_freed.load(Ordering::Relaxed),
                "reader used the old version after it was freed"
            );
        }
    }

    fn counter_model(busted: bool) {
        loom::model(move || {
            let w = world();
            let r = {
                let w = w.clone();
                thread::spawn(move || {
                    for _ in 0..2 {
                        lock(&w.word, &w.gp, true);
                        read_once(&w);
                        lock(&w.word, &w.gp, true); // nested
                        read_once(&w);
                        unlock(&w.word, true);
                        read_once(&w);
                        unlock(&w.word, true);
                    }
                })
            };
            writer(&w, busted);
            r.join().unwrap();
        });
    }

    #[test]
    fn counter_flavor_grace_period() {
        counter_model(false);
    }

    #[test]
    fn qsbr_grace_period() {
        loom::model(|| {
            let w = world();
            qsbr_online(&w.word, &w.gp);
            let r = {
                let w = w.clone();
                thread::spawn(move || {
                    read_once(&w);
                    qsbr_quiescent(&w.word, &w.gp);
                    read_once(&w);
                    qsbr_offline(&w.word);
                })
            };
            writer(&w, false);
            r.join().unwrap();
        });
    }

    /// The control: a writer that does not wait must be caught by the same model.
    #[test]
    fn busted_writer_is_caught() {
        let caught = std::panic::catch_unwind(|| counter_model(true)).is_err();
        assert!(
            caught,
            "the loom model failed to catch a writer that does not wait"
        );
    }
}
