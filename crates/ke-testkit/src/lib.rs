//! Support for tests that start the real binaries. Dev-dependency only: nothing shipped links it.
//!
//! Everything here has a deadline, so a hung daemon fails a test instead of hanging CI.

pub mod cli_contract;
pub mod config;
mod process;

pub use process::{Daemon, run_to_completion};

/// Path of another workspace binary next to the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`). `cargo test --workspace` builds
/// every binary before running any test; when running one package alone, build the other binary
/// first.
pub fn sibling_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build -p {name}` (cargo test --workspace does it)",
        path.display()
    );
    path
}
