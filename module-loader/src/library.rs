//! The loaded shared object: the only place that talks to the dynamic loader.
//!
//! * **The loader maps exactly the bytes that were inspected.** The host reads the module file
//!   once, straight into an anonymous in-memory file (`memfd_create`), inspects the bytes there
//!   (host.rs), and `dlopen`s that file as `/proc/self/fd/<N>`. Whatever happens to the file on
//!   disk after it was read (a rebuild, a writer racing the load), what runs is what was checked:
//!   there is no window between the inspection and the mapping. The in-memory file is read
//!   into through a shared mapping of it, so the bytes are copied once, from the page cache of
//!   the module file into the in-memory file's pages, and never through a buffer of the host's.
//! * **Every live load has a file of its own.** glibc matches loaded objects by name and by
//!   (device, inode), so opening a changed file at the same path while the old version is still
//!   loaded could silently hand back the old code (loader-anchors.md, pitfall 4). An in-memory
//!   file belongs to one load for as long as that load is mapped.
//! * **The descriptor stays open while the object is loaded.** glibc names the object after the
//!   path it was given, `/proc/self/fd/<N>`, and a later `dlopen` of the same path gets the loaded
//!   object back. Descriptor numbers are reused as soon as they are closed, so closing right
//!   after `dlopen` would let the next load be handed this one. While the descriptor is open the
//!   name identifies this load in `dl_iterate_phdr`, and the file's (device, inode) identifies
//!   its mappings (procmaps.rs). It is closed only once the object is verified gone; an object
//!   that stays mapped (pinned) keeps it for the life of the process.
//! * **In-memory files are reused, one load at a time.** Filling a new one costs a page-cache
//!   page per 4 KiB, allocated and later freed: ~200 µs for a 350 KiB module on the 2-vCPU guest
//!   of docs/performance.md, more than the rest of a load and unload together. So a file whose
//!   object was verified unmapped and gone from the loader's list goes back to a small set of
//!   spares ([`Images`]), and the next load overwrites its pages in place. A file is never reused
//!   while a module maps it: not while its load is live, never once it is pinned, and never after
//!   the process forked, in parent or child (the other may still map it; a `pthread_atfork`
//!   handler counts forks). The host's own mapping of the file is written only while no module
//!   maps it.
//! * **An unchanged file is not read or inspected again.** A spare still holds the bytes it was
//!   last filled with, and the inspection of them. When the next load opens the same file and
//!   `fstat` finds it as it was then (device, inode, size, mtime and ctime to the nanosecond),
//!   those bytes and that inspection are used as they are: reading (~30 µs for the 350 KiB
//!   module of docs/performance.md) and inspecting (~30 µs) again would give the same. A spare
//!   is remembered this way only if the file's timestamps were already [`Reuse::margin`] older
//!   than the moment its read began (git's "racy timestamp" rule, see [`Source`]); otherwise, or
//!   when the host turned this off (`HostBuilder::reuse_unchanged_files`), the file is read and
//!   inspected as always. Only spares are candidates, so the rules above still decide which
//!   files may be reused at all. (A kept inspection checked the module's imports against the
//!   allowed system libraries as they were then; should one be updated since and no longer
//!   export a symbol the module needs, the load still fails, at `dlopen`, which binds every
//!   symbol now.)
//! * Without `memfd_create` (`ENOSYS`, or `EPERM` under a seccomp filter) or a `/proc/self/fd` that
//!   resolves to the file, the host reads the file into its own memory and this module writes it
//!   to `<name>.<generation>.so` in the host's work directory, a path unique to the load, by which
//!   the object is then identified.
//! * It opens with `RTLD_NOW | RTLD_LOCAL`: lazy binding would turn a missing symbol into a
//!   process exit at first call instead of a load error (pitfall 7).
//! * It records the object's executable segments (`dl_iterate_phdr`), so callback and hook
//!   pointers can be attributed to the module whose code they are, and the address span it was
//!   mapped at, where the unmap check looks.
//! * Closing is reachable only through [`Barriered`](crate::unload::Barriered), which only the
//!   unload protocol constructs; after `dlclose` it checks that the object is really gone, in
//!   `dl_iterate_phdr` and cross-checked against the kernel's mappings (`dlclose` returning 0
//!   proves nothing: NODELETE, GNU_UNIQUE and pending TLS destructors all keep the mapping).

