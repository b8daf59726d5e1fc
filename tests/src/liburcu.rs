//! Safe wrappers over the liburcu C shim (`csrc/urcu_shim.c`).
//!
//! The shim uses liburcu's explicit flavor names (`urcu_memb_*`, `urcu_qsbr_*`), so both
//! flavors coexist in one process, and `_LGPL_SOURCE`, so its read loops inline the read side
//! exactly as the anchor harness did. Each loop is one FFI call.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

mod ffi {
    extern "C" {
        pub(super) fn shim_memb_register_thread();
        pub(super) fn shim_memb_unregister_thread();
        pub(super) fn shim_memb_synchronize();
        pub(super) fn shim_memb_read_loop(iters: u64) -> u64;
        pub(super) fn shim_memb_reader_until(stop: *const u32) -> u64;

        pub(super) fn shim_qsbr_register_thread();
        pub(super) fn shim_qsbr_unregister_thread();
        pub(super) fn shim_qsbr_thread_online();
        pub(super) fn shim_qsbr_thread_offline();
        pub(super) fn shim_qsbr_synchronize();
        pub(super) fn shim_qsbr_read_loop(iters: u64) -> u64;
        pub(super) fn shim_qsbr_reader_until(stop: *const u32, qs_each_read: i32) -> u64;
    }
}

/// The calling thread's liburcu registrations, so that a second registration (which liburcu
/// asserts against) panics here instead.
mod registered {
    use std::cell::Cell;

    thread_local! {
        pub(super) static MEMB: Cell<bool> = const { Cell::new(false) };
        pub(super) static QSBR: Cell<bool> = const { Cell::new(false) };
    }

    pub(super) fn claim(flag: &'static std::thread::LocalKey<Cell<bool>>, what: &str) {
        assert!(
            !flag.with(|f| f.replace(true)),
            "liburcu {what}: the calling thread is already registered"
        );
    }
}

/// liburcu's memb flavor (`urcu_memb_*`).
pub mod memb {
    use super::*;
    use std::marker::PhantomData;

    /// The calling thread's registration with liburcu memb; unregisters when dropped.
    #[derive(Debug)]
    pub struct Thread {
        /// `!Send`: the registration belongs to the registering thread.
        _not_send: PhantomData<*mut ()>,
    }

    /// `urcu_memb_register_thread()` for the calling thread.
    ///
    /// # Panics
    ///
    /// If the calling thread already holds a [`Thread`].
    pub fn register_thread() -> Thread {
        registered::claim(&registered::MEMB, "memb");
        // SAFETY: the thread is not registered yet (checked just above); liburcu keeps the
        // registration in the thread's TLS.
        unsafe { ffi::shim_memb_register_thread() }
        Thread {
            _not_send: PhantomData,
        }
    }

    impl Thread {
        /// `iters` lock + dereference + unlock pairs in C, in batches of 1024. Returns the
        /// elapsed time.
        pub fn read_loop(&self, iters: u64) -> Duration {
            // SAFETY: `self` proves the calling thread is registered (it is `!Send`).
            Duration::from_nanos(unsafe { ffi::shim_memb_read_loop(iters) })
        }
    }

    impl Drop for Thread {
        fn drop(&mut self) {
            // SAFETY: registered by `register_thread` on this thread (`Thread` is `!Send`), and
            // outside any read-side section (sections exist only inside the shim's loops).
            unsafe { ffi::shim_memb_unregister_thread() }
            registered::MEMB.with(|f| f.set(false));
        }
    }

    /// `urcu_memb_synchronize_rcu()`.
    pub fn synchronize() {
        // SAFETY: may be called from any thread, registered or not, outside a read-side
        // section; no Rust code holds a liburcu section (they exist only inside the shim).
        unsafe { ffi::shim_memb_synchronize() }
    }

