//! How keadm keeps cloudcore and edgecore running: a systemd unit where systemd runs the
//! machine and keadm installs at `/` (as upstream's keadm does), else its own supervisor
//! ([`crate::supervise`]) — in containers, and for installs under `--root`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::paths::Root;
use crate::supervise;

const UNIT_DIR: &str = "/etc/systemd/system";

fn systemd(root: &Root) -> bool {
    root.is_system() && Path::new("/run/systemd/system").is_dir()
}

fn unit_path(component: &str) -> PathBuf {
    Path::new(UNIT_DIR).join(format!("{component}.service"))
}

/// The unit keadm writes for `component`.
fn unit(component: &str, program: &Path, args: &[String]) -> String {
    let mut exec = program.display().to_string();
    for arg in args {
        exec.push(' ');
        exec.push_str(arg);
    }
    format!(
        "[Unit]\nDescription=kubeedge-rs {component}\nAfter=network-online.target\n\
         Wants=network-online.target\n\n[Service]\nExecStart={exec}\nRestart=always\n\
         RestartSec=5\nKillMode=process\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .context("run systemctl")?;
    if !status.success() {
        bail!("systemctl {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Where `component` runs, if it does: `systemd` or the supervisor's pid.
pub fn running(root: &Root, component: &str) -> Option<String> {
    if systemd(root) {
        let active = Command::new("systemctl")
            .args(["is-active", "--quiet", component])
            .status()
            .is_ok_and(|s| s.success());
        return active.then(|| format!("systemd unit {component}.service"));
    }
    supervise::running(&root.pid_file(component)).map(|pid| format!("keadm supervisor pid {pid}"))
}

/// Starts `component` (`program args`), logging to its log file when supervised by keadm.
pub fn start(root: &Root, component: &str, program: &Path, args: &[String]) -> anyhow::Result<()> {
    if systemd(root) {
        let path = unit_path(component);
        std::fs::write(&path, unit(component, program, args))
            .with_context(|| format!("write {}", path.display()))?;
        systemctl(&["daemon-reload"])?;
        return systemctl(&["enable", "--now", component]);
    }
    supervise::start(
        &root.pid_file(component),
        &root.log_file(component),
        program,
        args,
    )
}

/// Stops `component`; true if it was running.
pub fn stop(root: &Root, component: &str) -> anyhow::Result<bool> {
    if systemd(root) && unit_path(component).exists() {
        let was = running(root, component).is_some();
        systemctl(&["disable", "--now", component])?;
        std::fs::remove_file(unit_path(component))?;
        systemctl(&["daemon-reload"])?;
        return Ok(was);
    }
    supervise::stop(&root.pid_file(component))
}

/// Where to read `component`'s log.
pub fn log_hint(root: &Root, component: &str) -> String {
    if systemd(root) {
        format!("journalctl -u {component}")
    } else {
        root.log_file(component).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_restart_their_daemon_from_its_config() {
        let unit = unit(
            "edgecore",
            Path::new("/usr/local/bin/edgecore"),
            &[
                "--config".into(),
                "/etc/kubeedge/config/edgecore.yaml".into(),
            ],
        );
        assert!(unit.contains(
            "ExecStart=/usr/local/bin/edgecore --config /etc/kubeedge/config/edgecore.yaml\n"
        ));
        assert!(unit.contains("Restart=always\n"));
        assert!(unit.contains("WantedBy=multi-user.target\n"));
        // Installs under a root never touch systemd.
        assert!(!systemd(&Root::new(Path::new("/tmp/somewhere"))));
    }
}