use crate::handoffs::{Handed, Lease};
use crate::inspect::{GotSlot, InspectError, Inspection};
use crate::procmaps::{self, FileId, Target};
use rcumod_abi::{ModuleDescriptor, DESCRIPTOR_SYMBOL};
use std::ffi::{c_int, c_void, CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime};

/// An executable address range `[start, end)` of a loaded object.
pub type CodeRange = (usize, usize);

/// Spare in-memory files kept per host, and the largest one kept: enough for a reload (the old
/// and the new version) without holding much memory for an idle host.
const SPARES: usize = 2;
const SPARE_MAX_BYTES: usize = 8 << 20;

/// A module file's bytes, read once: inspected, then loaded as they are.
#[derive(Debug)]
pub(crate) enum Staged {
    /// In an in-memory file.
    Memory(Image),
    /// In the host's memory (the fallback), to be written to a copy in the work directory.
    Bytes(Vec<u8>),
}

impl Staged {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Staged::Memory(image) => image.bytes(),
            Staged::Bytes(bytes) => bytes,
        }
    }
}

/// Why a module file was not read into an in-memory file.
#[derive(Debug)]
pub(crate) enum StageError {
    /// The system offers none: read it into the host's memory instead.
    Unavailable(String),
    /// Reading the module file failed, or it is over the size cap (as the inspection reports
    /// it).
    Source(InspectError),
    /// Making, sizing or mapping the in-memory file failed.
    Image(io::Error),
}

/// An open module object.
#[derive(Debug)]
pub(crate) struct Library {
    handle: Handle,
    pub(crate) descriptor: &'static ModuleDescriptor,
    pub(crate) code: Vec<CodeRange>,
    /// Sum of PT_LOAD memory sizes (lsmod's Size).
    pub(crate) mapped_size: usize,
    /// The load base, and the pages made read-only after relocation (for got.rs).
    base: usize,
    relro: (usize, usize),
    /// What module code handed libc (handoffs.rs), once interposed. Released only with the
    /// object unmapped.
    pub(crate) handed: Option<Lease>,
    /// The threads alive before `dlopen` (`threadscan::snapshot`): the others are scanned.
    pub(crate) threads_before: crate::threadscan::Snapshot,
}

/// What was opened, and what the object is known by. Dropping it closes the object outside the
/// unload protocol, for an object whose `init` never ran (a failed load) or a host torn down with
/// it still open; its file is released only if the object is verified gone.
#[derive(Debug)]
struct Handle {
    /// `None` until opened, and once closed.
    lib: Option<libloading::os::unix::Library>,
    /// Where the mapped bytes live; `None` once released or pinned.
    backing: Option<Backing>,
    images: Arc<Images>,
    /// The name the loader knows the object by (`/proc/self/fd/<N>`, or the copy's path).
    name: CString,
    /// The mapped file.
    id: FileId,
    /// The address span the object was mapped at.
    span: (usize, usize),
}

/// Where a load's bytes live.
#[derive(Debug)]
enum Backing {
    /// An in-memory file, opened as `/proc/self/fd/<N>`.
    Memory(Image),
    /// The fallback: a file in the host's work directory.
    Copy(PathBuf),
}

/// Why opening failed.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Writing the fallback copy failed.
    Copy(io::Error),
    DlOpen(String),
    NoDescriptor(String),
    NotFound,
}

