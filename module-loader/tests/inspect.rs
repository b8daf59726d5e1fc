//! Pre-load inspection (`module_loader::inspect`) against C and C++ fixtures built at test time,
//! one test per check, plus truncation and mutation runs that must never panic.

mod fixtures;

use std::collections::BTreeMap;
use std::error::Error as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fixtures::{CModule, FixtureDir, Lang, Modinfo, XorShift};
use module_loader::inspect::{
    inspect_bytes, inspect_file, InspectError, InspectPolicy, Inspection, PinRisk,
};
use rcumod_abi::modinfo::ModinfoError;
use rcumod_abi::{ABI_MAJOR, ABI_MINOR};

/// The host's `e_machine` and the other architecture used for the wrong-architecture test.
#[cfg(target_arch = "x86_64")]
const ARCH: (&str, u16, &str, u16) = ("x86_64", 62, "aarch64", 183);
#[cfg(target_arch = "aarch64")]
const ARCH: (&str, u16, &str, u16) = ("aarch64", 183, "x86_64", 62);

fn policy() -> InspectPolicy {
    InspectPolicy::default()
}

/// Build the standard valid module in `dir`, returning its path.
fn valid_module(dir: &FixtureDir) -> PathBuf {
    CModule::new("valid").build(dir, "valid", Lang::C, &["-Wl,-soname,libvalid.so"])
}

fn inspect(path: &std::path::Path) -> Result<Inspection, InspectError> {
    inspect_file(path, &policy())
}

#[test]
fn valid_module_passes() {
    let dir = FixtureDir::new("valid");
    let path = valid_module(&dir);
    let i = inspect(&path).expect("valid module");
    assert_eq!(i.modinfo.name, "valid");
    assert_eq!(i.modinfo.version.as_deref(), Some("0.1"));
    assert_eq!(i.modinfo.license, "MIT");
    assert_eq!(i.modinfo.abi, (1, 0));
    assert!(i.modinfo.depends.is_empty());
    assert_eq!(i.modinfo.params.len(), 1);
    assert_eq!(i.modinfo.params[0].name, "count");
    assert_eq!(i.size, std::fs::metadata(&path).unwrap().len());
    assert_eq!(i.machine, ARCH.0);
    assert_eq!(i.soname.as_deref(), Some("libvalid.so"));
    assert!(i.needed.iter().any(|l| l == "libc.so.6"), "{:?}", i.needed);
    let id = i.build_id.as_deref().expect("build-id");
    assert_eq!(id.len(), 40, "sha1 build-id: {id}");
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert!(!i.has_tls);
    assert!(i.pin_risks.is_empty());
    assert!(
        i.undefined.iter().any(|s| s == "getpid"),
        "{:?}",
        i.undefined
    );
    assert!(!i.exec_segments.is_empty());
    assert!(i.exec_segments.iter().all(|(s, e)| s < e));
    // The same answer from memory.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(inspect_bytes(&bytes, &policy()).unwrap(), i);
}

#[test]
fn tls_is_reported() {
    let dir = FixtureDir::new("tls");
    let mut m = CModule::new("tls");
    m.extra = "__thread int tls_counter;\n".into();
    m.init_body = "tls_counter++;".into();
    let i = inspect(&m.build(&dir, "tls", Lang::C, &[])).unwrap();
    assert!(i.has_tls);
}

