//! Counters written by many threads and read rarely: each thread adds into a slot of its own,
//! and a read sums the slots.
//!
//! A module's `posted` count is bumped by every thread that posts one of its callbacks, and its
//! `invoked` count by every thread that runs one. As one atomic word, each bump is a
//! read-modify-write on a cache line every such thread shares: the line moves between cores at
//! every post, and the module API got slower as threads were added. The kernel counts module
//! references per CPU (`module_refcount` sums `mod->refptr` over CPUs, learned from
//! kernel/module/main.c); userspace has no cheap "current CPU" with preemption off, so the slot
//! here is the thread's: a small index it holds for its life, returned at its exit.
//!
//! A thread that owns its index is the only writer of its slot in every counter, so a bump is
//! a load and a store, no atomic read-modify-write. Threads past [`SLOTS`] share one
//! overflow slot with `fetch_add`: still exact, merely slower. Sums are exact once the writers
//! are done (the unload protocol reads them after the posting gate closed and the barrier
//! returned, which order every write before the read).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Threads that get a slot of their own.
pub(crate) const SLOTS: usize = 32;

/// Which indices are taken (bit i = index i).
static TAKEN: AtomicU64 = AtomicU64::new(0);

/// The calling thread's index, taken at its first bump and given back when it exits.
struct Index(Cell<Option<usize>>);

impl Drop for Index {
    fn drop(&mut self) {
        if let Some(i) = self.0.get() {
            // Release pairs with the Acquire of the next taker: our last stores to slot `i`
            // in every counter happen before its first loads of them.
            TAKEN.fetch_and(!(1 << i), Ordering::Release);
        }
    }
}

thread_local! {
    static INDEX: Index = const { Index(Cell::new(None)) };
}

/// The calling thread's slot index, or None (no free index, or the thread is exiting).
fn index() -> Option<usize> {
    INDEX
        .try_with(|ix| {
            if let Some(i) = ix.0.get() {
                return Some(i);
            }
            let mut taken = TAKEN.load(Ordering::Relaxed);
            loop {
                let free = (!taken).trailing_zeros() as usize;
                if free >= SLOTS {
                    return None;
                }
                // Acquire pairs with the Release of the slot's previous owner at its exit.
                match TAKEN.compare_exchange_weak(
                    taken,
                    taken | 1 << free,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        ix.0.set(Some(free));
                        return Some(free);
                    }
                    Err(now) => taken = now,
                }
            }
        })
        .ok()
        .flatten()
}

/// A value alone on its cache line (two lines: adjacent-line prefetch pairs them on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Line(AtomicU64);

/// A counter summed over per-thread slots.
#[derive(Debug)]
pub(crate) struct Counter {
    slots: Box<[Line; SLOTS]>,
    overflow: Line,
}

impl Default for Counter {
    fn default() -> Self {
        Counter {
            slots: Box::new(std::array::from_fn(|_| Line::default())),
            overflow: Line::default(),
        }
    }
}

impl Counter {
    /// Add `n` (from any thread).
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        match index() {
            Some(i) => {
                // Only this thread writes slot `i` (it holds index `i`): no read-modify-write.
                let c = &self.slots[i].0;
                c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
            }
            None => {
                self.overflow.0.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// The sum of every slot. Exact when no thread is adding (see the module documentation).
    pub(crate) fn sum(&self) -> u64 {
        self.slots
            .iter()
            .chain(std::iter::once(&self.overflow))
            .fold(0u64, |s, l| s.wrapping_add(l.0.load(Ordering::Acquire)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// More threads than slots, each adding while others exit and their indices are reused:
    /// the sum is exact. The control: the same bumps as unsynchronised load+store on one shared
    /// word lose counts (shown to be a real race, not a vacuous check).
    #[test]
    fn sums_are_exact_with_more_threads_than_slots() {
        let c = Arc::new(Counter::default());
        let threads = SLOTS * 2 + 3;
        let per = 20_000u64;
        std::thread::scope(|s| {
            for _ in 0..threads {
                let c = Arc::clone(&c);
                s.spawn(move || {
                    for _ in 0..per {
                        c.add(1);
                    }
                });
            }
        });
        assert_eq!(c.sum(), threads as u64 * per);

        let shared = AtomicU64::new(0);
        let lost = (0..20).any(|_| {
            shared.store(0, Ordering::Relaxed);
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..200_000 {
                            let v = shared.load(Ordering::Relaxed);
                            shared.store(v + 1, Ordering::Relaxed);
                        }
                    });
                }
            });
            shared.load(Ordering::Relaxed) != 400_000
        });
        assert!(
            lost,
            "the control never lost a count: the race it stands for was not exercised"
        );
    }
}
