//! `ReadGuard`: a read-side critical section as a value.
//!
//! The guard borrows its domain, so the domain outlives the section; it is `!Send` and
//! `!Sync`, because the section belongs to the thread that entered it (its reader word lives
//! in that thread's record); and references loaded under it borrow it, so none outlives the
//! section. These are the type-level forms of the RCU rules "the domain must survive all its
//! readers" (folly) and "a pointer from rcu_dereference() is only valid inside the section".
//!
//! A reference cannot outlive its guard:
//!
//! ```compile_fail
//! use rcu_core::{Rcu, RcuCell};
//! let cell = RcuCell::new(5);
//! let r = {
//!     let guard = Rcu::global().read_lock();
//!     cell.load(&guard)
//! }; // error: `guard` does not live long enough
//! assert_eq!(*r, 5);
//! ```
//!
//! A guard cannot move to another thread:
//!
//! ```compile_fail
//! use rcu_core::Rcu;
//! let guard = Rcu::global().read_lock();
//! std::thread::spawn(move || drop(guard)); // error: `*mut ()` cannot be sent between threads
//! ```
//!
//! Nor can a domain be dropped while a guard of it is alive:
//!
//! ```compile_fail
//! use rcu_core::{Flavor, Rcu};
//! let rcu = Rcu::new(Flavor::Mb);
//! let guard = rcu.read_lock();
//! drop(rcu); // error: cannot move out of `rcu` because it is borrowed
//! drop(guard);
//! ```

use crate::reader::Reader;
use crate::Rcu;
use std::marker::PhantomData;
use std::ptr::NonNull;

/// A read-side critical section of one domain; it ends when the guard is dropped.
///
/// Obtained from [`Rcu::read_lock`] or [`Rcu::try_read_lock`].
#[must_use = "the read-side critical section ends when the guard is dropped"]
pub struct ReadGuard<'a> {
    rcu: &'a Rcu,
    reader: NonNull<Reader>,
    /// `!Send + !Sync`: the section belongs to the entering thread.
    _not_send: PhantomData<*mut ()>,
}

impl<'a> ReadGuard<'a> {
    #[inline(always)]
    pub(crate) fn new(rcu: &'a Rcu, reader: NonNull<Reader>) -> Self {
        ReadGuard {
            rcu,
            reader,
            _not_send: PhantomData,
        }
    }

    /// The domain this section belongs to.
    pub fn domain(&self) -> &'a Rcu {
        self.rcu
    }

    /// End the guard's life without ending the section, for code that cannot hold a Rust value
    /// across the section (a C caller); end it with [`Rcu::read_unlock_raw`] on this thread.
    pub fn into_raw(self) {
        std::mem::forget(self);
    }
}

impl Rcu {
    /// End a section entered by a guard passed to [`ReadGuard::into_raw`] on this thread.
    ///
    /// # Safety
    ///
    /// The calling thread must be inside such a section of this domain, and no reference
    /// obtained inside it may be used afterwards.
    ///
    /// # Panics
    ///
    /// If the calling thread is not inside a read-side section of this domain.
    pub unsafe fn read_unlock_raw(&self) {
        assert!(
            self.in_read_section(),
            "rcu-core: read_unlock_raw without a read-side section of domain `{}`",
            self.name()
        );
        let r = crate::registry::lookup(self.slot()).expect("inside a section, so registered");
        self.exit(r);
    }
}

impl Drop for ReadGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.rcu.exit(self.reader);
    }
}

impl std::fmt::Debug for ReadGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadGuard")
            .field("domain", &self.rcu.name())
            .finish()
    }
}
