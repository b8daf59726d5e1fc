//! # rcu-core: read-copy update for userspace Rust
//!
//! ## The problem
//!
//! A structure that is read constantly and changed rarely — a routing table, a configuration, the
//! list of hooks a plugin host calls — wants readers that never wait, never write shared memory
//! and never take a lock. A reader–writer lock fails the first two (its counter is a shared
//! cache line every reader writes: 15 ns for one reader on this machine kind, 190 ns for two).
//! Simply swapping a pointer fails in another way: the writer cannot know when the last reader of
//! the old version is done, so it can never free it.
//!
//! ## The mechanism
//!
//! RCU splits the update in two. The writer *publishes* the new version (one atomic store;
//! readers that start afterwards see it), then waits for a **grace period** — until every
//! read-side critical section that began before the publication has ended — and only then frees
//! the old version. Readers merely announce, in a word of their own, that they are inside a
//! section; the writer pays for the synchronisation. In this crate:
//!
//! * a reader's section is a [`ReadGuard`] from [`Rcu::read_lock`]; references loaded under it
//!   borrow it, so none can outlive the section (a compile-time error, not a convention);
//! * [`RcuCell`] is the protected pointer: [`RcuCell::load`] is `rcu_dereference`,
//!   [`RcuCell::publish`] is `rcu_assign_pointer` and returns the old value as a [`Retired`] that
//!   can only be freed after a grace period;
//! * [`Rcu::synchronize`] waits for a grace period. Concurrent callers share grace periods through
//!   [`GpSeq`] numbers, and [`Rcu::start_poll`] / [`Rcu::poll`] let a caller check for one
//!   without blocking.
//!
//! ```
//! use rcu_core::{Rcu, RcuCell};
//!
//! let config = RcuCell::new(String::from("v1"));
//!
//! // Reader: no lock, no shared write, no system call.
//! {
//!     let guard = Rcu::global().read_lock();
//!     assert_eq!(config.load(&guard), "v1");
//! }
//!
//! // Writer: publish, then reclaim after a grace period.
//! let old = config.publish(String::from("v2"));
//! let old: Box<String> = old.synchronize(); // every reader that could see "v1" is done
//! assert_eq!(*old, "v1");
//! ```
//!
//! ## Domains and flavors
//!
//! An [`Rcu`] is a domain: its own grace periods, its own registered threads. [`Rcu::global()`]
//! serves most programs; [`Rcu::new`] / [`Rcu::builder`] create independent ones (up to
//! [`MAX_DOMAINS`]), which never slow each other down. Each domain has a [`Flavor`], after
//! liburcu's:
//!
//! | flavor | reader enters/leaves | writer waits by | use when |
//! |---|---|---|---|
//! | [`Flavor::Memb`] (default) | one store + compiler fence | `membarrier()` (one IPI round per grace period) | almost always |
//! | [`Flavor::Mb`] | one store + full fence | a fence | membarrier unavailable (automatic fallback) |
//! | [`Flavor::Qsbr`] | a thread-local counter | threads announcing [`Rcu::quiescent_state`] | readers in a loop that can announce |
//! | [`Flavor::Busted`] | as memb | **not waiting** | only as the control that tests must catch |
//!
//! ## API map
//!
//! * Read side: [`Rcu::read_lock`], [`Rcu::try_read_lock`] (async-signal-safe), [`ReadGuard`],
//!   [`RcuCell::load`].
//! * Update side: [`RcuCell::publish`], [`Retired::synchronize`], [`Rcu::synchronize`],
//!   [`Rcu::synchronize_expedited`] (and [`Rcu::synchronize_expedited_report`], which says what
//!   it took: threads forced, readers boosted to real-time priority until their unlock).
//! * Callbacks: [`Rcu::call`], [`Rcu::call_raw`] (an embedded [`RcuHead`], no allocation),
//!   [`Rcu::barrier`], [`Rcu::barrier_until_quiet`], [`Rcu::barrier_expedited`] (returns an
//!   [`ExpediteReport`]); [`Srcu`] domains for readers that may sleep.
//! * Expedited work of your own: [`boost_current_thread`] (nice −10 until the guard drops).
//! * Polling: [`Rcu::get_state`], [`Rcu::start_poll`], [`Rcu::poll`], [`Rcu::cond_synchronize`].
//! * Threads: [`Rcu::register_thread`] / [`Rcu::unregister_thread`] (automatic on first use and
//!   at exit); qsbr: [`Rcu::quiescent_state`], [`Rcu::thread_offline`], [`Rcu::thread_online`],
//!   [`Rcu::offline`].
//! * Diagnostics: [`Rcu::stats`], stall warnings through `tracing` (target `rcu_core::stall`).
//!
//! ## Misuse is an error you can read
//!
//! `synchronize()` (or reclaiming a [`Retired`]) inside a read section of the same domain would
//! wait for itself: it panics, naming the domain. Reading on an offline qsbr thread, announcing a
//! quiescent state inside a section, unregistering inside a section: the same. A grace period
//! held up longer than the domain's stall timeout logs a warning naming each thread holding it,
//! its tid and how long, repeated with back-off. A thread that exits inside a section (a leaked
//! guard) is reported and its section ended.
//!
//! ## Costs
//!
//! Measured with criterion on the project's 2-vCPU machine kind, against liburcu 0.13 in the
//! same run (`docs/performance.md` has the tables and commands):
//!
//! * **Reads.** A memb read section is about 1.3–1.5 ns, 0.87–0.95× liburcu's inlined memb
//!   reader. A qsbr section is about 1.1 ns: the nesting word that lets expedited grace periods
//!   force quiescent states costs what liburcu's qsbr (0.3 ns, no code at all) does not pay.
//! * **Grace periods.** An idle memb grace period takes about 0.2 µs, half of liburcu's. With a
//!   busy reader it is one membarrier IPI round (4–5 µs here), where liburcu's memb pays two.
//! * **Posting.** `call_raw` is one CAS on the thread's own queue: 11–13 ns with its `malloc`.
//!   Under a sustained flood the worker's concurrent `free`s of the same arena dominate: 67–79
//!   ns, 1.8–2.1× liburcu's rate, and no more than a bare pipe without RCU whose other thread
//!   frees. Two threads post at 12–31 ns each, touching no shared line.
//! * **Barriers.** With nothing pending a barrier returns in about 50 ns; liburcu's takes 10 ms.
//! * **Expedited.** A reader preempted inside its section is boosted to real-time priority after
//!   50 µs and drops the boost at its unlock: a module unload held up by such a reader takes
//!   about 2 ms expedited against 300 ms normally.
//!
//! ## Design notes
//!
//! `docs/design/memory-ordering.md` gives the ordering argument (every fence in the source is
//! labelled A–E and names its pair); `docs/design/grace-periods.md` the grace-period engine and
//! where its ideas come from (liburcu, the Linux kernel, QEMU).

