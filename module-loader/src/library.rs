//! The loaded shared object: the only place that talks to the dynamic loader.
//!
//! * Each load opens a **private copy** of the file (`<name>.<generation>.so` in the host's
//!   work directory): glibc matches loaded objects by path, so reloading a changed file at the
//!   same path could silently hand back the old, still-mapped code (loader-anchors.md, pitfall 4).
//! * It opens with `RTLD_NOW | RTLD_LOCAL`: lazy binding would turn a missing symbol into a
//!   process exit at first call instead of a load error (pitfall 7).
//! * It records the object's executable segments (`dl_iterate_phdr`), so callback and hook
//!   pointers can be attributed to the module whose code they are.
//! * Closing is reachable only through [`Quiesced`](crate::unload::Quiesced), which only the
//!   unload protocol constructs; after `dlclose` it checks that the object is really gone, in
//!   `dl_iterate_phdr` and cross-checked in `/proc/self/maps` (`dlclose` returning 0 proves
//!   nothing: NODELETE, GNU_UNIQUE and pending TLS destructors all keep the mapping).

use rcumod_abi::{ModuleDescriptor, DESCRIPTOR_SYMBOL};
use std::ffi::{c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};

/// An executable address range `[start, end)` of a loaded object.
pub type CodeRange = (usize, usize);

/// An open module object.
#[derive(Debug)]
pub(crate) struct Library {
    lib: libloading::os::unix::Library,
    /// The private copy that was opened.
    pub(crate) path: PathBuf,
    pub(crate) descriptor: &'static ModuleDescriptor,
    pub(crate) code: Vec<CodeRange>,
    /// Sum of PT_LOAD memory sizes (lsmod's Size).
    pub(crate) mapped_size: usize,
}

/// Why opening failed.
#[derive(Debug)]
pub(crate) enum OpenError {
    Copy(std::io::Error),
    DlOpen(String),
    NoDescriptor(String),
    NotFound,
}

impl Library {
    /// Copy `src` to `copy` and open the copy.
    pub(crate) fn open(src: &Path, copy: &Path) -> Result<Library, OpenError> {
        std::fs::copy(src, copy).map_err(OpenError::Copy)?;
        // SAFETY: opening runs the object's initialisers, which is foreign code; the host
        // accepted that risk by loading the module (its inspection passed). RTLD_NOW resolves
        // every symbol now.
        let lib = unsafe {
            libloading::os::unix::Library::open(Some(copy), libc::RTLD_NOW | libc::RTLD_LOCAL)
        }
        .map_err(|e| {
            let _ = std::fs::remove_file(copy);
            OpenError::DlOpen(e.to_string())
        })?;
        // SAFETY: the symbol is declared by the contract as a `ModuleDescriptor` static; we
        // only take its address here.
        let sym = unsafe { lib.get::<*const ModuleDescriptor>(DESCRIPTOR_SYMBOL.as_bytes()) };
        let ptr = match sym {
            // For a data symbol requested as a pointer type, the symbol's value is the address
            // of the static itself.
            Ok(s) => Some(*s),
            Err(e) => {
                drop(lib);
                let _ = std::fs::remove_file(copy);
                return Err(OpenError::NoDescriptor(e.to_string()));
            }
        };
        let Some(ptr) = ptr.filter(|p| !p.is_null()) else {
            drop(lib);
            let _ = std::fs::remove_file(copy);
            return Err(OpenError::NotFound);
        };
        // SAFETY: a static of the module, valid while the library stays open; the host never
        // uses it after close (closing consumes the Library).
        let descriptor: &'static ModuleDescriptor = unsafe { &*ptr };
        let (_base, code, mapped_size) = segments_of(copy).unwrap_or_default();
        Ok(Library {
            lib,
            path: copy.to_owned(),
            descriptor,
            code,
            mapped_size,
        })
    }

    /// `dlclose`, then verify the object is unmapped. Returns what still maps it, if anything.
    /// Only the unload protocol can call it: it needs the protocol's proof that the module's
    /// callbacks have all run.
    pub(crate) fn close(self, _proof: crate::unload::Barriered) -> Result<Option<String>, String> {
        let path = self.path.clone();
        self.lib.close().map_err(|e| e.to_string())?;
        let still = still_mapped(&path);
        let _ = std::fs::remove_file(&path);
        Ok(still)
    }
}

struct Search {
    path: CString,
    found: Option<(usize, Vec<CodeRange>, usize)>,
}

unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the `Search` passed by our caller; `info` is valid for this call.
    let (s, info) = unsafe { (&mut *(data as *mut Search), &*info) };
    let name = if info.dlpi_name.is_null() {
        c""
    } else {
        // SAFETY: dlpi_name is a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }
    };
    let base = info.dlpi_addr as usize;
    // By path only: the private copy's path is unique to this load, while its base address may
    // be reused by another object the moment it is unmapped (modules load concurrently).
    if name != s.path.as_c_str() {
        return 0;
    }
    let mut code = Vec::new();
    let mut size = 0usize;
    for i in 0..info.dlpi_phnum as usize {
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        if ph.p_type == libc::PT_LOAD {
            size += ph.p_memsz as usize;
            if ph.p_flags & libc::PF_X != 0 {
                let start = base + ph.p_vaddr as usize;
                code.push((start, start + ph.p_memsz as usize));
            }
        }
    }
    s.found = Some((base, code, size));
    1
}

fn iterate(path: &Path) -> Option<(usize, Vec<CodeRange>, usize)> {
    let mut s = Search {
        path: CString::new(path.as_os_str().as_encoded_bytes()).ok()?,
        found: None,
    };
    // SAFETY: `visit` matches the callback signature and only uses `s` during the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut s as *mut Search as *mut c_void) };
    s.found
}

fn segments_of(path: &Path) -> Option<(usize, Vec<CodeRange>, usize)> {
    iterate(path)
}

/// After close: is the object still known to the loader, or still mapped according to
/// `/proc/self/maps`? (Both by its unique path.)
fn still_mapped(path: &Path) -> Option<String> {
    if iterate(path).is_some() {
        return Some("the dynamic loader still lists it (dl_iterate_phdr)".into());
    }
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let p = path.to_string_lossy();
    if maps
        .lines()
        .any(|l| l.ends_with(&*p) || l.contains(&format!("{p} (deleted)")))
    {
        return Some("a mapping of it remains in /proc/self/maps".into());
    }
    None
}
