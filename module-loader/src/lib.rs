//! # module-loader: the rcumod host
//!
//! ## The problem
//!
//! A plugin that posts RCU callbacks cannot simply be `dlclose`d. `synchronize_rcu()` waits for
//! readers, not for callbacks: a callback still queued when the plugin's code is unmapped jumps
//! into nothing and the process dies — later, on another thread, far from the cause. "RCU and
//! Unloadable Modules" prescribes the cure (stop posting → `rcu_barrier()` → unload), but leaves
//! it to every module author to remember. And `dlclose` returning 0 proves nothing: NODELETE
//! objects, GNU_UNIQUE symbols and pending thread-local destructors all keep the code mapped.
//!
//! ## The mechanism
//!
//! The [`Host`] loads modules that talk to it only through a versioned C-ABI table
//! (`rcumod_abi::HostApi`), so it *sees* everything that could run module code later: every
//! callback (counted per owner module and checked against the module's code ranges), every
//! timer and thread (it owns them), every hook (it publishes them under RCU). Unloading is the
//! host's job, in a fixed order that the types enforce ([`unload`] module): unpublish hooks →
//! stop posting (timers, threads, `exit`, posting gate) → barrier every domain the module used
//! until nothing is pending → verify → `dlclose` → verify the mapping is gone. The answer is
//! [`UnloadOutcome::Unloaded`] or [`UnloadOutcome::Pinned`] with the reason.
//!
//! Module code can also hand libc code for later by itself — a thread, a signal handler, a key
//! destructor, a timer, an exit handler. The host rewrites the module's GOT slots for those
//! imports to wrappers that record them (`got.rs`, `handoffs.rs`), undoes them after the
//! module's `exit`, and before `dlclose` scans every thread that could be running module code
//! (`threadscan.rs`): a thread still in it pins the module. `init` and `exit` run on host
//! threads of their own, `exit` with a deadline (`entry.rs`).
//!
//! ```no_run
//! use module_loader::{Host, UnloadMode, UnloadOutcome};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host = Host::new()?;
//! let m = host.load("target/debug/librcu_list.so".as_ref(), &[("count".into(), "64".into())])?;
//! println!("loaded {} ({} bytes)", m.name, m.size);
//! let sum = host.call_hook("rcu_list.sum", 0); // runs module code under RCU
//! let report = host.unload(&m.name, UnloadMode::Expedited)?;
//! assert_eq!(report.outcome, UnloadOutcome::Unloaded);
//! # let _ = sum; Ok(()) }
//! ```
//!
//! ## API map
//!
//! * [`Host`], [`HostBuilder`]: `load` (insmod), `unload` (rmmod, [`UnloadMode::Normal`] or
//!   [`UnloadMode::Expedited`]), `reload` (hot reload), `list` (lsmod), `inspect` (modinfo),
//!   `call_hook`, `hook` (a [`HookHandle`] resolved once for hot callers), `subscribe`
//!   ([`HostEvent`]s).
//! * [`inspect`]: reading a module file without running it.
//! * [`UnloadReport`]: every step's duration and counts; [`CallbackCounts`] per module.
//! * Errors: [`LoadError`], [`UnloadError`], [`ReloadError`], [`inspect::InspectError`] — one
//!   variant per step, worded like kmod's.
//!
//! ## What a module's calls cost
//!
//! The per-call paths of the host API take no lock, allocate nothing and write no counter
//! another thread writes: the context is borrowed (`hostapi.rs`), domains are resolved at load,
//! the posting gate is a read section (`gate.rs`), callback counts are per-thread (`percpu.rs`),
//! and a module's own head is posted as it is, counted when the domain invokes it
//! (`owners.rs`). C modules read inline (`rcumod_reader_lock` in `rcumod.h`, ABI 1.1, rcu-core's
//! `ForeignReader`). On the 2-vCPU machine of docs/performance.md ("Module boundary"): a C
//! module's memb read pair 1.4 ns (rcu-core's own: 1.7 ns), through the API table 10 ns;
//! `call_rcu` with an embedded head 24–28 ns; a hook by name 9 ns, by handle 4.6 ns.

mod domains;
mod entry;
mod error;
mod gate;
mod got;
mod handoffs;
mod hooks;
mod host;
mod hostapi;
pub mod inspect;
mod library;
mod owners;
mod percpu;
mod procmaps;
mod runtime;
mod signals;
mod threadscan;
pub mod unload;
mod unwind;

pub use error::{LoadError, UnloadError};
pub use hooks::HookHandle;
pub use host::{parse_params, Host, HostBuilder, HostEvent, ModuleInfo, ModuleState, ReloadError};
pub use library::CodeRange;
pub use runtime::{CallbackCounts, ModuleRuntime};
pub use signals::signal_stats;
pub use unload::{ExpediteSummary, Step, StepTiming, UnloadMode, UnloadOutcome, UnloadReport};