#[cfg(not(loom))]
mod barrier;
mod barrier_count;
#[cfg(not(loom))]
mod boost;
#[cfg(not(loom))]
mod callback;
#[cfg(not(loom))]
mod cbqueue;
#[cfg(not(loom))]
mod cbworker;
#[cfg(not(loom))]
mod cell;
#[cfg(not(loom))]
mod domain;
#[cfg(not(loom))]
mod expedited;
#[cfg(not(loom))]
mod foreign;
#[cfg(not(loom))]
mod fork;
#[cfg(not(loom))]
mod forklock;
#[cfg(not(loom))]
mod futex;
#[cfg(not(loom))]
mod gp;
#[cfg(not(loom))]
mod guard;
mod handshake;
#[cfg(not(loom))]
mod membarrier;
#[cfg(not(loom))]
mod ops;
#[cfg(not(loom))]
mod poll;
mod primitive;
#[cfg(not(loom))]
mod reader;
#[cfg(not(loom))]
mod registry;
#[cfg(not(loom))]
mod segcblist;
mod seq;
#[cfg(not(loom))]
mod service;
#[cfg(not(loom))]
mod srcu;
#[cfg(not(loom))]
mod stall;
#[cfg(not(loom))]
mod stats;

#[cfg(not(loom))]
pub use barrier::{BarrierError, ExpediteReport};
#[cfg(not(loom))]
pub use boost::{boost_current_thread, BoostResult, Boosted, BOOST_NICE};
#[cfg(not(loom))]
pub use callback::{in_callback, InvokeHook, RcuCallback, RcuHead};
#[cfg(not(loom))]
pub use cbqueue::CallbackStats;
#[cfg(not(loom))]
pub use cell::{RcuCell, Retired};
#[cfg(not(loom))]
pub use domain::{DomainError, Flavor, Rcu, RcuBuilder, DEFAULT_STALL_TIMEOUT};
#[cfg(not(loom))]
pub use expedited::forcing_signal;
#[cfg(not(loom))]
pub use foreign::ForeignReader;
#[cfg(not(loom))]
pub use guard::ReadGuard;
#[cfg(not(loom))]
pub use poll::PollState;
#[cfg(not(loom))]
pub use registry::MAX_DOMAINS;
pub use seq::GpSeq;
#[cfg(not(loom))]
pub use service::service_threads;
#[cfg(not(loom))]
pub use srcu::{Srcu, SrcuGuard, SrcuToken};
#[cfg(not(loom))]
pub use stats::RcuStats;
