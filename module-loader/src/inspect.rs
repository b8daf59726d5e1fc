//! Pre-load inspection of a module file: `insmod` phase 1, and what `rcumod modinfo` prints.
//!
//! Before the host `dlopen`s anything it reads the file as data and decides whether it may be
//! loaded at all. Once `dlopen` has run, the module's constructors have run too, and a module that
//! can never be unmapped (`-z nodelete`, a `STB_GNU_UNIQUE` symbol) is pinned for the life of the
//! process. The only safe place to refuse such a file is before loading it. The checks, in order,
//! each with its own [`InspectError`] variant:
//!
//! 1. size cap ([`InspectPolicy::max_size`]), enforced before the file is read in full;
//! 2. ELF magic, 64-bit class, the host's architecture and byte order, `ET_DYN`;
//! 3. structural validation: header tables, segments, sections, the dynamic table and its string
//!    offsets all lie inside the file (and a position-independent *executable* is refused);
//! 4. the exported descriptor symbol [`rcumod_abi::DESCRIPTOR_SYMBOL`];
//! 5. the `.modinfo` section and its records ([`rcumod_abi::modinfo::parse`]);
//! 6. the ABI version (major equal, module minor not above the host's);
//! 7. every `DT_NEEDED` library is on the allowlist;
//! 8. every undefined dynamic symbol is exported by one of those libraries or by the host;
//! 9. pin risks (`DF_1_NODELETE`, `STB_GNU_UNIQUE`), refused unless the policy allows them.
//!
//! Module files are untrusted input. The inspector never panics on them and allocates at most in
//! proportion to their size. The ELF fields that drive allocations in the parser (goblin) are
//! validated here first. goblin has a history of out-of-memory aborts and panics on malformed
//! files (m4b/goblin#120, #459, #481), so parsing also runs under [`catch_unwind`], and a panic
//! comes back as [`InspectError::Malformed`]. This needs `panic = "unwind"`, the default.
//!
//! Two things goblin 0.10.7 does that the checks here exist for: it splits every string table
//! into a `Vec` of 24-byte entries, so a table of NULs costs 24 times its size (a 48 MiB file
//! took 1.2 GB; it is refused here), and it silently drops a `DT_NEEDED` entry whose name offset
//! it cannot resolve, which ld.so would still load (names are read here as ld.so reads them).
//! goblin is given only what ld.so reads and the checks need (program headers, the dynamic
//! table, its strings and symbols): a full parse spent most of its time on the static symbol
//! table (`.symtab`, `.strtab`), which ld.so never looks at.
//!
//! Error messages follow kmod's style. They are meant to be printed after
//! `rcumod: ERROR: could not insert module <file>: `, so each `Display` is complete by itself. For
//! the variants that wrap another error it includes that error's text, and
//! [`source`](std::error::Error::source) also returns it for programmatic use.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::{Dynamic, Elf, ProgramHeader, RelocSection, Symtab};
use goblin::strtab::Strtab;
use rcumod_abi::modinfo::{ModInfo, ModinfoError};

/// ELF constants this module reads by hand (values from the System V gABI and glibc's `elf.h`).
mod consts {
    pub(super) const ELFMAG: &[u8; 4] = b"\x7fELF";
    pub(super) const EI_CLASS: usize = 4;
    pub(super) const EI_DATA: usize = 5;
    pub(super) const EI_VERSION: usize = 6;
    pub(super) const ELFCLASS64: u8 = 2;
    pub(super) const ELFDATA2LSB: u8 = 1;
    pub(super) const ELFDATA2MSB: u8 = 2;
    pub(super) const EV_CURRENT: u32 = 1;

    pub(super) const ET_REL: u16 = 1;
    pub(super) const ET_EXEC: u16 = 2;
    pub(super) const ET_DYN: u16 = 3;
    pub(super) const ET_CORE: u16 = 4;

    pub(super) const EM_386: u16 = 3;
    pub(super) const EM_MIPS: u16 = 8;
    pub(super) const EM_PPC: u16 = 20;
    pub(super) const EM_PPC64: u16 = 21;
    pub(super) const EM_S390: u16 = 22;
    pub(super) const EM_ARM: u16 = 40;
    pub(super) const EM_X86_64: u16 = 62;
    pub(super) const EM_AARCH64: u16 = 183;
    pub(super) const EM_RISCV: u16 = 243;
    pub(super) const EM_LOONGARCH: u16 = 258;

    /// Sizes of the 64-bit header and table entries.
    pub(super) const EHDR_SIZE: usize = 64;
    pub(super) const PHDR_SIZE: u64 = 56;
    pub(super) const SHDR_SIZE: u64 = 64;
    pub(super) const SYM_SIZE: u64 = 24;
    pub(super) const DYN_SIZE: u64 = 16;

    pub(super) const PN_XNUM: u16 = 0xffff;
    pub(super) const PT_LOAD: u32 = 1;
    pub(super) const PT_DYNAMIC: u32 = 2;
    pub(super) const PT_TLS: u32 = 7;
    pub(super) const PF_X: u32 = 1;

    pub(super) const SHN_UNDEF: u16 = 0;
    pub(super) const SHN_LORESERVE: u16 = 0xff00;
    pub(super) const SHN_XINDEX: u16 = 0xffff;
    pub(super) const SHT_NULL: u32 = 0;
    pub(super) const SHT_SYMTAB: u32 = 2;
    pub(super) const SHT_STRTAB: u32 = 3;
    pub(super) const SHT_DYNAMIC: u32 = 6;
    pub(super) const SHT_NOBITS: u32 = 8;
    pub(super) const SHT_DYNSYM: u32 = 11;

    pub(super) const STB_GLOBAL: u8 = 1;
    pub(super) const STB_WEAK: u8 = 2;
    pub(super) const STB_GNU_UNIQUE: u8 = 10;
    pub(super) const STV_DEFAULT: u8 = 0;
    pub(super) const STV_PROTECTED: u8 = 3;

    pub(super) const DT_NULL: u64 = 0;
    pub(super) const DT_NEEDED: u64 = 1;
    pub(super) const DT_STRTAB: u64 = 5;
    pub(super) const DT_STRSZ: u64 = 10;
    pub(super) const DT_RELA: u64 = 7;
    pub(super) const DT_SONAME: u64 = 14;
    pub(super) const DT_RPATH: u64 = 15;
    pub(super) const DT_RUNPATH: u64 = 29;
    pub(super) const DT_FLAGS_1: u64 = 0x6fff_fffb;
    pub(super) const DF_1_NODELETE: u64 = 0x8;
    pub(super) const DF_1_PIE: u64 = 0x0800_0000;

    pub(super) const NT_GNU_BUILD_ID: u32 = 3;
}
use consts::*;

/// The `e_machine` modules must be built for, and its name.
#[cfg(target_arch = "x86_64")]
const HOST_MACHINE: (Option<u16>, &str) = (Some(EM_X86_64), "x86_64");
/// The `e_machine` modules must be built for, and its name.
#[cfg(target_arch = "aarch64")]
const HOST_MACHINE: (Option<u16>, &str) = (Some(EM_AARCH64), "aarch64");
/// Other hosts are not supported: every module is refused as built for the wrong architecture,
/// and the message names the host's.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const HOST_MACHINE: (Option<u16>, &str) = (None, std::env::consts::ARCH);

