//! The ELF file as data: everything goblin would trust is checked by hand first.
//!
//! goblin allocates on the word of the file (a string table becomes a `Vec` of 24-byte entries,
//! a symbol count sizes a table), so the header, the program and section tables, the dynamic
//! table and its string offsets are read here with bounds-checked field readers and refused
//! when they point outside the file, before [`parse_elf`] hands goblin only what ld.so itself
//! reads (program headers, the dynamic table, its strings and symbols).

use super::InspectError;
use goblin::container::{Container, Ctx, Endian};
use goblin::elf::{Dynamic, Elf, ProgramHeader, RelocSection, Symtab};
use goblin::strtab::Strtab;

/// ELF constants this module reads by hand (values from the System V gABI and glibc's `elf.h`).
pub(super) mod consts {
    pub(in crate::inspect) const ELFMAG: &[u8; 4] = b"\x7fELF";
    pub(in crate::inspect) const EI_CLASS: usize = 4;
    pub(in crate::inspect) const EI_DATA: usize = 5;
    pub(in crate::inspect) const EI_VERSION: usize = 6;
    pub(in crate::inspect) const ELFCLASS64: u8 = 2;
    pub(in crate::inspect) const ELFDATA2LSB: u8 = 1;
    pub(in crate::inspect) const ELFDATA2MSB: u8 = 2;
    pub(in crate::inspect) const EV_CURRENT: u32 = 1;

    pub(in crate::inspect) const ET_REL: u16 = 1;
    pub(in crate::inspect) const ET_EXEC: u16 = 2;
    pub(in crate::inspect) const ET_DYN: u16 = 3;
    pub(in crate::inspect) const ET_CORE: u16 = 4;

    pub(in crate::inspect) const EM_386: u16 = 3;
    pub(in crate::inspect) const EM_MIPS: u16 = 8;
    pub(in crate::inspect) const EM_PPC: u16 = 20;
    pub(in crate::inspect) const EM_PPC64: u16 = 21;
    pub(in crate::inspect) const EM_S390: u16 = 22;
    pub(in crate::inspect) const EM_ARM: u16 = 40;
    pub(in crate::inspect) const EM_X86_64: u16 = 62;
    pub(in crate::inspect) const EM_AARCH64: u16 = 183;
    pub(in crate::inspect) const EM_RISCV: u16 = 243;
    pub(in crate::inspect) const EM_LOONGARCH: u16 = 258;

    /// Sizes of the 64-bit header and table entries.
    pub(in crate::inspect) const EHDR_SIZE: usize = 64;
    pub(in crate::inspect) const PHDR_SIZE: u64 = 56;
    pub(in crate::inspect) const SHDR_SIZE: u64 = 64;
    pub(in crate::inspect) const SYM_SIZE: u64 = 24;
    pub(in crate::inspect) const DYN_SIZE: u64 = 16;

    pub(in crate::inspect) const PN_XNUM: u16 = 0xffff;
    pub(in crate::inspect) const PT_LOAD: u32 = 1;
    pub(in crate::inspect) const PT_DYNAMIC: u32 = 2;
    pub(in crate::inspect) const PT_TLS: u32 = 7;
    pub(in crate::inspect) const PF_X: u32 = 1;

    pub(in crate::inspect) const SHN_UNDEF: u16 = 0;
    pub(in crate::inspect) const SHN_LORESERVE: u16 = 0xff00;
    pub(in crate::inspect) const SHN_XINDEX: u16 = 0xffff;
    pub(in crate::inspect) const SHT_NULL: u32 = 0;
    pub(in crate::inspect) const SHT_SYMTAB: u32 = 2;
    pub(in crate::inspect) const SHT_STRTAB: u32 = 3;
    pub(in crate::inspect) const SHT_DYNAMIC: u32 = 6;
    pub(in crate::inspect) const SHT_NOBITS: u32 = 8;
    pub(in crate::inspect) const SHT_DYNSYM: u32 = 11;

    pub(in crate::inspect) const STB_GLOBAL: u8 = 1;
    pub(in crate::inspect) const STB_WEAK: u8 = 2;
    pub(in crate::inspect) const STB_GNU_UNIQUE: u8 = 10;
    pub(in crate::inspect) const STV_DEFAULT: u8 = 0;
    pub(in crate::inspect) const STV_PROTECTED: u8 = 3;

    pub(in crate::inspect) const DT_NULL: u64 = 0;
    pub(in crate::inspect) const DT_NEEDED: u64 = 1;
    pub(in crate::inspect) const DT_STRTAB: u64 = 5;
    pub(in crate::inspect) const DT_STRSZ: u64 = 10;
    pub(in crate::inspect) const DT_RELA: u64 = 7;
    pub(in crate::inspect) const DT_SONAME: u64 = 14;
    pub(in crate::inspect) const DT_RPATH: u64 = 15;
    pub(in crate::inspect) const DT_RUNPATH: u64 = 29;
    pub(in crate::inspect) const DT_FLAGS_1: u64 = 0x6fff_fffb;
    pub(in crate::inspect) const DF_1_NODELETE: u64 = 0x8;
    pub(in crate::inspect) const DF_1_PIE: u64 = 0x0800_0000;

