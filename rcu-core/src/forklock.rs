//! `ForkLock`: a futex mutex that a forked child may reset.
//!
//! The locks a grace-period driver, a callback pass or a barrier hold are held for as long as a
//! reader or a callback takes. A `pthread_atfork` prepare handler cannot wait for them (the
//! forking thread may itself be the reader a driver waits for, or a callback the invoker runs),
//! so at fork they may be held by a thread that does not exist in the child. Such a lock would
//! stay locked forever in the child; this one can be reset there (fork.rs), which is sound
//! because what it protects is scratch state the child clears, or nothing.
//!
//! The algorithm is the classic three-state futex mutex (Drepper, "Futexes Are Tricky"):
//! 0 unlocked, 1 locked, 2 locked with waiters.

use crate::futex;
use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};

pub(crate) struct ForkLock<T> {
    state: AtomicU32,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `data` to one thread at a time (`lock`), so sharing
// the lock is sharing `T` by transfer, which `T: Send` allows.
unsafe impl<T: Send> Sync for ForkLock<T> {}
// SAFETY: moving the lock moves the `T`.
unsafe impl<T: Send> Send for ForkLock<T> {}

impl<T: Default> Default for ForkLock<T> {
    fn default() -> Self {
        ForkLock::new(T::default())
    }
}

impl<T> std::fmt::Debug for ForkLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkLock")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

pub(crate) struct ForkLockGuard<'a, T> {
    lock: &'a ForkLock<T>,
}

impl<T> ForkLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        ForkLock {
            state: AtomicU32::new(0),
            data: UnsafeCell::new(value),
        }
    }

    pub(crate) fn lock(&self) -> ForkLockGuard<'_, T> {
        if self
            .state
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        ForkLockGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        for _ in 0..100 {
            std::hint::spin_loop();
            if self
                .state
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
        while self.state.swap(2, Ordering::Acquire) != 0 {
            futex::wait(&self.state, 2, None);
        }
    }

    /// In a forked child only (single-threaded): forget any holder and lock it for the
    /// caller, who can then clear what the holder left behind.
    ///
    /// # Safety
    ///
    /// Only the one thread of a freshly forked child may call this, and no guard of this lock
    /// may exist on that thread (a holder that existed was another, now nonexistent, thread).
    pub(crate) unsafe fn reset_in_child(&self) -> ForkLockGuard<'_, T> {
        self.state.store(1, Ordering::Relaxed);
        ForkLockGuard { lock: self }
    }
}

impl<T> Deref for ForkLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held by this thread.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for ForkLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held by this thread.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for ForkLockGuard<'_, T> {
    fn drop(&mut self) {
        if self.lock.state.swap(0, Ordering::Release) == 2 {
            futex::wake_all(&self.lock.state);
        }
    }
}
