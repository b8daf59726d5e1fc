//! The C header `include/rcumod.h` must describe exactly the Rust types of this crate: this test
//! computes every size and field offset from the Rust definitions, writes them as C11
//! `_Static_assert`s against the header, and compiles the result with the system C compiler.
//! A field added on one side only, or reordered, fails the build of that C file.

use rcumod_abi::{HostApi, ModuleDescriptor, RcuEntry, RcuHead, Reader};
use std::fmt::Write;
use std::mem::{offset_of, size_of};

macro_rules! fields {
    ($out:ident, $rust:ty, $c:literal, [$($f:ident),* $(,)?]) => {
        writeln!($out, "_Static_assert(sizeof(struct {}) == {}, \"size of {}\");",
            $c, size_of::<$rust>(), $c).unwrap();
        $(
            writeln!($out, "_Static_assert(offsetof(struct {}, {}) == {}, \"{}.{}\");",
                $c, stringify!($f), offset_of!($rust, $f), $c, stringify!($f)).unwrap();
        )*
    };
}

#[test]
fn header_matches_rust_layout() {
    let mut c = String::from("#include <stddef.h>\n#include \"rcumod.h\"\n");
    fields!(c, RcuHead, "rcu_head", [next, func]);
    fields!(c, RcuEntry, "rcu_entry", [head, callback, arg]);
    fields!(
        c,
        ModuleDescriptor,
        "rcumod_module",
        [magic, abi_major, abi_minor, size, flags, name, init, exit]
    );
    fields!(
        c,
        HostApi,
        "rcumod_host_api",
        [
            abi_major,
            abi_minor,
            size,
            flags,
            log,
            read_lock,
            read_unlock,
            dereference,
            assign_pointer,
            synchronize,
            call_rcu,
            call_rcu_entry,
            srcu_create,
            srcu_read_lock,
            srcu_read_unlock,
            srcu_synchronize,
            call_srcu,
            timer_start,
            timer_cancel,
            thread_spawn,
            thread_should_stop,
            thread_sleep,
            hook_publish,
            hook_unpublish,
            param_get,
            signal_hook,
            signal_unhook,
            barrier,
            reader_get,
            read_unlock_slow,
        ]
    );
    fields!(
        c,
        Reader,
        "rcumod_reader",
        [word, gp_ctr, sleepers, nest_mask, full_fence, domain]
    );
    writeln!(
        c,
        "_Static_assert(RCUMOD_ABI_MAJOR == {} && RCUMOD_ABI_MINOR == {}, \"abi\");",
        rcumod_abi::ABI_MAJOR,
        rcumod_abi::ABI_MINOR
    )
    .unwrap();
    writeln!(
        c,
        "_Static_assert(RCUMOD_DESCRIPTOR_MAGIC == {:#x}ULL, \"magic\");",
        rcumod_abi::DESCRIPTOR_MAGIC
    )
    .unwrap();
    for (name, v) in [
        ("OK", rcumod_abi::OK),
        ("EINVAL", rcumod_abi::EINVAL),
        ("ENOENT", rcumod_abi::ENOENT),
        ("ESHUTDOWN", rcumod_abi::ESHUTDOWN),
        ("EFAULT", rcumod_abi::EFAULT),
        ("EDEADLK", rcumod_abi::EDEADLK),
        ("ENOSPC", rcumod_abi::ENOSPC),
        ("ERANGE", rcumod_abi::ERANGE),
        ("EOPNOTSUPP", rcumod_abi::EOPNOTSUPP),
    ] {
        writeln!(c, "_Static_assert(RCUMOD_{name} == {v}, \"{name}\");").unwrap();
    }
    let dir = std::env::temp_dir().join(format!("rcumod-header-sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("sync.c");
    std::fs::write(&src, c).unwrap();
    let include = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = std::process::Command::new(cc)
        .args([
            "-std=c11",
            "-fsyntax-only",
            "-Wall",
            "-Werror",
            "-I",
            include,
        ])
        .arg(&src)
        .output()
        .expect("a C compiler (cc) is needed for this test");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "rcumod.h disagrees with the Rust definitions:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The control: a header with one field moved must fail the same check.
#[test]
fn a_drifted_header_is_caught() {
    let header = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/rcumod.h"))
        .unwrap()
        .replace(
            "\tint (*read_lock)(struct rcumod_ctx *ctx, uint32_t domain);\n\tint (*read_unlock)",
            "\tint (*read_unlock)",
        )
        .replace(
            "\tint (*synchronize)(struct rcumod_ctx *ctx, uint32_t domain);",
            "\tint (*synchronize)(struct rcumod_ctx *ctx, uint32_t domain);\n\tint (*read_lock)(struct rcumod_ctx *ctx, uint32_t domain);",
        );
    let dir = std::env::temp_dir().join(format!("rcumod-header-drift-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rcumod.h"), header).unwrap();
    let src = dir.join("sync.c");
    std::fs::write(
        &src,
        format!(
            "#include <stddef.h>\n#include \"rcumod.h\"\n_Static_assert(offsetof(struct rcumod_host_api, read_lock) == {}, \"x\");\n",
            offset_of!(HostApi, read_lock)
        ),
    )
    .unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = std::process::Command::new(cc)
        .args(["-std=c11", "-fsyntax-only", "-I"])
        .arg(&dir)
        .arg(&src)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "a drifted header was not caught");
}
