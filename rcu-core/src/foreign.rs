//! Readers outside Rust: the memb read side laid open, so that code in another language (a C
//! module's inline `read_lock`) enters and leaves sections as cheaply as a Rust guard does.
//!
//! A C module reached rcu-core only through a call per `read_lock` and `read_unlock` of the
//! host's API table, each resolving its thread's reader record again: 10 ns a pair against
//! 2 ns for a Rust guard. liburcu's answer is to inline the read side in its header, against
//! a per-thread reader record the library owns (`urcu/static/urcu-memb.h`); this is the same
//! for rcu-core's memb and mb flavors: [`Rcu::foreign_reader`] hands out the addresses of the
//! calling thread's reader word, the domain's grace-period counter and its sleeping-writer
//! flag, and the steps below are the whole protocol — those of `handshake::lock`/`unlock`,
//! fence for fence (docs/design/memory-ordering.md names them):
//!
//! * **lock**: `w = word (relaxed)`; if `w & nest_mask == 0`: `word = gp_ctr (acquire load
//!   R), relaxed store`, then fence B (a compiler fence; a full fence if `full_fence`);
//!   otherwise `word = w + 1` (relaxed).
//! * **unlock**: `w = word (relaxed)`; if `w & nest_mask == 1`: `word = 0` (release store C),
//!   then fence D (as B), then if `sleepers != 0` (relaxed) call [`Rcu::foreign_reader_left`];
//!   if `w & nest_mask == 0` the thread is not inside a section (misuse: change nothing);
//!   otherwise `word = w - 1`.
//!
//! The record is the calling thread's and lives until the thread unregisters from the domain
//! (at its exit, or `unregister_thread`): a caller that caches the addresses per thread must
//! not use them after either. qsbr domains have no such reader (their sections bracket going
//! online and offline, and a forced quiescent state is reported at the outermost unlock):
//! `foreign_reader` returns None for them.

use crate::domain::{Flavor, Rcu};
use std::sync::atomic::{AtomicU32, AtomicU64};

/// The calling thread's memb reader, for inline use by foreign code (see the module
/// documentation for the protocol).
#[derive(Clone, Copy, Debug)]
pub struct ForeignReader {
    /// The thread's reader word.
    pub word: *const AtomicU64,
    /// The domain's grace-period counter.
    pub gp_ctr: *const AtomicU64,
    /// Nonzero while a writer sleeps waiting for readers (or a reader is boosted).
    pub sleepers: *const AtomicU32,
    /// The nesting bits of a reader word.
    pub nest_mask: u64,
    /// Fences B and D are full fences (the mb flavor: no `membarrier` on this system).
    pub full_fence: bool,
}

impl Rcu {
    /// The calling thread's reader of this domain, registering the thread if needed; None for
    /// a qsbr domain.
    pub fn foreign_reader(&self) -> Option<ForeignReader> {
        if self.flavor() == Flavor::Qsbr {
            return None;
        }
        let r = match crate::registry::lookup(self.slot()) {
            Some(r) => r,
            None => crate::registry::register(&self.shared),
        };
        // SAFETY: the record reachable from the calling thread's slot lives until the thread
        // unregisters; we only take addresses.
        let r = unsafe { r.as_ref() };
        Some(ForeignReader {
            word: &r.word,
            gp_ctr: &self.shared.gp.ctr,
            sleepers: &self.shared.gp.sleepers,
            nest_mask: crate::handshake::NEST_MASK,
            full_fence: self.flavor() == Flavor::Mb,
        })
    }

    /// The slow path of a foreign outermost unlock that found `sleepers` nonzero: wake the
    /// writers, and drop a priority boost this thread was given.
    pub fn foreign_reader_left(&self) {
        if let Some(r) = crate::registry::lookup(self.slot()) {
            // SAFETY: as in `foreign_reader`.
            self.shared.gp.reader_left_by(unsafe { r.as_ref() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    /// The protocol above, written out as a C module would, holds a grace period exactly as a
    /// guard does; the control (a "lock" that skips the word store) does not.
    #[test]
    fn the_documented_protocol_holds_a_grace_period() {
        for honest in [true, false] {
            let rcu = Arc::new(Rcu::builder().flavor(Flavor::Memb).name("foreign").build());
            let (tx, rx) = std::sync::mpsc::channel();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let reader = {
                let rcu = Arc::clone(&rcu);
                std::thread::spawn(move || {
                    let f = rcu.foreign_reader().unwrap();
                    // SAFETY: this thread's record, alive while it is registered.
                    let (word, gp) = unsafe { (&*f.word, &*f.gp_ctr) };
                    let w = word.load(Ordering::Relaxed);
                    assert_eq!(w & f.nest_mask, 0);
                    if honest {
                        word.store(gp.load(Ordering::Acquire), Ordering::Relaxed);
                    }
                    std::sync::atomic::compiler_fence(Ordering::SeqCst);
                    assert_eq!(rcu.in_read_section(), honest);
                    tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    if honest {
                        word.store(0, Ordering::Release);
                        std::sync::atomic::compiler_fence(Ordering::SeqCst);
                        // SAFETY: as above.
                        if unsafe { &*f.sleepers }.load(Ordering::Relaxed) != 0 {
                            rcu.foreign_reader_left();
                        }
                    }
                })
            };
            rx.recv().unwrap();
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let writer = {
                let (rcu, done) = (Arc::clone(&rcu), Arc::clone(&done));
                std::thread::spawn(move || {
                    rcu.synchronize();
                    done.store(true, Ordering::SeqCst);
                })
            };
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(
                done.load(Ordering::SeqCst),
                !honest,
                "honest={honest}: the grace period {} the foreign section",
                if honest {
                    "ended inside"
                } else {
                    "waited for a section that was not entered in"
                }
            );
            go_tx.send(()).unwrap();
            reader.join().unwrap();
            writer.join().unwrap();
        }
    }

    #[test]
    fn qsbr_has_no_foreign_reader() {
        assert!(Rcu::new(Flavor::Qsbr).foreign_reader().is_none());
    }
}
