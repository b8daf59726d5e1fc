// The body of the `greeter` sample module, shared by greeter_v1 and greeter_v2 (each a cdylib
// of its own, as two versions of one module are two files). The including crate defines
// `VERSION` and calls `declare_module!` with its literal version string.
//
// `rcumod reload greeter libgreeter_vN.so` swaps the hooks for the other version's in one
// publication, so callers of `greeter.version` and `greeter.greet` see one version or the
// other, never nothing. Each greeting string is retired through `call_rcu`.

use rcumod_abi::sdk::{Error, Module};
use std::ffi::c_void;

unsafe extern "C" fn version(_d: *mut c_void, _a: u64) -> u64 {
    VERSION
}

/// Returns `arg * 10 + VERSION`: a caller can check that both hooks reached one version.
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