impl Library {
    /// Open the module whose file contents are `staged` (the bytes that were inspected); a copy
    /// is written to `copy` if they are not in an in-memory file.
    pub(crate) fn open(
        staged: Staged,
        images: &Arc<Images>,
        copy: &Path,
    ) -> Result<Library, OpenError> {
        let (backing, name, id) = match staged {
            Staged::Memory(image) => {
                let (name, id) = (image.proc_path(), image.id);
                (Backing::Memory(image), name, id)
            }
            Staged::Bytes(bytes) => {
                let id = write_copy(copy, &bytes).map_err(|e| {
                    let _ = std::fs::remove_file(copy);
                    OpenError::Copy(e)
                })?;
                let name = CString::new(copy.as_os_str().as_encoded_bytes())
                    .map_err(|e| OpenError::Copy(io::Error::other(e)))?;
                (Backing::Copy(copy.to_owned()), name, id)
            }
        };
        let mut handle = Handle {
            lib: None,
            backing: Some(backing),
            images: Arc::clone(images),
            name,
            id,
            span: (0, 0),
        };
        let path = Path::new(OsStr::from_bytes(handle.name.as_bytes()));
        let threads_before = crate::threadscan::snapshot();
        // SAFETY: opening runs the object's initialisers, which is foreign code; the host
        // accepted that risk by loading the module (its inspection passed). RTLD_NOW resolves
        // every symbol now.
        let lib = unsafe {
            libloading::os::unix::Library::open(Some(path), libc::RTLD_NOW | libc::RTLD_LOCAL)
        }
        .map_err(|e| OpenError::DlOpen(e.to_string()))?;
        let lib = handle.lib.insert(lib);
        // SAFETY: the symbol is declared by the contract as a `ModuleDescriptor` static; we
        // only take its address here.
        let sym = unsafe { lib.get::<*const ModuleDescriptor>(DESCRIPTOR_SYMBOL.as_bytes()) };
        // For a data symbol requested as a pointer type, the symbol's value is the address of
        // the static itself.
        let ptr = sym
            .map(|s| *s)
            .map_err(|e| OpenError::NoDescriptor(e.to_string()))?;
        if ptr.is_null() {
            return Err(OpenError::NotFound);
        }
        // SAFETY: a static of the module, valid while the library stays open; the host never
        // uses it after close (closing consumes the Library).
        let descriptor: &'static ModuleDescriptor = unsafe { &*ptr };
        let seg = iterate(&handle.name);
        handle.span = seg.as_ref().map_or((0, 0), |s| s.span);
        let (base, relro) = seg.as_ref().map_or((0, (0, 0)), |s| (s.base, s.relro));
        let (code, mapped_size) = seg.map_or((Vec::new(), 0), |s| (s.code, s.size));
        Ok(Library {
            handle,
            descriptor,
            code,
            mapped_size,
            base,
            relro,
            handed: None,
            threads_before,
        })
    }

    /// Record what module `name`'s code hands libc from now on: take a slot and point the
    /// module's GOT slots for the interposed imports at its wrappers (got.rs). Call it before
    /// `init`. A module without a free slot, or whose GOT cannot be rewritten, runs without the
    /// wrappers (warned about): the unload-time checks still run.
    pub(crate) fn interpose(&mut self, name: &str, slots: &[GotSlot]) {
        let lease = Handed::lease(name, &self.code, self.handle.span);
        if let Some(w) = lease.slot().and_then(crate::handoffs::wrappers) {
            // SAFETY: base, span and relro are this object's (dl_iterate_phdr), `slots` came
            // from the inspection of the very bytes it was mapped from, and its init has not
            // run yet.
            let patched =
                unsafe { crate::got::patch(self.base, self.handle.span, self.relro, slots, &w) };
            if let Err(e) = patched {
                tracing::warn!(target: "rcumod", module = name, error = %e,
                    "imports not interposed; unload checks only");
            }
        }
        self.handed = Some(lease);
    }

    /// `dlclose`, then verify the object is unmapped. Returns what still maps it, if anything.
    /// Only the unload protocol can call it: it needs the protocol's proof that the module's
    /// callbacks have all run.
    pub(crate) fn close(self, _proof: crate::unload::Barriered) -> Result<Option<String>, String> {
        let mut h = self.handle;
        let lib = h.lib.take().expect("open until closed");
        if let Some(handed) = &self.handed {
            handed.run_held_exits();
        }
        if let Err(e) = lib.close() {
            h.pin_backing();
            std::mem::forget(self.handed);
            return Err(e.to_string());
        }
        let still = h.still_mapped();
        if still.is_some() {
            h.pin_backing();
            // Its code may still call the wrappers: keep its slot.
            std::mem::forget(self.handed);
        } else {
            h.release_backing();
        }
        Ok(still)
    }
}

