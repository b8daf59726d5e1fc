//! Why a module file was refused: one variant per check, worded as kmod words its errors.

use super::elf::*;
use super::PinRisk;
use rcumod_abi::modinfo::ModinfoError;
use std::path::PathBuf;
use std::{fmt, io};

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
    /// The file is larger than [`InspectPolicy::max_size`](super::InspectPolicy::max_size).
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
    /// A `DT_NEEDED` library is not on [`InspectPolicy::allowed_libraries`](super::InspectPolicy::allowed_libraries).
    DisallowedLibrary {
        /// Its name, as written in the file.
        library: String,
    },
    /// Undefined symbols that neither the allowed libraries nor the host export.
    UnknownSymbols {
        /// Their names, in symbol-table order.
        symbols: Vec<String>,
    },
    /// The module sets its own library search path and [`InspectPolicy::allow_search_paths`](super::InspectPolicy::allow_search_paths)
    /// is off.
    SearchPath {
        /// `DT_RPATH=…` or `DT_RUNPATH=…`.
        entry: String,
    },
    /// The module could never be unloaded, and [`InspectPolicy::allow_pinned`](super::InspectPolicy::allow_pinned) is off.
    Pinned {
        /// Why.
        risks: Vec<PinRisk>,
    },
}

impl InspectError {
    pub(super) fn malformed(reason: impl Into<String>) -> Self {
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
