//! `Host`: the embeddable module host — load, unload, reload, list, inspect, call hooks, events.
//!
//! States (the kernel's `MODULE_STATE_*`): a module is **Coming** while its `init` runs (its
//! hooks are staged, not yet visible), **Live** once `init` succeeded, **Going** during the
//! unload protocol, then gone (**Unloaded**) or kept in the table as **Pinned** with the reason.
//! A failed `init` is unwound with the same protocol (without calling `exit`) and reported as a
//! [`LoadError::InitFailed`].

use crate::domains::DomainRef;
use crate::error::{LoadError, UnloadError};
use crate::hooks::Hooks;
use crate::inspect::{self, InspectPolicy, Inspection};
use crate::library::{Images, Library, OpenError, Reuse, StageError, Staged};
use crate::runtime::{CallbackCounts, HookEntry, HostServices, ModuleRuntime};
use crate::unload::{self, UnloadMode, UnloadOutcome, UnloadReport};
use crossbeam_channel::{Receiver, Sender};
use rcu_core::{Flavor, Rcu};
use rcumod_abi as abi;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// A module's lifecycle state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleState {
    /// `init` is running.
    Coming,
    /// Loaded and initialised.
    Live,
    /// Being unloaded.
    Going,
    /// Unloaded but still mapped: it can never be loaded again from this process's view of it.
    Pinned {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for ModuleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleState::Coming => f.write_str("Loading"),
            ModuleState::Live => f.write_str("Live"),
            ModuleState::Going => f.write_str("Unloading"),
            ModuleState::Pinned { .. } => f.write_str("Pinned"),
        }
    }
}

/// A summary of one module, as `lsmod` shows it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ModuleInfo {
    /// Name.
    pub name: String,
    /// Version from `.modinfo`.
    pub version: Option<String>,
    /// State.
    pub state: ModuleState,
    /// Mapped size in bytes.
    pub size: usize,
    /// Modules that depend on it.
    pub used_by: Vec<String>,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Parameters given at load.
    pub params: HashMap<String, String>,
    /// Its callbacks.
    pub callbacks: CallbackCounts,
    /// The file was not read or inspected for this load: it was unchanged since an earlier load
    /// of it, whose bytes and inspection the host had kept
    /// ([`HostBuilder::reuse_unchanged_files`]).
    pub reused_image: bool,
}

/// Something that happened in the host.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum HostEvent {
    /// A module went live.
    Loaded {
        /// Its name.
        name: String,
    },
    /// A load failed.
    LoadFailed {
        /// The file.
        path: PathBuf,
        /// The error, as displayed.
        error: String,
    },
    /// A module was unloaded (or pinned).
    Unloaded {
        /// Its report.
        report: Box<UnloadReport>,
    },
    /// A module was replaced by a new version.
    Reloaded {
        /// Its name.
        name: String,
    },
    /// Checked mode caught a callback whose module was already unmapped.
    LateCallback {
        /// The module.
        name: String,
    },
}

/// Configures a [`Host`].
#[derive(Debug)]
pub struct HostBuilder {
    flavors: Vec<Flavor>,
    work_dir: Option<PathBuf>,
    policy: InspectPolicy,
    checked: bool,
    exit_deadline: Duration,
    foreign_checks: bool,
    stack_walk: bool,
    max_barrier_rounds: u32,
    work_dir_copies: bool,
    reuse: Reuse,
}

impl Default for HostBuilder {
    fn default() -> Self {
        HostBuilder {
            flavors: vec![Flavor::Memb, Flavor::Qsbr],
            work_dir: None,
            policy: InspectPolicy::default(),
            checked: false,
            exit_deadline: Duration::from_secs(5),
            foreign_checks: true,
            stack_walk: true,
            max_barrier_rounds: 100,
            work_dir_copies: false,
            reuse: Reuse::default(),
        }
    }
}

impl HostBuilder {
    /// The RCU domains the host owns and exposes to modules, by index (`DOMAIN_GLOBAL` = 0 is
    /// memb, `DOMAIN_QSBR` = 1 is qsbr by default). The first one also protects the hook table.
    /// The process-wide domain (`Rcu::global()`) always follows them (index 2 by default,
    /// `DOMAIN_PROCESS`).
    pub fn domains(mut self, flavors: &[Flavor]) -> Self {
        if !flavors.is_empty() {
            self.flavors = flavors.to_vec();
        }
        self
    }

