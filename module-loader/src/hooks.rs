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

use crate::runtime::{HookEntry, ModuleRuntime};
use rcu_core::{Rcu, RcuCell};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub(crate) struct Hooks {
    table: RcuCell<Vec<HookEntry>>,
    write: Mutex<()>,
}

impl Hooks {
    pub(crate) fn new(rcu: &Rcu) -> Hooks {
        Hooks {
            table: RcuCell::new_in(Vec::new(), rcu),
            write: Mutex::new(()),
        }
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
    pub(crate) fn publish(&self, rcu: &Rcu, hook: HookEntry) -> Result<(), i32> {
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
            t.retain(|h| !(h.name == name && std::ptr::eq(&*h.owner, module)));
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
        new: Vec<HookEntry>,
    ) -> Result<usize, i32> {
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
        let h = self.table.load(&g).iter().find(|h| h.name == name)?;
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
            .map(|h| (h.name.clone(), h.owner.name().to_owned()))
            .collect()
    }
}