/// The host's byte order, as `EI_DATA`.
const HOST_DATA: u8 = if cfg!(target_endian = "little") {
    ELFDATA2LSB
} else {
    ELFDATA2MSB
};

/// The largest system library the symbol check will read. A library over this limit is
/// skipped with a warning, the same as a missing one.
const LIBRARY_MAX_SIZE: u64 = 1 << 30;

/// What the inspector accepts. [`Default`] gives the host's normal policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectPolicy {
    /// Largest module file accepted, in bytes (default 64 MiB). Checked before the file is read.
    pub max_size: u64,
    /// Accept modules that can never be unloaded (`DF_1_NODELETE`, `STB_GNU_UNIQUE`), and report
    /// their risks in [`Inspection::pin_risks`] (default `false`: refuse them with
    /// [`InspectError::Pinned`]).
    pub allow_pinned: bool,
    /// `DT_NEEDED` names a module may link, compared as exact strings (default: the C runtime,
    /// i.e. `libc.so.6`, `libm.so.6`, `libgcc_s.so.1`, the x86-64 and AArch64 dynamic linkers,
    /// `libpthread.so.0`, `libdl.so.2`, `librt.so.1`). A name containing `/` never matches a bare
    /// name.
    pub allowed_libraries: Vec<String>,
    /// Directories searched, in order, for the allowed libraries. The symbol check reads their
    /// exported symbols from there (cached per file for the whole process, and read again when
    /// the file changes). Default: the host's multiarch directories, then `/lib64`,
    /// `/usr/lib64`, `/lib`, `/usr/lib`.
    ///
    /// An allowed library that is not found here, or cannot be read, does not fail the
    /// inspection. It is skipped with a one-time warning, and an undefined symbol that no
    /// readable library exports is then not reported, because it may come from the missing one.
    pub library_dirs: Vec<PathBuf>,
    /// Symbols the host provides to modules itself, e.g. when it is linked with `-rdynamic`
    /// (default: none).
    pub extra_symbols: Vec<String>,
    /// Accept modules that set their own library search path (`DT_RPATH`, `DT_RUNPATH`), and
    /// report it in [`Inspection::search_paths`] (default `false`: refuse them with
    /// [`InspectError::SearchPath`]). Such a path lets the dynamic loader resolve an allowed
    /// library name, say `libm.so.6`, to another file, which the allowlist never sees.
    pub allow_search_paths: bool,
    /// Describe instead of refusing (what `modinfo` wants, as kmod's modinfo shows any module):
    /// an ABI mismatch, a disallowed library, unknown symbols and pin risks are listed in
    /// [`Inspection::problems`] rather than returned as errors. Structural errors (not an ELF,
    /// malformed, no descriptor, no `.modinfo`) still fail. Default `false`; the loader never
    /// sets it.
    pub report_only: bool,
}

impl Default for InspectPolicy {
    fn default() -> Self {
        let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
        InspectPolicy {
            max_size: 64 << 20,
            allow_pinned: false,
            allow_search_paths: false,
            report_only: false,
            allowed_libraries: [
                "libc.so.6",
                "libm.so.6",
                "libgcc_s.so.1",
                "ld-linux-x86-64.so.2",
                "ld-linux-aarch64.so.1",
                "libpthread.so.0",
                "libdl.so.2",
                "librt.so.1",
            ]
            .map(String::from)
            .to_vec(),
            library_dirs: vec![
                Path::new("/lib").join(&multiarch),
                Path::new("/usr/lib").join(&multiarch),
                PathBuf::from("/lib64"),
                PathBuf::from("/usr/lib64"),
                PathBuf::from("/lib"),
                PathBuf::from("/usr/lib"),
            ],
            extra_symbols: Vec::new(),
        }
    }
}

/// Why a module would stay mapped after `dlclose` (glibc's `_dl_close_worker` never unmaps it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinRisk {
    /// `DT_FLAGS_1` has `DF_1_NODELETE` (linked with `-z nodelete`).
    NoDelete,
    /// Dynamic symbols with `STB_GNU_UNIQUE` binding. g++ emits these for static locals of
    /// inline functions and for template statics. Build with `-fno-gnu-unique` to avoid them.
    GnuUnique {
        /// Their (mangled) names.
        symbols: Vec<String>,
    },
}

impl fmt::Display for PinRisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinRisk::NoDelete => f.write_str("nodelete"),
            PinRisk::GnuUnique { symbols } => write!(f, "gnu_unique: {}", symbols.join(", ")),
        }
    }
}

/// What the inspector learned about a module it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// The parsed `.modinfo` records.
    pub modinfo: ModInfo,
    /// File size in bytes.
    pub size: u64,
    /// Architecture name (`x86_64`, `aarch64`).
    pub machine: String,
    /// `DT_SONAME`, if any (Rust cdylibs have none by default).
    pub soname: Option<String>,
    /// `DT_NEEDED` libraries, in file order (all on the policy's allowlist unless
    /// [`InspectPolicy::report_only`] listed a problem).
    pub needed: Vec<String>,
    /// The GNU build-id note in lower-case hex (kmod shows a module's identity as `srcversion`).
    pub build_id: Option<String>,
    /// The file has a `PT_TLS` segment. Every Rust cdylib has one, so this alone does not mean
    /// the module will stay pinned. Only the check after `dlclose` can tell.
    pub has_tls: bool,
    /// Pin risks found. The list is non-empty only when [`InspectPolicy::allow_pinned`] (or
    /// [`InspectPolicy::report_only`]) let the module through.
    pub pin_risks: Vec<PinRisk>,
    /// Names of all undefined dynamic symbols (weak ones included), in symbol-table order,
    /// without duplicates.
    pub undefined: Vec<String>,
    /// `[start, end)` link-time virtual address ranges (`p_vaddr`, `p_vaddr + p_memsz`) of the
    /// executable `PT_LOAD` segments. Add the load base to get runtime ranges for attributing
    /// code addresses.
    pub exec_segments: Vec<(u64, u64)>,
    /// `DT_RPATH` / `DT_RUNPATH` entries, as `TAG=value` (non-empty only when the policy let
    /// them through).
    pub search_paths: Vec<String>,
    /// With [`InspectPolicy::report_only`]: what would have refused the module, as the errors
    /// would display. Always empty otherwise.
    pub problems: Vec<String>,
}