    /// Where module files are copied to be loaded when the system offers no in-memory file for
    /// them (no `memfd_create`, or no `/proc`); normally unused. Default: a new directory under
    /// the system temporary directory, created when first needed and removed when the host is
    /// dropped.
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// The inspection policy (allowed libraries, size cap, pinned modules).
    pub fn policy(mut self, policy: InspectPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Checked mode: before invoking a module callback, verify its module is still mapped, and
    /// report a late callback instead of jumping into unmapped memory. Costs a load per callback.
    pub fn checked(mut self, checked: bool) -> Self {
        self.checked = checked;
        self
    }

    /// The deadline of each step of an unload that runs module code to its end: the module's
    /// `exit`, and the stop of the threads the host started for it (default 5 s). At one second
    /// the unloader logs a stall warning naming the module and the step; past the deadline the
    /// unload returns `Pinned { reason: "exit did not return within …" }` (or names the threads)
    /// instead of blocking its caller, and the host, its other modules and its readers go on.
    pub fn exit_deadline(mut self, deadline: Duration) -> Self {
        self.exit_deadline = deadline;
        self
    }

    /// The same as [`exit_deadline`](Self::exit_deadline) (its former name).
    pub fn thread_stop_wait(self, wait: Duration) -> Self {
        self.exit_deadline(wait)
    }

    /// **Deliberately unsafe**, for the negative-control tests only: turn off what the host
    /// does about code the module handed libc itself (interposing its imports; undoing timers,
    /// signal dispositions and keys; the signal, key, thread and stack checks before
    /// `dlclose`), so that a module whose own thread still runs is unmapped under it, and the
    /// test can show the crash.
    #[doc(hidden)]
    pub fn foreign_code_checks_for_testing(mut self, on: bool) -> Self {
        self.foreign_checks = on;
        self
    }

    /// For the control of the stack-walk test only: judge thread stacks by the conservative
    /// reading alone, without walking them (unwind.rs), so that a stale return address left in
    /// a frame pins the module and the test can show the walk is what clears it.
    #[doc(hidden)]
    pub fn stack_walk_for_testing(mut self, on: bool) -> Self {
        self.stack_walk = on;
        self
    }

    /// Load a module file that is unchanged since an earlier load of it without reading and
    /// inspecting it again (default on). The host keeps the bytes it read, with their inspection,
    /// in the in-memory file they were loaded from, once that load is unloaded and verified
    /// unmapped; a later load of the same file uses them if `fstat` finds it as it was then
    /// (same device and inode, size, modification and change time). This saves about a third of
    /// a load and unload cycle (docs/performance.md).
    ///
    /// It relies on the file's timestamps changing whenever its contents do. Bytes are kept only
    /// for a file last changed at least 2 s before it was read, so a write in the same clock
    /// step as the read cannot go unnoticed, and the change time, which programs cannot set (the
    /// kernel sets it to the current time on every change), is compared too. Turn it off where
    /// timestamps cannot be trusted: files on a network or FUSE filesystem whose server's clock
    /// or attribute caching may leave them unchanged after a write, or a file written through a
    /// shared mapping for longer than that, whose times the kernel updates only at the first
    /// write to each clean page.
    pub fn reuse_unchanged_files(mut self, yes: bool) -> Self {
        self.reuse.on = yes;
        self
    }

    /// How much older than the moment a file is read its timestamps must be for its bytes to be
    /// kept for reuse (default 2 s). For tests only: a test cannot make a file's change time
    /// old, only wait, and must not wait for seconds.
    #[doc(hidden)]
    pub fn reuse_margin_for_testing(mut self, margin: Duration) -> Self {
        self.reuse.margin = margin;
        self
    }

    /// Load every module from a copy in the work directory, as on a system without
    /// `memfd_create` or `/proc`. For tests of that fallback only.
    #[doc(hidden)]
    pub fn work_dir_copies_for_testing(mut self, yes: bool) -> Self {
        self.work_dir_copies = yes;
        self
    }

    /// Create the host.
    pub fn build(self) -> std::io::Result<Host> {
        static HOSTS: AtomicU64 = AtomicU64::new(0);
        let (work_dir, own_dir) = match self.work_dir {
            Some(d) => (d, false),
            None => (
                std::env::temp_dir().join(format!(
                    "rcumod-{}-{}",
                    std::process::id(),
                    HOSTS.fetch_add(1, Ordering::Relaxed)
                )),
                true,
            ),
        };
        let mut domains: Vec<DomainRef> = self
            .flavors
            .iter()
            .enumerate()
            .map(|(i, f)| {
                DomainRef::Owned(Arc::new(
                    Rcu::builder().flavor(*f).name(format!("host{i}")).build(),
                ))
            })
            .collect();
        domains.push(DomainRef::Process);
        // Module callbacks are posted as they are; each domain counts them for their module
        // as it invokes them (owners.rs). The process domain is shared: the first host sets
        // the hook, which is the same function for every host.
        for d in &domains {
            // SAFETY: owners::invoke calls each callback's function once, as rcu-core's
            // contract for the hook requires; callbacks that are not module code pass through.
            unsafe { d.set_invoke_hook(crate::owners::invoke) };
        }
        let inner = Arc::new_cyclic(|me: &Weak<HostInner>| HostInner {
            me: me.clone(),
            hooks: Arc::new(Hooks::new(&domains[0])),
            domains,
            modules: Mutex::new(Vec::new()),
            work_dir,
            own_dir,
            images: Arc::new(if self.work_dir_copies {
                Images::unavailable()
            } else {
                Images::new(self.reuse)
            }),
            generation: AtomicU64::new(0),
            policy: self.policy,
            checked: self.checked,
            events: Mutex::new(Vec::new()),
            exit_deadline: self.exit_deadline,
            foreign_checks: self.foreign_checks,
            stack_walk: self.stack_walk,
            max_barrier_rounds: self.max_barrier_rounds.max(1),
        });
        Ok(Host { inner })
    }
}

struct Entry {
    runtime: Arc<ModuleRuntime>,
    lib: Option<Library>,
    state: ModuleState,
    inspection: Arc<Inspection>,
    path: PathBuf,
    size: usize,
    reused_image: bool,
}

impl Entry {
    /// What `lsmod` shows of this entry; `mods` is the whole table (for its holders).
    fn info(&self, mods: &[Entry]) -> ModuleInfo {
        ModuleInfo {
            name: self.runtime.name().to_owned(),
            version: self.inspection.modinfo.version.clone(),
            state: self.state.clone(),
            size: self.size,
            used_by: holders(mods, self.runtime.name()),
            path: self.path.clone(),
            params: self.runtime.params.clone(),
            callbacks: self.runtime.counts(),
            reused_image: self.reused_image,
        }
    }
}

pub(crate) struct HostInner {
    me: Weak<HostInner>,
    domains: Vec<DomainRef>,
    pub(crate) hooks: Arc<Hooks>,
    modules: Mutex<Vec<Entry>>,
    work_dir: PathBuf,
    own_dir: bool,
    /// Spare in-memory files for module images (library.rs).
    images: Arc<Images>,
    generation: AtomicU64,
    /// Fixed for the life of the host: the inspections `images` keeps were made under it.
    policy: InspectPolicy,
    checked: bool,
    events: Mutex<Vec<Sender<HostEvent>>>,
    pub(crate) exit_deadline: Duration,
    pub(crate) foreign_checks: bool,
    pub(crate) stack_walk: bool,
    pub(crate) max_barrier_rounds: u32,
}

impl std::fmt::Debug for HostInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("work_dir", &self.work_dir)
            .field("checked", &self.checked)
            .finish_non_exhaustive()
    }
}

