//! Hooks: named entry points that modules publish and the host calls under RCU.
//!
//! The table is one immutable `Vec` behind an [`RcuCell`]: a caller enters a read section,
//! finds the hook, and calls it — no lock, and the table it found stays valid until it leaves
//! the section. Every change publishes a whole new table, so a caller sees either the table
//! before a change or the one after, never a mix (which is what lets a hot reload swap all of a
//! module's hooks at once). The replaced table is freed after a grace period by a callback.
//!
//! Unpublishing is step 1 of the unload protocol: after the new table is published, one grace
//! period later no caller can still be running the module's hook code.
//!
//! A caller that calls one hook often resolves it once ([`HookHandle`], `Host::hook`): the
//! handle remembers the hook's interned name and where it last found it in the table, so a
//! call is a read section, one pointer comparison and the indirect call. It follows a hot
//! reload (the new version publishes the same name) and answers `None` once no module
//! publishes the name, never a call into a module that is gone: it finds the hook in the table
//! of the moment, inside the read section that the unload protocol waits for.

use crate::domains::DomainRef;
use crate::runtime::{HookEntry, ModuleRuntime};
use rcu_core::{Rcu, RcuCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub(crate) struct Hooks {
    table: RcuCell<Vec<HookEntry>>,
    write: Mutex<()>,
    /// One `Arc<str>` per hook name: entries and handles share it (pruned when only this map
    /// holds it).
    names: Mutex<HashMap<Box<str>, Arc<str>>>,
}

impl Hooks {
    pub(crate) fn new(rcu: &Rcu) -> Hooks {
        Hooks {
            table: RcuCell::new_in(Vec::new(), rcu),
            write: Mutex::new(()),
            names: Mutex::new(HashMap::new()),
        }
    }

    /// The interned name `name`.
    fn intern(&self, name: &str) -> Arc<str> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if names.len() > 64 {
            names.retain(|_, a| Arc::strong_count(a) > 1);
        }
        Arc::clone(names.entry(name.into()).or_insert_with(|| Arc::from(name)))
    }

    /// Replace the table with `f(current)`.
    fn update(
        &self,
        rcu: &Rcu,
        f: impl FnOnce(&mut Vec<HookEntry>) -> Result<(), i32>,
    ) -> Result<(), i32> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = {
            let g = rcu.read_lock();
            self.table.load(&g).clone()
        };
        f(&mut next)?;
        self.table.publish(next).defer();
        Ok(())
    }

    /// Publish `hook`, replacing a hook of the same name of the same module.
    pub(crate) fn publish(&self, rcu: &Rcu, mut hook: HookEntry) -> Result<(), i32> {
        hook.name = self.intern(&hook.name);
        self.update(rcu, |t| {
            if let Some(i) = t.iter().position(|h| h.name == hook.name) {
                if !Arc::ptr_eq(&t[i].owner, &hook.owner) {
                    tracing::error!(
                        target: "rcumod",
                        hook = %hook.name,
                        owner = %t[i].owner.name(),
                        module = %hook.owner.name(),
                        "hook name already taken by another module"
                    );
                    return Err(rcumod_abi::EINVAL);
                }
                t[i] = hook;
            } else {
                t.push(hook);
            }
            Ok(())
        })
    }

    /// Withdraw hook `name` of `module`.
    pub(crate) fn unpublish(
        &self,
        rcu: &Rcu,
        module: &ModuleRuntime,
        name: &str,
    ) -> Result<(), i32> {
        self.update(rcu, |t| {
            let before = t.len();
            t.retain(|h| !(&*h.name == name && std::ptr::eq(&*h.owner, module)));
            if t.len() == before {
                Err(rcumod_abi::ENOENT)
            } else {
                Ok(())
            }
        })
    }

    /// Withdraw every hook of `old` and add `new` (a module going live, or a hot reload
    /// replacing `old` by another module) in one publication. Returns how many were removed.
    pub(crate) fn swap_module(
        &self,
        rcu: &Rcu,
        old: Option<&ModuleRuntime>,
        mut new: Vec<HookEntry>,
    ) -> Result<usize, i32> {
        for h in &mut new {
            h.name = self.intern(&h.name);
        }
        let mut removed = 0;
        self.update(rcu, |t| {
            let before = t.len();
            if let Some(old) = old {
                t.retain(|h| !std::ptr::eq(&*h.owner, old));
            }
            removed = before - t.len();
            for h in new {
                if let Some(other) = t.iter().find(|x| x.name == h.name) {
                    tracing::error!(
                        target: "rcumod",
                        hook = %h.name,
                        owner = %other.owner.name(),
                        "hook name already taken by another module"
                    );
                    return Err(rcumod_abi::EINVAL);
                }
                t.push(h);
            }
            Ok(())
        })?;
        Ok(removed)
    }

    /// Does any hook point into `module`?
    pub(crate) fn owned_by(&self, rcu: &Rcu, module: &ModuleRuntime) -> usize {
        let g = rcu.read_lock();
        self.table
            .load(&g)
            .iter()
            .filter(|h| std::ptr::eq(&*h.owner, module))
            .count()
    }

    /// Call hook `name` with `arg` inside a read section of `rcu`.
    pub(crate) fn call(&self, rcu: &Rcu, name: &str, arg: u64) -> Option<u64> {
        let g = rcu.read_lock();
        let h = self.table.load(&g).iter().find(|h| &*h.name == name)?;
        // SAFETY: the hook's module published `func(data, ·)` for concurrent calls; it stays
        // mapped at least until a grace period after the hook is withdrawn, and we are inside a
        // read section that began while the hook was in the table.
        Some(unsafe { (h.func)(h.data as *mut std::ffi::c_void, arg) })
    }

    /// Names of the published hooks.
    pub(crate) fn names(&self, rcu: &Rcu) -> Vec<(String, String)> {
        let g = rcu.read_lock();
        self.table
            .load(&g)
            .iter()
            .map(|h| (h.name.to_string(), h.owner.name().to_owned()))
            .collect()
    }
}

