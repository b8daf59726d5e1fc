//! The `rcumod` command line, as a library so that its integration tests can reach the
//! pieces that are not observable from outside (the peer-credential check, the protocol).
//!
//! It is a thin layer over `module_loader::Host`: argument parsing (`cli`), the socket
//! protocol between `rcumod host` and its clients (`protocol`), output formatting (`output`,
//! `plot`), and one module per subcommand (`cmd`). No loader logic lives here.

pub mod cli;
pub mod cmd;
pub mod logging;
pub mod output;
pub mod plot;
pub mod protocol;
pub mod rng;

use clap::Parser;
use cli::{Cli, Command};

/// Parse the command line, run the subcommand, and return its exit status.
pub fn main_with_args() -> u8 {
    let cli = Cli::parse();
    let v = cli.verbose;
    match &cli.command {
        Command::Modinfo(a) => {
            logging::init_stderr("warn");
            cmd::modinfo::run(a)
        }
        Command::Host(a) => {
            logging::init_stderr("info");
            cmd::host::run(a)
        }
        Command::Insmod(a) => {
            logging::init_stderr("warn");
            cmd::client::insmod(a, v)
        }
        Command::Rmmod(a) => {
            logging::init_stderr("warn");
            cmd::client::rmmod(a, v)
        }
        Command::Lsmod(a) => {
            logging::init_stderr("warn");
            cmd::client::lsmod(a)
        }
        Command::Reload(a) => {
            logging::init_stderr("warn");
            cmd::client::reload(a, v)
        }
        Command::Hooks(a) => {
            logging::init_stderr("warn");
            cmd::client::hooks(a, v)
        }
        Command::Shutdown(a) => {
            logging::init_stderr("warn");
            cmd::client::shutdown(a)
        }
        Command::Stress(a) => {
            let log = logging::BarWriter::default();
            log.init(if v > 0 { "info" } else { "warn" });
            cmd::stress::run(a, &log)
        }
        Command::Torture(a) => {
            logging::init_stderr("warn");
            cmd::torture::run(a)
        }
    }
}
