//! Shared helpers for the workspace's end-to-end tests and comparative benchmarks.
//!
//! * [`liburcu`] (only with `cfg(have_liburcu)`, set by `build.rs` when pkg-config finds
//!   liburcu 0.13 and `RCUMOD_NO_LIBURCU` is not set): safe wrappers over the C shim
//!   `csrc/urcu_shim.c`, whose measurement loops run entirely in C.
//! * [`modules`]: building sample modules (Rust and C) and child-process scenarios.
//! * [`posts`]: liburcu's callback shape (an item with an embedded head) against rcu-core.
//! * [`reads`]: the same loops written against rcu-core, a busy-reader thread, and a thread
//!   that holds a read section until released.
//! * [`sched`]: pinning, nice values and thread CPU time, for preempted-reader scenarios.

#[cfg(have_liburcu)]
pub mod liburcu;
#[cfg(have_liburcu)]
pub mod liburcu_call;
pub mod modules;
pub mod posts;
pub mod reads;
pub mod sched;

/// Whether this build can compare against liburcu (see `build.rs`).
pub const HAVE_LIBURCU: bool = cfg!(have_liburcu);
