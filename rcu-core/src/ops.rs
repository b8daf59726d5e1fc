//! `DomainOps`: what the callback engine and the grace-period worker need from a domain.
//!
//! Both [`Rcu`](crate::Rcu) and [`Srcu`](crate::Srcu) domains own a callback engine
//! ([`crate::cbqueue`]) and a grace-period worker ([`crate::poll`]); the engine asks its
//! domain for grace-period snapshots, completions and (expedited) grace periods through this
//! trait, so `call`, `barrier` and `barrier_expedited` are written once for every flavor —
//! liburcu's `rcu_flavor_struct`, the kernel's `rcu_torture_ops`.

use crate::cbqueue::CbEngine;
use crate::domain::Shared;
use crate::gp::{DriveReport, Mode};
use crate::poll::GpWorker;
use crate::seq::GpSeq;
use std::sync::Arc;

pub(crate) trait DomainOps: Send + Sync + 'static {
    /// The domain's name, for diagnostics and thread names.
    fn name(&self) -> &str;
    /// The snapshot a callback enqueued before this call needs.
    fn snap(&self) -> GpSeq;
    /// The highest completed grace period.
    fn completed(&self) -> GpSeq;
    /// Wait until grace period `snap` completes, driving one if needed.
    fn drive(&self, snap: GpSeq, mode: Mode) -> DriveReport;
    /// The domain's grace-period worker.
    fn gp_worker(&self) -> &GpWorker;
    /// The domain's callback engine.
    fn engine(&self) -> &CbEngine;
    /// A strong reference to this domain's state, for worker threads; None while it is being
    /// torn down.
    fn arc(&self) -> Option<Arc<dyn DomainOps>>;
    /// The reader side of an `Rcu` domain (None for SRCU, whose readers do not register).
    fn rcu(&self) -> Option<&Shared> {
        None
    }
    /// fork(): take the short-held locks (fork.rs), in the global lock order.
    fn fork_prepare(&self, held: &mut Vec<Held>);
    /// fork(), in the child: forget the threads that did not survive.
    fn fork_child(&self);
}

/// A lock guard held across fork() (lifetime erased; see fork.rs).
pub(crate) type Held = Box<dyn std::any::Any>;
