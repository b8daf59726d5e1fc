//! liburcu's callback shape written against rcu-core, for the benchmarks that compare posting
//! costs: an item with an embedded head, one allocation each, freed by its callback.

use rcu_core::{Rcu, RcuHead};

/// An item with an embedded head (`malloc` + `call_rcu(free)` in liburcu's terms).
#[repr(C)]
struct Item {
    head: RcuHead,
    payload: u64,
}

unsafe extern "C" fn free_item(h: *mut RcuHead) {
    // SAFETY: `h` is the first field of an `Item` boxed by `post_items`; invoked once.
    drop(unsafe { Box::from_raw(h.cast::<Item>()) });
}

/// Post `n` items with `call_raw`, each freed by its callback.
pub fn post_items(rcu: &Rcu, n: u64) {
    for i in 0..n {
        let item = Box::into_raw(Box::new(Item {
            head: RcuHead::new(),
            payload: i,
        }));
        // SAFETY: a fresh box whose first field is the head; `free_item` frees it once.
        unsafe { rcu.call_raw(item.cast(), free_item) };
    }
}