impl HostInner {
    pub(crate) fn hook_domain(&self) -> &Rcu {
        &self.domains[0]
    }

    pub(crate) fn domain_ref(&self, id: u32) -> Option<DomainRef> {
        self.domains.get(id as usize).cloned()
    }

    pub(crate) fn forget_code(&self, rt: &ModuleRuntime) {
        rt.set_code(&[]);
    }

    fn modules(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.modules.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, ev: HostEvent) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| s.send(ev.clone()).is_ok());
    }
}

impl HostServices for HostInner {
    fn domains(&self) -> Vec<DomainRef> {
        self.domains.clone()
    }

    fn owner_of(&self, addr: usize) -> Option<Arc<ModuleRuntime>> {
        self.modules()
            .iter()
            .filter(|e| {
                matches!(
                    e.state,
                    ModuleState::Coming | ModuleState::Live | ModuleState::Going
                )
            })
            .find(|e| e.runtime.owns_code(addr))
            .map(|e| Arc::clone(&e.runtime))
    }

    fn publish_hook(&self, hook: HookEntry) -> Result<(), i32> {
        let owner = Arc::clone(&hook.owner);
        {
            let mut staged = owner.staged_hooks.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(list) = staged.as_mut() {
                // Coming: made visible together when the module goes live.
                list.retain(|h| h.name != hook.name);
                list.push(hook);
                return Ok(());
            }
        }
        if hook.owner.gate.is_closed() {
            return Err(abi::ESHUTDOWN);
        }
        self.hooks.publish(self.hook_domain(), hook)
    }

