//! Keeping cloudcore and edgecore running without systemd: `keadm init` and `keadm join` start
//! a detached `keadm supervise` process, which runs the daemon, restarts it when it dies
//! (1 s, doubling to 30 s), and on SIGTERM stops it and exits. Its pid is in a pid file under
//! the root; `keadm reset` stops it through that file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The supervisor of a component, if one runs.
pub fn running(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    kill(Pid::from_raw(pid), None).is_ok().then_some(pid)
}

/// Starts `program args` under a detached supervisor logging to `log`.
pub fn start(pid_file: &Path, log: &Path, program: &Path, args: &[String]) -> anyhow::Result<()> {
    for dir in [pid_file.parent(), log.parent()].into_iter().flatten() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let output = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let keadm = std::env::current_exe().context("find keadm's own binary")?;
    let mut command = std::process::Command::new(keadm);
    command
        .arg("supervise")
        .arg("--pid-file")
        .arg(pid_file)
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output);
    // Its own process group: Ctrl-C in the terminal keadm ran in does not reach it (and it
    // ignores the terminal's hangup).
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command.spawn().context("start the supervisor")?;
    // The pid file is written by the supervisor; wait for it so `running` is true on return.
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(pid_file).is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the supervisor (pid {}) did not start; see {}",
            child.id(),
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Stops the supervisor in `pid_file` (and so its daemon); true if one was running.
pub fn stop(pid_file: &Path) -> anyhow::Result<bool> {
    let Some(pid) = running(pid_file) else {
        let _ = std::fs::remove_file(pid_file);
        return Ok(false);
    };
    let pid = Pid::from_raw(pid);
    kill(pid, Signal::SIGTERM).context("signal the supervisor")?;
    let deadline = Instant::now() + Duration::from_secs(45);
    while kill(pid, None).is_ok() {
        if Instant::now() > deadline {
            let _ = kill(pid, Signal::SIGKILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(pid_file);
    Ok(true)
}

/// `keadm supervise`: runs `command` until SIGTERM or SIGINT, restarting it when it exits.
pub fn supervise(pid_file: PathBuf, command: Vec<String>) -> anyhow::Result<()> {
    let (program, args) = command.split_first().context("nothing to supervise")?;
    std::fs::write(&pid_file, std::process::id().to_string())
        .with_context(|| format!("write {}", pid_file.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Handled, so a closing terminal does not end the supervisor; nothing else to do.
        let _hangup = signal(SignalKind::hangup())?;
        let mut wait = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            let mut child = tokio::process::Command::new(program)
                .args(args)
                .spawn()
                .with_context(|| format!("start {program}"))?;
            let stop = tokio::select! {
                status = child.wait() => {
                    let status = status?;
                    eprintln!("keadm supervise: {program} exited ({status}); restarting in {wait:?}");
                    false
                }
                _ = term.recv() => true,
                _ = int.recv() => true,
            };
            if stop {
                if let Some(id) = child.id() {
                    let _ = kill(Pid::from_raw(id as i32), Signal::SIGTERM);
                }
                let ended = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
                if ended.is_err() {
                    let _ = child.kill().await;
                }
                return anyhow::Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                wait = Duration::from_secs(1);
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    });
    let _ = std::fs::remove_file(&pid_file);
    result
}