    pub(in crate::inspect) const NT_GNU_BUILD_ID: u32 = 3;
}
pub(super) use consts::*;

/// The `e_machine` modules must be built for, and its name.
#[cfg(target_arch = "x86_64")]
pub(super) const HOST_MACHINE: (Option<u16>, &str) = (Some(EM_X86_64), "x86_64");
/// The `e_machine` modules must be built for, and its name.
#[cfg(target_arch = "aarch64")]
pub(super) const HOST_MACHINE: (Option<u16>, &str) = (Some(EM_AARCH64), "aarch64");
/// Other hosts are not supported: every module is refused as built for the wrong architecture,
/// and the message names the host's.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(super) const HOST_MACHINE: (Option<u16>, &str) = (None, std::env::consts::ARCH);

/// The host's byte order, as `EI_DATA`.
pub(super) const HOST_DATA: u8 = if cfg!(target_endian = "little") {
    ELFDATA2LSB
} else {
    ELFDATA2MSB
};

/// What goblin's strict `Elf::parse_with_opts` builds, reduced to what the checks read: the
/// program headers, the dynamic table and its string table, the dynamic relocations, and the
/// dynamic symbols, counted as
/// goblin counts them (from the GNU or SysV hash table, and at least up to the highest symbol a
/// dynamic relocation names). Skipped: the static symbol table and its strings (`.symtab`,
/// `.strtab`), version sections and section relocations, which ld.so never reads (in a Rust
/// cdylib `.strtab` alone is most of a full parse), and the section headers, which
/// [`validate_structure`] has read and checked (it also finds `.modinfo`).
///
/// The file has passed [`validate_structure`]; goblin's own range checks still apply.
pub(super) fn parse_elf(bytes: &[u8]) -> Result<Elf<'_>, InspectError> {
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
        // Kept in the parse: risks.rs reads them for the GOT slots it lists.
        elf.dynrelas =
            RelocSection::parse(bytes, info.rela, info.relasz, true, ctx).map_err(bad)?;
        elf.dynrels = RelocSection::parse(bytes, info.rel, info.relsz, false, ctx).map_err(bad)?;
        let plt_rela = info.pltrel == DT_RELA;
        elf.pltrelocs =
            RelocSection::parse(bytes, info.jmprel, info.pltrelsz, plt_rela, ctx).map_err(bad)?;
        let max_sym = [&elf.dynrelas, &elf.dynrels, &elf.pltrelocs]
            .iter()
            .flat_map(|t| t.iter())
            .fold(0, |m, r| m.max(r.r_sym));
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

/// `bytes[offset..offset + size]`, if it lies inside.
pub(super) fn file_range(bytes: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    bytes.get(start..end)
}

/// Does `[offset, offset + size)` lie inside a file of `len` bytes?
pub(super) fn in_file(offset: u64, size: u64, len: usize) -> bool {
    offset
        .checked_add(size)
        .is_some_and(|end| end <= len as u64)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

pub(super) fn machine_name(e_machine: u16) -> String {
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
pub(super) struct Fields<'a> {
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
pub(super) struct Ehdr {
    data: u8,
    ei_version: u8,
    e_type: u16,
    pub(super) e_machine: u16,
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
    pub(super) fn parse(bytes: &[u8]) -> Result<Ehdr, InspectError> {
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
    pub(super) fn check_target(&self) -> Result<(), InspectError> {
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
pub(super) struct Shdr {
    sh_name: u32,
    pub(super) sh_type: u32,
    pub(super) sh_offset: u64,
    pub(super) sh_size: u64,
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
pub(super) struct Layout {
    /// `DT_NEEDED` names, in order.
    pub(super) needed: Vec<String>,
    /// The last `DT_SONAME` (ld.so uses the last of repeated tags too).
    pub(super) soname: Option<String>,
    /// `DT_RPATH` / `DT_RUNPATH` entries, as `TAG=value`.
    pub(super) search_paths: Vec<String>,
    /// The `.modinfo` section (there is at most one).
    pub(super) modinfo: Option<Shdr>,
}

/// Check everything goblin will trust: table and segment ranges, entry sizes, string-table
/// indices, the dynamic table's string offsets. Also bound how many strings goblin will
/// pre-split. Afterwards goblin's allocations stay proportional to the file size. Returns the
/// `DT_NEEDED` and `DT_SONAME` names, read the way ld.so reads them.
pub(super) fn validate_structure(bytes: &[u8], ehdr: &Ehdr) -> Result<Layout, InspectError> {
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