    fn unpublish_hook(&self, module: &ModuleRuntime, name: &str) -> Result<(), i32> {
        let mut staged = module
            .staged_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(list) = staged.as_mut() {
            let before = list.len();
            list.retain(|h| &*h.name != name);
            return if list.len() < before {
                Ok(())
            } else {
                Err(abi::ENOENT)
            };
        }
        drop(staged);
        self.hooks.unpublish(self.hook_domain(), module, name)
    }

    fn checked(&self) -> bool {
        self.checked
    }

    fn late_callback(&self, module: &str) {
        self.emit(HostEvent::LateCallback {
            name: module.to_owned(),
        });
    }
}

/// The module host. See the [crate documentation](crate).
#[derive(Debug)]
pub struct Host {
    inner: Arc<HostInner>,
}

/// Parse `name=value` load arguments.
pub fn parse_params(args: &[String]) -> Result<Vec<(String, String)>, LoadError> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(LoadError::MalformedParameter { arg: a.clone() }),
        })
        .collect()
}

impl Host {
    /// A host with default settings.
    pub fn new() -> std::io::Result<Host> {
        Host::builder().build()
    }

    /// Configure a host.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// The RCU domain `id` exposed to modules (0: the hook domain; the last one is the
    /// process-wide `Rcu::global()`, under which signal hooks run).
    pub fn domain(&self, id: u32) -> Option<&Rcu> {
        self.inner.domains.get(id as usize).map(|d| &**d)
    }

    /// Inspect a file without running it (what `modinfo` prints).
    pub fn inspect(&self, path: &Path) -> Result<Inspection, LoadError> {
        inspect::inspect_file(path, &self.inner.policy).map_err(|source| LoadError::Inspect {
            path: path.to_owned(),
            source,
        })
    }

    /// Receive host events.
    pub fn subscribe(&self) -> Receiver<HostEvent> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.inner
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    /// Call hook `name` with `arg` under RCU; None if no module publishes it.
    pub fn call_hook(&self, name: &str, arg: u64) -> Option<u64> {
        self.inner.hooks.call(self.inner.hook_domain(), name, arg)
    }

    /// Resolve hook `name` once for repeated calls: a [`HookHandle`](crate::HookHandle) call
    /// is a read section, one pointer comparison and the indirect call (no name lookup). It
    /// follows a hot reload to the new version's hook of the same name, and answers `None`
    /// once no module publishes it. `None` here if none does now.
    pub fn hook(&self, name: &str) -> Option<crate::HookHandle> {
        crate::hooks::HookHandle::resolve(&self.inner.hooks, &self.inner.domains[0], name)
    }

    /// Published hooks as (hook, module).
    pub fn hooks(&self) -> Vec<(String, String)> {
        self.inner.hooks.names(self.inner.hook_domain())
    }

