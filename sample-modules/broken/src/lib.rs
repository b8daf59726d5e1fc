//! `broken`: a module that misbehaves in the way its `mode` parameter names, so that tests
//! and the CLI can show each defence of the host working. The host must go on in every case.
//!
//! | mode | what it does | what the host does |
//! |---|---|---|
//! | `fail_init` | `init` returns `EINVAL` | load fails, registrations unwound, unmapped |
//! | `panic_init` | `init` panics | the SDK catches it (`EPANIC`); as above |
//! | `panic_callback` | posts callbacks, one of which panics | the SDK catches it and logs; the rest run |
//! | `panic_exit` | `exit` panics | caught and logged; the unload completes |
//! | `post_after_stop` | at exit, starts a callback chain that re-posts itself with no stop flag | the closed gate refuses the next link with `ESHUTDOWN`: counted, handed back, the chain ends |
//! | `sync_in_reader` | calls `synchronize` inside its own read section | refused with `EDEADLK`, no hang |
//! | `barrier_in_callback` | calls `barrier` from one of its callbacks | refused with `EDEADLK` (the worker would wait for itself) |
//! | `foreign_callback` | posts a callback whose function is not module code | refused with `EFAULT` |
//! | `tls_pin` | its hook `broken.touch_tls` touches a `thread_local!` with a destructor on the calling (application) thread | unload reports `Pinned` |
//! | `std_thread` | `std::thread::spawn`s a thread that posts, and once refused sleeps and retries, forever | unload reports `Pinned`, naming the thread |
//! | `std_thread_joined` | the same thread, stopped and joined in `exit` | unloaded |
//! | (none) | behaves | — |

use rcumod_abi::sdk::{Error, Module};
use rcumod_abi::{DOMAIN_GLOBAL, EDEADLK, EFAULT, EINVAL, ESHUTDOWN};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

/// Result of the misuse attempted in `sync_in_reader` / `foreign_callback` / `post_after_stop`,
/// published through the hook `broken.result`.
static RESULT: AtomicI32 = AtomicI32::new(1);

/// `std_thread*`: the thread's stop flag and handle.
static STOP: AtomicBool = AtomicBool::new(false);
static SPINNER: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);

/// Post while the host accepts; a refusal is not a reason to stop (as C libraries' own threads
/// often behave): sleep and retry until told to stop.
fn spin(m: Module) {
    while !STOP.load(Ordering::Acquire) {
        if m.call(DOMAIN_GLOBAL, || {}).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

thread_local! {
    static PINNER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

unsafe extern "C" fn result(_d: *mut std::ffi::c_void, _a: u64) -> u64 {
    RESULT.load(Ordering::Acquire) as i64 as u64
}

unsafe extern "C" fn touch_tls(_d: *mut std::ffi::c_void, _a: u64) -> u64 {
    PINNER.with(|p| p.borrow_mut().push(1));
    0
}

unsafe extern "C" fn host_code_callback(_h: *mut rcumod_abi::RcuHead) {}

fn mode(m: &Module) -> String {
    m.param("mode").unwrap_or_default()
}

fn init(m: &Module) -> Result<(), Error> {
    // SAFETY: `result` only reads an atomic.
    unsafe { m.hook_publish("broken.result", result, std::ptr::null_mut())? };
    match mode(m).as_str() {
        "fail_init" => return Err(Error(EINVAL)),
        "panic_init" => panic!("broken: panic in init, as asked"),
        "panic_callback" => {
            for i in 0..10 {
                m.call(DOMAIN_GLOBAL, move || {
                    if i == 5 {
                        panic!("broken: panic in callback {i}, as asked");
                    }
                })
                .map_err(|r| r.error)?;
            }
        }
        "sync_in_reader" => {
            let _s = m.read_lock(DOMAIN_GLOBAL)?;
            let r = m.synchronize(DOMAIN_GLOBAL);
            RESULT.store(r.err().map_or(0, |e| e.0), Ordering::Release);
            if r != Err(Error(EDEADLK)) {
                return Err(Error(EINVAL));
            }
        }
        "foreign_callback" => {
            // A function pointer outside the module's code: a static of the module is not code,
            // and null-adjacent addresses are nobody's. Use an address in the data segment.
            let fake: rcumod_abi::RcuFn =
                // SAFETY: never called: the host must refuse it before queueing.
                unsafe { std::mem::transmute::<usize, rcumod_abi::RcuFn>(&RESULT as *const _ as usize) };
            let mut head = Box::new(rcumod_abi::RcuHead::new());
            // SAFETY: the host refuses before taking the head; we keep ownership either way
            // (leaked if, against the contract, it were accepted).
            let r = unsafe { m.call_rcu(DOMAIN_GLOBAL, &mut *head, fake) };
            RESULT.store(r.err().map_or(0, |e| e.0), Ordering::Release);
            if r == Err(Error(EFAULT)) {
                drop(head);
            } else {
                std::mem::forget(head);
            }
            // A real function of ours is accepted.
            let head = Box::leak(Box::new(rcumod_abi::RcuHead::new()));
            // SAFETY: the head is leaked (valid forever); the callback does nothing with it.
            unsafe { m.call_rcu(DOMAIN_GLOBAL, head, host_code_callback)? };
        }
        "barrier_in_callback" => {
            let module = *m;
            m.call(DOMAIN_GLOBAL, move || {
                let r = module.barrier(DOMAIN_GLOBAL);
                RESULT.store(r.err().map_or(0, |e| e.0), Ordering::Release);
            })
            .map_err(|r| r.error)?;
            // Let the callback run (a barrier from here, outside any callback, is fine).
            m.barrier(DOMAIN_GLOBAL)?;
        }
        // SAFETY: `touch_tls` only touches this module's thread-local.
        "tls_pin" => unsafe {
            m.hook_publish("broken.touch_tls", touch_tls, std::ptr::null_mut())?
        },
        "std_thread" | "std_thread_joined" => {
            let module = *m;
            let t = std::thread::Builder::new()
                .name("broken-spin".into())
                .spawn(move || spin(module))
                .map_err(|_| Error(EINVAL))?;
            *SPINNER.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        }
        _ => {}
    }
    Ok(())
}

/// Re-post forever; stop only when the host refuses (records the refusal code).
fn chain(m: Module) {
    if let Err(refused) = m.call(DOMAIN_GLOBAL, move || chain(m)) {
        RESULT.store(refused.error.0, Ordering::Release);
        debug_assert_eq!(refused.error.0, ESHUTDOWN);
    }
}

fn exit(m: &Module) {
    match mode(m).as_str() {
        "panic_exit" => panic!("broken: panic in exit, as asked"),
        "post_after_stop" => {
            // A callback chain that re-posts itself with no stop flag (the case rcutorture's
            // `fullstop` exists for): it keeps going until the host's closed gate refuses it.
            chain(*m);
        }
        "std_thread_joined" => {
            STOP.store(true, Ordering::Release);
            if let Some(t) = SPINNER.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = t.join();
            }
        }
        _ => {}
    }
}

rcumod_abi::declare_module! {
    name: "broken",
    version: "1.0",
    description: "misbehaves on purpose (mode=...)",
    author: "rcumod",
    license: "MIT OR Apache-2.0",
    depends: "",
    params: [("mode", "str", "which misbehaviour: fail_init, panic_init, panic_callback, panic_exit, post_after_stop, sync_in_reader, barrier_in_callback, foreign_callback, tls_pin, std_thread, std_thread_joined")],
    init: init,
    exit: exit,
}