    /// A busy reader for the calling thread, which must not be registered with liburcu memb:
    /// registers, runs read-side pairs in batches of 1024 until `stop` is nonzero,
    /// unregisters. Returns the number of reads.
    ///
    /// # Panics
    ///
    /// If the calling thread holds a [`Thread`].
    pub fn reader_until(stop: &AtomicU32) -> u64 {
        registered::claim(&registered::MEMB, "memb");
        // SAFETY: the thread is not registered (checked above; the shim registers and
        // unregisters it). `stop` outlives the call, and the shim only reads it atomically.
        let n = unsafe { ffi::shim_memb_reader_until(stop.as_ptr()) };
        registered::MEMB.with(|f| f.set(false));
        n
    }
}

/// liburcu's qsbr flavor (`urcu_qsbr_*`).
pub mod qsbr {
    use super::*;
    use std::marker::PhantomData;

    /// The calling thread's registration with liburcu qsbr; unregisters when dropped.
    #[derive(Debug)]
    pub struct Thread {
        /// `!Send`: the registration belongs to the registering thread.
        _not_send: PhantomData<*mut ()>,
    }

    /// `urcu_qsbr_register_thread()`: the calling thread becomes a registered, online reader,
    /// which grace periods wait for until it announces a quiescent state or goes offline.
    ///
    /// # Panics
    ///
    /// If the calling thread already holds a [`Thread`].
    pub fn register_thread() -> Thread {
        registered::claim(&registered::QSBR, "qsbr");
        // SAFETY: the thread is not registered yet (checked just above).
        unsafe { ffi::shim_qsbr_register_thread() }
        Thread {
            _not_send: PhantomData,
        }
    }

    impl Thread {
        /// `urcu_qsbr_thread_online()`.
        pub fn online(&self) {
            // SAFETY: `self` proves the calling thread is registered.
            unsafe { ffi::shim_qsbr_thread_online() }
        }

        /// `urcu_qsbr_thread_offline()`.
        pub fn offline(&self) {
            // SAFETY: `self` proves the calling thread is registered; no section is open
            // (sections exist only inside the shim's loops).
            unsafe { ffi::shim_qsbr_thread_offline() }
        }

        /// `iters` lock + dereference + unlock pairs in C, with a quiescent state after
        /// every 1024. The thread should be online. Returns the elapsed time.
        pub fn read_loop(&self, iters: u64) -> Duration {
            // SAFETY: `self` proves the calling thread is registered. (Reading while offline
            // would be a logic error of the benchmark, not a memory-safety one: the loop's
            // quiescent states bring the thread online.)
            Duration::from_nanos(unsafe { ffi::shim_qsbr_read_loop(iters) })
        }
    }

    impl Drop for Thread {
        fn drop(&mut self) {
            // SAFETY: registered on this thread (`Thread` is `!Send`), outside any section.
            unsafe { ffi::shim_qsbr_unregister_thread() }
            registered::QSBR.with(|f| f.set(false));
        }
    }

    /// `urcu_qsbr_synchronize_rcu()` (an online registered caller goes offline around the
    /// wait).
    pub fn synchronize() {
        // SAFETY: any thread, outside a read-side section.
        unsafe { ffi::shim_qsbr_synchronize() }
    }

    /// A busy reader for the calling thread, which must not be registered with liburcu qsbr:
    /// registers (online), runs read-side pairs until `stop` is nonzero, announcing a
    /// quiescent state after every read (`qs_each_read`) or after every 1024 reads; then goes
    /// offline and unregisters. Returns the number of reads.
    ///
    /// # Panics
    ///
    /// If the calling thread holds a [`Thread`].
    pub fn reader_until(stop: &AtomicU32, qs_each_read: bool) -> u64 {
        registered::claim(&registered::QSBR, "qsbr");
        // SAFETY: as for memb's `reader_until`.
        let n = unsafe { ffi::shim_qsbr_reader_until(stop.as_ptr(), i32::from(qs_each_read)) };
        registered::QSBR.with(|f| f.set(false));
        n
    }
}
