//! `keadm init`, `keadm gettoken`, `keadm reset cloud`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ke_config::{CloudCoreConfig, EmbeddedControlPlane, HostInfo};

use crate::paths::{Root, binary};
use crate::{cluster, daemon};

const COMPONENT: &str = "cloudcore";

/// Starts cloudcore (embedded control plane unless `kube_config` names a cluster), or says it
/// already runs.
pub fn init(
    root: &Root,
    advertise_address: Option<&str>,
    kube_config: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(how) = daemon::running(root, COMPONENT) {
        println!("cloudcore is already running ({how})");
        return report(root);
    }
    let wanted = kube_config
        .map(|path| {
            std::fs::canonicalize(path).with_context(|| format!("--kube-config {}", path.display()))
        })
        .transpose()?;
    let config_path = root.cloudcore_config();
    // The cluster cloudcore uses, if not its own control plane.
    let cluster_kubeconfig: Option<PathBuf>;
    if config_path.exists() {
        println!("using the existing {}", config_path.display());
        let config =
            CloudCoreConfig::load(&config_path, &HostInfo::detect()).with_context(|| {
                format!(
                    "{} (keadm reset cloud starts afresh)",
                    config_path.display()
                )
            })?;
        let api = &config.kube_api_config;
        cluster_kubeconfig = (api.embedded.is_none() && !api.kube_config.is_empty())
            .then(|| PathBuf::from(&api.kube_config));
        if let Some(wanted) = wanted
            && cluster_kubeconfig.as_ref() != Some(&wanted)
        {
            bail!(
                "{} does not use --kube-config {}; keadm reset cloud first",
                config_path.display(),
                wanted.display()
            );
        }
    } else {
        let host = HostInfo::detect();
        let mut config = CloudCoreConfig::default_for(&host);
        if let Some(address) = advertise_address {
            address
                .parse::<std::net::IpAddr>()
                .with_context(|| format!("--advertise-address {address:?} is not an IP address"))?;
            config.modules.cloud_hub.advertise_address = vec![address.to_owned()];
        }
        cluster_kubeconfig = wanted;
        match &cluster_kubeconfig {
            Some(path) => config.kube_api_config.kube_config = path.display().to_string(),
            None => config.kube_api_config.embedded = Some(EmbeddedControlPlane::default()),
        }
        // kubectl logs/exec/attach/port-forward to edge pods (off in upstream's defaults).
        config.modules.cloud_stream.enable = true;
        let text = root.relocate(&ke_config::to_yaml(&config));
        write(&config_path, &text)?;
    }
    let cloudcore = binary("cloudcore")?;
    let log = daemon::log_hint(root, COMPONENT);
    let args = vec!["--config".to_owned(), config_path.display().to_string()];
    daemon::start(root, COMPONENT, &cloudcore, &args)?;
    // Ready when the join token is written (after the CA, the server certificate and, with the
    // embedded control plane, the API server); with a cluster, once that token is in its
    // Secret too, so `keadm gettoken --kube-config` gives it as soon as this returns.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut waiting_for = String::from("the join token");
    loop {
        if root.token_file().exists() {
            let Some(path) = &cluster_kubeconfig else {
                break;
            };
            match cluster::join_token(path) {
                Ok(Some(token)) if token == read_token(root)? => break,
                Ok(_) => waiting_for = "the join token in the cluster".into(),
                Err(err) => waiting_for = format!("the cluster: {err:#}"),
            }
        }
        if daemon::running(root, COMPONENT).is_none() || Instant::now() > deadline {
            bail!("cloudcore did not start (waited for {waiting_for}); see {log}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("cloudcore is running; its log: {log}");
    report(root)
}

fn report(root: &Root) -> anyhow::Result<()> {
    if root.admin_kubeconfig().exists() {
        println!(
            "kubectl: kubectl --kubeconfig {} get nodes",
            root.admin_kubeconfig().display()
        );
    }
    let token = read_token(root)?;
    println!(
        "join an edge node: keadm join --cloudcore-ipport <this machine's address>:10000 --token {token}"
    );
    Ok(())
}

fn read_token(root: &Root) -> anyhow::Result<String> {
    let path = root.token_file();
    let token = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no join token at {} (is cloudcore running? keadm init)",
            path.display()
        )
    })?;
    Ok(token.trim().to_owned())
}

/// `keadm gettoken`: the join token cloudcore keeps current, from this machine or the cluster.
pub fn gettoken(root: &Root, kube_config: Option<&Path>) -> anyhow::Result<()> {
    let token = match kube_config {
        None => read_token(root)?,
        Some(path) => cluster::join_token(path)?.context(
            "the cluster has no join token in secret kubeedge/tokensecret (is cloudcore running \
             against it?)",
        )?,
    };
    println!("{token}");
    Ok(())
}

/// `keadm reset cloud`: stops cloudcore and removes what `keadm init` wrote.
pub fn reset(root: &Root) -> anyhow::Result<()> {
    if daemon::stop(root, COMPONENT)? {
        println!("cloudcore stopped");
    }
    let etc = root.etc();
    let files = [
        root.cloudcore_config(),
        etc.join("certs/server.crt"),
        etc.join("certs/server.key"),
        etc.join("ca"),
        root.var_lib().join("controlplane"),
        root.var_lib().join("kubeedge.sock"),
        root.log_file(COMPONENT),
    ];
    crate::remove_files(root, &files);
    Ok(())
}

pub(crate) fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}
