//! `greeter` version 2, for the hot-reload demonstration (the body is shared with the other
//! version: `sample-modules/greeter/greeter.rs`).

const VERSION: u64 = 2;

include!("../../greeter/greeter.rs");

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
