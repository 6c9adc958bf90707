//! Where keadm puts things. Everything lives under a root (`/` on a real machine; a directory
//! in tests), in the places upstream uses: `/etc/kubeedge` (configs, certificates, token) and
//! `/var/lib/kubeedge` (data, and keadm's own process records).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Root(PathBuf);

impl Root {
    pub fn new(root: &Path) -> Root {
        Root(root.to_owned())
    }

    /// Installs at `/`: the machine's own places (and its systemd).
    pub fn is_system(&self) -> bool {
        self.0 == Path::new("/")
    }

    pub fn display(&self) -> std::path::Display<'_> {
        self.0.display()
    }

    fn under(&self, absolute: &str) -> PathBuf {
        self.0.join(absolute.trim_start_matches('/'))
    }

    pub fn etc(&self) -> PathBuf {
        self.under("/etc/kubeedge")
    }

    pub fn var_lib(&self) -> PathBuf {
        self.under("/var/lib/kubeedge")
    }

    pub fn logs(&self) -> PathBuf {
        self.under("/var/log/kubeedge")
    }

    pub fn cloudcore_config(&self) -> PathBuf {
        self.etc().join("config/cloudcore.yaml")
    }

    pub fn edgecore_config(&self) -> PathBuf {
        self.etc().join("config/edgecore.yaml")
    }

    pub fn token_file(&self) -> PathBuf {
        self.etc().join("ca/token")
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.var_lib().join("controlplane/admin.kubeconfig")
    }

    /// The pid file of the supervisor keadm started for `component`.
    pub fn pid_file(&self, component: &str) -> PathBuf {
        self.var_lib().join(format!("keadm/{component}.pid"))
    }

    pub fn log_file(&self, component: &str) -> PathBuf {
        self.logs().join(format!("{component}.log"))
    }

    /// A config rendered for `/` with every upstream path moved under this root.
    pub fn relocate(&self, config: &str) -> String {
        if self.0 == Path::new("/") {
            return config.to_owned();
        }
        let root = self.0.display().to_string();
        let root = root.trim_end_matches('/');
        config
            .replace("/etc/kubeedge/", &format!("{root}/etc/kubeedge/"))
            .replace("/var/lib/kubeedge/", &format!("{root}/var/lib/kubeedge/"))
            .replace("/var/lib/kubelet\n", &format!("{root}/var/lib/kubelet\n"))
            .replace("/var/log/pods\n", &format!("{root}/var/log/pods\n"))
    }
}

/// A binary keadm starts: next to keadm itself (how releases and `cargo build` lay them out),
/// else on `PATH`.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| anyhow::anyhow!("{name} not found next to keadm or on PATH"))
}
