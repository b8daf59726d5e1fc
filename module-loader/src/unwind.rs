//! Unwinding a copied stack with the loaded objects' call-frame information, so that a word
//! which only looks like a return address into a module is not taken for one.
//!
//! The thread scan (threadscan.rs) first reads a stack conservatively: every word that points
//! just after a call instruction in the module's code counts. That errs towards `Pinned`, and
//! not rarely: a frame's uninitialised slots keep return addresses of calls that returned long
//! ago. A thread started after the module was mapped that once called one of its hooks, or ran
//! its constructors inside `dlopen`, or ran a module mapped at the same address before, can
//! carry such a word for the rest of its life. (CI caught it: a test thread that had unwound a
//! panic through an earlier module at the same address pinned the next one.)
//!
//! So a conservative hit is checked the way a debugger or profiler walks a stack: from the
//! thread's interrupted program counter and stack pointer, frame by frame, each caller's frame
//! address (CFA) and return address computed by the `.eh_frame` rules of the object the code
//! belongs to (the rules C++ exceptions and Rust panics unwind by; every object built for
//! Linux carries them, `-fasynchronous-unwind-tables` being the default). The walk reads the
//! stack copy taken while the thread was held, and copies the unwind tables of the objects it
//! passes through out of their mappings inside `dl_iterate_phdr` (where they cannot be
//! unmapped), so nothing here touches memory that may go away, and nothing runs while a thread
//! is held (it may hold the allocator's lock).
//!
//! The walk is trusted only as far as it goes:
//! * it ends **complete** where the outermost frame says there is no caller (glibc's `clone3`
//!   and `_start` mark the return address undefined): then the frames it passed are the only
//!   live ones, and any other word is stale;
//! * it **stops** where it cannot go on (code without unwind information, a rule needing a
//!   register the passive read of a blocked thread does not give, a signal frame, the end of
//!   the copy): then words above the point where it stopped are judged conservatively again.
//!
//! Learned from: the DWARF CFI chapter of the DWARF 5 standard and the LSB's `.eh_frame_hdr`
//! description; libgcc's `unwind-dw2.c` and Mozilla's framehop for the shape of a walk over a
//! copied stack (first frame looked up at its PC, callers at their return address minus one).

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, NativeEndian, Register, RegisterRule,
    UnwindContext, UnwindSection,
};
use std::ffi::{c_int, c_void};

/// The registers a walk starts from. The frame pointer and link register are known only when
/// the thread was stopped by the scan signal (from its signal context).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Regs {
    pub(crate) pc: usize,
    pub(crate) sp: usize,
    pub(crate) fp: Option<usize>,
    pub(crate) lr: Option<usize>,
}

/// Where a walk ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The outermost frame was reached: every live frame was seen.
    Complete,
    /// The walk could not go on from the frame whose stack pointer is this.
    StoppedAt(usize),
}

/// A stack copied from address `base`: the words the walk may read.
pub(crate) struct Copy<'a> {
    pub(crate) base: usize,
    pub(crate) words: &'a [usize],
}

impl Copy<'_> {
    fn read(&self, addr: usize) -> Option<usize> {
        let off = addr.checked_sub(self.base)?;
        if off % std::mem::size_of::<usize>() != 0 {
            return None;
        }
        self.words.get(off / std::mem::size_of::<usize>()).copied()
    }
}

/// Frames a walk goes through at most: a bound for a corrupt or cyclic stack.
const MAX_FRAMES: usize = 4096;

#[cfg(target_arch = "x86_64")]
mod arch {
    use gimli::{Register, X86_64};
    pub(super) const SP: Register = X86_64::RSP;
    pub(super) const FP: Register = X86_64::RBP;
    pub(super) const RA: Register = X86_64::RA;
    pub(super) const LR: Option<Register> = None;
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use gimli::{AArch64, Register};
    pub(super) const SP: Register = AArch64::SP;
    pub(super) const FP: Register = AArch64::X29;
    pub(super) const RA: Register = AArch64::X30;
    pub(super) const LR: Option<Register> = Some(AArch64::X30);
}

/// Elsewhere no walk is made (`walk` stops at once); the table reader still names registers.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod arch {
    use gimli::Register;
    pub(super) const FP: Register = Register(0);
    pub(super) const RA: Register = Register(0);
}

