//! Load and unload errors: one variant per step that can fail, carrying what the user needs to
//! act on it. `Display` says what failed in kmod's words; `source()` gives the cause.

use crate::inspect::InspectError;
use std::path::PathBuf;

/// Why a module could not be loaded. The host is unchanged afterwards: anything the module
/// registered during a failed `init` has been unwound.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// The file failed inspection (nothing of it ran).
    Inspect {
        /// The file.
        path: PathBuf,
        /// What the inspection found.
        source: InspectError,
    },
    /// A module of that name is already loaded.
    AlreadyLoaded {
        /// The name.
        name: String,
    },
    /// A module named in `depends` is not loaded.
    MissingDependency {
        /// The module being loaded.
        name: String,
        /// The missing one.
        dependency: String,
    },
    /// A parameter the module does not declare (kernel: "Unknown parameter `x'").
    UnknownParameter {
        /// The module.
        name: String,
        /// The parameter.
        param: String,
    },
    /// A value of the wrong type (kernel: "`v' invalid for parameter `x'").
    InvalidParameter {
        /// The module.
        name: String,
        /// The parameter.
        param: String,
        /// The value given.
        value: String,
        /// The declared type.
        ty: &'static str,
    },
    /// A parameter given without `=`.
    MalformedParameter {
        /// What was given.
        arg: String,
    },
    /// Making or filling the in-memory file the module is loaded from failed.
    Image {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the module's bytes to the host's work directory failed (the fallback when the
    /// system offers no in-memory file: no `memfd_create`, or no `/proc`).
    Copy {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The dynamic loader refused the file.
    DlOpen {
        /// The file.
        path: PathBuf,
        /// `dlerror()`'s text.
        message: String,
    },
    /// The exported descriptor is inconsistent with the contract or with `.modinfo`.
    Descriptor {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The module's `init` failed; what it registered was unwound.
    InitFailed {
        /// The module.
        name: String,
        /// The code it returned.
        code: i32,
        /// Whether the unwound module was unmapped, or why not.
        unwound: crate::unload::UnloadOutcome,
    },
}

fn code_meaning(code: i32) -> &'static str {
    match code {
        rcumod_abi::sdk::EPANIC => "init panicked",
        rcumod_abi::EINVAL => "Invalid argument",
        rcumod_abi::ENOENT => "No such file or directory",
        rcumod_abi::ENOSPC => "No space left",
        rcumod_abi::EFAULT => "Bad address",
        _ => "init returned an error",
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Inspect { path, source } => {
                write!(f, "could not insert module {}: {source}", path.display())
            }
            LoadError::AlreadyLoaded { name } => {
                write!(f, "could not insert module {name}: Module already loaded")
            }
            LoadError::MissingDependency { name, dependency } => write!(
                f,
                "could not insert module {name}: Unknown symbol in module, or unknown \
                 dependency: module {dependency} is not loaded"
            ),
            LoadError::UnknownParameter { name, param } => {
                write!(
                    f,
                    "could not insert module {name}: Unknown parameter `{param}'"
                )
            }
            LoadError::InvalidParameter {
                name,
                param,
                value,
                ty,
            } => write!(
                f,
                "could not insert module {name}: `{value}' invalid for parameter `{param}' \
                 (expected {ty})"
            ),
            LoadError::MalformedParameter { arg } => {
                write!(f, "malformed parameter `{arg}' (expected name=value)")
            }
            LoadError::Image { path, source } => write!(
                f,
                "could not insert module {}: cannot read it into an in-memory file: {source}",
                path.display()
            ),
            LoadError::Copy { path, source } => write!(
                f,
                "could not insert module {}: cannot copy it to the host's work directory: {source}",
                path.display()
            ),
            LoadError::DlOpen { path, message } => {
                write!(f, "could not insert module {}: {message}", path.display())
            }
            LoadError::Descriptor { path, reason } => write!(
                f,
                "could not insert module {}: Invalid module format ({reason})",
                path.display()
            ),
            LoadError::InitFailed {
                name,
                code,
                unwound,
            } => write!(
                f,
                "could not insert module {name}: {} ({code}); its registrations were unwound and \
                 it was {unwound}",
                code_meaning(*code)
            ),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Inspect { source, .. } => Some(source),
            LoadError::Image { source, .. } => Some(source),
            LoadError::Copy { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why an unload was refused. (An unload that runs but cannot unmap is not an error: it
/// reports [`UnloadOutcome::Pinned`](crate::UnloadOutcome::Pinned).)
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnloadError {
    /// No such module.
    NotLoaded {
        /// The name.
        name: String,
    },
    /// Other modules depend on it (kmod: "Module X is in use by: Y").
    InUse {
        /// The module.
        name: String,
        /// Who depends on it.
        holders: Vec<String>,
    },
    /// It is not live (still coming, already going, or pinned).
    NotLive {
        /// The module.
        name: String,
        /// Its state.
        state: String,
    },
}

impl std::fmt::Display for UnloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnloadError::NotLoaded { name } => {
                write!(f, "ERROR: Module {name} is not currently loaded")
            }
            UnloadError::InUse { name, holders } => {
                write!(
                    f,
                    "ERROR: Module {name} is in use by: {}",
                    holders.join(" ")
                )
            }
            UnloadError::NotLive { name, state } => {
                write!(f, "ERROR: Module {name} is {state}, not live")
            }
        }
    }
}

impl std::error::Error for UnloadError {}
