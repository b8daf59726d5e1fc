//! The RCU domains a host exposes to its modules, by the number a module names them with
//! (`rcumod_abi::DOMAIN_GLOBAL`, …): one per flavor the host was built with, owned by the host,
//! and last the process-wide `Rcu::global()`. Its own file so that the module runtime, the API
//! table and the hook table name a domain without reaching up into the host.

use rcu_core::Rcu;
use std::sync::Arc;

/// A domain the host exposes to modules: one it owns, or the process-wide one.
#[derive(Clone, Debug)]
pub(crate) enum DomainRef {
    Owned(Arc<Rcu>),
    Process,
}

impl std::ops::Deref for DomainRef {
    type Target = Rcu;
    fn deref(&self) -> &Rcu {
        match self {
            DomainRef::Owned(r) => r,
            DomainRef::Process => Rcu::global(),
        }
    }
}