/// Walk the stack from `regs`, calling `frame` with each frame's code address (the PC, then
/// each return address), innermost first. `frame` returning false ends the walk early (its
/// answer is then `StoppedAt` the frame's stack pointer).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn walk(
    tables: &mut Tables,
    regs: Regs,
    stack: &Copy<'_>,
    mut frame: impl FnMut(usize) -> bool,
) -> End {
    let Regs {
        mut pc,
        mut sp,
        mut fp,
        mut lr,
    } = regs;
    let mut first = true;
    for _ in 0..MAX_FRAMES {
        if !frame(pc) {
            return End::StoppedAt(sp);
        }
        // A return address points after the call, possibly past the caller's last instruction
        // (a call to a function that does not return): look the caller up inside the call.
        let at = if first { pc } else { pc.wrapping_sub(1) };
        let Some(rules) = tables.rules(at) else {
            return End::StoppedAt(sp);
        };
        let reg = |r: Register| -> Option<usize> {
            match r {
                r if r == arch::SP => Some(sp),
                r if r == arch::FP => fp,
                r if Some(r) == arch::LR => lr,
                _ => None,
            }
        };
        let Some(cfa) = rules
            .cfa
            .and_then(|(r, off)| reg(r)?.checked_add_signed(off as isize))
        else {
            return End::StoppedAt(sp);
        };
        let ra = match rules.ra {
            Rule::Undefined => return End::Complete,
            Rule::Offset(o) => stack.read(cfa.wrapping_add_signed(o as isize)),
            Rule::Same => arch::LR.and(lr),
            Rule::Other => None,
        };
        let Some(ra) = ra else {
            return End::StoppedAt(sp);
        };
        fp = match rules.fp {
            Rule::Offset(o) => stack.read(cfa.wrapping_add_signed(o as isize)),
            Rule::Same => fp,
            Rule::Undefined | Rule::Other => None,
        };
        // The caller's link register was overwritten by its call: known again only where a
        // rule restores it, which is the return address itself.
        lr = None;
        if ra == 0 {
            return End::Complete; // the outermost frame of some runtimes
        }
        // Frames lie at rising addresses; anything else is a corrupt walk.
        if cfa <= sp && !(first && cfa == sp) {
            return End::StoppedAt(sp);
        }
        pc = ra;
        sp = cfa;
        first = false;
    }
    End::StoppedAt(sp)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) fn walk(
    _tables: &mut Tables,
    regs: Regs,
    _stack: &Copy<'_>,
    _frame: impl FnMut(usize) -> bool,
) -> End {
    End::StoppedAt(regs.sp)
}

/// How one register of the caller is recovered, reduced to what a walk can use.
#[derive(Clone, Copy, Debug)]
enum Rule {
    Undefined,
    Same,
    Offset(i64),
    Other,
}

/// The rules at one code address: the CFA as a register plus an offset, where the return
/// address and the caller's frame pointer are.
struct Rules {
    cfa: Option<(Register, i64)>,
    ra: Rule,
    fp: Rule,
}

/// The unwind tables of the objects a scan has walked through, copied on first use.
#[derive(Default)]
pub(crate) struct Tables {
    objects: Vec<Object>,
    ctx: Option<Box<UnwindContext<usize>>>,
}

/// One object's unwind tables: its `.eh_frame_hdr` (with the binary search table) and its
/// `.eh_frame` up to the end of the segment holding it (the section's size is not in the
/// program headers).
struct Object {
    code: Vec<(usize, usize)>,
    text: usize,
    hdr_at: usize,
    hdr: Vec<u8>,
    eh_at: usize,
    eh: Vec<u8>,
}