/// Why a module file was refused, one variant per check (in the order the checks run).
///
/// `Display` prints kmod-style text, meant to follow
/// `rcumod: ERROR: could not insert module <file>: `.
#[derive(Debug)]
#[non_exhaustive]
pub enum InspectError {
    /// The file could not be opened or read.
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The file is larger than [`InspectPolicy::max_size`].
    TooLarge {
        /// Its size, or at least `max + 1` when it grew while being read.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The file does not start with the ELF magic.
    NotElf,
    /// The headers are truncated or inconsistent.
    Malformed {
        /// What is wrong, for a human.
        reason: String,
    },
    /// Not a 64-bit ELF file (`EI_CLASS` is not `ELFCLASS64`).
    NotElf64,
    /// Built for another architecture or byte order.
    WrongArchitecture {
        /// The file's architecture (and byte order if it is not the host's).
        found: String,
        /// The host's architecture.
        expected: &'static str,
    },
    /// Not a shared object. `e_type` is not `ET_DYN`, or it is `ET_DYN` but the file is a
    /// position-independent executable (`DF_1_PIE`), which glibc refuses to `dlopen`.
    NotSharedObject {
        /// The file's `e_type`.
        e_type: u16,
    },
    /// The descriptor symbol [`rcumod_abi::DESCRIPTOR_SYMBOL`] is not defined and exported
    /// (global or weak binding, default or protected visibility) in the dynamic symbol table.
    NoDescriptor,
    /// No `.modinfo` section.
    NoModinfo,
    /// The `.modinfo` section does not parse.
    BadModinfo(ModinfoError),
    /// The module was built against an ABI this host does not provide.
    AbiMismatch {
        /// The module's `abi` (major, minor).
        module: (u32, u32),
        /// The host's ([`rcumod_abi::ABI_MAJOR`], [`rcumod_abi::ABI_MINOR`]).
        host: (u32, u32),
    },
    /// A `DT_NEEDED` library is not on [`InspectPolicy::allowed_libraries`].
    DisallowedLibrary {
        /// Its name, as written in the file.
        library: String,
    },
    /// Undefined symbols that neither the allowed libraries nor the host export.
    UnknownSymbols {
        /// Their names, in symbol-table order.
        symbols: Vec<String>,
    },
    /// The module sets its own library search path and [`InspectPolicy::allow_search_paths`]
    /// is off.
    SearchPath {
        /// `DT_RPATH=…` or `DT_RUNPATH=…`.
        entry: String,
    },
    /// The module could never be unloaded, and [`InspectPolicy::allow_pinned`] is off.
    Pinned {
        /// Why.
        risks: Vec<PinRisk>,
    },
}

impl InspectError {
    fn malformed(reason: impl Into<String>) -> Self {
        InspectError::Malformed {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InspectError::Io { source, .. } => write!(f, "{source}"),
            InspectError::TooLarge { size, max } => {
                write!(f, "File too large ({size} bytes; the limit is {max})")
            }
            InspectError::NotElf => f.write_str("Invalid module format (not an ELF file)"),
            InspectError::Malformed { reason } => {
                write!(f, "Invalid module format (malformed ELF: {reason})")
            }
            InspectError::NotElf64 => f.write_str("Invalid module format (not a 64-bit ELF file)"),
            InspectError::WrongArchitecture { found, expected } => write!(
                f,
                "Invalid module format (built for {found}, but this host is {expected})"
            ),
            InspectError::NotSharedObject { e_type } => {
                let what = match *e_type {
                    ET_DYN => "a position-independent executable".to_owned(),
                    ET_REL => "a relocatable object (ET_REL)".to_owned(),
                    ET_EXEC => "an executable (ET_EXEC)".to_owned(),
                    ET_CORE => "a core file (ET_CORE)".to_owned(),
                    other => format!("an ELF file of type {other}"),
                };
                write!(
                    f,
                    "Invalid module format ({what}, not a shared object; link modules with -shared)"
                )
            }
            InspectError::NoDescriptor => write!(
                f,
                "No module found in object (symbol '{}' is not defined and exported)",
                rcumod_abi::DESCRIPTOR_SYMBOL
            ),
            InspectError::NoModinfo => write!(
                f,
                "Invalid module format (no {} section)",
                rcumod_abi::MODINFO_SECTION
            ),
            InspectError::BadModinfo(e) => write!(f, "Invalid module format ({e})"),
            InspectError::AbiMismatch { module, host } => write!(
                f,
                "version magic 'rcumod-abi {}.{}' should be 'rcumod-abi {}.{}'",
                module.0, module.1, host.0, host.1
            ),
            InspectError::DisallowedLibrary { library } => write!(
                f,
                "module needs library '{library}', which is not on the allowed list \
                 (modules may link only the C runtime libraries)"
            ),
            InspectError::SearchPath { entry } => write!(
                f,
                "module sets its own library search path ({entry}): an allowed library name \
                 could then resolve to another file (load with --allow-search-paths to accept)"
            ),
            InspectError::UnknownSymbols { symbols } => {
                let n = symbols.len();
                write!(
                    f,
                    "Unknown symbol in module ({n} symbol{})",
                    if n == 1 { "" } else { "s" }
                )?;
                for s in symbols {
                    write!(f, "\nUnknown symbol {s} (err -2)")?;
                }
                Ok(())
            }
            InspectError::Pinned { risks } => {
                f.write_str("module can never be unloaded: ")?;
                for (i, r) in risks.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{r}")?;
                }
                f.write_str(" (load with --allow-pinned to accept)")
            }
        }
    }
}

impl std::error::Error for InspectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InspectError::Io { source, .. } => Some(source),
            InspectError::BadModinfo(e) => Some(e),
            _ => None,
        }
    }
}

/// Inspect the module file at `path` without loading it.
///
/// The size cap is checked against the file's metadata first. At most `max_size + 1` bytes are
/// then read, so a file that grows meanwhile, or a device, cannot make the inspector read
/// without bound.
pub fn inspect_file(path: &Path, policy: &InspectPolicy) -> Result<Inspection, InspectError> {
    inspect_bytes(&read_module(path, policy)?, policy)
}

/// Read a module file whole, under the policy's size cap: refused before reading when its
/// metadata says it is too large, and never more than `max_size + 1` bytes read. The loader
/// inspects these bytes and then loads the very same bytes (library.rs).
pub(crate) fn read_module(path: &Path, policy: &InspectPolicy) -> Result<Vec<u8>, InspectError> {
    read_bounded(path, policy.max_size).map_err(|e| match e {
        ReadError::Io(source) => InspectError::Io {
            path: path.to_owned(),
            source,
        },
        ReadError::TooLarge(size) => InspectError::TooLarge {
            size,
            max: policy.max_size,
        },
    })
}

