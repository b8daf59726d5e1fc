//! rcu-core's own threads (the callback workers and grace-period threads), by thread id.
//!
//! These threads run module or application callbacks only as `barrier()` accounts for them, and
//! are idle in rcu-core's own code otherwise. A host that looks at every thread of the process
//! for code it is about to unmap (module-loader's thread scan) asks for them here, so that a
//! stale return address left in a worker's stack by a callback that has long returned is not
//! taken for a thread still inside that code.

use std::sync::Mutex;

static THREADS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The thread ids of rcu-core's service threads alive now.
pub fn service_threads() -> Vec<i32> {
    THREADS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Registers the calling thread as a service thread until dropped.
pub(crate) struct ServiceThread(i32);

impl ServiceThread {
    pub(crate) fn enter() -> ServiceThread {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        THREADS.lock().unwrap_or_else(|e| e.into_inner()).push(tid);
        ServiceThread(tid)
    }
}

impl Drop for ServiceThread {
    fn drop(&mut self) {
        THREADS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| *t != self.0);
    }
}
