//! The atomics the grace-period handshake is written against.
//!
//! Under `--cfg loom` they are loom's model-checked atomics, so the handshake in
//! [`crate::handshake`] and the barrier count in [`crate::barrier_count`] are verified by exactly the code that runs in production
//! (the pattern of crossbeam-epoch's `primitive` module and tokio's `src/loom`).
//! Everything outside the handshake uses `std` directly and is not compiled under loom.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64};

pub(crate) use std::sync::atomic::Ordering;

/// Marks the branch that calls it as unlikely, so that the likely one is laid out straight
/// (`std::hint::cold_path` is newer than this crate's minimum Rust).
#[cold]
#[inline]
pub(crate) fn cold() {}