/// A hook resolved once for repeated calls (`Host::hook`). Cheap to clone, and callable from
/// any thread.
#[derive(Debug)]
pub struct HookHandle {
    hooks: Arc<Hooks>,
    domain: DomainRef,
    name: Arc<str>,
    /// Where the hook was last found in the table (a hint, checked at every call).
    at: AtomicUsize,
}

impl Clone for HookHandle {
    fn clone(&self) -> Self {
        HookHandle {
            hooks: Arc::clone(&self.hooks),
            domain: self.domain.clone(),
            name: Arc::clone(&self.name),
            at: AtomicUsize::new(self.at.load(Ordering::Relaxed)),
        }
    }
}

impl HookHandle {
    pub(crate) fn resolve(
        hooks: &Arc<Hooks>,
        domain: &DomainRef,
        name: &str,
    ) -> Option<HookHandle> {
        let at = {
            let g = domain.read_lock();
            hooks.table.load(&g).iter().position(|h| &*h.name == name)?
        };
        Some(HookHandle {
            name: hooks.intern(name),
            hooks: Arc::clone(hooks),
            domain: domain.clone(),
            at: AtomicUsize::new(at),
        })
    }

    /// The hook's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Call the hook with `arg` inside a read section; `None` if no module publishes it now.
    #[inline]
    pub fn call(&self, arg: u64) -> Option<u64> {
        let g = self.domain.read_lock();
        let table = self.hooks.table.load(&g);
        let i = self.at.load(Ordering::Relaxed);
        let h = match table.get(i) {
            Some(h) if Arc::ptr_eq(&h.name, &self.name) => h,
            _ => self.find(table)?,
        };
        // SAFETY: as in `Hooks::call`: the entry is in the table of this read section, and its
        // module stays mapped until a grace period after the entry leaves the table.
        Some(unsafe { (h.func)(h.data as *mut std::ffi::c_void, arg) })
    }

    #[cold]
    fn find<'t>(&self, table: &'t [HookEntry]) -> Option<&'t HookEntry> {
        let (i, h) = table
            .iter()
            .enumerate()
            .find(|(_, h)| Arc::ptr_eq(&h.name, &self.name) || *h.name == *self.name)?;
        self.at.store(i, Ordering::Relaxed);
        Some(h)
    }
}