impl Handle {
    /// After close: is the object still known to the loader, or still mapped?
    fn still_mapped(&self) -> Option<String> {
        if iterate(&self.name).is_some() {
            return Some("the dynamic loader still lists it (dl_iterate_phdr)".into());
        }
        let (path, except) = match &self.backing {
            Some(Backing::Copy(_)) => (Some(self.name.as_bytes()), (0, 0)),
            // The host's own mapping of the file, through which it was filled, is not the
            // object's.
            Some(Backing::Memory(image)) => (None, image.view_range()),
            None => (None, (0, 0)),
        };
        let target = Target {
            id: self.id,
            path,
            span: self.span,
            except,
        };
        match procmaps::still_mapped(&target) {
            Ok(true) => Some("a mapping of it remains in /proc/self/maps".into()),
            Ok(false) => None,
            Err(e) => {
                // As before this check existed: the loader's word stands alone then.
                static WARNED: Once = Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(target: "rcumod", error = %e,
                        "cannot read /proc/self/maps; unmapping is verified by dl_iterate_phdr only");
                });
                None
            }
        }
    }

    /// The object stays mapped: keep its file and name for the life of the process, so that no
    /// later load can be handed it.
    fn pin_backing(&mut self) {
        match self.backing.take() {
            Some(Backing::Memory(image)) => std::mem::forget(image),
            // The copy's path is unique to this load; the mapping keeps the file alive.
            Some(Backing::Copy(path)) => {
                let _ = std::fs::remove_file(path);
            }
            None => {}
        }
    }

    /// The object is gone: its file may be reused or removed.
    fn release_backing(&mut self) {
        match self.backing.take() {
            Some(Backing::Memory(image)) => self.images.put(image),
            Some(Backing::Copy(path)) => {
                let _ = std::fs::remove_file(path);
            }
            None => {}
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.backing.is_none() {
            return; // closed and checked
        }
        drop(self.lib.take());
        // Checked as after an unload: a file that may still be mapped is never reused.
        if self.still_mapped().is_some() {
            self.pin_backing();
        } else {
            self.release_backing();
        }
    }
}

/// Write the fallback copy; returns its identity.
fn write_copy(copy: &Path, bytes: &[u8]) -> io::Result<FileId> {
    if let Some(dir) = copy.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = File::create(copy)?;
    io::Write::write_all(&mut f, bytes)?;
    Ok(FileId::of(&f.metadata()?))
}

/// An in-memory file holding one module file's bytes.
#[derive(Debug)]
pub(crate) struct Image {
    file: File,
    id: FileId,
    /// The file's length: the module's bytes once filled.
    len: usize,
    /// [`FORKS`] when it was created.
    forks: u64,
    /// The host's mapping of the file, through which it is filled and inspected.
    view: Option<View>,
    /// The module file the bytes were read from, if it was settled then (see [`Source`]).
    /// Cleared before the file is written again.
    source: Option<Source>,
    /// The inspection of these bytes, kept with `source` only.
    inspection: Option<Arc<Inspection>>,
}

