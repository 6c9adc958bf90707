//! The command-line contract both daemons share with upstream KubeEdge, as one test routine that
//! each binary's test suite runs against its own executable.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::config::sandboxed;
use crate::{Daemon, run_to_completion};

const QUICK: Duration = Duration::from_secs(30);

/// A field of the default config to misspell, and the dotted path the error must name.
pub struct Typo {
    pub field: &'static str,
    pub misspelling: &'static str,
    pub expected_path: &'static str,
}

fn stdout_of(bin: &Path, args: &[&str]) -> String {
    let out = run_to_completion(bin, args, QUICK);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `bin --config <file with text>` and returns (exit code, stderr).
fn run_with_config(bin: &Path, text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).expect("write config");
    let out = run_to_completion(
        bin,
        &["--config", path.to_str().expect("utf-8 path")],
        QUICK,
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `run_config` turns a printed config into one the daemon can run with on this machine (cloudcore
/// needs an API server; upstream's default config names none), before [`sandboxed`] relocates it.
pub fn check(bin: &Path, name: &str, typo: &Typo, run_config: fn(&str) -> String) {
    // --version and --help exit 0 and say what they should.
    assert!(stdout_of(bin, &["--version"]).contains("kubeedge-rs"));
    let help = stdout_of(bin, &["--help"]);
    for flag in ["--config", "--defaultconfig", "--minconfig", "--version"] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }

    // An unknown flag is a usage error: exit code 2.
    let out = run_to_completion(bin, &["--no-such-flag"], QUICK);
    assert_eq!(out.status.code(), Some(2));

    // The printed default and minimal configs are accepted by the same binary, which then runs
    // until SIGTERM and exits cleanly.
    let default_config = stdout_of(bin, &["--defaultconfig"]);
    let min_config = stdout_of(bin, &["--minconfig"]);
    for (label, text) in [("default", &default_config), ("min", &min_config)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, sandboxed(&run_config(text), dir.path())).expect("write config");
        let mut daemon = Daemon::start(bin, &["--config", path.to_str().expect("utf-8 path")]);
        daemon.wait_for_log("running; send SIGINT or SIGTERM to stop", QUICK);
        let status = daemon.stop_with(Signal::SIGTERM, QUICK);
        assert!(
            status.success(),
            "{label} config: exit {status} after SIGTERM:\n{}",
            daemon.log()
        );
    }

    // A misspelt field fails at startup and the error names its full path.
    assert!(
        default_config.contains(typo.field),
        "{} not in default config",
        typo.field
    );
    let misspelt = default_config.replacen(typo.field, typo.misspelling, 1);
    let (code, stderr) = run_with_config(bin, &misspelt);
    assert_eq!(code, Some(1), "typo accepted:\n{stderr}");
    assert!(
        stderr.contains(typo.expected_path),
        "error does not name {}:\n{stderr}",
        typo.expected_path
    );

    // Garbage and missing files are clear errors, not panics.
    let (code, stderr) = run_with_config(bin, "modules: [unclosed\n\t:");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = run_to_completion(bin, &["--config", "/nonexistent/kubeedge-rs.yaml"], QUICK);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/kubeedge-rs.yaml"));
}
