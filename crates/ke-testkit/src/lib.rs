//! Support for tests that start the real binaries. Dev-dependency only: nothing shipped links it.
//!
//! Everything here has a deadline, so a hung daemon fails a test instead of hanging CI.

pub mod cli_contract;
mod process;

pub use process::{Daemon, run_to_completion};
