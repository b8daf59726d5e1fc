//! Command-line arguments (clap derive). Kept apart from the commands so that `--help` and
//! the argument types can be read in one place; each subcommand's behaviour is in `cmd/`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// rcumod: a loadable-module host with RCU unload safety.
///
/// Modules are shared objects that post RCU callbacks; the host unloads them only by the
/// protocol stop posting → rcu_barrier → dlclose, and verifies the unmap.
#[derive(Debug, Parser)]
#[command(name = "rcumod", version, about, long_about = None)]
pub struct Cli {
    /// More output (rmmod: the unload report's step timings).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what a module file declares, without running it.
    Modinfo(ModinfoArgs),
    /// Run a module host that clients control over a Unix socket.
    Host(HostArgs),
    /// Load a module into the running host.
    Insmod(InsmodArgs),
    /// Unload a module from the running host.
    Rmmod(RmmodArgs),
    /// List the running host's modules.
    Lsmod(LsmodArgs),
    /// Replace a live module by a new file (hot reload).
    Reload(ReloadArgs),
    /// List the running host's published hooks.
    Hooks(SocketArg),
    /// Unload every module and stop the running host.
    Shutdown(SocketArg),
    /// Load, call and unload modules in cycles under reader load; rcutorture-style summary.
    Stress(StressArgs),
    /// The RCU pipe torture test on one flavor.
    Torture(TortureArgs),
}

/// `--socket`.
#[derive(Debug, Args, Clone)]
pub struct SocketArg {
    /// The host's socket [default: $RCUMOD_SOCKET, else $XDG_RUNTIME_DIR/rcumod.sock, else
    /// /tmp/rcumod-$UID.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// `modinfo`.
#[derive(Debug, Args)]
pub struct ModinfoArgs {
    /// Module files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print only this field's values, one per line.
    #[arg(short = 'F', long, value_name = "FIELD")]
    pub field: Option<String>,
    /// Print one JSON object per file.
    #[arg(long, conflicts_with = "field")]
    pub json: bool,
}

/// `host`.
#[derive(Debug, Args)]
pub struct HostArgs {
    /// The socket to listen on.
    #[command(flatten)]
    pub socket: SocketArg,
    /// Reader threads calling every published hook in a loop.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub readers: usize,
    /// Pause between two reader passes over the hooks, in microseconds (0: call continuously).
    #[arg(long, default_value_t = 0, value_name = "USEC")]
    pub read_pause_us: u64,
    /// Checked mode: a callback whose module is gone is reported instead of run.
    #[arg(long)]
    pub checked: bool,
    /// Accept modules that can never be unmapped (NODELETE, GNU_UNIQUE).
    #[arg(long)]
    pub allow_pinned: bool,
    /// Accept modules that set their own library search path (DT_RPATH, DT_RUNPATH).
    #[arg(long)]
    pub allow_search_paths: bool,
    /// Read and inspect every module file at every load, even one unchanged since an earlier
    /// load (by default its kept bytes are reused; use this where file timestamps cannot be
    /// trusted, as on some network filesystems).
    #[arg(long)]
    pub reread_unchanged: bool,
    /// Deadline of a module's `exit` (and of stopping its host-started threads) at unload, in
    /// milliseconds: past it the unload answers `pinned (exit did not return within …)` instead
    /// of blocking; a stall warning is logged after one second.
    #[arg(long, default_value_t = 5000, value_name = "MSEC")]
    pub exit_deadline: u64,
}

/// `insmod`.
#[derive(Debug, Args)]
pub struct InsmodArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketArg,
    /// The module file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Module parameters.
    #[arg(value_name = "PARAM=VALUE")]
    pub params: Vec<String>,
}

/// `rmmod`.
#[derive(Debug, Args)]
pub struct RmmodArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketArg,
    /// Module names.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Expedited unload: expedited grace periods and barrier, boosting readers.
    #[arg(short = 'e', long)]
    pub expedite: bool,
    /// If the module is in use, retry with backoff for up to MSEC milliseconds.
    #[arg(short = 'w', long, value_name = "MSEC")]
    pub wait: Option<u64>,
}

/// `lsmod`.
#[derive(Debug, Args)]
pub struct LsmodArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketArg,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// `reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketArg,
    /// The live module to replace.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The new module file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Parameters of the new version.
    #[arg(value_name = "PARAM=VALUE")]
    pub params: Vec<String>,
    /// Retire the old version with an expedited unload.
    #[arg(short = 'e', long)]
    pub expedite: bool,
}

/// `stress`.
#[derive(Debug, Args)]
pub struct StressArgs {
    /// Module files to cycle [default: the bundled samples next to this executable].
    #[arg(long = "module", value_name = "PATH")]
    pub modules: Vec<PathBuf>,
    /// How many of the modules to use [default: all].
    #[arg(long = "modules", value_name = "M")]
    pub module_count: Option<usize>,
    /// Reader threads calling every published hook.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub readers: usize,
    /// Load/unload cycles per module.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub cycles: u64,
    /// Run for this long instead of a number of cycles.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Fraction of unloads that are expedited (0.0 to 1.0).
    #[arg(long, default_value_t = 0.5, value_name = "RATIO")]
    pub expedite_ratio: f64,
    /// Every this many cycles a module is hot-reloaded before it is unloaded (0: never).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub reload_every: u64,
    /// Random seed.
    #[arg(long, default_value_t = 0x5eed_0f_4c0de, value_name = "SEED")]
    pub seed: u64,
    /// Checked host mode (late callbacks are counted instead of crashing).
    #[arg(long)]
    pub checked: bool,
    /// Deadline of a module's `exit` (and of stopping its host-started threads) at unload, in
    /// milliseconds: past it the unload answers `pinned (exit did not return within …)` instead
    /// of blocking; a stall warning is logged after one second.
    #[arg(long, default_value_t = 5000, value_name = "MSEC")]
    pub exit_deadline: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG histogram of unload latency here.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

/// The RCU flavors `torture` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlavorArg {
    /// membarrier-based (the default flavor).
    Memb,
    /// Fence-based.
    Mb,
    /// Quiescent-state-based.
    Qsbr,
    /// Deliberately broken (grace periods do not wait): must FAIL.
    Busted,
}

impl FlavorArg {
    /// The rcu-core flavor.
    pub fn flavor(self) -> rcu_core::Flavor {
        match self {
            FlavorArg::Memb => rcu_core::Flavor::Memb,
            FlavorArg::Mb => rcu_core::Flavor::Mb,
            FlavorArg::Qsbr => rcu_core::Flavor::Qsbr,
            FlavorArg::Busted => rcu_core::Flavor::Busted,
        }
    }
}

/// `torture`.
#[derive(Debug, Args)]
pub struct TortureArgs {
    /// The flavor under test.
    #[arg(long, value_enum, default_value_t = FlavorArg::Memb)]
    pub flavor: FlavorArg,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub duration: f64,
    /// Reader threads.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub readers: usize,
}
