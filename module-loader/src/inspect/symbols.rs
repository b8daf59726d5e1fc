//! The symbol policy: every undefined dynamic symbol of a module must be exported by one of the
//! libraries it may link (or by the host), as ld.so would bind it with `RTLD_NOW`.
//!
//! The system libraries' export sets are read once per process and cached by path, checked
//! against each file's identity, so a host that loads many modules reads libc once.

use super::elf::*;
use super::panic_message;
use super::{InspectError, InspectPolicy};
use goblin::elf::Elf;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// The largest system library the symbol check will read. A library over this limit is
/// skipped with a warning, the same as a missing one.
const LIBRARY_MAX_SIZE: u64 = 1 << 30;

/// Names of the dynamic symbols, each checked once to lie inside the dynamic string table.
pub(super) struct SymbolNames<'a> {
    names: Vec<&'a str>,
}

impl<'a> SymbolNames<'a> {
    pub(super) fn new(elf: &Elf<'a>) -> Result<Self, InspectError> {
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

    pub(super) fn get(&self, i: usize) -> &'a str {
        self.names.get(i).copied().unwrap_or("")
    }
}

/// Every symbol in `undefined` must be exported by one of `needed` or be in the policy's
/// `extra_symbols`. A needed library that cannot be read is skipped with a one-time warning.
/// Symbols it might have provided are then not reported: an unreadable library must not make
/// inspection fail.
pub(super) fn check_symbols(
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

pub(super) enum ReadError {
    Io(io::Error),
    TooLarge(u64),
}

/// Read the whole file, refusing before reading if its metadata says it is over `max`, and
/// never reading more than `max + 1` bytes.
pub(super) fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
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