/// A module file as `fstat` on the opened file saw it before it was read: what must be unchanged
/// for the bytes read then to be its contents still.
///
/// Size and the two timestamps are what a rewrite in place changes; device and inode tell a file
/// replaced by another (a rename over it, or a new file at the path) from the one read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Source {
    dev: u64,
    ino: u64,
    size: u64,
    /// (seconds, nanoseconds) since the epoch.
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Source {
    fn of(meta: &std::fs::Metadata) -> Source {
        Source {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// May the bytes read from the file as seen here be reused while it stays so? Only if both
    /// its timestamps are at least `margin` older than `began`, the moment before the file was
    /// opened (git's "racy git" rule, Documentation/technical/racy-git.txt).
    ///
    /// A file's timestamps do not tell every write apart. The kernel stamps files from a coarse
    /// clock (`current_time()`, which advances once per tick, 1–10 ms) and some filesystems store
    /// coarser still (FAT's mtime counts in 2 s steps, ext3's in seconds): a write in the same
    /// step as an earlier one, or as our read, leaves them as they were. A file last changed
    /// well before the read began cannot have such a write after it that the timestamps would
    /// hide, so only such a file is remembered. Both timestamps must be old: mtime alone can be
    /// set back by anyone who may write the file (`touch -d`, `utimensat`), while the kernel
    /// sets ctime to the current time on every change, including that one; user space cannot
    /// set it. A timestamp after `began` (a clock set back, another machine's clock) is not old.
    fn settled(&self, began: SystemTime, margin: Duration) -> bool {
        let Some(limit) = began.checked_sub(margin) else {
            return false;
        };
        let Ok(limit) = limit.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let limit = i128::from(limit.as_secs()) * 1_000_000_000 + i128::from(limit.subsec_nanos());
        let at = |(s, ns): (i64, i64)| i128::from(s) * 1_000_000_000 + i128::from(ns);
        at(self.mtime) < limit && at(self.ctime) < limit
    }
}

/// Whether a host reuses the bytes of an unchanged module file (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reuse {
    pub(crate) on: bool,
    /// How much older than a read a file's timestamps must be for its bytes to be remembered.
    pub(crate) margin: Duration,
}

impl Reuse {
    /// The margin by default: the coarsest step a Linux filesystem stores timestamps in (FAT's 2 s
    /// mtime), and far more than the kernel's tick.
    pub(crate) const MARGIN: Duration = Duration::from_secs(2);
}

impl Default for Reuse {
    fn default() -> Self {
        Reuse {
            on: true,
            margin: Reuse::MARGIN,
        }
    }
}

/// A shared read-write mapping of an image's file, of `cap` bytes (at least the file's length).
#[derive(Debug)]
struct View {
    at: NonNull<u8>,
    cap: usize,
}

// SAFETY: the mapping is owned by its `Image` alone (nothing else knows its address), so moving
// it to another thread moves the only access to it.
unsafe impl Send for View {}

impl View {
    fn map(file: &File, cap: usize) -> io::Result<View> {
        // SAFETY: a new shared mapping of `cap` (> 0) bytes of an open file, at an address the
        // kernel chooses; it overlaps nothing, and only this `View` unmaps it, once.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let at = NonNull::new(at.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(View { at, cap })
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped only here; no reference into it outlives
        // the `Image` that owns this view.
        unsafe { libc::munmap(self.at.as_ptr().cast(), self.cap) };
    }
}

impl Image {
    /// Keep `inspection` as the inspection of these bytes, if they are remembered as the
    /// contents of their source file.
    pub(crate) fn keep(&mut self, inspection: &Arc<Inspection>) {
        if self.source.is_some() {
            self.inspection = Some(Arc::clone(inspection));
        }
    }

    /// Forget where the bytes came from, before they are overwritten.
    fn forget_source(&mut self) {
        self.source = None;
        self.inspection = None;
    }

    fn proc_path(&self) -> CString {
        CString::new(format!("/proc/self/fd/{}", self.file.as_raw_fd())).expect("no NUL")
    }

    /// The module's bytes.
    fn bytes(&self) -> &[u8] {
        match &self.view {
            // SAFETY: the view maps at least `len` bytes of the file, which is `len` bytes long,
            // so every page is backed. The file is written only by `read_from`, through
            // `&mut self`, so nothing changes it while this borrow lasts (a loaded module maps
            // it privately: its writes are its own copies).
            Some(v) if self.len > 0 => unsafe {
                std::slice::from_raw_parts(v.at.as_ptr(), self.len)
            },
            _ => &[],
        }
    }

    /// `[start, end)` of the host's mapping of the file.
    fn view_range(&self) -> (usize, usize) {
        self.view.as_ref().map_or((0, 0), |v| {
            let at = v.at.as_ptr() as usize;
            (at, at + v.cap)
        })
    }

    /// Make the file `len` bytes long and the view cover it.
    fn resize(&mut self, len: usize) -> io::Result<()> {
        if len != self.len {
            self.file.set_len(len as u64)?;
            self.len = len;
        }
        if len > self.view.as_ref().map_or(0, |v| v.cap) {
            self.view = None; // unmapped before the larger one is made
            self.view = Some(View::map(&self.file, len)?);
        }
        Ok(())
    }

    /// `bytes[from..to]` of the file, to write.
    fn window(&mut self, from: usize, to: usize) -> &mut [u8] {
        let v = self.view.as_ref().expect("resized before filling");
        assert!(from <= to && to <= self.len.min(v.cap));
        // SAFETY: inside the view and the file's length (asserted), so backed; `&mut self` is
        // the only access to the mapping (see `bytes`), for the borrow's lifetime.
        unsafe { std::slice::from_raw_parts_mut(v.at.as_ptr().add(from), to - from) }
    }

    /// Read the module file `src` (`size` bytes long by its metadata) into this file, as the
    /// size-capped read of the inspection does: never more than `max + 1` bytes, and a file
    /// that grows or shrinks meanwhile is read as far as it goes.
    fn read_from(
        &mut self,
        mut src: &File,
        path: &Path,
        size: u64,
        max: u64,
    ) -> Result<(), StageError> {
        let source = |e: io::Error| {
            StageError::Source(InspectError::Io {
                path: path.to_owned(),
                source: e,
            })
        };
        let mut cap = usize::try_from(size).map_err(|e| StageError::Image(io::Error::other(e)))?;
        self.resize(cap).map_err(StageError::Image)?;
        let mut len = 0;
        loop {
            if len == cap {
                // As long as the metadata said: check for the end with one byte more.
                let mut more = [0u8; 1];
                if read_retrying(&mut src, &mut more).map_err(source)? == 0 {
                    break;
                }
                let read = len as u64 + 1;
                if read > max {
                    return Err(StageError::Source(InspectError::TooLarge {
                        size: read,
                        max,
                    }));
                }
                // It grew while being read: go on, in steps, up to the cap.
                cap = usize::try_from(max.min(read.saturating_mul(2)))
                    .map_err(|e| StageError::Image(io::Error::other(e)))?
                    .max(len + 1);
                self.resize(cap).map_err(StageError::Image)?;
                self.window(len, len + 1)[0] = more[0];
                len += 1;
                continue;
            }
            let n = read_retrying(&mut src, self.window(len, cap)).map_err(source)?;
            if n == 0 {
                break; // it shrank
            }
            len += n;
        }
        self.resize(len).map_err(StageError::Image)
    }
}

/// `read`, again after `EINTR`.
fn read_retrying(src: &mut &File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match src.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// Forks of this process since the first in-memory file was made, counted in parent and child.
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_fork() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// A host's spare in-memory files (see the module documentation).
///
/// The inspections kept with them were made under the host's policy, which is fixed when the host
/// is built, and each host has its own `Images`: a kept inspection is never used under another
/// policy.
#[derive(Debug, Default)]
pub(crate) struct Images {
    /// Least recently released first.
    spares: Mutex<Vec<Image>>,
    /// Never make one (tests of the fallback).
    unavailable: bool,
    reuse: Reuse,
}

impl Images {
    pub(crate) fn new(reuse: Reuse) -> Images {
        Images {
            reuse,
            ..Images::default()
        }
    }

    /// A host that loads from copies in its work directory only.
    pub(crate) fn unavailable() -> Images {
        Images {
            unavailable: true,
            ..Images::default()
        }
    }

    /// Read the module file at `path` into an in-memory file, refusing it before reading if its
    /// metadata says it is over `max` bytes. With the inspection kept for them when the bytes
    /// were not read again: a spare held the file's bytes, and it is unchanged since.
    pub(crate) fn stage(
        &self,
        path: &Path,
        max: u64,
    ) -> Result<(Image, Option<Arc<Inspection>>), StageError> {
        if self.unavailable {
            return Err(StageError::Unavailable(
                "in-memory files are off for this host".into(),
            ));
        }
        let io_error = |e: io::Error| {
            StageError::Source(InspectError::Io {
                path: path.to_owned(),
                source: e,
            })
        };
        // Taken before the open: a write that races the read is stamped after this moment, less
        // one step of the kernel's coarse clock, which the margin covers.
        let began = SystemTime::now();
        let src = File::open(path).map_err(io_error)?;
        let source = Source::of(&src.metadata().map_err(io_error)?);
        let size = source.size;
        if size > max {
            return Err(StageError::Source(InspectError::TooLarge { size, max }));
        }
        let forks = FORKS.load(Ordering::Relaxed);
        let spare = {
            let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
            let kept = spares.iter().position(|s| {
                s.forks == forks && s.source == Some(source) && s.inspection.is_some()
            });
            match kept {
                Some(i) if self.reuse.on => {
                    let image = spares.remove(i);
                    let inspection = image.inspection.clone();
                    return Ok((image, inspection));
                }
                _ => (!spares.is_empty()).then(|| spares.remove(0)),
            }
        };
        let mut image = match spare {
            Some(mut image) if image.forks == forks => {
                image.forget_source();
                image
            }
            _ => Self::create()?,
        };
        match image.read_from(&src, path, size, max) {
            Ok(()) => {
                // (A file that grew or shrank while it was read has changed since `fstat`.)
                let whole = image.len as u64 == size;
                if self.reuse.on && whole && source.settled(began, self.reuse.margin) {
                    image.source = Some(source);
                }
                Ok((image, None))
            }
            Err(e) => {
                self.put(image);
                Err(e)
            }
        }
    }

    fn create() -> Result<Image, StageError> {
        static WATCH_FORKS: Once = Once::new();
        WATCH_FORKS.call_once(|| {
            // SAFETY: registers a handler that only increments an atomic, which is safe to run
            // in the child of a multi-threaded fork.
            unsafe { libc::pthread_atfork(None, Some(count_fork), Some(count_fork)) };
        });
        let forks = FORKS.load(Ordering::Relaxed);
        // SAFETY: a NUL-terminated name and valid flags; the result is checked.
        let fd = unsafe { libc::memfd_create(c"rcumod-module".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOSYS | libc::EPERM | libc::EACCES | libc::EINVAL) => {
                    StageError::Unavailable(format!("memfd_create: {e}"))
                }
                _ => StageError::Image(e),
            });
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let file = unsafe { File::from_raw_fd(fd) };
        let id = FileId::of(&file.metadata().map_err(StageError::Image)?);
        let image = Image {
            file,
            id,
            len: 0,
            forks,
            view: None,
            source: None,
            inspection: None,
        };
        if !proc_fd_resolves(&image) {
            return Err(StageError::Unavailable(format!(
                "{} does not resolve to the in-memory file (is /proc mounted?)",
                image.proc_path().to_string_lossy()
            )));
        }
        if iterate(&image.proc_path()).is_some() {
            // Someone else's object holds that name, and dlopen would hand it back.
            return Err(StageError::Unavailable(format!(
                "another object is loaded as {}",
                image.proc_path().to_string_lossy()
            )));
        }
        Ok(image)
    }

    /// Take back a file that no module maps (its object was verified unmapped, or it was never
    /// loaded).
    pub(crate) fn put(&self, image: Image) {
        let reusable = image.forks == FORKS.load(Ordering::Relaxed) && image.len <= SPARE_MAX_BYTES;
        if reusable {
            let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
            if spares.len() < SPARES {
                spares.push(image);
            }
        }
    }

    /// Take back what a load that stopped before `dlopen` had read.
    pub(crate) fn recycle(&self, staged: Staged) {
        if let Staged::Memory(image) = staged {
            self.put(image);
        }
    }
}

/// Does `/proc/self/fd/<N>` open this very file? Checked on the first in-memory file of the
/// process; procfs does not change under a running process.
fn proc_fd_resolves(image: &Image) -> bool {
    static RESOLVES: AtomicBool = AtomicBool::new(false);
    if RESOLVES.load(Ordering::Relaxed) {
        return true;
    }
    let path = image.proc_path();
    let ok = std::fs::metadata(OsStr::from_bytes(path.as_bytes()))
        .is_ok_and(|m| FileId::of(&m) == image.id);
    if ok {
        RESOLVES.store(true, Ordering::Relaxed);
    }
    ok
}

/// What `dl_iterate_phdr` tells about one object.
struct Segments {
    base: usize,
    relro: (usize, usize),
    span: (usize, usize),
    code: Vec<CodeRange>,
    size: usize,
}

struct Search<'a> {
    name: &'a CStr,
    found: Option<Segments>,
}

unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the `Search` passed by our caller; `info` is valid for this call.
    let (s, info) = unsafe { (&mut *(data as *mut Search<'_>), &*info) };
    let name = if info.dlpi_name.is_null() {
        c""
    } else {
        // SAFETY: dlpi_name is a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }
    };
    // By name only: the name is unique to this load while it is mapped, while its base address
    // may be reused by another object the moment it is unmapped (modules load concurrently).
    if name != s.name {
        return 0;
    }
    let base = info.dlpi_addr as usize;
    let page = page_size();
    let (mut lo, mut hi) = (usize::MAX, 0);
    let mut code = Vec::new();
    let mut size = 0usize;
    let mut relro = (0, 0);
    for i in 0..info.dlpi_phnum as usize {
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        if ph.p_type == libc::PT_GNU_RELRO {
            // Rounded as ld.so's _dl_protect_relro rounds it: both ends down to a page.
            let start = base.wrapping_add(ph.p_vaddr as usize);
            relro = (
                start & !(page - 1),
                start.wrapping_add(ph.p_memsz as usize) & !(page - 1),
            );
        }
        if ph.p_type == libc::PT_LOAD {
            size += ph.p_memsz as usize;
            let start = base.wrapping_add(ph.p_vaddr as usize);
            let end = start.wrapping_add(ph.p_memsz as usize);
            lo = lo.min(start & !(page - 1));
            hi = hi.max(end.saturating_add(page - 1) & !(page - 1));
            if ph.p_flags & libc::PF_X != 0 {
                code.push((start, end));
            }
        }
    }
    s.found = Some(Segments {
        base,
        relro,
        span: if lo < hi { (lo, hi) } else { (0, 0) },
        code,
        size,
    });
    1
}

/// The loaded object named `name`, if the loader lists one.
fn iterate(name: &CStr) -> Option<Segments> {
    let mut s = Search { name, found: None };
    // SAFETY: `visit` matches the callback signature and only uses `s` during the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut s as *mut Search<'_> as *mut c_void) };
    s.found
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf with a valid name has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// The file's contents, read through its descriptor (not the view).
    fn contents(image: &Image) -> Vec<u8> {
        let mut v = vec![0; image.len];
        image.file.read_exact_at(&mut v, 0).unwrap();
        assert_eq!(image.file.metadata().unwrap().len(), image.len as u64);
        assert_eq!(image.bytes(), v, "the view shows the file");
        v
    }

    fn stage(images: &Images, bytes: &[u8]) -> Image {
        let path = std::env::temp_dir().join(format!(
            "rcumod-library-test-{}-{}",
            std::process::id(),
            bytes.len()
        ));
        std::fs::write(&path, bytes).unwrap();
        let (image, _) = images.stage(&path, 1 << 20).expect("an in-memory file");
        std::fs::remove_file(&path).unwrap();
        image
    }

    #[test]
    fn images_hold_exactly_the_bytes_and_are_reused_only_after_release() {
        let images = Images::default();
        let a = stage(&images, b"the first image, the longest");
        let b = stage(&images, b"second");
        assert_ne!(a.id, b.id, "two live loads never share a file");
        assert_eq!(contents(&a), b"the first image, the longest");
        assert_eq!(contents(&b), b"second");
        let (first, second) = (a.id, b.id);
        images.put(a);
        let c = stage(&images, b"third");
        assert_eq!(c.id, first, "a released file is reused");
        assert_eq!(contents(&c), b"third", "cut to the new length");
        images.put(c);
        images.put(b);
        count_fork();
        let d = stage(&images, b"fourth image");
        assert!(
            d.id != first && d.id != second,
            "nothing made before a fork is reused after it"
        );
        assert_eq!(contents(&d), b"fourth image");
    }

    #[test]
    fn only_a_file_settled_before_its_read_is_remembered() {
        let at = |mtime, ctime| Source {
            dev: 1,
            ino: 2,
            size: 3,
            mtime,
            ctime,
        };
        let began = SystemTime::UNIX_EPOCH + Duration::new(1_000, 500);
        let settled = |mtime, ctime| at(mtime, ctime).settled(began, Reuse::MARGIN);
        assert!(
            settled((997, 0), (998, 499)),
            "both older than 998.000000500"
        );
        assert!(!settled((998, 500), (997, 0)), "mtime at the limit");
        assert!(!settled((997, 0), (998, 500)), "ctime at the limit");
        assert!(!settled((999, 0), (997, 0)), "mtime inside the margin");
        assert!(!settled((997, 0), (1_001, 0)), "ctime after the read began");
        let early = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        assert!(
            !at((-5, 0), (-5, 0)).settled(early, Reuse::MARGIN),
            "the margin reaches before the epoch: nothing is old enough"
        );
    }

    #[test]
    fn the_size_cap_holds() {
        let images = Images::default();
        let path = std::env::temp_dir().join(format!("rcumod-library-cap-{}", std::process::id()));
        std::fs::write(&path, [7u8; 100]).unwrap();
        match images.stage(&path, 99) {
            Err(StageError::Source(InspectError::TooLarge { size: 100, max: 99 })) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(contents(&images.stage(&path, 100).unwrap().0), [7u8; 100]);
        std::fs::remove_file(&path).unwrap();
        match images.stage(&path, 100) {
            Err(StageError::Source(InspectError::Io { .. })) => {}
            other => panic!("expected Io, got {other:?}"),
        }
    }
}
