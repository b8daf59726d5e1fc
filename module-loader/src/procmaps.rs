//! Does this process still map a given file? The last check of an unload, after `dlclose` and
//! the dynamic loader's own list (library.rs): `dlclose` returning 0 proves nothing, and the
//! loader's list is the loader's word, so the kernel's view of the address space has the final
//! say.
//!
//! Reading all of `/proc/self/maps` makes the kernel format every mapping of the process, paths
//! included: about 70 µs for the few hundred mappings of a test process, more than a whole
//! `dlopen` + `dlclose`. Linux 6.11 added the `PROCMAP_QUERY` ioctl on an open maps file, which
//! returns one mapping at a time as a binary record (device, inode, range). The check asks only
//! about the span the object was loaded at and only for file-backed mappings: one query per such
//! mapping there, normally a single one that finds nothing. A mapping of the object always lies
//! in that span, because `ld.so` maps an object once, as one reservation, and unmaps it whole.
//!
//! Older kernels answer the ioctl with `ENOTTY`; the whole file is then read and matched by
//! device and inode (and by path, for a file on disk: on a stacked file system such as overlayfs
//! `stat` and the mapping may name different devices), anywhere in the address space. Either way
//! the host's own mapping of an in-memory module file, through which it wrote the file
//! (library.rs), is told apart by its address and does not count.
//!
//! The maps file is opened once and kept open. It belongs to the process that opened it, so a
//! forked child opens its own.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// A file as the kernel identifies a mapping of it: the device and inode columns of
/// `/proc/self/maps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) ino: u64,
}

impl FileId {
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        let dev = meta.dev();
        FileId {
            major: libc::major(dev),
            minor: libc::minor(dev),
            ino: meta.ino(),
        }
    }
}

/// What to look for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target<'a> {
    /// The mapped file.
    pub(crate) id: FileId,
    /// Its path, for a file on disk (`None` for an in-memory file, whose path says nothing).
    pub(crate) path: Option<&'a [u8]>,
    /// The address span `[start, end)` the object was loaded at.
    pub(crate) span: (usize, usize),
    /// A mapping of the same file that is not the object's (the host's own, through which it
    /// wrote the file), `[start, end)`; `(0, 0)` for none.
    pub(crate) except: (usize, usize),
}

impl Target<'_> {
    /// Is `[start, end)` inside the excepted mapping?
    fn excepted(&self, start: u64, end: u64) -> bool {
        let (lo, hi) = (self.except.0 as u64, self.except.1 as u64);
        lo < hi && lo <= start && end <= hi
    }
}

/// Is `t.id` (or `t.path`) still mapped? An error means the question could not be answered.
pub(crate) fn still_mapped(t: &Target<'_>) -> io::Result<bool> {
    // Without a span (the loader never listed the object) the whole address space is searched.
    if t.span.0 < t.span.1 && !QUERY_UNSUPPORTED.load(Ordering::Relaxed) {
        match query_span(t) {
            Ok(found) => return Ok(found),
            Err(QueryError::Unsupported(e)) => {
                QUERY_UNSUPPORTED.store(true, Ordering::Relaxed);
                tracing::debug!(target: "rcumod", error = %e, "PROCMAP_QUERY is not available; reading /proc/self/maps instead");
            }
            Err(QueryError::Io(e)) => {
                tracing::debug!(target: "rcumod", error = %e, "PROCMAP_QUERY failed; reading /proc/self/maps instead");
            }
        }
    }
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    Ok(maps_text_has(&maps, t))
}

/// Set once the kernel has refused the ioctl as unknown.
static QUERY_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// `struct procmap_query` of the kernel's `include/uapi/linux/fs.h` (Linux 6.11+), field for
/// field. The kernel accepts any `size` it knows a prefix of, so this layout stays valid when
/// later kernels extend the struct.
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

const _: () = assert!(std::mem::size_of::<ProcmapQuery>() == 104);

/// `PROCMAP_QUERY_COVERING_OR_NEXT_VMA`: the mapping at the address, or else the next one.
const COVERING_OR_NEXT_VMA: u64 = 0x10;
/// `PROCMAP_QUERY_FILE_BACKED_VMA`: skip anonymous mappings.
const FILE_BACKED_VMA: u64 = 0x20;

/// `PROCMAP_QUERY = _IOWR(PROCFS_IOCTL_MAGIC = 'f', 17, struct procmap_query)`, encoded the way
/// x86-64 and AArch64 (the asm-generic `_IOC` layout) encode it: direction in bits 30-31, size in
/// bits 16-29, type, number. On other architectures the kernel does not recognise the value and
/// answers `ENOTTY`, which selects the fallback.
const PROCMAP_QUERY: u64 =
    (3 << 30) | ((std::mem::size_of::<ProcmapQuery>() as u64) << 16) | ((b'f' as u64) << 8) | 17;