impl Tables {
    fn rules(&mut self, pc: usize) -> Option<Rules> {
        let i = match self.objects.iter().position(|o| o.holds(pc)) {
            Some(i) => i,
            None => {
                self.objects.push(Object::containing(pc)?);
                self.objects.len() - 1
            }
        };
        let o = &self.objects[i];
        let bases = BaseAddresses::default()
            .set_eh_frame_hdr(o.hdr_at as u64)
            .set_eh_frame(o.eh_at as u64)
            .set_text(o.text as u64);
        let hdr = EhFrameHdr::new(&o.hdr, NativeEndian)
            .parse(&bases, std::mem::size_of::<usize>() as u8)
            .ok()?;
        let table = hdr.table()?;
        let eh = EhFrame::new(&o.eh, NativeEndian);
        let fde = table
            .fde_for_address(&eh, &bases, pc as u64, EhFrame::cie_from_offset)
            .ok()?;
        let ctx = self
            .ctx
            .get_or_insert_with(|| Box::new(UnwindContext::new()));
        let row = fde
            .unwind_info_for_address(&eh, &bases, ctx, pc as u64)
            .ok()?;
        let rule = |r: Register| match row.register(r) {
            RegisterRule::Undefined => Rule::Undefined,
            RegisterRule::SameValue => Rule::Same,
            RegisterRule::Offset(o) => Rule::Offset(o),
            _ => Rule::Other,
        };
        let cfa = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => Some((*register, *offset)),
            CfaRule::Expression(_) => None,
        };
        // gimli keeps no explicit "undefined" rule: a register without a rule reads as
        // Undefined. For the return address on x86_64 that is the end of the stack (every CIE
        // gives it a rule otherwise); on AArch64 it is the link register's value (no CIE gives
        // one). A frame pointer without a rule keeps its value (callee-saved).
        let ra = match rule(arch::RA) {
            Rule::Undefined if cfg!(target_arch = "aarch64") => Rule::Same,
            r => r,
        };
        let fp = match rule(arch::FP) {
            Rule::Undefined => Rule::Same,
            r => r,
        };
        Some(Rules { cfa, ra, fp })
    }
}

impl Object {
    fn holds(&self, pc: usize) -> bool {
        self.code.iter().any(|&(s, e)| pc >= s && pc < e)
    }

    /// Copy the unwind tables of the loaded object whose code holds `pc`, if there is one and
    /// it has an `.eh_frame_hdr` with a search table.
    fn containing(pc: usize) -> Option<Object> {
        struct Search {
            pc: usize,
            found: Option<Object>,
        }
        unsafe extern "C" fn each(
            info: *mut libc::dl_phdr_info,
            _size: libc::size_t,
            data: *mut c_void,
        ) -> c_int {
            // SAFETY: `data` is the `Search` passed to dl_iterate_phdr below, alive for the call.
            let s = unsafe { &mut *data.cast::<Search>() };
            // SAFETY: the loader passes a valid info for the duration of this callback.
            let info = unsafe { &*info };
            let base = info.dlpi_addr as usize;
            // SAFETY: dlpi_phdr points to dlpi_phnum program headers, valid during the callback.
            let phdrs =
                unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
            let loads: Vec<(usize, usize, u32)> = phdrs
                .iter()
                .filter(|p| p.p_type == libc::PT_LOAD)
                .map(|p| {
                    let s = base.wrapping_add(p.p_vaddr as usize);
                    (s, s.wrapping_add(p.p_memsz as usize), p.p_flags)
                })
                .collect();
            let code: Vec<(usize, usize)> = loads
                .iter()
                .filter(|l| l.2 & libc::PF_X != 0)
                .map(|l| (l.0, l.1))
                .collect();
            if !code.iter().any(|&(a, b)| s.pc >= a && s.pc < b) {
                return 0;
            }
            s.found = Object::copy(base, phdrs, &loads, code);
            1
        }
        let mut s = Search { pc, found: None };
        // SAFETY: `each` only reads what the loader passes it and writes `s`; while the
        // callback runs the object cannot be unmapped (dlclose waits for the loader's lock).
        unsafe { libc::dl_iterate_phdr(Some(each), (&mut s as *mut Search).cast()) };
        s.found
    }

