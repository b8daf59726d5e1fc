//! The subcommands, one file each: `modinfo` (read a module file without running it),
//! `host` (the long-running host behind the socket), `client` (insmod, rmmod, lsmod, reload,
//! hooks, shutdown), `stress` (load/unload cycles under readers) and `torture` (the RCU pipe
//! torture test).

pub mod client;
pub mod host;
pub mod modinfo;
pub mod stress;
pub mod torture;