#[test]
fn io_error_names_the_path() {
    let dir = FixtureDir::new("io");
    let path = dir.path().join("missing.so");
    match inspect(&path) {
        Err(e @ InspectError::Io { .. }) => {
            let InspectError::Io { path: p, source } = &e else {
                unreachable!()
            };
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            assert!(e.source().is_some());
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn too_large() {
    let dir = FixtureDir::new("large");
    let path = valid_module(&dir);
    let len = std::fs::metadata(&path).unwrap().len();
    let small = InspectPolicy {
        max_size: 100,
        ..policy()
    };
    assert!(matches!(
        inspect_file(&path, &small),
        Err(InspectError::TooLarge { size, max: 100 }) if size == len
    ));
    let bytes = std::fs::read(&path).unwrap();
    assert!(matches!(
        inspect_bytes(&bytes, &small),
        Err(InspectError::TooLarge { size, max: 100 }) if size == len
    ));
    // Exactly at the limit is fine.
    let exact = InspectPolicy {
        max_size: len,
        ..policy()
    };
    assert!(inspect_file(&path, &exact).is_ok());
}

#[test]
fn not_elf() {
    let dir = FixtureDir::new("notelf");
    let text = dir.write("readme.so", "this is not a shared object\n");
    assert!(matches!(inspect(&text), Err(InspectError::NotElf)));
    let empty = dir.write("empty.so", "");
    assert!(matches!(inspect(&empty), Err(InspectError::NotElf)));
}

#[test]
fn truncated_elf_is_always_an_error() {
    let dir = FixtureDir::new("trunc");
    let bytes = std::fs::read(valid_module(&dir)).unwrap();
    for cut in 0..bytes.len() {
        let r = inspect_bytes(&bytes[..cut], &policy());
        match (cut, &r) {
            (0..=3, Err(InspectError::NotElf)) => {}
            (4..=63, Err(InspectError::Malformed { .. })) => {}
            (64.., Err(_)) => {}
            _ => panic!("cut at {cut}: {r:?}"),
        }
    }
    assert!(inspect_bytes(&bytes, &policy()).is_ok());
}

#[test]
fn not_elf64() {
    let dir = FixtureDir::new("class");
    let mut bytes = std::fs::read(valid_module(&dir)).unwrap();
    bytes[4] = 1; // ELFCLASS32
    assert!(matches!(
        inspect_bytes(&bytes, &policy()),
        Err(InspectError::NotElf64)
    ));
}

#[test]
fn wrong_architecture() {
    let dir = FixtureDir::new("arch");
    let valid = std::fs::read(valid_module(&dir)).unwrap();

    let mut other = valid.clone();
    other[18..20].copy_from_slice(&ARCH.3.to_le_bytes());
    let patched = dir.write("other-arch.so", &other);
    match inspect(&patched) {
        Err(InspectError::WrongArchitecture { found, expected }) => {
            assert_eq!(found, ARCH.2);
            assert_eq!(expected, ARCH.0);
        }
        other => panic!("expected WrongArchitecture, got {other:?}"),
    }

    let mut big = valid;
    big[5] = 2; // ELFDATA2MSB
    match inspect_bytes(&big, &policy()) {
        Err(InspectError::WrongArchitecture { found, .. }) => {
            assert!(found.ends_with("(big-endian)"), "{found}");
        }
        other => panic!("expected WrongArchitecture, got {other:?}"),
    }
}

#[test]
fn not_a_shared_object() {
    let dir = FixtureDir::new("etype");
    let m = CModule::new("obj");
    let object = dir.object("obj", Lang::C, &m.source());
    assert!(matches!(
        inspect(&object),
        Err(InspectError::NotSharedObject { e_type: 1 })
    ));

    let main = "int main(void) { return 0; }\n";
    let exec = dir.executable("exec", Lang::C, main, &["-no-pie"]);
    assert!(matches!(
        inspect(&exec),
        Err(InspectError::NotSharedObject { e_type: 2 })
    ));

    // A PIE is ET_DYN too, but glibc will not dlopen it (DF_1_PIE).
    let pie = dir.executable("pie", Lang::C, main, &["-fPIE", "-pie"]);
    assert!(matches!(
        inspect(&pie),
        Err(InspectError::NotSharedObject { e_type: 3 })
    ));
}

#[test]
fn no_descriptor() {
    let dir = FixtureDir::new("nodesc");
    let mut m = CModule::new("nodesc");
    m.descriptor = false;
    assert!(matches!(
        inspect(&m.build(&dir, "nodesc", Lang::C, &[])),
        Err(InspectError::NoDescriptor)
    ));

    // Defined but hidden: not exported, so not a descriptor either.
    m.extra = "__attribute__((visibility(\"hidden\"))) const char rcumod_module[48] = {1};\n\
               __attribute__((visibility(\"default\"))) const char *rcumod_fixture_leak(void) \
               { return rcumod_module; }\n"
        .into();
    assert!(matches!(
        inspect(&m.build(&dir, "hidden", Lang::C, &[])),
        Err(InspectError::NoDescriptor)
    ));
}

#[test]
fn no_modinfo() {
    let dir = FixtureDir::new("nomodinfo");
    let mut m = CModule::new("nomodinfo");
    m.modinfo = Modinfo::Absent;
    assert!(matches!(
        inspect(&m.build(&dir, "nomodinfo", Lang::C, &[])),
        Err(InspectError::NoModinfo)
    ));
}

#[test]
fn bad_modinfo() {
    let dir = FixtureDir::new("badmodinfo");
    let mut m = CModule::new("bad");
    m.modinfo = Modinfo::Raw(b"name=bad\0garbage\0abi=1.0\0license=MIT\0".to_vec());
    let e = inspect(&m.build(&dir, "garbage", Lang::C, &[])).unwrap_err();
    assert!(
        matches!(&e, InspectError::BadModinfo(ModinfoError::BadRecord { .. })),
        "{e:?}"
    );
    assert!(e.source().is_some());

    m.modinfo = Modinfo::Records(vec!["name=bad".into(), "abi=1.0".into()]);
    assert!(matches!(
        inspect(&m.build(&dir, "nolicense", Lang::C, &[])),
        Err(InspectError::BadModinfo(ModinfoError::Missing {
            key: "license"
        }))
    ));
}

#[test]
fn abi_versions() {
    let dir = FixtureDir::new("abi");
    let host = (ABI_MAJOR, ABI_MINOR);
    // The brief's examples, valid while the host is 1.0: 2.0 and 1.9 are refused, 1.0 loads.
    let cases = [
        ((ABI_MAJOR + 1, 0), false),
        ((ABI_MAJOR, ABI_MINOR + 9), false),
        ((ABI_MAJOR, ABI_MINOR + 1), false),
        ((ABI_MAJOR, ABI_MINOR), true),
        ((ABI_MAJOR, 0), true),
    ];
    for (i, ((major, minor), ok)) in cases.into_iter().enumerate() {
        let m = CModule::new("abi").abi(&format!("{major}.{minor}"));
        let r = inspect(&m.build(&dir, &format!("abi{i}"), Lang::C, &[]));
        if ok {
            assert_eq!(r.unwrap().modinfo.abi, (major, minor));
        } else {
            match r {
                Err(InspectError::AbiMismatch { module, host: h }) => {
                    assert_eq!(module, (major, minor));
                    assert_eq!(h, host);
                }
                other => panic!("abi {major}.{minor}: expected AbiMismatch, got {other:?}"),
            }
        }
    }
}

fn unknown_symbol_module(dir: &FixtureDir) -> PathBuf {
    let mut m = CModule::new("unknown");
    m.extra = "extern void rcumod_fixture_missing(void);\n".into();
    m.init_body = "rcumod_fixture_missing(); if (getpid() < 0) return -1;".into();
    m.build(
        dir,
        "unknown",
        Lang::C,
        &["-Wl,--unresolved-symbols=ignore-all"],
    )
}

#[test]
fn unknown_symbols() {
    let dir = FixtureDir::new("unknown");
    let path = unknown_symbol_module(&dir);
    let e = inspect(&path).unwrap_err();
    match &e {
        InspectError::UnknownSymbols { symbols } => {
            assert_eq!(symbols, &["rcumod_fixture_missing"]);
        }
        other => panic!("expected UnknownSymbols, got {other:?}"),
    }
    assert!(e
        .to_string()
        .lines()
        .any(|l| l == "Unknown symbol rcumod_fixture_missing (err -2)"));

    // Provided by the host: accepted, and still listed as undefined.
    let host_provides = InspectPolicy {
        extra_symbols: vec!["rcumod_fixture_missing".into()],
        ..policy()
    };
    let i = inspect_file(&path, &host_provides).unwrap();
    assert!(i.undefined.iter().any(|s| s == "rcumod_fixture_missing"));
}

#[test]
fn unreadable_libraries_are_skipped_not_fatal() {
    let dir = FixtureDir::new("nolibs");
    let path = unknown_symbol_module(&dir);
    let nowhere = InspectPolicy {
        library_dirs: vec![dir.path().join("no-such-dir")],
        ..policy()
    };
    // libc cannot be read, so the symbol may come from it: no error.
    assert!(inspect_file(&path, &nowhere).is_ok());
}

const DUMMY_LIB: &str = "int dummy_fn(void) { return 1; }\nint dummy_other(void) { return 2; }\n";

fn dummy_client(dir: &FixtureDir) -> PathBuf {
    let mut m = CModule::new("client");
    m.extra = "extern int dummy_fn(void);\n".into();
    m.init_body = "if (dummy_fn() != 1 || getpid() < 0) return -1;".into();
    let libdir = format!("-L{}", dir.path().display());
    m.build(dir, "client", Lang::C, &[&libdir, "-ldummy"])
}

#[test]
fn disallowed_library() {
    let dir = FixtureDir::new("needed");
    dir.shared("dummy", Lang::C, DUMMY_LIB, &[]);
    let path = dummy_client(&dir);
    match inspect(&path) {
        Err(InspectError::DisallowedLibrary { library }) => assert_eq!(library, "libdummy.so"),
        other => panic!("expected DisallowedLibrary, got {other:?}"),
    }

    // Allowed and found: its exports resolve the module's import.
    let mut allow = policy();
    allow.allowed_libraries.push("libdummy.so".into());
    allow.library_dirs.insert(0, dir.path().to_owned());
    let i = inspect_file(&path, &allow).unwrap();
    assert!(i.needed.iter().any(|l| l == "libdummy.so"));
}

#[test]
fn needed_names_are_read_as_the_dynamic_linker_reads_them() {
    // goblin drops a DT_NEEDED whose offset falls inside a multi-byte character, while ld.so
    // would load the library named by the bytes from there. The inspector must not let such a
    // library slip past the allowlist.
    let dir = FixtureDir::new("needed-utf8");
    dir.shared("dummy", Lang::C, DUMMY_LIB, &[]);
    let mut bytes = std::fs::read(dummy_client(&dir)).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let dynstr = elf
        .section_headers
        .iter()
        .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".dynstr"))
        .map(|s| s.sh_offset as usize)
        .unwrap();
    let dynamic = elf
        .program_headers
        .iter()
        .find(|p| p.p_type == goblin::elf::program_header::PT_DYNAMIC)
        .map(|p| (p.p_offset as usize, p.p_filesz as usize))
        .unwrap();
    drop(elf);
    let name = b"libdummy.so\0";
    let at = bytes[dynstr..]
        .windows(name.len())
        .position(|w| w == name)
        .unwrap();
    bytes[dynstr + at..dynstr + at + name.len()].copy_from_slice(b"lib\xc3\xa9mmy.so\0");
    let entry = (dynamic.0..dynamic.0 + dynamic.1)
        .step_by(16)
        .find(|&e| {
            bytes[e..e + 8] == 1u64.to_le_bytes()
                && bytes[e + 8..e + 16] == (at as u64).to_le_bytes()
        })
        .expect("the DT_NEEDED entry of libdummy.so");
    bytes[entry + 8..entry + 16].copy_from_slice(&(at as u64 + 4).to_le_bytes());
    match inspect_bytes(&bytes, &policy()) {
        Err(InspectError::Malformed { reason }) => assert!(reason.contains("UTF-8"), "{reason}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn library_cache_sees_a_changed_library() {
    let dir = FixtureDir::new("cache");
    dir.shared("dummy", Lang::C, DUMMY_LIB, &[]);
    let path = dummy_client(&dir);
    let mut allow = policy();
    allow.allowed_libraries.push("libdummy.so".into());
    allow.library_dirs.insert(0, dir.path().to_owned());
    assert!(inspect_file(&path, &allow).is_ok());
    assert!(inspect_file(&path, &allow).is_ok()); // cached

    // Replace the library by one without `dummy_fn` (a new file: new inode and size).
    std::fs::remove_file(dir.path().join("libdummy.so")).unwrap();
    dir.shared(
        "dummy",
        Lang::C,
        "int dummy_renamed(void) { return 1; }\nstatic int pad[64];\nint *dummy_pad(void) { return pad; }\n",
        &[],
    );
    match inspect_file(&path, &allow) {
        Err(InspectError::UnknownSymbols { symbols }) => assert_eq!(symbols, ["dummy_fn"]),
        other => panic!("expected UnknownSymbols after the library changed, got {other:?}"),
    }
}

#[test]
fn nodelete_is_pinned() {
    let dir = FixtureDir::new("nodelete");
    let path = CModule::new("nodelete").build(&dir, "nodelete", Lang::C, &["-Wl,-z,nodelete"]);
    match inspect(&path) {
        Err(InspectError::Pinned { risks }) => assert_eq!(risks, [PinRisk::NoDelete]),
        other => panic!("expected Pinned, got {other:?}"),
    }
    let allow = InspectPolicy {
        allow_pinned: true,
        ..policy()
    };
    assert_eq!(
        inspect_file(&path, &allow).unwrap().pin_risks,
        [PinRisk::NoDelete]
    );
}

#[test]
fn gnu_unique_is_pinned() {
    let dir = FixtureDir::new("unique");
    let mut m = CModule::new("unique");
    m.extra = "inline int &unique_counter() { static int c = 0; return c; }\n\
               extern \"C\" __attribute__((visibility(\"default\"))) int unique_bump() \
               { return ++unique_counter(); }\n"
        .into();
    let path = m.build(&dir, "unique", Lang::Cxx, &[]);
    if let Some(syms) = fixtures::readelf(&["--dyn-syms", "-W"], &path) {
        assert!(
            syms.lines().any(|l| l.contains("UNIQUE")),
            "g++ emitted no STB_GNU_UNIQUE symbol:\n{syms}"
        );
    }
    // g++ links libstdc++; allow it so that the check reaches the pin risks.
    let mut cxx = policy();
    cxx.allowed_libraries.push("libstdc++.so.6".into());
    match inspect_file(&path, &cxx) {
        Err(InspectError::Pinned { risks }) => match risks.as_slice() {
            [PinRisk::GnuUnique { symbols }] => {
                assert!(
                    symbols.iter().any(|s| s.contains("unique_counter")),
                    "{symbols:?}"
                );
            }
            other => panic!("expected one GnuUnique risk, got {other:?}"),
        },
        other => panic!("expected Pinned, got {other:?}"),
    }
    cxx.allow_pinned = true;
    let i = inspect_file(&path, &cxx).unwrap();
    assert!(matches!(
        i.pin_risks.as_slice(),
        [PinRisk::GnuUnique { .. }]
    ));
}

/// Offsets of the 64-bit ELF header fields patched below.
const E_PHOFF: usize = 32;
const E_SHOFF: usize = 40;
const E_PHENTSIZE: usize = 54;
const E_PHNUM: usize = 56;
const E_SHENTSIZE: usize = 58;
const E_SHNUM: usize = 60;
const E_SHSTRNDX: usize = 62;

#[test]
fn inconsistent_headers_are_malformed() {
    let dir = FixtureDir::new("headers");
    let valid = std::fs::read(valid_module(&dir)).unwrap();
    let len = valid.len() as u64;
    let patches: &[(&str, usize, &[u8])] = &[
        ("e_phoff past the end", E_PHOFF, &len.to_le_bytes()),
        ("e_phoff huge", E_PHOFF, &u64::MAX.to_le_bytes()),
        ("e_shoff past the end", E_SHOFF, &(len - 8).to_le_bytes()),
        ("e_phnum huge", E_PHNUM, &0xfffeu16.to_le_bytes()),
        ("e_phnum PN_XNUM", E_PHNUM, &0xffffu16.to_le_bytes()),
        ("e_phnum 0", E_PHNUM, &0u16.to_le_bytes()),
        ("e_phentsize 1", E_PHENTSIZE, &1u16.to_le_bytes()),
        ("e_shentsize 0", E_SHENTSIZE, &0u16.to_le_bytes()),
        ("e_shnum huge", E_SHNUM, &0xfeffu16.to_le_bytes()),
        ("e_shnum 0", E_SHNUM, &0u16.to_le_bytes()),
        (
            "e_shstrndx out of range",
            E_SHSTRNDX,
            &0xfeffu16.to_le_bytes(),
        ),
        (
            "e_shstrndx SHN_XINDEX",
            E_SHSTRNDX,
            &0xffffu16.to_le_bytes(),
        ),
        ("EI_VERSION 0", 6, &[0]),
        ("EI_DATA 0", 5, &[0]),
    ];
    for (what, at, value) in patches {
        let mut m = valid.clone();
        m[*at..*at + value.len()].copy_from_slice(value);
        match inspect_bytes(&m, &policy()) {
            Err(InspectError::Malformed { reason }) => {
                assert!(!reason.contains("panicked"), "{what}: {reason}")
            }
            other => panic!("{what}: expected Malformed, got {other:?}"),
        }
    }
}

/// Which variant an error is, for tallies.
fn variant(r: &Result<Inspection, InspectError>) -> &'static str {
    match r {
        Ok(_) => "Ok",
        Err(InspectError::Io { .. }) => "Io",
        Err(InspectError::TooLarge { .. }) => "TooLarge",
        Err(InspectError::NotElf) => "NotElf",
        Err(InspectError::Malformed { .. }) => "Malformed",
        Err(InspectError::NotElf64) => "NotElf64",
        Err(InspectError::WrongArchitecture { .. }) => "WrongArchitecture",
        Err(InspectError::NotSharedObject { .. }) => "NotSharedObject",
        Err(InspectError::NoDescriptor) => "NoDescriptor",
        Err(InspectError::NoModinfo) => "NoModinfo",
        Err(InspectError::BadModinfo(_)) => "BadModinfo",
        Err(InspectError::AbiMismatch { .. }) => "AbiMismatch",
        Err(InspectError::DisallowedLibrary { .. }) => "DisallowedLibrary",
        Err(InspectError::UnknownSymbols { .. }) => "UnknownSymbols",
        Err(InspectError::Pinned { .. }) => "Pinned",
        Err(_) => "other",
    }
}

#[test]
fn mutations_never_panic() {
    const MAX_CASES: usize = 20_000;
    const BUDGET: Duration = Duration::from_secs(5);

    let dir = FixtureDir::new("mutate");
    let valid = std::fs::read(valid_module(&dir)).unwrap();
    let policy = policy();
    let len = valid.len();
    // Where the header tables are, so that half of the mutations hit them.
    let u64_at = |o: usize| u64::from_le_bytes(valid[o..o + 8].try_into().unwrap()) as usize;
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([valid[o], valid[o + 1]]));
    let tables = [
        (0, 64),
        (u64_at(E_PHOFF), u16_at(E_PHNUM) * 56),
        (u64_at(E_SHOFF), u16_at(E_SHNUM) * 64),
    ];
    let interesting: [u64; 10] = [
        0,
        1,
        0x7f,
        0xff,
        0xffff,
        0x7fff_ffff,
        u32::MAX as u64,
        u64::MAX,
        len as u64,
        len as u64 + 1,
    ];

    let mut rng = XorShift::new(0x5eed_1234_abcd_0001);
    let mut tally: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut caught_panics = 0;
    let start = Instant::now();
    let mut cases = 0;
    while cases < MAX_CASES && start.elapsed() < BUDGET {
        cases += 1;
        let mut m = valid.clone();
        let pos = |rng: &mut XorShift, width: usize| {
            let (base, size) = tables[rng.below(tables.len())];
            let p = if rng.below(2) == 0 && size > 0 {
                base + rng.below(size)
            } else {
                rng.below(len)
            };
            p.min(len - width)
        };
        match rng.below(6) {
            0 => {
                let p = pos(&mut rng, 1);
                m[p] = rng.next_u64() as u8;
            }
            1 => {
                for _ in 0..2 + rng.below(7) {
                    let p = pos(&mut rng, 1);
                    m[p] = rng.next_u64() as u8;
                }
            }
            2 => {
                let width = [2, 4, 8][rng.below(3)];
                let p = pos(&mut rng, width);
                let v = rng.next_u64().to_le_bytes();
                m[p..p + width].copy_from_slice(&v[..width]);
            }
            3 => {
                let width = [2, 4, 8][rng.below(3)];
                let p = pos(&mut rng, width) & !(width - 1);
                let v = interesting[rng.below(interesting.len())].to_le_bytes();
                m[p..p + width].copy_from_slice(&v[..width]);
            }
            4 => {
                let p = pos(&mut rng, 1);
                for b in m.iter_mut().skip(p).take(1 + rng.below(16)) {
                    *b ^= 1 << rng.below(8);
                }
            }
            _ => {
                m.truncate(rng.below(len));
                // Sometimes also corrupt what is left.
                if !m.is_empty() && rng.below(2) == 0 {
                    let p = rng.below(m.len());
                    m[p] = rng.next_u64() as u8;
                }
            }
        }
        let r = std::panic::catch_unwind(|| inspect_bytes(&m, &policy))
            .unwrap_or_else(|_| panic!("inspect_bytes panicked on mutation case {cases}"));
        if let Err(InspectError::Malformed { reason }) = &r {
            if reason.contains("panicked") {
                caught_panics += 1;
            }
        }
        *tally.entry(variant(&r)).or_default() += 1;
    }
    let errors: usize = tally
        .iter()
        .filter(|(k, _)| **k != "Ok")
        .map(|(_, v)| v)
        .sum();
    println!(
        "{cases} mutations of a {len}-byte module in {:.2?}: {errors} Err, {} Ok, \
         {caught_panics} parser panics caught; by result: {tally:?}",
        start.elapsed(),
        tally.get("Ok").copied().unwrap_or(0)
    );
    assert!(cases >= 1000, "only {cases} cases ran in {BUDGET:?}");
    assert!(errors > 0);
}

#[test]
fn messages_read_like_kmod() {
    let e = |e: InspectError| e.to_string();
    assert_eq!(
        e(InspectError::AbiMismatch {
            module: (2, 0),
            host: (1, 0)
        }),
        "version magic 'rcumod-abi 2.0' should be 'rcumod-abi 1.0'"
    );
    assert_eq!(
        e(InspectError::UnknownSymbols {
            symbols: vec!["foo".into(), "bar".into()]
        }),
        "Unknown symbol in module (2 symbols)\n\
         Unknown symbol foo (err -2)\n\
         Unknown symbol bar (err -2)"
    );
    assert_eq!(
        e(InspectError::NotElf),
        "Invalid module format (not an ELF file)"
    );
    assert_eq!(
        e(InspectError::Pinned {
            risks: vec![
                PinRisk::NoDelete,
                PinRisk::GnuUnique {
                    symbols: vec!["a".into(), "b".into()]
                }
            ]
        }),
        "module can never be unloaded: nodelete; gnu_unique: a, b \
         (load with --allow-pinned to accept)"
    );
    assert_eq!(PinRisk::NoDelete.to_string(), "nodelete");
    assert_eq!(
        e(InspectError::TooLarge { size: 10, max: 5 }),
        "File too large (10 bytes; the limit is 5)"
    );
    assert!(e(InspectError::NotSharedObject { e_type: 1 }).contains("ET_REL"));
    assert!(e(InspectError::NoDescriptor).contains("'rcumod_module'"));
    assert!(e(InspectError::WrongArchitecture {
        found: "aarch64".into(),
        expected: "x86_64"
    })
    .starts_with("Invalid module format"));
    assert!(e(InspectError::BadModinfo(ModinfoError::Missing {
        key: "name"
    }))
    .contains(".modinfo has no `name`"));
    assert!(e(InspectError::DisallowedLibrary {
        library: "libfoo.so".into()
    })
    .contains("'libfoo.so'"));
    // Sources only where there is an underlying error.
    assert!(InspectError::NotElf.source().is_none());
    assert!(InspectError::BadModinfo(ModinfoError::TooManyRecords)
        .source()
        .is_some());
}

#[test]
fn default_policy() {
    let p = InspectPolicy::default();
    assert_eq!(p.max_size, 64 << 20);
    assert!(!p.allow_pinned);
    for lib in [
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "ld-linux-x86-64.so.2",
    ] {
        assert!(p.allowed_libraries.iter().any(|l| l == lib), "{lib}");
    }
    assert_eq!(
        p.library_dirs[0],
        PathBuf::from(format!("/lib/{}-linux-gnu", std::env::consts::ARCH))
    );
    assert!(p.extra_symbols.is_empty());
}