    /// Every module in the table (live, coming, going, pinned).
    pub fn list(&self) -> Vec<ModuleInfo> {
        let mods = self.inner.modules();
        mods.iter().map(|e| e.info(&mods)).collect()
    }

    /// The live (or pinned) module `name`.
    pub fn info(&self, name: &str) -> Option<ModuleInfo> {
        self.list().into_iter().find(|m| m.name == name)
    }

    /// Load (insmod) the module at `path` with `name=value` parameters.
    pub fn load(&self, path: &Path, params: &[(String, String)]) -> Result<ModuleInfo, LoadError> {
        let r = self
            .read_and_inspect(path)
            .and_then(|read| self.load_inner(path, read, params, None));
        if let Err(e) = &r {
            self.inner.emit(HostEvent::LoadFailed {
                path: path.to_owned(),
                error: e.to_string(),
            });
        }
        r
    }

    /// Read the module file once, into the in-memory file it will be loaded from (library.rs),
    /// and inspect those bytes: they are what will be loaded. Or neither, when the host kept the
    /// bytes and inspection of the unchanged file from an earlier load.
    fn read_and_inspect(&self, path: &Path) -> Result<Read, LoadError> {
        let h = &self.inner;
        let refused = |source| LoadError::Inspect {
            path: path.to_owned(),
            source,
        };
        let mut staged = match h.images.stage(path, h.policy.max_size) {
            Ok((image, Some(inspection))) => {
                return Ok(Read {
                    staged: Staged::Memory(image),
                    inspection,
                    reused: true,
                })
            }
            Ok((image, None)) => Staged::Memory(image),
            Err(StageError::Unavailable(why)) => {
                tracing::debug!(target: "rcumod", %why, path = %path.display(),
                    "no in-memory file for the module; it is loaded from a copy in the work directory");
                Staged::Bytes(inspect::read_module(path, &h.policy).map_err(refused)?)
            }
            Err(StageError::Source(e)) => return Err(refused(e)),
            Err(StageError::Image(source)) => {
                return Err(LoadError::Image {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        match inspect::inspect_bytes(staged.bytes(), &h.policy) {
            Ok(inspection) => {
                let inspection = Arc::new(inspection);
                if let Staged::Memory(image) = &mut staged {
                    image.keep(&inspection);
                }
                Ok(Read {
                    staged,
                    inspection,
                    reused: false,
                })
            }
            Err(e) => {
                h.images.recycle(staged);
                Err(refused(e))
            }
        }
    }

    /// Load the module whose file at `path` was read and passed its inspection.
    fn load_inner(
        &self,
        path: &Path,
        read: Read,
        params: &[(String, String)],
        replacing: Option<&Arc<ModuleRuntime>>,
    ) -> Result<ModuleInfo, LoadError> {
        let h = &self.inner;
        let Read {
            staged,
            inspection,
            reused,
        } = read;
        let values = match check_load(&h.modules(), &inspection, params, replacing) {
            Ok(values) => values,
            Err(e) => {
                h.images.recycle(staged);
                return Err(e);
            }
        };
        let name = inspection.modinfo.name.clone();

        let gen = h.generation.fetch_add(1, Ordering::Relaxed);
        let copy = h.work_dir.join(format!("{name}.{gen}.so"));
        let lib = Library::open(staged, &h.images, &copy).map_err(|e| match e {
            OpenError::Copy(source) => LoadError::Copy {
                path: path.to_owned(),
                source,
            },
            OpenError::DlOpen(message) => LoadError::DlOpen {
                path: path.to_owned(),
                message,
            },
            OpenError::NoDescriptor(m) => LoadError::Descriptor {
                path: path.to_owned(),
                reason: format!("no `{}` symbol: {m}", abi::DESCRIPTOR_SYMBOL),
            },
            OpenError::NotFound => LoadError::Descriptor {
                path: path.to_owned(),
                reason: format!("`{}` is null", abi::DESCRIPTOR_SYMBOL),
            },
        })?;
        let mut lib = lib;
        if let Err(reason) = check_descriptor(&lib, &name) {
            drop(lib); // never initialised: nothing can be pending; RAII dlclose is fine
            return Err(LoadError::Descriptor {
                path: path.to_owned(),
                reason,
            });
        }

        if h.foreign_checks {
            lib.interpose(&name, &inspection.got);
        }

        let services: Weak<dyn HostServices> = h.me.clone();
        let rt = ModuleRuntime::new(gen, name.clone(), values, services);
        rt.set_code(&lib.code);
        rt.mapped.store(true, Ordering::Release);
        let size = lib.mapped_size;
        let init = lib.descriptor.init;
        let pin_risks = inspection.pin_risks.clone();
        h.modules().push(Entry {
            runtime: Arc::clone(&rt),
            lib: Some(lib),
            state: ModuleState::Coming,
            inspection,
            path: path.to_owned(),
            size,
            reused_image: reused,
        });

        let code = match init {
            Some(init) => crate::entry::call_init(init, &rt),
            None => abi::OK,
        };
        let staged = rt
            .staged_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        let committed = if code == abi::OK {
            h.hooks
                .swap_module(h.hook_domain(), replacing.map(|r| &**r), staged)
                .map(|_| ())
        } else {
            Err(code)
        };
        if let Err(code) = committed {
            let lib = self.take_lib(&rt);
            let report = unload::run(unload::Ctx {
                host: h,
                rt: &rt,
                lib,
                mode: UnloadMode::Normal,
                call_exit: code == abi::OK, // hooks clashed after a successful init
                pin_risks: &pin_risks,
            });
            self.settle(&rt, &report.outcome);
            return Err(LoadError::InitFailed {
                name,
                code,
                unwound: report.outcome,
            });
        }
        self.set_state(&rt, ModuleState::Live);
        h.emit(HostEvent::Loaded { name: name.clone() });
        tracing::info!(target: "rcumod", module = %name, reused_image = reused, "module loaded");
        Ok(self.info_of(&rt))
    }

    fn info_of(&self, rt: &Arc<ModuleRuntime>) -> ModuleInfo {
        let mods = self.inner.modules();
        mods.iter()
            .find(|e| Arc::ptr_eq(&e.runtime, rt))
            .expect("module in table")
            .info(&mods)
    }

    fn take_lib(&self, rt: &Arc<ModuleRuntime>) -> Library {
        let mut mods = self.inner.modules();
        let e = mods
            .iter_mut()
            .find(|e| Arc::ptr_eq(&e.runtime, rt))
            .expect("module in table");
        e.state = ModuleState::Going;
        e.lib.take().expect("library present until unloaded")
    }

    fn set_state(&self, rt: &Arc<ModuleRuntime>, state: ModuleState) {
        if let Some(e) = self
            .inner
            .modules()
            .iter_mut()
            .find(|e| Arc::ptr_eq(&e.runtime, rt))
        {
            e.state = state;
        }
    }

    /// After the protocol: drop the entry, or keep it as pinned.
    fn settle(&self, rt: &Arc<ModuleRuntime>, outcome: &UnloadOutcome) {
        let mut mods = self.inner.modules();
        match outcome {
            UnloadOutcome::Unloaded => mods.retain(|e| !Arc::ptr_eq(&e.runtime, rt)),
            UnloadOutcome::Pinned { reason } => {
                if let Some(e) = mods.iter_mut().find(|e| Arc::ptr_eq(&e.runtime, rt)) {
                    e.state = ModuleState::Pinned {
                        reason: reason.clone(),
                    };
                }
            }
        }
    }

    /// Unload (rmmod) module `name` by the protocol (unload.rs).
    pub fn unload(&self, name: &str, mode: UnloadMode) -> Result<UnloadReport, UnloadError> {
        let (rt, lib, risks) = {
            let mut mods = self.inner.modules();
            let holders = holders(&mods, name);
            let Some(e) = mods
                .iter_mut()
                .find(|e| e.runtime.name() == name && e.lib.is_some())
            else {
                let pinned = mods.iter().find(|e| e.runtime.name() == name);
                return Err(match pinned {
                    Some(e) => UnloadError::NotLive {
                        name: name.to_owned(),
                        state: e.state.to_string(),
                    },
                    None => UnloadError::NotLoaded {
                        name: name.to_owned(),
                    },
                });
            };
            if e.state != ModuleState::Live {
                return Err(UnloadError::NotLive {
                    name: name.to_owned(),
                    state: e.state.to_string(),
                });
            }
            if !holders.is_empty() {
                return Err(UnloadError::InUse {
                    name: name.to_owned(),
                    holders,
                });
            }
            e.state = ModuleState::Going;
            (
                Arc::clone(&e.runtime),
                e.lib.take().expect("checked"),
                e.inspection.pin_risks.clone(),
            )
        };
        let report = unload::run(unload::Ctx {
            host: &self.inner,
            rt: &rt,
            lib,
            mode,
            call_exit: true,
            pin_risks: &risks,
        });
        self.settle(&rt, &report.outcome);
        tracing::info!(target: "rcumod", module = %name, outcome = %report.outcome, total = ?report.total, "module unload finished");
        self.inner.emit(HostEvent::Unloaded {
            report: Box::new(report.clone()),
        });
        Ok(report)
    }

    /// Hot reload: load the module at `path` as the new version of live module `name`, swap
    /// all its hooks for the old version's in one publication (callers see the old set or the
    /// new set, never a mix, and never block), then retire the old version by the unload
    /// protocol. If the new version fails to load, the old one stays live.
    pub fn reload(
        &self,
        name: &str,
        path: &Path,
        params: &[(String, String)],
        mode: UnloadMode,
    ) -> Result<(ModuleInfo, UnloadReport), ReloadError> {
        let old = {
            let mods = self.inner.modules();
            mods.iter()
                .find(|e| e.runtime.name() == name && e.state == ModuleState::Live)
                .map(|e| Arc::clone(&e.runtime))
        };
        let Some(old) = old else {
            return Err(ReloadError::Unload(UnloadError::NotLoaded {
                name: name.to_owned(),
            }));
        };
        let read = self.read_and_inspect(path).map_err(ReloadError::Load)?;
        if read.inspection.modinfo.name != name {
            let found = read.inspection.modinfo.name.clone();
            self.inner.images.recycle(read.staged);
            return Err(ReloadError::NameMismatch {
                expected: name.to_owned(),
                found,
            });
        }
        let new = self
            .load_inner(path, read, params, Some(&old))
            .map_err(ReloadError::Load)?;
        // The old version's hooks are already out of the table; retire it.
        let (lib, risks) = {
            let mut mods = self.inner.modules();
            let e = mods
                .iter_mut()
                .find(|e| Arc::ptr_eq(&e.runtime, &old))
                .expect("old version in table");
            e.state = ModuleState::Going;
            (e.lib.take().expect("live"), e.inspection.pin_risks.clone())
        };
        let report = unload::run(unload::Ctx {
            host: &self.inner,
            rt: &old,
            lib,
            mode,
            call_exit: true,
            pin_risks: &risks,
        });
        self.settle(&old, &report.outcome);
        self.inner.emit(HostEvent::Reloaded {
            name: name.to_owned(),
        });
        Ok((new, report))
    }

    /// Unload every module, dependents first (also done when the host is dropped).
    pub fn unload_all(&self, mode: UnloadMode) -> Vec<UnloadReport> {
        let mut reports = Vec::new();
        loop {
            let next = {
                let mods = self.inner.modules();
                mods.iter()
                    .filter(|e| e.state == ModuleState::Live)
                    .find(|e| holders(&mods, e.runtime.name()).is_empty())
                    .map(|e| e.runtime.name().to_owned())
            };
            let Some(name) = next else { break };
            match self.unload(&name, mode) {
                Ok(r) => reports.push(r),
                Err(_) => break,
            }
        }
        reports
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.unload_all(UnloadMode::Normal);
        if self.inner.own_dir {
            let _ = std::fs::remove_dir_all(&self.inner.work_dir);
        }
    }
}

/// A module file's bytes, ready to be loaded, and their inspection.
struct Read {
    staged: Staged,
    inspection: Arc<Inspection>,
    /// Kept from an earlier load of the unchanged file, not read and inspected now.
    reused: bool,
}

/// Why a hot reload failed (the old version is then still live).
#[derive(Debug)]
#[non_exhaustive]
pub enum ReloadError {
    /// The old version is not live.
    Unload(UnloadError),
    /// The new version could not be loaded.
    Load(LoadError),
    /// The new file is another module.
    NameMismatch {
        /// The module being reloaded.
        expected: String,
        /// The name in the new file.
        found: String,
    },
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Unload(e) => e.fmt(f),
            ReloadError::Load(e) => e.fmt(f),
            ReloadError::NameMismatch { expected, found } => write!(
                f,
                "could not reload module {expected}: the new file is module {found}"
            ),
        }
    }
}

impl std::error::Error for ReloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReloadError::Unload(e) => Some(e),
            ReloadError::Load(e) => Some(e),
            ReloadError::NameMismatch { .. } => None,
        }
    }
}

