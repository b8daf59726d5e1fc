//! What could keep a module's code reachable after it is unloaded, read from the file before
//! anything runs.
//!
//! Two kinds. **Pin risks** make glibc keep the object mapped whatever the host does
//! (`DF_1_NODELETE`, `STB_GNU_UNIQUE`): refused unless the policy allows them, since the only
//! safe place to refuse them is before `dlopen`. **Hand-offs** are imports through which module
//! code can give libc or the kernel a function pointer or a stack for later — its own threads,
//! signal dispositions, thread-specific-data destructors, POSIX timers, exit and fork handlers,
//! thread-local destructors, other objects it opens (loader-anchors.md, "what module code hands
//! libc"). They are warnings, never refusals: every Rust cdylib imports `pthread_create` and
//! `pthread_key_create` through its std. The host watches them at run time (`handoffs.rs`):
//! each import below that it can interpose is listed with the GOT slots it patches.

use super::elf::{DF_1_NODELETE, STB_GNU_UNIQUE};
use super::SymbolNames;
use goblin::elf::Elf;
use std::collections::HashSet;
use std::fmt;

/// Why a module would stay mapped after `dlclose` (glibc's `_dl_close_worker` never unmaps it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinRisk {
    /// `DT_FLAGS_1` has `DF_1_NODELETE` (linked with `-z nodelete`).
    NoDelete,
    /// Dynamic symbols with `STB_GNU_UNIQUE` binding. g++ emits these for static locals of
    /// inline functions and for template statics. Build with `-fno-gnu-unique` to avoid them.
    GnuUnique {
        /// Their (mangled) names.
        symbols: Vec<String>,
    },
}

impl fmt::Display for PinRisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinRisk::NoDelete => f.write_str("nodelete"),
            PinRisk::GnuUnique { symbols } => write!(f, "gnu_unique: {}", symbols.join(", ")),
        }
    }
}

/// A way module code can hand libc or the kernel code to run later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Handoff {
    /// Threads of its own (`pthread_create`, `thrd_create`, `clone`).
    Thread,
    /// Signal dispositions (`sigaction`, `signal`, …).
    Signal,
    /// Thread-specific-data keys with destructors (`pthread_key_create`, `tss_create`).
    TlsKey,
    /// POSIX timers (`timer_create`), whose `SIGEV_THREAD` function glibc runs on a thread.
    Timer,
    /// Process-exit handlers (`__cxa_atexit`, `atexit`, `on_exit`, `at_quick_exit`).
    ExitHandler,
    /// Fork handlers (`pthread_atfork`, `__register_atfork`).
    ForkHandler,
    /// Thread-local destructors (`__cxa_thread_atexit_impl`: Rust `thread_local!` with `Drop`,
    /// C++ `thread_local` objects).
    ThreadLocalDtor,
    /// Other objects opened (`dlopen`, `dlmopen`): their code is not the module's.
    Dlopen,
}

impl Handoff {
    /// What the host does about it at unload, as the warning says.
    pub fn consequence(self) -> &'static str {
        match self {
            Handoff::Thread => {
                "a thread still running module code at unload pins the module (found by a \
                 stack scan; threads it started are tracked)"
            }
            Handoff::Signal => {
                "a handler left in the module is restored to the disposition it replaced, or \
                 pins the module"
            }
            Handoff::TlsKey => "keys whose destructor lies in the module are deleted at unload",
            Handoff::Timer => "timers the module created and did not delete are deleted at unload",
            Handoff::ExitHandler => {
                "glibc runs handlers registered for the module at dlclose; `on_exit` and \
                 handle-less ones are held by the host and run at unload"
            }
            Handoff::ForkHandler => "glibc unregisters the module's fork handlers at dlclose",
            Handoff::ThreadLocalDtor => {
                "a thread-local destructor still registered keeps glibc from unmapping: pinned"
            }
            Handoff::Dlopen => {
                "objects it opens are not watched: their threads, handlers and timers can \
                 outlive the module (the limit the host cannot see)"
            }
        }
    }
}

impl fmt::Display for Handoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Handoff::Thread => "thread creation",
            Handoff::Signal => "signal installation",
            Handoff::TlsKey => "thread-specific-data key",
            Handoff::Timer => "POSIX timer",
            Handoff::ExitHandler => "exit handler",
            Handoff::ForkHandler => "fork handler",
            Handoff::ThreadLocalDtor => "thread-local destructor",
            Handoff::Dlopen => "opens other objects",
        })
    }
}

/// An import of the module that can hand code to libc for later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoffImport {
    /// The imported symbol.
    pub symbol: String,
    /// What it hands over.
    pub what: Handoff,
}

impl fmt::Display for HandoffImport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.symbol,
            self.what,
            self.what.consequence()
        )
    }
}

