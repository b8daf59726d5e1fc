//! `RcuCell<T>`: an RCU-protected pointer — publish with `rcu_assign_pointer`, read with
//! `rcu_dereference`, reclaim only after a grace period.
//!
//! The cell always holds a value. [`RcuCell::load`] returns a reference that borrows the read
//! guard (so it dies with the section). [`RcuCell::publish`] installs a new value with Release
//! ordering and hands back the old one as a [`Retired`], which cannot be turned back into an
//! owned value, or dropped, without a grace period of the cell's domain: the type carries the
//! obligation the kernel leaves to `synchronize_rcu(); kfree(old);`.

use crate::domain::Shared;
use crate::gp::Mode;
use crate::{Rcu, ReadGuard};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

/// An RCU-protected, always-initialised pointer to a `T`, bound to one domain.
pub struct RcuCell<T> {
    ptr: AtomicPtr<T>,
    domain: Arc<Shared>,
}

// SAFETY: readers on any thread get `&T` (needs T: Sync) and a retired value may be dropped on
// the writer's thread (needs T: Send). The pointer itself is only accessed atomically.
unsafe impl<T: Send + Sync> Sync for RcuCell<T> {}
// SAFETY: as above: moving the cell moves ownership of the current `T`.
unsafe impl<T: Send + Sync> Send for RcuCell<T> {}

impl<T> RcuCell<T> {
    /// A cell in the [global](Rcu::global) domain.
    pub fn new(value: T) -> Self {
        Self::new_in(value, Rcu::global())
    }

    /// A cell whose readers use `rcu`'s read guards.
    pub fn new_in(value: T, rcu: &Rcu) -> Self {
        RcuCell {
            ptr: AtomicPtr::new(Box::into_raw(Box::new(value))),
            domain: Arc::clone(&rcu.shared),
        }
    }

    /// `rcu_dereference`: the current value, valid for the guard's section.
    ///
    /// # Panics
    ///
    /// If `guard` belongs to another domain than the cell's: a grace period of the cell's
    /// domain would not wait for that section.
    #[inline]
    pub fn load<'g>(&'g self, guard: &'g ReadGuard<'_>) -> &'g T {
        if !Arc::ptr_eq(&guard.domain().shared, &self.domain) {
            self.wrong_domain(guard);
        }
        // Acquire: pairs with the Release in `publish`, so the value's initialisation is seen
        // (rcu_dereference's address dependency, made explicit).
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: `p` came from Box::into_raw and is freed only by a `Retired` after a grace
        // period of this cell's domain, or by the cell's drop, which needs `&mut self`; we are
        // inside a section of that domain (checked above), which the grace period waits for,
        // and the returned borrow ends with the section.
        unsafe { &*p }
    }

    #[cold]
    #[inline(never)]
    fn wrong_domain(&self, guard: &ReadGuard<'_>) -> ! {
        panic!(
            "rcu-core: RcuCell of domain `{}` loaded under a read guard of domain `{}`",
            self.domain.name,
            guard.domain().name()
        )
    }

    /// `rcu_assign_pointer`: install `value`; readers that start afterwards see it. The old
    /// value is returned as a [`Retired`] that frees it only after a grace period.
    ///
    /// Concurrent publishers are allowed (each retires what it replaced).
    pub fn publish(&self, value: T) -> Retired<T> {
        let new = Box::into_raw(Box::new(value));
        // Release: pairs with the Acquire in `load`. Acquire: we take ownership of the old value.
        let old = self.ptr.swap(new, Ordering::AcqRel);
        Retired {
            ptr: old,
            domain: Arc::clone(&self.domain),
        }
    }

    /// Mutable access when no reader can exist (`&mut self`).
    pub fn get_mut(&mut self) -> &mut T {
        // SAFETY: `&mut self` excludes readers (they borrow the cell) and publishers.
        unsafe { &mut *self.ptr.load(Ordering::Relaxed) }
    }
}

impl<T> Drop for RcuCell<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no reader borrows the cell any more, and the pointer came from
        // Box::into_raw.
        drop(unsafe { Box::from_raw(*self.ptr.get_mut()) });
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for RcuCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RcuCell")
            .field("domain", &self.domain.name)
            .finish_non_exhaustive()
    }
}

/// A value unpublished from an [`RcuCell`], which readers may still be using.
///
/// It becomes an owned `Box<T>` only through a grace period ([`Retired::synchronize`] or
/// [`Retired::synchronize_expedited`]); dropping it waits for a grace period too, so the value
/// is never freed under a reader.
#[must_use = "dropping a Retired waits for a grace period; call synchronize() to make that explicit"]
pub struct Retired<T> {
    ptr: *mut T,
    domain: Arc<Shared>,
}