/// Inspect a module image held in memory. See the [module documentation](self) for the checks
/// and their order.
pub fn inspect_bytes(bytes: &[u8], policy: &InspectPolicy) -> Result<Inspection, InspectError> {
    let size = bytes.len() as u64;
    if size > policy.max_size {
        return Err(InspectError::TooLarge {
            size,
            max: policy.max_size,
        });
    }
    match catch_unwind(AssertUnwindSafe(|| inspect_elf(bytes, policy))) {
        Ok(result) => result,
        Err(payload) => Err(InspectError::malformed(format!(
            "the ELF parser panicked: {}",
            panic_message(&*payload)
        ))),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// The checks after the size cap.
fn inspect_elf(bytes: &[u8], policy: &InspectPolicy) -> Result<Inspection, InspectError> {
    let ehdr = Ehdr::parse(bytes)?;
    ehdr.check_target()?;
    let layout = validate_structure(bytes, &ehdr)?;

    let elf = parse_elf(bytes)?;
    let names = SymbolNames::new(&elf)?;

    // The descriptor.
    let descriptor = elf.dynsyms.iter().enumerate().skip(1).any(|(i, s)| {
        s.st_shndx != usize::from(SHN_UNDEF)
            && s.st_shndx < usize::from(SHN_LORESERVE)
            && matches!(s.st_bind(), STB_GLOBAL | STB_WEAK)
            && matches!(s.st_visibility(), STV_DEFAULT | STV_PROTECTED)
            && names.get(i) == rcumod_abi::DESCRIPTOR_SYMBOL
    });
    if !descriptor {
        return Err(InspectError::NoDescriptor);
    }

    // `.modinfo`. validate_structure found it by name, made sure it is unique and inside the
    // file.
    let section = layout.modinfo.ok_or(InspectError::NoModinfo)?;
    let data = if section.sh_type == SHT_NOBITS {
        &[][..]
    } else {
        file_range(bytes, section.sh_offset, section.sh_size)
            .ok_or_else(|| InspectError::malformed(".modinfo lies outside the file"))?
    };
    let modinfo = rcumod_abi::modinfo::parse(data).map_err(InspectError::BadModinfo)?;

    // ABI.
    // From here on, refusals are policy: in report-only mode they are listed instead.
    let mut problems = Vec::new();
    let mut refuse = |e: InspectError| -> Result<(), InspectError> {
        if policy.report_only {
            problems.push(e.to_string());
            Ok(())
        } else {
            Err(e)
        }
    };
    let host = (rcumod_abi::ABI_MAJOR, rcumod_abi::ABI_MINOR);
    if modinfo.abi.0 != host.0 || modinfo.abi.1 > host.1 {
        refuse(InspectError::AbiMismatch {
            module: modinfo.abi,
            host,
        })?;
    }

    // Libraries.
    let needed = layout.needed;
    for library in needed
        .iter()
        .filter(|l| !policy.allowed_libraries.iter().any(|a| a == *l))
    {
        refuse(InspectError::DisallowedLibrary {
            library: library.clone(),
        })?;
    }

    // Search paths: they would let an allowed name resolve to a file the allowlist never saw.
    let search_paths = layout.search_paths;
    if !policy.allow_search_paths {
        for entry in &search_paths {
            refuse(InspectError::SearchPath {
                entry: entry.clone(),
            })?;
        }
    }

    // Symbols.
    let mut undefined = Vec::new();
    let mut strong_undefined = Vec::new();
    let mut seen = HashSet::new();
    for (i, s) in elf.dynsyms.iter().enumerate().skip(1) {
        if s.st_shndx != usize::from(SHN_UNDEF) {
            continue;
        }
        let name = names.get(i);
        if seen.insert(name) {
            undefined.push(name.to_owned());
            if s.st_bind() != STB_WEAK {
                strong_undefined.push(name);
            }
        }
    }
    if let Err(e) = check_symbols(&strong_undefined, &needed, policy) {
        refuse(e)?;
    }

    // Pin risks.
    let mut pin_risks = Vec::new();
    let flags_1 = elf.dynamic.as_ref().map_or(0, |d| d.info.flags_1);
    if flags_1 & DF_1_NODELETE != 0 {
        pin_risks.push(PinRisk::NoDelete);
    }
    let mut unique = Vec::new();
    let mut seen = HashSet::new();
    for (i, s) in elf.dynsyms.iter().enumerate().skip(1) {
        if s.st_bind() == STB_GNU_UNIQUE && seen.insert(names.get(i)) {
            unique.push(names.get(i));
        }
    }
    if !unique.is_empty() {
        pin_risks.push(PinRisk::GnuUnique {
            symbols: unique.into_iter().map(str::to_owned).collect(),
        });
    }
    if !pin_risks.is_empty() && !policy.allow_pinned {
        refuse(InspectError::Pinned {
            risks: pin_risks.clone(),
        })?;
    }

    // Everything else the caller wants to know.
    let exec_segments = elf
        .program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD && ph.p_flags & PF_X != 0)
        .map(|ph| (ph.p_vaddr, ph.p_vaddr.saturating_add(ph.p_memsz)))
        .collect();
    let has_tls = elf.program_headers.iter().any(|ph| ph.p_type == PT_TLS);
    let build_id = elf.iter_note_headers(bytes).and_then(|notes| {
        notes
            .filter_map(Result::ok)
            .find(|n| n.n_type == NT_GNU_BUILD_ID && n.name == "GNU" && !n.desc.is_empty())
            .map(|n| hex(n.desc))
    });
    let inspection = Inspection {
        modinfo,
        size: bytes.len() as u64,
        machine: machine_name(ehdr.e_machine),
        soname: layout.soname,
        needed,
        build_id,
        has_tls,
        pin_risks,
        undefined,
        exec_segments,
        search_paths,
        problems,
    };
    tracing::debug!(
        module = %inspection.modinfo.name,
        size = inspection.size,
        needed = ?inspection.needed,
        pin_risks = inspection.pin_risks.len(),
        "module inspected"
    );
    Ok(inspection)
}

/// What goblin's strict `Elf::parse_with_opts` builds, reduced to what the checks read: the
/// program headers, the dynamic table and its string table, and the dynamic symbols, counted as
/// goblin counts them (from the GNU or SysV hash table, and at least up to the highest symbol a
/// dynamic relocation names). Skipped: the static symbol table and its strings (`.symtab`,
/// `.strtab`), version sections and section relocations, which ld.so never reads (in a Rust
/// cdylib `.strtab` alone is most of a full parse), and the section headers, which
/// [`validate_structure`] has read and checked (it also finds `.modinfo`).
///
/// The file has passed [`validate_structure`]; goblin's own range checks still apply.
fn parse_elf(bytes: &[u8]) -> Result<Elf<'_>, InspectError> {
    let bad = |e: goblin::error::Error| InspectError::malformed(e.to_string());
    let header = Elf::parse_header(bytes).map_err(bad)?;
    let ctx = Ctx::new(
        Container::Big,
        if header.e_ident[EI_DATA] == ELFDATA2LSB {
            Endian::Little
        } else {
            Endian::Big
        },
    );
    let mut elf = Elf::lazy_parse(header).map_err(bad)?;
    let (phoff, phnum) = (header.e_phoff as usize, usize::from(header.e_phnum));
    elf.program_headers = ProgramHeader::parse(bytes, phoff, phnum, ctx).map_err(bad)?;
    elf.dynamic = Dynamic::parse(bytes, &elf.program_headers, ctx).map_err(bad)?;
    if let Some(info) = elf.dynamic.as_ref().map(|d| &d.info) {
        elf.dynstrtab = Strtab::parse(bytes, info.strtab, info.strsz, 0).map_err(bad)?;
        let relocs = [
            (info.rela, info.relasz, true),
            (info.rel, info.relsz, false),
            (info.jmprel, info.pltrelsz, info.pltrel == DT_RELA),
        ];
        let mut max_sym = 0;
        for (offset, size, is_rela) in relocs {
            let table = RelocSection::parse(bytes, offset, size, is_rela, ctx).map_err(bad)?;
            max_sym = table.iter().fold(max_sym, |m, r| m.max(r.r_sym));
        }
        let mut count = if let Some(at) = info.gnu_hash {
            gnu_hash_len(bytes, at as usize, ctx.is_little_endian())?
        } else if let Some(at) = info.hash {
            let f = Fields {
                bytes,
                little: ctx.is_little_endian(),
            };
            // nchain, the second word (32-bit even in ELF64 here: x86-64 and AArch64).
            f.u32(at.saturating_add(4))
                .ok_or_else(|| InspectError::malformed("DT_HASH lies outside the file"))?
                as usize
        } else {
            0
        };
        if max_sym != 0 {
            count = count.max(max_sym.saturating_add(1));
        }
        elf.dynsyms = Symtab::parse(bytes, info.symtab, count, ctx).map_err(bad)?;
    }
    Ok(elf)
}

