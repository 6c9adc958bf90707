//! `keadm debug check`: what is installed here, and is it working — one line per check, and a
//! non-zero exit when one fails.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, SystemTime};

use ke_config::{CloudCoreConfig, EdgeCoreConfig, HostInfo};

use crate::daemon;
use crate::paths::Root;

/// The outcome of one check.
struct Report {
    failed: usize,
}

impl Report {
    fn line(&mut self, what: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => println!("ok    {what}: {detail}"),
            Err(reason) => {
                self.failed += 1;
                println!("FAIL  {what}: {reason}");
            }
        }
    }
}

pub fn check(root: &Root) -> anyhow::Result<()> {
    let host = HostInfo::detect();
    let mut report = Report { failed: 0 };
    let mut found = false;
    if let Ok(config) = CloudCoreConfig::load(root.cloudcore_config(), &host) {
        found = true;
        report.line("cloudcore", running(root, "cloudcore"));
        let hub = &config.modules.cloud_hub;
        for (name, listener) in [("websocket", &hub.websocket), ("https", &hub.https)] {
            let address = format!("127.0.0.1:{}", listener.port);
            report.line(&format!("cloudhub {name} port"), open(&address));
        }
        report.line("CA certificate", expiry(Path::new(&hub.tls_ca_file)));
        report.line(
            "cloudhub certificate",
            expiry(Path::new(&hub.tls_cert_file)),
        );
    }
    if let Ok(config) = EdgeCoreConfig::load(root.edgecore_config(), &host) {
        found = true;
        report.line("edgecore", running(root, "edgecore"));
        let endpoint = config
            .modules
            .edged
            .tailored_kubelet_config
            .container_runtime_endpoint
            .clone();
        report.line("container runtime", runtime(&endpoint));
        let hub = &config.modules.edge_hub;
        report.line("cloudcore reachable", open(&hub.websocket.server));
        report.line("edge certificate", expiry(Path::new(&hub.tls_cert_file)));
        let node = &config.modules.edged.hostname_override;
        let metaserver = &config.modules.meta_manager.meta_server.server;
        report.line(
            "node",
            if crate::metaserver::node_ready(metaserver, node) {
                Ok(format!("{node} is Ready"))
            } else {
                Err(format!(
                    "{node} is not Ready (or the metaserver at {metaserver} is off)"
                ))
            },
        );
    }
    anyhow::ensure!(
        found,
        "nothing installed under {} (keadm init or keadm join)",
        root.display()
    );
    anyhow::ensure!(report.failed == 0, "{} check(s) failed", report.failed);
    Ok(())
}

fn running(root: &Root, component: &str) -> Result<String, String> {
    daemon::running(root, component)
        .map(|how| format!("running ({how})"))
        .ok_or_else(|| "not running (keadm init / keadm join starts it)".to_owned())
}

fn open(address: &str) -> Result<String, String> {
    let addresses = address
        .to_socket_addrs()
        .map_err(|e| format!("{address}: {e}"))?;
    for candidate in addresses {
        if TcpStream::connect_timeout(&candidate, Duration::from_secs(3)).is_ok() {
            return Ok(format!("{address} answers"));
        }
    }
    Err(format!("nothing answers at {address}"))
}

fn expiry(path: &Path) -> Result<String, String> {
    let der = ke_pki::persist::read_cert_file(path).map_err(|e| e.to_string())?;
    let info = ke_pki::cert_info(&der).map_err(|e| format!("{}: {e}", path.display()))?;
    match info.not_after.duration_since(SystemTime::now()) {
        Ok(left) => Ok(format!(
            "{} valid for {} more days",
            path.display(),
            left.as_secs() / 86_400
        )),
        Err(_) => Err(format!("{} has expired", path.display())),
    }
}

fn runtime(endpoint: &str) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(async {
            let client = ke_cri::CriClient::connect(endpoint).await?;
            client.version().await
        })
        .map(|v| format!("{endpoint}: {} {}", v.runtime_name, v.runtime_version))
        .map_err(|e| format!("{endpoint}: {e}"))
}
