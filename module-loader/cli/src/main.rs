//! `rcumod`: the command line's entry point. Everything is in the library half of this
//! package (`src/lib.rs`), so that the integration tests can reach it too.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(rcumod::main_with_args())
}
