//! `rcu_list`: the seed document's example as a module.
//!
//! An RCU-protected singly linked list. Readers walk it through the hook `rcu_list.sum`, which
//! the host calls inside a read section. A module thread churns it: it unlinks a node
//! (`list_del_rcu`) and frees it with `call_rcu` — never directly, since a reader may still be
//! on it — and links a new one at the head (`rcu_assign_pointer`). At exit the module detaches
//! the whole list and posts one final `call_rcu` that frees it, which the host's barrier waits
//! for before unmapping the code that callback runs.
//!
//! Parameters: `count` (initial nodes, default 32), `period_us` (churn period, default 200).

use rcumod_abi::sdk::{Error, Module};
use rcumod_abi::DOMAIN_GLOBAL;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

struct Node {
    value: u64,
    next: AtomicPtr<Node>,
}

static HEAD: AtomicPtr<Node> = AtomicPtr::new(ptr::null_mut());
/// Serializes updaters (RCU serializes nothing between writers).
static WRITER: Mutex<()> = Mutex::new(());
static NEXT_VALUE: AtomicU64 = AtomicU64::new(1);

fn push_front(value: u64) {
    let _w = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    let n = Box::into_raw(Box::new(Node {
        value,
        next: AtomicPtr::new(HEAD.load(Ordering::Relaxed)),
    }));
    // rcu_assign_pointer: the node's contents are visible before the node is.
    HEAD.store(n, Ordering::Release);
}

/// Unlink the second node (list_del_rcu) and free it after a grace period.
fn delete_one(m: &Module) {
    let _w = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    let head = HEAD.load(Ordering::Relaxed);
    if head.is_null() {
        return;
    }
    // SAFETY: nodes are freed only by `free_node` after a grace period following their
    // unlinking; we hold the writer lock, so the list structure is ours to change.
    let victim = unsafe { (*head).next.load(Ordering::Relaxed) };
    if victim.is_null() {
        return;
    }
    // SAFETY: as above.
    let after = unsafe { (*victim).next.load(Ordering::Relaxed) };
    // SAFETY: as above.
    unsafe { (*head).next.store(after, Ordering::Release) };
    let victim = victim as usize;
    if let Err(r) = m.call(DOMAIN_GLOBAL, move || free_node(victim as *mut Node)) {
        // Refused (the module is going away): the node is unlinked but readers may still be on
        // it, so wait for them synchronously instead.
        let _ = m.synchronize(DOMAIN_GLOBAL);
        (r.callback)();
    }
}

fn free_node(p: *mut Node) {
    // SAFETY: `p` was unlinked before this callback was posted and a grace period has passed.
    drop(unsafe { Box::from_raw(p) });
}

/// Free a detached chain (the exit path's final callback).
fn free_chain(mut p: *mut Node) {
    while !p.is_null() {
        // SAFETY: the chain was detached before the callback was posted; a grace period passed.
        let b = unsafe { Box::from_raw(p) };
        p = b.next.load(Ordering::Relaxed);
    }
}

/// Hook: the sum of the list's values (the caller is inside a read section of domain 0).
unsafe extern "C" fn sum(_data: *mut c_void, _arg: u64) -> u64 {
    let mut total = 0u64;
    let mut p = HEAD.load(Ordering::Acquire);
    while !p.is_null() {
        // SAFETY: the host calls hooks inside a read section of DOMAIN_GLOBAL, and nodes are
        // freed only after a grace period of that domain following their unlinking.
        let n = unsafe { &*p };
        total = total.wrapping_add(n.value);
        p = n.next.load(Ordering::Acquire);
    }
    total
}

/// Hook (with `bench_reads=1`): `arg` read sections of domain 0 entered through the SDK's
/// thread reader (inline),
/// each reading the head's value: the Rust row of the module-boundary benchmark
/// (tests/benches/boundary.rs). Returns the sum of the values read.
unsafe extern "C" fn read_pairs(_data: *mut c_void, arg: u64) -> u64 {
    let Some(m) = Module::get() else {
        return 0;
    };
    let Some(reader) = m.reader(rcumod_abi::DOMAIN_GLOBAL) else {
        return 0;
    };
    let mut total = 0u64;
    for _ in 0..arg {
        let Ok(_section) = reader.read_lock() else {
            return 0;
        };
        let p = HEAD.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: inside a read section of domain 0, which node frees wait for.
            total = total.wrapping_add(unsafe { &*p }.value);
        }
    }
    total
}

/// Hook: the number of nodes.
unsafe extern "C" fn len(_data: *mut c_void, _arg: u64) -> u64 {
    let mut n = 0;
    let mut p = HEAD.load(Ordering::Acquire);
    while !p.is_null() {
        n += 1;
        // SAFETY: as in `sum`.
        p = unsafe { &*p }.next.load(Ordering::Acquire);
    }
    n
}

fn init(m: &Module) -> Result<(), Error> {
    let count: u64 = m.param_as("count").unwrap_or(32);
    let period = Duration::from_micros(m.param_as("period_us").unwrap_or(200));
    for _ in 0..count {
        push_front(NEXT_VALUE.fetch_add(1, Ordering::Relaxed));
    }
    // SAFETY: the hooks only read the list under the host's read section (see `sum`).
    unsafe {
        m.hook_publish("rcu_list.sum", sum, ptr::null_mut())?;
        m.hook_publish("rcu_list.len", len, ptr::null_mut())?;
        // Its cost grows with its argument: only where asked for (the stress demo's readers
        // call every hook with a growing pass number).
        if m.param_as::<u64>("bench_reads").unwrap_or(0) != 0 {
            m.hook_publish("rcu_list.read_pairs", read_pairs, ptr::null_mut())?;
        }
    }
    let module = *m;
    m.spawn("rcu_list-churn", move |t| {
        while !t.sleep(period) {
            delete_one(&module);
            push_front(NEXT_VALUE.fetch_add(1, Ordering::Relaxed));
        }
    })?;
    m.info(&format!("rcu_list: {count} nodes, churn every {period:?}"));
    Ok(())
}

fn exit(m: &Module) {
    // The host has withdrawn our hooks (a grace period ago) and stopped our thread; readers
    // may in principle still hold nodes from sections that began before, so free through RCU.
    let chain = HEAD.swap(ptr::null_mut(), Ordering::AcqRel) as usize;
    if chain != 0 {
        if let Err(r) = m.call(DOMAIN_GLOBAL, move || free_chain(chain as *mut Node)) {
            let _ = m.synchronize(DOMAIN_GLOBAL);
            (r.callback)();
        }
    }
}

rcumod_abi::declare_module! {
    name: "rcu_list",
    version: "1.0",
    description: "RCU-protected list walked by a hook; list_del_rcu + call_rcu free",
    author: "rcumod",
    license: "MIT OR Apache-2.0",
    depends: "",
    params: [
        ("count", "uint", "initial number of nodes"),
        ("period_us", "uint", "churn period in microseconds"),
        ("bench_reads", "uint", "nonzero: publish rcu_list.read_pairs, for the boundary benchmark"),
    ],
    init: init,
    exit: exit,
}
