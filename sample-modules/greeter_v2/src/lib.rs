//! `greeter` version 2, for the hot-reload demonstration: `rcumod reload greeter
//! libgreeter_v1.so` swaps its hooks for the other version's in one publication, so callers
//! of `greeter.version` see 2 or 1, never nothing and never a mix of `greeter.version`
//! and `greeter.greet` from different versions. Each greeting is retired through `call_rcu`.

use rcumod_abi::sdk::{Error, Module};
use std::ffi::c_void;

const VERSION: u64 = 2;

unsafe extern "C" fn version(_d: *mut c_void, _a: u64) -> u64 {
    VERSION
}

/// Returns `arg * 10 + VERSION`: a caller can check it reached one version for both hooks.
unsafe extern "C" fn greet(_d: *mut c_void, arg: u64) -> u64 {
    arg.wrapping_mul(10).wrapping_add(VERSION)
}

fn init(m: &Module) -> Result<(), Error> {
    // SAFETY: the hooks are pure functions.
    unsafe {
        m.hook_publish("greeter.version", version, std::ptr::null_mut())?;
        m.hook_publish("greeter.greet", greet, std::ptr::null_mut())?;
    }
    let greeting = format!("hello from greeter v{VERSION}");
    m.info(&greeting);
    m.call(rcumod_abi::DOMAIN_GLOBAL, move || drop(greeting))
        .map_err(|r| r.error)
}

fn exit(m: &Module) {
    m.info(&format!("greeter v{VERSION} leaving"));
}

rcumod_abi::declare_module! {
    name: "greeter",
    version: "2.0",
    description: "hot-reload demonstration, version 2",
    author: "rcumod",
    license: "MIT OR Apache-2.0",
    depends: "",
    params: [],
    init: init,
    exit: exit,
}