fn holders(mods: &[Entry], name: &str) -> Vec<String> {
    mods.iter()
        .filter(|e| matches!(e.state, ModuleState::Live | ModuleState::Coming))
        .filter(|e| e.inspection.modinfo.depends.iter().any(|d| d == name))
        .map(|e| e.runtime.name().to_owned())
        .collect()
}

/// The checks of a load against the host's table and the module's declared parameters: the name
/// is free (or held by the module being replaced), the dependencies are live, every parameter is
/// declared and well-typed. Returns the parameter values.
fn check_load(
    mods: &[Entry],
    inspection: &Inspection,
    params: &[(String, String)],
    replacing: Option<&Arc<ModuleRuntime>>,
) -> Result<HashMap<String, String>, LoadError> {
    let mi = &inspection.modinfo;
    let name = mi.name.clone();
    let clash = mods.iter().any(|e| {
        e.runtime.name() == name
            && !matches!(e.state, ModuleState::Pinned { .. })
            && !replacing.is_some_and(|r| Arc::ptr_eq(r, &e.runtime))
    });
    if clash {
        return Err(LoadError::AlreadyLoaded { name });
    }
    for dep in &mi.depends {
        let ok = mods
            .iter()
            .any(|e| e.runtime.name() == dep && e.state == ModuleState::Live);
        if !ok {
            return Err(LoadError::MissingDependency {
                name,
                dependency: dep.clone(),
            });
        }
    }
    let mut values = HashMap::new();
    for (k, v) in params {
        let Some(spec) = mi.param(k) else {
            return Err(LoadError::UnknownParameter {
                name,
                param: k.clone(),
            });
        };
        if !spec.ty.accepts(v) {
            return Err(LoadError::InvalidParameter {
                name,
                param: k.clone(),
                value: v.clone(),
                ty: spec.ty.name(),
            });
        }
        values.insert(k.clone(), v.clone());
    }
    Ok(values)
}