/// The number of dynamic symbols a `DT_GNU_HASH` table covers (goblin's `gnu_hash_len`, with
/// checked arithmetic): one past the last symbol of the longest-reaching bucket's chain.
fn gnu_hash_len(bytes: &[u8], at: usize, little: bool) -> Result<usize, InspectError> {
    let f = Fields { bytes, little };
    let outside = || InspectError::malformed("DT_GNU_HASH lies outside the file");
    // The 32-bit word at `at + 4 * index`.
    let word = |index: usize| -> Result<usize, InspectError> {
        index
            .checked_mul(4)
            .and_then(|o| o.checked_add(at))
            .and_then(|o| f.u32(o as u64))
            .map(|w| w as usize)
            .ok_or_else(outside)
    };
    let (nbuckets, symoffset, bloom_size) = (word(0)?, word(1)?, word(2)?);
    if nbuckets == 0 || symoffset == 0 || bloom_size == 0 {
        return Err(InspectError::malformed(format!(
            "invalid DT_GNU_HASH: {nbuckets} buckets, symbol offset {symoffset}, \
             bloom size {bloom_size}"
        )));
    }
    // Header, then the 64-bit bloom words, then the buckets, then the chains (all in words).
    let buckets = bloom_size
        .checked_mul(2)
        .and_then(|b| b.checked_add(4))
        .ok_or_else(outside)?;
    let mut last = 0;
    for i in 0..nbuckets {
        // Stops at the end of the file at the latest (`word` fails there).
        last = last.max(word(buckets.checked_add(i).ok_or_else(outside)?)?);
    }
    if last < symoffset {
        return Ok(0);
    }
    let mut chain = buckets
        .checked_add(nbuckets)
        .and_then(|c| c.checked_add(last - symoffset))
        .ok_or_else(outside)?;
    loop {
        let hash = word(chain)?;
        last += 1;
        chain = chain.checked_add(1).ok_or_else(outside)?;
        if hash & 1 != 0 {
            return Ok(last);
        }
    }
}

/// Names of the dynamic symbols, each checked once to lie inside the dynamic string table.
struct SymbolNames<'a> {
    names: Vec<&'a str>,
}

impl<'a> SymbolNames<'a> {
    fn new(elf: &Elf<'a>) -> Result<Self, InspectError> {
        let mut names = Vec::with_capacity(elf.dynsyms.len());
        for (i, s) in elf.dynsyms.iter().enumerate() {
            let name = if i == 0 {
                ""
            } else {
                elf.dynstrtab.get_at(s.st_name).ok_or_else(|| {
                    InspectError::malformed(format!(
                        "dynamic symbol {i} has a name offset ({:#x}) outside the string table",
                        s.st_name
                    ))
                })?
            };
            names.push(name);
        }
        Ok(SymbolNames { names })
    }

    fn get(&self, i: usize) -> &'a str {
        self.names.get(i).copied().unwrap_or("")
    }
}

/// Every symbol in `undefined` must be exported by one of `needed` or be in the policy's
/// `extra_symbols`. A needed library that cannot be read is skipped with a one-time warning.
/// Symbols it might have provided are then not reported: an unreadable library must not make
/// inspection fail.
fn check_symbols(
    undefined: &[&str],
    needed: &[String],
    policy: &InspectPolicy,
) -> Result<(), InspectError> {
    if undefined.is_empty() {
        return Ok(());
    }
    let mut providers = Vec::with_capacity(needed.len());
    let mut unreadable = Vec::new();
    for lib in needed {
        match library_exports(lib, &policy.library_dirs) {
            Some(exports) => providers.push(exports),
            None => unreadable.push(lib.as_str()),
        }
    }
    let unknown: Vec<String> = undefined
        .iter()
        .filter(|s| {
            !policy.extra_symbols.iter().any(|e| e == *s)
                && !providers.iter().any(|p| p.contains(**s))
        })
        .map(|s| (*s).to_owned())
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    if !unreadable.is_empty() {
        tracing::debug!(
            unverified = ?unknown,
            libraries = ?unreadable,
            "symbols not found in the readable libraries; they may come from unreadable ones"
        );
        return Ok(());
    }
    Err(InspectError::UnknownSymbols { symbols: unknown })
}

/// A library's exported symbol names.
type Exports = HashSet<String, BuildHasherDefault<FxHasher>>;

/// The multiply-rotate hash of rustc's `FxHasher`, for the export sets: several times faster than
/// the default SipHash on short names. It is not keyed, which is safe here only because the sets
/// are filled from the system's libraries: a module's names are only looked up, and a lookup
/// costs what the table's own layout makes it cost, whatever the name. (Sets filled from a
/// module's names keep the randomly keyed default, against names chosen to collide.)
#[derive(Default)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail));
    }

    fn write_u8(&mut self, b: u8) {
        self.add(u64::from(b));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// How a cached library file looked when it was read. A change means it must be read again.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> Self {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// A library file's exported symbols. `None` means the file is not a usable library for this
/// host (wrong architecture, or unreadable, warned about once).
struct CachedExports {
    stamp: FileStamp,
    exports: Option<Arc<Exports>>,
}

/// The process-wide cache of library exports, by path.
fn exports_cache() -> &'static Mutex<HashMap<PathBuf, CachedExports>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, CachedExports>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Log `message` the first time `key` is seen in this process.
fn warn_once(key: String, message: impl FnOnce() -> String) {
    static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let first = WARNED
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key);
    if first {
        tracing::warn!("{}", message());
    }
}

/// The symbols exported by the first usable file named `name` in `dirs`, or `None` when there is
/// none (warned about once per name).
fn library_exports(name: &str, dirs: &[PathBuf]) -> Option<Arc<Exports>> {
    for dir in dirs {
        let path = dir.join(name);
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let stamp = FileStamp::of(&meta);
        {
            let cache = exports_cache().lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.get(&path).filter(|c| c.stamp == stamp) {
                match &c.exports {
                    Some(e) => return Some(Arc::clone(e)),
                    None => continue,
                }
            }
        }
        let exports = match read_library_exports(&path) {
            Ok(Some(set)) => Some(Arc::new(set)),
            Ok(None) => None,
            Err(reason) => {
                warn_once(path.display().to_string(), || {
                    format!(
                        "cannot read the exported symbols of {}: {reason}; \
                         symbols are not checked against it",
                        path.display()
                    )
                });
                None
            }
        };
        exports_cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                path,
                CachedExports {
                    stamp,
                    exports: exports.clone(),
                },
            );
        if exports.is_some() {
            return exports;
        }
    }
    warn_once(format!("missing:{name}"), || {
        format!(
            "allowed library {name} was not found in {dirs:?}; \
             symbols are not checked against it"
        )
    });
    None
}

