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
//! 9. pin risks (`DF_1_NODELETE`, `STB_GNU_UNIQUE`), refused unless the policy allows them;
//! 10. hand-off imports (thread creation, signal installation, TLS keys, timers, exit and fork
//!     handlers, `dlopen`): listed as warnings, never refused ([`Inspection::handoffs`]).
//!
//! One file per concern: `elf.rs` (checks 2–3 and the bounded goblin parse), `symbols.rs` (check
//! 8 and the cache of system libraries' exports), `risks.rs` (checks 9–10, and the GOT slots the
//! host interposes), `error.rs` (the refusals); this file holds the policy, the result and the
//! order of the checks.
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

mod elf;
mod error;
mod risks;
mod symbols;

pub use error::InspectError;
pub(crate) use risks::GotSlot;
pub use risks::{Handoff, HandoffImport, PinRisk};

use elf::*;
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use symbols::{check_symbols, read_bounded, ReadError, SymbolNames};

use rcumod_abi::modinfo::ModInfo;

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
    /// Imports through which module code can hand libc code to run later (threads, signal
    /// handlers, key destructors, timers, exit handlers, other objects): warnings for the
    /// operator, since unloading may then end `Pinned` (see [`Handoff::consequence`]).
    pub handoffs: Vec<HandoffImport>,
    /// The GOT slots the host rewrites to interpose the module's hand-off imports.
    pub(crate) got: Vec<GotSlot>,
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

pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
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

    // Pin risks, and what module code may hand libc for later.
    let pin_risks = risks::pin_risks(&elf, &names);
    let handoffs = risks::handoffs(&undefined);
    let got = risks::got_slots(&elf, &names);
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
        handoffs,
        got,
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