fn check_descriptor(lib: &Library, name: &str) -> Result<(), String> {
    let d = lib.descriptor;
    if d.magic != abi::DESCRIPTOR_MAGIC {
        return Err(format!("bad descriptor magic {:#018x}", d.magic));
    }
    if d.abi_major != abi::ABI_MAJOR || d.abi_minor > abi::ABI_MINOR {
        return Err(format!(
            "descriptor ABI {}.{} does not match the host's {}.{}",
            d.abi_major,
            d.abi_minor,
            abi::ABI_MAJOR,
            abi::ABI_MINOR
        ));
    }
    if (d.size as usize) < std::mem::size_of::<abi::ModuleDescriptor>() {
        return Err(format!("descriptor size {} too small", d.size));
    }
    if d.name.is_null() {
        return Err("descriptor has no name".to_owned());
    }
    // SAFETY: the descriptor's name is a NUL-terminated static string of the module, which is
    // mapped while `lib` is open.
    let dn = unsafe { std::ffi::CStr::from_ptr(d.name) }.to_string_lossy();
    if dn != name {
        return Err(format!(
            "descriptor names `{dn}` but .modinfo names `{name}`"
        ));
    }
    if d.exit.is_none() {
        tracing::warn!(target: "rcumod", module = %name, "module has no exit function; it will be unloaded without one");
    }
    Ok(())
}