/// The hand-off imports, by name.
const HANDOFFS: &[(&str, Handoff)] = &[
    ("pthread_create", Handoff::Thread),
    ("thrd_create", Handoff::Thread),
    ("clone", Handoff::Thread),
    ("clone3", Handoff::Thread),
    ("sigaction", Handoff::Signal),
    ("__sigaction", Handoff::Signal),
    ("signal", Handoff::Signal),
    ("sigset", Handoff::Signal),
    ("bsd_signal", Handoff::Signal),
    ("sysv_signal", Handoff::Signal),
    ("__sysv_signal", Handoff::Signal),
    ("pthread_key_create", Handoff::TlsKey),
    ("tss_create", Handoff::TlsKey),
    ("timer_create", Handoff::Timer),
    ("__cxa_atexit", Handoff::ExitHandler),
    ("atexit", Handoff::ExitHandler),
    ("on_exit", Handoff::ExitHandler),
    ("at_quick_exit", Handoff::ExitHandler),
    ("__cxa_at_quick_exit", Handoff::ExitHandler),
    ("pthread_atfork", Handoff::ForkHandler),
    ("__register_atfork", Handoff::ForkHandler),
    ("__cxa_thread_atexit_impl", Handoff::ThreadLocalDtor),
    ("__cxa_thread_atexit", Handoff::ThreadLocalDtor),
    ("dlopen", Handoff::Dlopen),
    ("dlmopen", Handoff::Dlopen),
];

/// The imports the host interposes: the GOT slots of these are rewritten after `dlopen` so that
/// module code calls the host's wrapper (handoffs.rs), which records what was handed over.
pub(crate) const INTERPOSED: &[&str] = &[
    "pthread_create",
    "sigaction",
    "signal",
    "pthread_key_create",
    "pthread_key_delete",
    "timer_create",
    "timer_delete",
    "__cxa_atexit",
    "on_exit",
];

/// A GOT slot (or data word) the dynamic loader fills with an interposed import's address:
/// its link-time address and which of [`INTERPOSED`] it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GotSlot {
    pub(crate) vaddr: u64,
    pub(crate) symbol: usize,
}

/// The relocation types that store a symbol's plain address in a word: `GLOB_DAT`, `JUMP_SLOT`
/// and the absolute 64-bit data relocation.
#[cfg(target_arch = "x86_64")]
const ADDRESS_RELOCS: [u32; 3] = [6, 7, 1];
#[cfg(target_arch = "aarch64")]
const ADDRESS_RELOCS: [u32; 3] = [1025, 1026, 257];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ADDRESS_RELOCS: [u32; 0] = [];

/// Pin risks of the parsed file.
pub(super) fn pin_risks(elf: &Elf<'_>, names: &SymbolNames<'_>) -> Vec<PinRisk> {
    let mut risks = Vec::new();
    let flags_1 = elf.dynamic.as_ref().map_or(0, |d| d.info.flags_1);
    if flags_1 & DF_1_NODELETE != 0 {
        risks.push(PinRisk::NoDelete);
    }
    let mut unique = Vec::new();
    let mut seen = HashSet::new();
    for (i, s) in elf.dynsyms.iter().enumerate().skip(1) {
        if s.st_bind() == STB_GNU_UNIQUE && seen.insert(names.get(i)) {
            unique.push(names.get(i));
        }
    }
    if !unique.is_empty() {
        risks.push(PinRisk::GnuUnique {
            symbols: unique.into_iter().map(str::to_owned).collect(),
        });
    }
    risks
}

/// The hand-off imports among `undefined`, in the order of [`HANDOFFS`].
pub(super) fn handoffs(undefined: &[String]) -> Vec<HandoffImport> {
    HANDOFFS
        .iter()
        .filter(|(name, _)| undefined.iter().any(|u| u == name))
        .map(|&(name, what)| HandoffImport {
            symbol: name.to_owned(),
            what,
        })
        .collect()
}

/// The words the dynamic loader fills with an [`INTERPOSED`] import's address, from the
/// dynamic relocations `parse_elf` read.
pub(super) fn got_slots(elf: &Elf<'_>, names: &SymbolNames<'_>) -> Vec<GotSlot> {
    let mut slots = Vec::new();
    for r in [&elf.dynrelas, &elf.dynrels, &elf.pltrelocs]
        .into_iter()
        .flat_map(|t| t.iter())
    {
        if r.r_sym == 0 || !ADDRESS_RELOCS.contains(&r.r_type) || r.r_addend.unwrap_or(0) != 0 {
            continue;
        }
        let sym = elf.dynsyms.get(r.r_sym);
        if sym.is_none_or(|s| s.st_shndx != 0) {
            continue; // defined in the module itself: not an import
        }
        if let Some(symbol) = INTERPOSED.iter().position(|n| *n == names.get(r.r_sym)) {
            slots.push(GotSlot {
                vaddr: r.r_offset,
                symbol,
            });
        }
    }
    slots
}