/// The defined, exported dynamic symbols of the library at `path`. `Ok(None)` if it is not a
/// shared object for this host.
fn read_library_exports(path: &Path) -> Result<Option<Exports>, String> {
    let bytes = read_bounded(path, LIBRARY_MAX_SIZE).map_err(|e| match e {
        ReadError::Io(e) => e.to_string(),
        ReadError::TooLarge(size) => format!("{size} bytes is over {LIBRARY_MAX_SIZE}"),
    })?;
    let parsed = catch_unwind(AssertUnwindSafe(|| -> Result<_, InspectError> {
        let ehdr = Ehdr::parse(&bytes)?;
        if ehdr.check_target().is_err() {
            return Ok(None);
        }
        validate_structure(&bytes, &ehdr)?;
        let elf = parse_elf(&bytes)?;
        let mut exports = Exports::default();
        for s in elf.dynsyms.iter().skip(1) {
            if s.st_shndx != usize::from(SHN_UNDEF)
                && matches!(s.st_bind(), STB_GLOBAL | STB_WEAK | STB_GNU_UNIQUE)
                && matches!(s.st_visibility(), STV_DEFAULT | STV_PROTECTED)
            {
                if let Some(name) = elf.dynstrtab.get_at(s.st_name) {
                    exports.insert(name.to_owned());
                }
            }
        }
        Ok(Some(exports))
    }));
    match parsed {
        Ok(Ok(exports)) => Ok(exports),
        Ok(Err(e)) => Err(e.to_string()),
        Err(payload) => Err(format!(
            "the ELF parser panicked: {}",
            panic_message(&*payload)
        )),
    }
}

enum ReadError {
    Io(io::Error),
    TooLarge(u64),
}

/// Read the whole file, refusing before reading if its metadata says it is over `max`, and
/// never reading more than `max + 1` bytes.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let file = File::open(path).map_err(ReadError::Io)?;
    let len = file.metadata().map_err(ReadError::Io)?.len();
    if len > max {
        return Err(ReadError::TooLarge(len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// `bytes[offset..offset + size]`, if it lies inside.
fn file_range(bytes: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    bytes.get(start..end)
}

/// Does `[offset, offset + size)` lie inside a file of `len` bytes?
fn in_file(offset: u64, size: u64, len: usize) -> bool {
    offset
        .checked_add(size)
        .is_some_and(|end| end <= len as u64)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn machine_name(e_machine: u16) -> String {
    match e_machine {
        EM_X86_64 => "x86_64",
        EM_AARCH64 => "aarch64",
        EM_386 => "i386",
        EM_ARM => "arm",
        EM_RISCV => "riscv",
        EM_PPC64 => "ppc64",
        EM_PPC => "ppc",
        EM_S390 => "s390",
        EM_MIPS => "mips",
        EM_LOONGARCH => "loongarch",
        other => return format!("machine {other}"),
    }
    .to_owned()
}

/// A bounds-checked reader of ELF fields in the file's byte order.
#[derive(Clone, Copy)]
struct Fields<'a> {
    bytes: &'a [u8],
    little: bool,
}

impl Fields<'_> {
    fn array<const N: usize>(self, offset: u64) -> Option<[u8; N]> {
        file_range(self.bytes, offset, N as u64)?.try_into().ok()
    }
    fn u16(self, offset: u64) -> Option<u16> {
        let a = self.array(offset)?;
        Some(if self.little {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        })
    }
    fn u32(self, offset: u64) -> Option<u32> {
        let a = self.array(offset)?;
        Some(if self.little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    }
    fn u64(self, offset: u64) -> Option<u64> {
        let a = self.array(offset)?;
        Some(if self.little {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        })
    }
}

/// The ELF64 file header, read by hand so that nothing is handed to goblin unchecked.
struct Ehdr {
    data: u8,
    ei_version: u8,
    e_type: u16,
    e_machine: u16,
    e_version: u32,
    e_phoff: u64,
    e_shoff: u64,
    e_ehsize: u16,
    e_phentsize: u16,
    e_phnum: u16,
    e_shentsize: u16,
    e_shnum: u16,
    e_shstrndx: u16,
}

impl Ehdr {
    /// Magic, class, then the rest of the header.
    fn parse(bytes: &[u8]) -> Result<Ehdr, InspectError> {
        if bytes.get(..4) != Some(&ELFMAG[..]) {
            return Err(InspectError::NotElf);
        }
        let Some(&class) = bytes.get(EI_CLASS) else {
            return Err(InspectError::malformed(
                "truncated ELF identification (no class byte)",
            ));
        };
        if class != ELFCLASS64 {
            return Err(InspectError::NotElf64);
        }
        if bytes.len() < EHDR_SIZE {
            return Err(InspectError::malformed(format!(
                "truncated ELF header ({} of {EHDR_SIZE} bytes)",
                bytes.len()
            )));
        }
        let data = bytes[EI_DATA];
        if data != ELFDATA2LSB && data != ELFDATA2MSB {
            return Err(InspectError::malformed(format!(
                "invalid byte order (EI_DATA {data})"
            )));
        }
        let f = Fields {
            bytes,
            little: data == ELFDATA2LSB,
        };
        let header = || -> Option<Ehdr> {
            Some(Ehdr {
                data,
                ei_version: bytes[EI_VERSION],
                e_type: f.u16(16)?,
                e_machine: f.u16(18)?,
                e_version: f.u32(20)?,
                e_phoff: f.u64(32)?,
                e_shoff: f.u64(40)?,
                e_ehsize: f.u16(52)?,
                e_phentsize: f.u16(54)?,
                e_phnum: f.u16(56)?,
                e_shentsize: f.u16(58)?,
                e_shnum: f.u16(60)?,
                e_shstrndx: f.u16(62)?,
            })
        };
        header().ok_or_else(|| InspectError::malformed("truncated ELF header"))
    }

    /// Architecture and byte order, then `e_type`.
    fn check_target(&self) -> Result<(), InspectError> {
        let (machine, arch) = HOST_MACHINE;
        if machine != Some(self.e_machine) || self.data != HOST_DATA {
            let mut found = machine_name(self.e_machine);
            if self.data != HOST_DATA {
                found.push_str(if self.data == ELFDATA2MSB {
                    " (big-endian)"
                } else {
                    " (little-endian)"
                });
            }
            return Err(InspectError::WrongArchitecture {
                found,
                expected: arch,
            });
        }
        if self.e_type != ET_DYN {
            return Err(InspectError::NotSharedObject {
                e_type: self.e_type,
            });
        }
        Ok(())
    }

    fn fields<'a>(&self, bytes: &'a [u8]) -> Fields<'a> {
        Fields {
            bytes,
            little: self.data == ELFDATA2LSB,
        }
    }
}

#[derive(Clone, Copy)]
struct Phdr {
    p_type: u32,
    p_offset: u64,
    p_vaddr: u64,
    p_filesz: u64,
    p_memsz: u64,
}

#[derive(Clone, Copy)]
struct Shdr {
    sh_name: u32,
    sh_type: u32,
    sh_offset: u64,
    sh_size: u64,
    sh_link: u32,
    sh_entsize: u64,
}

/// goblin's mapping of a virtual address to a file offset (`vm_to_offset` in its
/// `elf/dynamic.rs`): the first `PT_LOAD` whose `[p_vaddr, p_vaddr + p_memsz)` holds it.
/// Mirrored exactly so that the checks below see the offsets goblin will use.
fn goblin_vm_to_offset(phdrs: &[Phdr], vaddr: u64) -> Option<u64> {
    phdrs
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD && vaddr >= ph.p_vaddr)
        .find(|ph| vaddr - ph.p_vaddr < ph.p_memsz)
        .and_then(|ph| ph.p_offset.checked_add(vaddr - ph.p_vaddr))
}