// SAFETY: a Retired owns its T; readers on other threads hold only `&T` (T: Sync, required by
// the cell), and the value is dropped or returned on whichever thread holds the Retired.
unsafe impl<T: Send> Send for Retired<T> {}

impl<T> Retired<T> {
    /// The calling thread's record in the value's domain, if it is registered with it.
    ///
    /// The slot alone does not say: a `Retired` (like its cell) keeps only the domain's state
    /// alive, so after the `Rcu` is dropped its slot may belong to a newer domain, whose record
    /// this thread may hold. Mistaking that record for ours would run the qsbr offline/online
    /// dance below on the other domain's reader word (clearing it inside a section of that
    /// domain). A record points to its domain's `GpState`, and ours is alive: compare.
    fn own_record(&self) -> Option<&crate::reader::Reader> {
        let r = crate::registry::lookup(self.domain.slot)?;
        // SAFETY: the calling thread's own record, alive while registered.
        let r = unsafe { r.as_ref() };
        std::ptr::eq(r.gp, &self.domain.gp).then_some(r)
    }

    /// Is the calling thread inside a read-side section of the value's domain?
    fn inside_own_section(&self) -> bool {
        self.own_record().is_some_and(|r| {
            if self.domain.kind.is_qsbr() {
                r.qsbr_depth() != 0
            } else {
                crate::handshake::in_section(r.word.load(Ordering::Relaxed))
            }
        })
    }

    fn wait(&self, mode: Mode) {
        let d = &self.domain;
        if let Some(r) = self.own_record() {
            assert!(
                !self.inside_own_section(),
                "rcu-core: a Retired value of domain `{}` was reclaimed inside a read-side \
                 critical section of that domain; it would wait for its own reader forever",
                d.name
            );
            if d.kind.is_qsbr() && r.word.load(Ordering::Relaxed) != 0 {
                // Online qsbr thread: wait offline, as Rcu::synchronize does.
                r.qsbr_offline();
                d.gp.reader_left();
                d.synchronize_to(d.snap(), mode);
                r.qsbr_online(&d.gp.ctr);
                return;
            }
        }
        d.synchronize_to(d.snap(), mode);
    }

    fn take(self) -> Box<T> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: read the Arc out of a value that will not be dropped.
        drop(unsafe { std::ptr::read(&this.domain) });
        // SAFETY: the pointer came from Box::into_raw, a grace period has elapsed since it was
        // unpublished (callers wait first), and `this` will not free it again.
        unsafe { Box::from_raw(this.ptr) }
    }

    /// Wait for a grace period, then own the value.
    pub fn synchronize(self) -> Box<T> {
        self.wait(Mode::Normal);
        self.take()
    }

    /// Wait for an expedited grace period, then own the value.
    pub fn synchronize_expedited(self) -> Box<T> {
        self.wait(Mode::Expedited);
        self.take()
    }

    /// Free the value after a grace period, without waiting: `call_rcu` on the cell's domain.
    pub fn defer(self)
    where
        T: Send + 'static,
    {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: read the Arc out of a value that will not be dropped.
        let domain = unsafe { std::ptr::read(&this.domain) };
        let ptr = SendPtr(this.ptr);
        crate::cbqueue::post_closure(&*domain, move || {
            let p = ptr;
            // SAFETY: the callback runs after a grace period following the unpublication,
            // and is the only owner of the pointer.
            drop(unsafe { Box::from_raw(p.0) });
        });
    }

    /// The retired value's address, for diagnostics and identity checks. Readers may still
    /// be using the value; ownership goes through `synchronize`.
    pub fn as_ptr(&self) -> *const T {
        self.ptr
    }
}

/// A retired pointer moved into a callback.
struct SendPtr<T>(*mut T);
// SAFETY: it is the only handle on a `T: Send` value being moved to the callback's thread.
unsafe impl<T: Send> Send for SendPtr<T> {}

impl<T> Drop for Retired<T> {
    fn drop(&mut self) {
        // Unwinding inside a read-side section of the value's domain (from `wait`'s own misuse
        // panic, `self` having been moved into `synchronize`, or from any panic with a Retired
        // alive in the section): waiting would panic again, which aborts the process, and
        // freeing is unsound while readers may hold the value. Leak it.
        if std::thread::panicking() && self.inside_own_section() {
            return;
        }
        self.wait(Mode::Normal);
        // SAFETY: a grace period has elapsed since the value was unpublished.
        drop(unsafe { Box::from_raw(self.ptr) });
    }
}

impl<T> std::fmt::Debug for Retired<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retired")
            .field("domain", &self.domain.name)
            .finish_non_exhaustive()
    }
}