enum QueryError {
    /// The kernel does not know the ioctl.
    Unsupported(io::Error),
    /// It failed otherwise (this time).
    Io(io::Error),
}

/// The maps file opened by this process (a forked child inherits the descriptor, which still
/// describes the parent).
struct MapsFile {
    pid: u32,
    file: File,
}

static MAPS: Mutex<Option<MapsFile>> = Mutex::new(None);

fn query_span(t: &Target<'_>) -> Result<bool, QueryError> {
    // Held across the queries: in recent kernels the ioctl keeps per-file state while it looks a
    // mapping up, so concurrent queries on one file are serialised here.
    let mut maps = MAPS.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if maps.as_ref().is_none_or(|m| m.pid != pid) {
        let file = File::open("/proc/self/maps").map_err(QueryError::Io)?;
        *maps = Some(MapsFile { pid, file });
    }
    let fd = maps.as_ref().map(|m| m.file.as_raw_fd()).unwrap_or(-1);
    let (mut addr, end) = (t.span.0 as u64, t.span.1 as u64);
    // Room for any path the kernel prints (PATH_MAX), only when the path is compared.
    let mut name = vec![0u8; if t.path.is_some() { 4096 } else { 0 }];
    while addr < end {
        let mut q = ProcmapQuery {
            size: std::mem::size_of::<ProcmapQuery>() as u64,
            query_flags: COVERING_OR_NEXT_VMA | FILE_BACKED_VMA,
            query_addr: addr,
            ..ProcmapQuery::default()
        };
        if !name.is_empty() {
            q.vma_name_addr = name.as_mut_ptr() as u64;
            q.vma_name_size = name.len() as u32;
        }
        // SAFETY: `fd` is the open maps file (kept open by the guard); `q` is a valid, writable
        // `struct procmap_query` whose `size` says how much of it the kernel may write, and its
        // name buffer, if any, is `name`, writable for `vma_name_size` bytes.
        let r = unsafe { libc::ioctl(fd, PROCMAP_QUERY as libc::Ioctl, &mut q) };
        if r != 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // No file-backed mapping at or after `addr`.
                Some(libc::ENOENT) => Ok(false),
                Some(libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP) => {
                    Err(QueryError::Unsupported(e))
                }
                _ => Err(QueryError::Io(e)),
            };
        }
        if q.vma_start >= end {
            return Ok(false);
        }
        let same_file = t.id.ino != 0
            && q.inode == t.id.ino
            && q.dev_major == t.id.major
            && q.dev_minor == t.id.minor;
        let same_path = t.path.is_some_and(|p| {
            let len = (q.vma_name_size as usize).min(name.len());
            let shown = name[..len].strip_suffix(b"\0").unwrap_or(&name[..len]);
            names_file(shown, p)
        });
        if (same_file || same_path) && !t.excepted(q.vma_start, q.vma_end) {
            return Ok(true);
        }
        if q.vma_end <= addr {
            // A kernel answer that does not advance would loop forever; read the file instead.
            return Err(QueryError::Io(io::Error::other(
                "PROCMAP_QUERY did not advance",
            )));
        }
        addr = q.vma_end;
    }
    Ok(false)
}

/// Is `shown` (a mapping's path as the kernel prints it) the file at `path`, present or
/// unlinked?
fn names_file(shown: &[u8], path: &[u8]) -> bool {
    shown == path || shown.strip_suffix(b" (deleted)") == Some(path)
}