/// Number of entries goblin's `Strtab::parse` makes for `bytes[offset..offset + size]` (one per
/// NUL-terminated string, plus an unterminated tail). Ranges outside the file count 0, because
/// goblin refuses them before allocating.
fn strtab_entries(bytes: &[u8], offset: u64, size: u64) -> u64 {
    match file_range(bytes, offset, size) {
        Some(table) if !table.is_empty() => {
            // Counted in runs of 255 into a byte, which compiles to a 16- or 32-byte wide loop
            // (a u64 count per byte went 2 bytes at a time).
            let nuls: u64 = table
                .chunks(255)
                .map(|run| u64::from(run.iter().fold(0u8, |n, &b| n + u8::from(b == 0))))
                .sum();
            nuls + u64::from(table.last() != Some(&0))
        }
        _ => 0,
    }
}

/// What [`validate_structure`] read from the dynamic table itself.
#[derive(Default)]
struct Layout {
    /// `DT_NEEDED` names, in order.
    needed: Vec<String>,
    /// The last `DT_SONAME` (ld.so uses the last of repeated tags too).
    soname: Option<String>,
    /// `DT_RPATH` / `DT_RUNPATH` entries, as `TAG=value`.
    search_paths: Vec<String>,
    /// The `.modinfo` section (there is at most one).
    modinfo: Option<Shdr>,
}

