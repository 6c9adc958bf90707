//! What the node reports about the machine it runs on, read from /proc, /etc and statvfs.

use serde_json::{Value, json};

/// The machine's resources and identity, read once at start.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpus: usize,
    pub memory_kib: u64,
    pub ephemeral_storage_kib: u64,
    pub machine_id: String,
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
    pub architecture: &'static str,
    /// `rootDirectory`, whose filesystem's fullness is the node's disk pressure.
    pub root_directory: String,
}

impl Machine {
    /// Never fails: what cannot be read is reported empty or zero, as kubelet does.
    pub fn detect(root_directory: &str) -> Machine {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            memory_kib: meminfo_kib(&read("/proc/meminfo"), "MemTotal:").unwrap_or(0),
            ephemeral_storage_kib: filesystem_kib(root_directory).unwrap_or(0),
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            kernel_version: read("/proc/sys/kernel/osrelease"),
            os_image: pretty_name(&read("/etc/os-release")).unwrap_or_else(|| "Linux".into()),
            architecture: go_arch(),
            root_directory: root_directory.to_owned(),
        }
    }

    /// `status.capacity`; `allocatable` is the same (no reservations configured).
    pub fn capacity(&self, max_pods: i32) -> Value {
        json!({
            "cpu": self.cpus.to_string(),
            "ephemeral-storage": format!("{}Ki", self.ephemeral_storage_kib),
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
            "memory": format!("{}Ki", self.memory_kib),
            "pods": max_pods.to_string(),
        })
    }
}

/// What is left of the machine now: the signals of kubelet's default eviction thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pressure {
    /// `memory.available < 100Mi`.
    pub memory: bool,
    /// `nodefs.available < 10%`.
    pub disk: bool,
    /// Fewer than 5% of process IDs left.
    pub pids: bool,
}

impl Pressure {
    pub fn measure(root_directory: &str) -> Pressure {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo_kib(&meminfo, "MemAvailable:").is_some_and(|kib| kib < 100 * 1024);
        let disk = nix::sys::statvfs::statvfs(root_directory)
            .or_else(|_| nix::sys::statvfs::statvfs("/"))
            .is_ok_and(|s| s.blocks() > 0 && s.blocks_available() * 10 < s.blocks());
        let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let processes = std::fs::read_dir("/proc")
            .map(|dir| {
                dir.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .bytes()
                            .all(|b| b.is_ascii_digit())
                    })
                    .count() as u64
            })
            .unwrap_or(0);
        Pressure {
            memory,
            disk,
            pids: pid_max > 0 && processes * 20 > pid_max * 19,
        }
    }
}

/// Kubernetes names architectures as Go does.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn meminfo_kib(meminfo: &str, field: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

fn pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|value| value.trim_matches('"').to_owned())
}

fn filesystem_kib(path: &str) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path)
        .or_else(|_| nix::sys::statvfs::statvfs("/"))
        .ok()?;
    Some(stat.blocks() as u64 * stat.fragment_size() as u64 / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_and_os_release() {
        assert_eq!(
            meminfo_kib("MemTotal:        8148204 kB\nMemFree: 1 kB\n", "MemTotal:"),
            Some(8148204)
        );
        assert_eq!(
            pretty_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")
                .as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        let machine = Machine::detect("/");
        assert!(machine.cpus >= 1 && machine.memory_kib > 0);
        assert_eq!(machine.capacity(110)["pods"], "110");
        // This machine runs tests: it is not out of memory or process IDs.
        let pressure = Pressure::measure("/");
        assert!(!pressure.memory && !pressure.pids, "{pressure:?}");
    }
}