/// Does the text of a `/proc/<pid>/maps` file show a mapping of `t` anywhere?
fn maps_text_has(maps: &str, t: &Target<'_>) -> bool {
    maps.lines().any(|line| {
        // start-end perms offset dev inode [path]; the path may contain spaces.
        let mut f = line.split_ascii_whitespace();
        let (Some(range), Some(_), Some(_), Some(dev), Some(ino)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return false;
        };
        let excepted = range.split_once('-').is_some_and(|(start, end)| {
            match (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) {
                (Ok(start), Ok(end)) => t.excepted(start, end),
                _ => false,
            }
        });
        if excepted {
            return false;
        }
        let same_file = dev.split_once(':').is_some_and(|(major, minor)| {
            u32::from_str_radix(major, 16) == Ok(t.id.major)
                && u32::from_str_radix(minor, 16) == Ok(t.id.minor)
        }) && ino.parse::<u64>() == Ok(t.id.ino)
            && t.id.ino != 0;
        let same_path = t.path.is_some_and(|p| {
            line.find(" /")
                .is_some_and(|at| names_file(&line.as_bytes()[at + 1..], p))
        });
        same_file || same_path
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn memfd() -> File {
        // SAFETY: a valid NUL-terminated name and flags; the result is checked before use.
        let fd = unsafe { libc::memfd_create(c"procmaps-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
        // SAFETY: `fd` was just created and is owned by nothing else.
        unsafe { File::from_raw_fd(fd) }
    }

    /// Map `file` (one page), run `f` with the target, then unmap and run `f` again.
    fn around_a_mapping(file: &File, path: Option<&[u8]>, f: impl Fn(&Target<'_>) -> bool) {
        file.set_len(4096).unwrap();
        // SAFETY: a fresh shared read-only mapping of an open file of one page; nothing else
        // uses the address range, and it is unmapped below.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED);
        let t = Target {
            id: FileId::of(&file.metadata().unwrap()),
            path,
            // A span wider than the mapping, as an object's span may hold other mappings too.
            span: (at as usize - 4096 * 16, at as usize + 4096 * 16),
            except: (0, 0),
        };
        assert!(f(&t), "the mapping is seen while it exists");
        // SAFETY: the mapping made above, no longer used.
        assert_eq!(unsafe { libc::munmap(at, 4096) }, 0);
        assert!(!f(&t), "the mapping is not seen after munmap");
    }

    #[test]
    fn sees_a_mapping_until_it_is_unmapped() {
        let file = memfd();
        around_a_mapping(&file, None, |t| still_mapped(t).unwrap());
    }

    #[test]
    fn the_excepted_mapping_is_not_the_object() {
        let file = memfd();
        around_a_mapping(&file, None, |t| {
            let mapped = still_mapped(t).unwrap();
            // The same mapping, excepted: neither way of looking sees it.
            let except = Target {
                except: (t.span.0, t.span.1),
                ..*t
            };
            let text = std::fs::read_to_string("/proc/self/maps").unwrap();
            assert!(!still_mapped(&except).unwrap());
            assert!(!maps_text_has(&text, &except));
            mapped
        });
    }

    #[test]
    fn the_text_fallback_agrees() {
        let file = memfd();
        around_a_mapping(&file, None, |t| {
            maps_text_has(&std::fs::read_to_string("/proc/self/maps").unwrap(), t)
        });
    }

    #[test]
    fn files_on_disk_match_by_path_as_well() {
        let path = std::env::temp_dir().join(format!("procmaps-test-{}", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap(); // shown as "<path> (deleted)"
        let p = path.as_os_str().as_encoded_bytes();
        around_a_mapping(&file, Some(p), |t| {
            // Another identity: only the path can match.
            let t = Target {
                id: FileId {
                    major: 0,
                    minor: 0,
                    ino: 0,
                },
                ..*t
            };
            let text = maps_text_has(&std::fs::read_to_string("/proc/self/maps").unwrap(), &t);
            assert_eq!(still_mapped(&t).unwrap(), text);
            text
        });
    }

    #[test]
    fn text_lines_are_parsed_by_column() {
        let t = Target {
            id: FileId {
                major: 0,
                minor: 1,
                ino: 19027,
            },
            path: Some(b"/var/lib/rcumod/m.0.so"),
            span: (0, 0),
            except: (0x7f00_0000_0000, 0x7f00_0000_2000),
        };
        let line = |s: &str| maps_text_has(s, &t);
        assert!(line(
            "7f14b9a95000-7f14b9aa2000 r--p 00000000 00:01 19027    /memfd:rcumod (deleted)"
        ));
        assert!(!line(
            "7f14b9a95000-7f14b9aa2000 r--p 00000000 00:01 190270   /memfd:rcumod (deleted)"
        ));
        assert!(!line(
            "7f14b9a95000-7f14b9aa2000 r--p 00000000 08:01 19027    /usr/lib/libx.so"
        ));
        assert!(line(
            "7f14b9a95000-7f14b9aa2000 r--p 00000000 08:01 4242     /var/lib/rcumod/m.0.so (deleted)"
        ));
        assert!(line(
            "7f14b9a95000-7f14b9aa2000 r--p 00000000 08:01 4242     /var/lib/rcumod/m.0.so"
        ));
        assert!(!line(
            "7f14b9a95000-7f14b9aa2000 r--p 00000000 08:01 4242     /var/lib/rcumod/m.0.sox"
        ));
        assert!(!line("7f14b9a95000-7f14b9aa2000 rw-p 00000000 00:00 0"));
        assert!(!line(
            "7f0000000000-7f0000002000 rw-s 00000000 00:01 19027    /memfd:rcumod (deleted)"
        ));
        assert!(line(
            "7f0000000000-7f0000003000 rw-s 00000000 00:01 19027    /memfd:rcumod (deleted)"
        ));
    }
}