/// Check everything goblin will trust: table and segment ranges, entry sizes, string-table
/// indices, the dynamic table's string offsets. Also bound how many strings goblin will
/// pre-split. Afterwards goblin's allocations stay proportional to the file size. Returns the
/// `DT_NEEDED` and `DT_SONAME` names, read the way ld.so reads them.
fn validate_structure(bytes: &[u8], ehdr: &Ehdr) -> Result<Layout, InspectError> {
    let len = bytes.len();
    let f = ehdr.fields(bytes);
    fn bad(reason: impl Into<String>) -> InspectError {
        InspectError::malformed(reason)
    }

    if u32::from(ehdr.ei_version) != EV_CURRENT || ehdr.e_version != EV_CURRENT {
        return Err(bad(format!(
            "unsupported ELF version ({}, {})",
            ehdr.ei_version, ehdr.e_version
        )));
    }
    if usize::from(ehdr.e_ehsize) != EHDR_SIZE {
        return Err(bad(format!(
            "e_ehsize is {} (expected {EHDR_SIZE})",
            ehdr.e_ehsize
        )));
    }

    // Program headers.
    if ehdr.e_phnum == 0 {
        return Err(bad("no program headers"));
    }
    if ehdr.e_phnum == PN_XNUM {
        return Err(bad(
            "extended program header numbering (PN_XNUM) is not supported",
        ));
    }
    if u64::from(ehdr.e_phentsize) != PHDR_SIZE {
        return Err(bad(format!(
            "e_phentsize is {} (expected {PHDR_SIZE})",
            ehdr.e_phentsize
        )));
    }
    let ph_table = u64::from(ehdr.e_phnum) * PHDR_SIZE;
    if !in_file(ehdr.e_phoff, ph_table, len) {
        return Err(bad(format!(
            "program header table ({} entries at {:#x}) extends past the end of the file \
             ({len} bytes)",
            ehdr.e_phnum, ehdr.e_phoff
        )));
    }
    let mut phdrs = Vec::with_capacity(usize::from(ehdr.e_phnum));
    for i in 0..u64::from(ehdr.e_phnum) {
        let at = ehdr.e_phoff + i * PHDR_SIZE;
        let ph = (|| {
            Some(Phdr {
                p_type: f.u32(at)?,
                p_offset: f.u64(at + 8)?,
                p_vaddr: f.u64(at + 16)?,
                p_filesz: f.u64(at + 32)?,
                p_memsz: f.u64(at + 40)?,
            })
        })()
        .ok_or_else(|| bad("truncated program header"))?;
        // This also covers PT_NOTE, whose end goblin's note iterator computes unchecked.
        if ph.p_filesz > 0 && !in_file(ph.p_offset, ph.p_filesz, len) {
            return Err(bad(format!(
                "segment {i} (type {:#x}) at {:#x}+{:#x} extends past the end of the file \
                 ({len} bytes)",
                ph.p_type, ph.p_offset, ph.p_filesz
            )));
        }
        if ph.p_type == PT_LOAD
            && (ph.p_filesz > ph.p_memsz || ph.p_vaddr.checked_add(ph.p_memsz).is_none())
        {
            return Err(bad(format!(
                "loadable segment {i} has p_filesz {:#x} > p_memsz {:#x} or wraps around",
                ph.p_filesz, ph.p_memsz
            )));
        }
        phdrs.push(ph);
    }
    if phdrs.iter().filter(|p| p.p_type == PT_DYNAMIC).count() > 1 {
        return Err(bad("more than one PT_DYNAMIC segment"));
    }
    if !phdrs.iter().any(|p| p.p_type == PT_LOAD) {
        return Err(bad("no loadable segment"));
    }

    // Section headers.
    let mut shdrs = Vec::new();
    if ehdr.e_shoff != 0 {
        if ehdr.e_shnum == 0 {
            return Err(bad(
                "extended section numbering (e_shnum 0) is not supported",
            ));
        }
        if ehdr.e_shnum >= SHN_LORESERVE {
            return Err(bad(format!("e_shnum {:#x} is reserved", ehdr.e_shnum)));
        }
        if u64::from(ehdr.e_shentsize) != SHDR_SIZE {
            return Err(bad(format!(
                "e_shentsize is {} (expected {SHDR_SIZE})",
                ehdr.e_shentsize
            )));
        }
        if !in_file(ehdr.e_shoff, u64::from(ehdr.e_shnum) * SHDR_SIZE, len) {
            return Err(bad(format!(
                "section header table ({} entries at {:#x}) extends past the end of the file \
                 ({len} bytes)",
                ehdr.e_shnum, ehdr.e_shoff
            )));
        }
        shdrs.reserve_exact(usize::from(ehdr.e_shnum));
        for i in 0..u64::from(ehdr.e_shnum) {
            let at = ehdr.e_shoff + i * SHDR_SIZE;
            let sh = (|| {
                Some(Shdr {
                    sh_name: f.u32(at)?,
                    sh_type: f.u32(at + 4)?,
                    sh_offset: f.u64(at + 24)?,
                    sh_size: f.u64(at + 32)?,
                    sh_link: f.u32(at + 40)?,
                    sh_entsize: f.u64(at + 56)?,
                })
            })()
            .ok_or_else(|| bad("truncated section header"))?;
            shdrs.push(sh);
        }
    } else if ehdr.e_shnum != 0 {
        return Err(bad("e_shnum is set but there is no section header table"));
    }
    let shnum = shdrs.len();
    if ehdr.e_shstrndx == SHN_XINDEX {
        return Err(bad(
            "extended section numbering (SHN_XINDEX) is not supported",
        ));
    }
    let shstrtab = if ehdr.e_shstrndx == SHN_UNDEF || shnum == 0 {
        None
    } else {
        match shdrs.get(usize::from(ehdr.e_shstrndx)) {
            Some(s) if s.sh_type == SHT_STRTAB => Some(*s),
            _ => {
                return Err(bad(format!(
                    "e_shstrndx {} is not a string table section",
                    ehdr.e_shstrndx
                )))
            }
        }
    };
    let mut modinfo_sections = 0;
    let mut modinfo = None;
    for (i, sh) in shdrs.iter().enumerate().skip(1) {
        if sh.sh_type != SHT_NOBITS
            && sh.sh_type != SHT_NULL
            && !in_file(sh.sh_offset, sh.sh_size, len)
        {
            return Err(bad(format!(
                "section {i} at {:#x}+{:#x} extends past the end of the file ({len} bytes)",
                sh.sh_offset, sh.sh_size
            )));
        }
        if sh.sh_link as usize >= shnum {
            return Err(bad(format!(
                "section {i} links to section {} of {shnum}",
                sh.sh_link
            )));
        }
        let entsize = match sh.sh_type {
            SHT_SYMTAB | SHT_DYNSYM => Some(SYM_SIZE),
            SHT_DYNAMIC => Some(DYN_SIZE),
            _ => None,
        };
        if let Some(entsize) = entsize {
            if sh.sh_size > 0 && sh.sh_entsize != entsize {
                return Err(bad(format!(
                    "section {i} has entry size {} (expected {entsize})",
                    sh.sh_entsize
                )));
            }
        }
        if matches!(sh.sh_type, SHT_SYMTAB | SHT_DYNSYM)
            && shdrs[sh.sh_link as usize].sh_type != SHT_STRTAB
        {
            return Err(bad(format!(
                "symbol table section {i} links to section {}, which is not a string table",
                sh.sh_link
            )));
        }
        if let Some(strtab) = shstrtab {
            if u64::from(sh.sh_name) >= strtab.sh_size {
                return Err(bad(format!(
                    "section {i} has a name offset ({:#x}) outside the section name table",
                    sh.sh_name
                )));
            }
            let name = file_range(bytes, strtab.sh_offset + u64::from(sh.sh_name), {
                let n = rcumod_abi::MODINFO_SECTION.len() as u64 + 1;
                n.min(strtab.sh_size - u64::from(sh.sh_name))
            });
            if name.is_some_and(|n| {
                n.strip_suffix(b"\0") == Some(rcumod_abi::MODINFO_SECTION.as_bytes())
            }) {
                modinfo_sections += 1;
                modinfo = Some(*sh);
            }
        }
    }
    if modinfo_sections > 1 {
        return Err(bad("more than one .modinfo section"));
    }

    // The dynamic table, as goblin reads it: the first PT_DYNAMIC, up to DT_NULL.
    let mut strtab_vaddr = None;
    let mut strsz = 0;
    let mut flags_1 = 0;
    let mut string_refs = Vec::new();
    let mut entries = 0;
    let mut layout = Layout {
        modinfo,
        ..Layout::default()
    };
    if let Some(dynamic) = phdrs.iter().find(|p| p.p_type == PT_DYNAMIC) {
        for i in 0..dynamic.p_filesz / DYN_SIZE {
            let at = dynamic.p_offset + i * DYN_SIZE;
            let (Some(tag), Some(val)) = (f.u64(at), f.u64(at + 8)) else {
                return Err(bad("truncated dynamic table"));
            };
            match tag {
                DT_NULL => break,
                DT_STRTAB => strtab_vaddr = Some(val),
                DT_STRSZ => strsz = val,
                DT_FLAGS_1 => flags_1 = val,
                DT_NEEDED => string_refs.push(("DT_NEEDED", val)),
                DT_SONAME => string_refs.push(("DT_SONAME", val)),
                DT_RPATH => string_refs.push(("DT_RPATH", val)),
                DT_RUNPATH => string_refs.push(("DT_RUNPATH", val)),
                _ => {}
            }
        }
        let strtab_offset = strtab_vaddr
            .and_then(|v| goblin_vm_to_offset(&phdrs, v))
            .unwrap_or(0);
        if !string_refs.is_empty() && strtab_vaddr.is_none() {
            return Err(bad("dynamic table names libraries but has no DT_STRTAB"));
        }
        if strtab_vaddr.is_some() && !in_file(strtab_offset, strsz, len) {
            return Err(bad(format!(
                "dynamic string table at {strtab_offset:#x}+{strsz:#x} extends past the end \
                 of the file ({len} bytes)"
            )));
        }
        // Read the names here, as ld.so will (bytes up to the NUL), instead of taking goblin's
        // `libraries`: goblin silently drops a DT_NEEDED whose offset it cannot resolve, e.g.
        // one inside a multi-byte character, and such a library would escape the allowlist.
        let table = file_range(bytes, strtab_offset, strsz).unwrap_or(&[]);
        for (tag, val) in string_refs {
            let name = usize::try_from(val)
                .ok()
                .and_then(|start| table.get(start..))
                .ok_or_else(|| {
                    bad(format!(
                        "{tag} string offset {val:#x} is outside the dynamic string table \
                         ({strsz:#x} bytes)"
                    ))
                })?;
            let name = name
                .iter()
                .position(|&b| b == 0)
                .map(|end| &name[..end])
                .ok_or_else(|| bad(format!("{tag} string at {val:#x} is not NUL-terminated")))?;
            let name = std::str::from_utf8(name)
                .map_err(|_| bad(format!("{tag} string at {val:#x} is not UTF-8")))?
                .to_owned();
            match tag {
                "DT_NEEDED" => layout.needed.push(name),
                "DT_SONAME" => layout.soname = Some(name),
                _ => layout.search_paths.push(format!("{tag}={name}")),
            }
        }
        if flags_1 & DF_1_PIE != 0 {
            return Err(InspectError::NotSharedObject { e_type: ET_DYN });
        }
        entries += strtab_entries(bytes, strtab_offset, strsz);
    }

    // goblin pre-splits a string table it parses into a Vec of 24-byte entries; `parse_elf`
    // has it parse only the dynamic one. A table of NULs would make that 24 times its size, so
    // bound it; real files have far fewer strings, as each name also costs a 24-byte symbol.
    let limit = len as u64 / 16 + 4096;
    if entries > limit {
        return Err(bad(format!(
            "string tables hold {entries} strings, more than {limit} for a file of {len} bytes"
        )));
    }

    Ok(layout)
}
