//! The mapper binaries as a user meets them: `--help`, and a clear one-line error and a
//! non-zero exit for a socket they cannot serve on. (Building these tests is also what makes
//! `cargo test --workspace` build the binaries that edgecore's device tests run.)

use std::process::Command;

#[test]
fn both_mappers_explain_themselves() {
    for binary in [
        env!("CARGO_BIN_EXE_modbus-mapper"),
        env!("CARGO_BIN_EXE_virtual-mapper"),
    ] {
        let out = Command::new(binary).arg("--help").output().unwrap();
        assert!(out.status.success(), "{binary} --help failed");
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in ["--name", "--socket", "--edgecore-socket"] {
            assert!(help.contains(flag), "{binary} --help lacks {flag}:\n{help}");
        }
        let out = Command::new(binary).arg("--no-such-flag").output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{binary}: a bad flag is a usage error"
        );
    }
}

#[test]
fn a_socket_that_cannot_be_served_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_modbus-mapper"))
        .args(["--socket", "/proc/kubeedge-rs-test/modbus.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(
        error[0].contains("/proc/kubeedge-rs-test/modbus.sock"),
        "{stderr}"
    );
}
