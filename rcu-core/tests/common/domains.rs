//! One interface over every kind of domain that has callbacks: `Rcu` of each flavor, and
//! `Srcu` — liburcu's `rcu_flavor_struct`, rcutorture's `rcu_torture_ops` — so that a torture
//! harness is written once and run on each kind (and on `Flavor::Busted`, as its control).

use super::HeldReader;
use rcu_core::{BarrierError, CallbackStats, ExpediteReport, Flavor, Rcu, Srcu};
use std::sync::Arc;

/// Which domain to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An `Rcu` domain of this flavor.
    Rcu(Flavor),
    /// A memb domain forced onto its fence-based fallback (it runs as mb).
    MembFallback,
    /// An `Srcu` domain.
    Srcu,
}

impl Kind {
    /// The three real `Rcu` flavors and SRCU: the kinds every callback test runs on.
    pub(crate) const CALLBACK_KINDS: [Kind; 4] = [
        Kind::Rcu(Flavor::Memb),
        Kind::Rcu(Flavor::Mb),
        Kind::Rcu(Flavor::Qsbr),
        Kind::Srcu,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Rcu(f) => f.name(),
            Kind::MembFallback => "memb (forced fallback)",
            Kind::Srcu => "srcu",
        }
    }

    pub(crate) fn build(self) -> Domain {
        let name = format!("test-{}", self.label());
        match self {
            Kind::Rcu(flavor) => Domain::Rcu(Rcu::builder().flavor(flavor).name(name).build()),
            Kind::MembFallback => {
                let rcu = Rcu::builder()
                    .flavor(Flavor::Memb)
                    .force_fallback(true)
                    .name(name)
                    .build();
                assert_eq!(rcu.flavor(), Flavor::Mb, "the fallback was not taken");
                Domain::Rcu(rcu)
            }
            Kind::Srcu => Domain::Srcu(Srcu::new(&name)),
        }
    }
}

/// A domain of either kind.
#[derive(Debug)]
pub(crate) enum Domain {
    Rcu(Rcu),
    Srcu(Srcu),
}

impl Domain {
    pub(crate) fn is_srcu(&self) -> bool {
        matches!(self, Domain::Srcu(_))
    }

    /// Whether a reader may block inside its section without holding up unrelated domains
    /// (SRCU's point).
    pub(crate) fn sleepable(&self) -> bool {
        self.is_srcu()
    }

    pub(crate) fn name(&self) -> &str {
        match self {
            Domain::Rcu(r) => r.name(),
            Domain::Srcu(s) => s.name(),
        }
    }

    /// Run `f` inside a read-side critical section.
    pub(crate) fn read<R>(&self, f: impl FnOnce() -> R) -> R {
        match self {
            Domain::Rcu(r) => {
                let _g = r.read_lock();
                f()
            }
            Domain::Srcu(s) => {
                let _g = s.read_lock();
                f()
            }
        }
    }

    /// qsbr readers must announce quiescent states; a no-op for every other kind.
    pub(crate) fn quiescent_state(&self) {
        if let Domain::Rcu(r) = self {
            r.quiescent_state();
        }
    }

    pub(crate) fn synchronize(&self) {
        match self {
            Domain::Rcu(r) => r.synchronize(),
            Domain::Srcu(s) => s.synchronize(),
        }
    }

    pub(crate) fn synchronize_expedited(&self) {
        match self {
            Domain::Rcu(r) => r.synchronize_expedited(),
            Domain::Srcu(s) => s.synchronize_expedited(),
        }
    }

    pub(crate) fn call<F: FnOnce() + Send + 'static>(&self, f: F) {
        match self {
            Domain::Rcu(r) => r.call(f),
            Domain::Srcu(s) => s.call(f),
        }
    }

    pub(crate) fn barrier(&self) -> Result<(), BarrierError> {
        match self {
            Domain::Rcu(r) => r.barrier(),
            Domain::Srcu(s) => s.barrier(),
        }
    }

    pub(crate) fn barrier_until_quiet(&self) -> Result<u32, BarrierError> {
        match self {
            Domain::Rcu(r) => r.barrier_until_quiet(),
            Domain::Srcu(s) => s.barrier_until_quiet(),
        }
    }

    pub(crate) fn barrier_expedited(&self) -> Result<ExpediteReport, BarrierError> {
        match self {
            Domain::Rcu(r) => r.barrier_expedited(),
            Domain::Srcu(s) => s.barrier_expedited(),
        }
    }

    pub(crate) fn callback_stats(&self) -> CallbackStats {
        match self {
            Domain::Rcu(r) => r.callback_stats(),
            Domain::Srcu(s) => s.callback_stats(),
        }
    }

    /// Grace periods completed (normal and expedited) by this domain.
    pub(crate) fn grace_periods(&self) -> u64 {
        match self {
            Domain::Rcu(r) => {
                let s = r.stats();
                s.grace_periods + s.expedited_grace_periods
            }
            Domain::Srcu(s) => s.grace_periods(),
        }
    }

    /// A thread inside a read-side section of this domain until told to leave.
    pub(crate) fn hold_reader(self: &Arc<Self>) -> HeldReader {
        let dom = Arc::clone(self);
        HeldReader::hold(move |inside| dom.read(inside))
    }
}
