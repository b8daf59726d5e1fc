//! Rewriting a loaded module's GOT: how the host interposes module code's imports, and nobody
//! else's.
//!
//! After `dlopen` (with `RTLD_NOW`, every slot already bound), each word the dynamic loader
//! filled with one of the interposed imports' addresses — `GLOB_DAT` and `JUMP_SLOT` GOT entries
//! and absolute data words, listed by the inspection from the module's own relocations — is
//! overwritten with the address of the host's wrapper for the module's slot (handoffs.rs). The
//! technique is plthook's and funchook's; `RELRO` made the GOT read-only after relocation, so the
//! page is made writable for the write and read-only again. Only this module's object changes:
//! the host, libc and every other library keep calling libc directly.

use crate::inspect::GotSlot;

/// Point the module's slots at `wrappers` (indexed by `GotSlot::symbol`). `base` is the load
/// base; `span` the mapping, which every slot must lie in; `relro` the pages the loader made
/// read-only after relocation (`PT_GNU_RELRO`, page-rounded as ld.so rounds it), which get
/// that protection back. Returns how many words were written.
///
/// # Safety
///
/// `base` and `span` must describe the mapped object whose relocations `slots` came from, and no
/// code of it may run concurrently (it is called between `dlopen` and `init`; a constructor's
/// thread could race, which is among the documented limits).
pub(crate) unsafe fn patch(
    base: usize,
    span: (usize, usize),
    relro: (usize, usize),
    slots: &[GotSlot],
    wrappers: &[usize],
) -> Result<usize, String> {
    let page = crate::library::page_size();
    let mut words = Vec::with_capacity(slots.len());
    for s in slots {
        let at = base.wrapping_add(s.vaddr as usize);
        if !at.is_multiple_of(std::mem::align_of::<usize>())
            || at < span.0
            || at.saturating_add(8) > span.1
        {
            return Err(format!("GOT slot {:#x} lies outside the module", s.vaddr));
        }
        if let Some(&to) = wrappers.get(s.symbol) {
            words.push((at, to));
        }
    }
    // One protection change per page (a GOT is a page or two): each `mprotect` splits and
    // merges mappings and flushes TLBs on every CPU.
    words.sort_unstable();
    let mut written = 0;
    let mut i = 0;
    while i < words.len() {
        let page_start = words[i].0 & !(page - 1);
        let end = words[i..]
            .iter()
            .position(|w| w.0 & !(page - 1) != page_start)
            .map_or(words.len(), |n| i + n);
        let after = if page_start >= relro.0 && page_start < relro.1 {
            libc::PROT_READ
        } else {
            libc::PROT_READ | libc::PROT_WRITE
        };
        // SAFETY: every word lies in the module's mapping (checked above) on this page; the page
        // is made writable for the aligned words, then given back the protection the loader
        // left it with.
        unsafe {
            if libc::mprotect(
                page_start as *mut _,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
            ) != 0
            {
                return Err(format!(
                    "mprotect of the GOT page at {page_start:#x}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            for &(at, to) in &words[i..end] {
                std::ptr::write_volatile(at as *mut usize, to);
            }
            libc::mprotect(page_start as *mut _, page, after);
        }
        written += end - i;
        i = end;
    }
    Ok(written)
}