    /// Called inside `dl_iterate_phdr`: the object's mappings are there for the duration.
    fn copy(
        base: usize,
        phdrs: &[libc::Elf64_Phdr],
        loads: &[(usize, usize, u32)],
        code: Vec<(usize, usize)>,
    ) -> Option<Object> {
        let eh = phdrs.iter().find(|p| p.p_type == libc::PT_GNU_EH_FRAME)?;
        let hdr_at = base.wrapping_add(eh.p_vaddr as usize);
        let seg_end = |a: usize| loads.iter().find(|l| a >= l.0 && a < l.1).map(|l| l.1);
        let hdr_len = (eh.p_memsz as usize).min(seg_end(hdr_at)?.checked_sub(hdr_at)?);
        // SAFETY: [hdr_at, hdr_at + hdr_len) lies in a loaded segment of this object, mapped
        // and readable while the loader's callback runs.
        let hdr = unsafe { std::slice::from_raw_parts(hdr_at as *const u8, hdr_len) }.to_vec();
        let bases = BaseAddresses::default().set_eh_frame_hdr(hdr_at as u64);
        let parsed = EhFrameHdr::new(&hdr, NativeEndian)
            .parse(&bases, std::mem::size_of::<usize>() as u8)
            .ok()?;
        let gimli::Pointer::Direct(eh_at) = parsed.eh_frame_ptr() else {
            return None;
        };
        let eh_at = eh_at as usize;
        // Bounded: an object whose header points outside its own segments is not walked.
        let eh_len = seg_end(eh_at)?.checked_sub(eh_at)?.min(64 << 20);
        // SAFETY: [eh_at, eh_at + eh_len) lies in a loaded segment of this object, as above.
        let eh = unsafe { std::slice::from_raw_parts(eh_at as *const u8, eh_len) }.to_vec();
        let text = code.first().map_or(base, |c| c.0);
        Some(Object {
            code,
            text,
            hdr_at,
            hdr,
            eh_at,
            eh,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walk this very thread's stack from a point inside a function: every frame is found and
    /// the walk reaches the thread's outermost frame, through libc and the test harness.
    #[inline(never)]
    fn here() -> (Regs, Vec<usize>, usize) {
        let mut regs = Regs::default();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: reads the stack and frame pointers and the address of a label into locals.
        unsafe {
            std::arch::asm!("lea {pc}, [rip]", "mov {sp}, rsp", "mov {fp}, rbp",
                pc = out(reg) regs.pc, sp = out(reg) regs.sp, fp = out(reg) *regs.fp.insert(0));
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above, with the link register.
        unsafe {
            std::arch::asm!("adr {pc}, .", "mov {sp}, sp", "mov {fp}, x29", "mov {lr}, x30",
                pc = out(reg) regs.pc, sp = out(reg) regs.sp, fp = out(reg) *regs.fp.insert(0),
                lr = out(reg) *regs.lr.insert(0));
        }
        // Copy our whole stack above the point read: this frame and every caller's.
        let end = stack_end(regs.sp);
        let n = (end - regs.sp) / std::mem::size_of::<usize>();
        // SAFETY: [sp, end) is this thread's live stack, in one mapping.
        let words = unsafe { std::slice::from_raw_parts(regs.sp as *const usize, n) }.to_vec();
        (regs, words, regs.sp)
    }

    fn stack_end(sp: usize) -> usize {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .find_map(|l| {
                let (a, b) = l.split_whitespace().next()?.split_once('-')?;
                let (a, b) = (
                    usize::from_str_radix(a, 16).ok()?,
                    usize::from_str_radix(b, 16).ok()?,
                );
                (sp >= a && sp < b).then_some(b)
            })
            .unwrap()
    }

    #[test]
    fn a_live_stack_is_walked_to_its_outermost_frame() {
        if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            return;
        }
        let (regs, words, base) = here();
        let (frames, end) = frames(&mut Tables::default(), regs, base, &words);
        assert_eq!(end, End::Complete, "frames: {frames:x?}");
        // This test's own function is among the callers.
        let me = a_live_stack_is_walked_to_its_outermost_frame as *const () as usize;
        assert!(
            frames.iter().any(|&f| f > me && f < me + 4096),
            "{frames:x?} misses {me:x}"
        );
        assert!(frames.len() >= 4, "{frames:x?}");
    }

    /// Every frame a walk from `regs` over `words` (copied from `base`) passes, and its end.
    fn frames(tables: &mut Tables, regs: Regs, base: usize, words: &[usize]) -> (Vec<usize>, End) {
        let mut seen = Vec::new();
        let end = walk(tables, regs, &Copy { base, words }, |pc| {
            seen.push(pc);
            true
        });
        (seen, end)
    }

    /// The control: the same walk over a stack copy with one frame's return address wiped
    /// stops there instead of claiming the stack complete.
    #[test]
    fn a_broken_chain_stops_the_walk() {
        if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            return;
        }
        let (regs, mut words, base) = here();
        let mut tables = Tables::default();
        let (seen, end) = frames(&mut tables, regs, base, &words);
        assert_eq!(end, End::Complete);
        // Wipe where the third frame's return address is stored.
        let slot = words
            .iter()
            .position(|&w| w == seen[2])
            .expect("return address on the stack");
        words[slot] = 0x10; // no object's code
        let (cut, end) = frames(&mut tables, regs, base, &words);
        assert!(matches!(end, End::StoppedAt(_)), "{end:?} after {cut:x?}");
        assert!(
            cut.len() < seen.len(),
            "{} frames, {} before",
            cut.len(),
            seen.len()
        );
    }
}
