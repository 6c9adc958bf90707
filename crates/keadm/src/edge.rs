//! `keadm join` and `keadm reset edge`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use ke_config::{EdgeCoreConfig, HostInfo};

use crate::cloud::write;
use crate::daemon;
use crate::paths::{Root, binary};

const COMPONENT: &str = "edgecore";
/// cloudcore's `cloudStream.tunnelPort` unless changed (upstream's keadm assumes it too).
const DEFAULT_TUNNEL_PORT: u16 = 10004;

pub struct Join<'a> {
    pub cloudcore_ipport: &'a str,
    pub token: &'a str,
    pub node_name: Option<&'a str>,
    pub certport: u16,
    pub runtime_endpoint: &'a str,
    pub labels: &'a [String],
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Joins this machine to the cloudcore at `join.cloudcore_ipport` as an edge node.
pub fn join(root: &Root, join: &Join<'_>) -> anyhow::Result<()> {
    if let Some(how) = daemon::running(root, COMPONENT) {
        bail!("edgecore is already running here ({how}); keadm reset edge first");
    }
    let config_path = root.edgecore_config();
    if config_path.exists() {
        bail!(
            "this machine has joined already ({} exists); keadm reset edge first",
            config_path.display()
        );
    }
    let token = join.token.trim();
    ke_pki::token::split_token(token).map_err(|e| {
        anyhow::anyhow!("--token is not a join token: {e} (get one with keadm gettoken)")
    })?;
    if let Ok(expiry) = ke_pki::token::token_expiry(token)
        && expiry < SystemTime::now()
    {
        bail!("--token has expired; get a fresh one with keadm gettoken");
    }
    let host = HostInfo::detect();
    let node = join.node_name.map_or(host.hostname.clone(), str::to_owned);
    ke_pki::identity::validate_node_name(&node)
        .map_err(|e| anyhow::anyhow!("--edgenode-name {node:?}: {e}"))?;
    let cloud_host = join
        .cloudcore_ipport
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        .map(|(h, _)| h)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--cloudcore-ipport {:?} is not host:port",
                join.cloudcore_ipport
            )
        })?;
    let labels = parse_labels(join.labels)?;
    let http_server = format!("https://{cloud_host}:{}", join.certport);

    let runtime = runtime()?;
    let exists = runtime
        .block_on(ke_edgehub::bootstrap::node_exists(&http_server, &node))
        .map_err(|e| anyhow::anyhow!("cannot reach cloudcore at {http_server}: {e}"))?;
    if exists {
        bail!("node {node} already exists in the cluster; choose another --edgenode-name");
    }
    runtime
        .block_on(async {
            let client = ke_cri::CriClient::connect(join.runtime_endpoint).await?;
            client.version().await
        })
        .map_err(|e| anyhow::anyhow!("container runtime at {}: {e}", join.runtime_endpoint))?;

    let mut config = EdgeCoreConfig::default_for(&host);
    let hub = &mut config.modules.edge_hub;
    hub.http_server = http_server;
    hub.websocket.server = join.cloudcore_ipport.to_owned();
    hub.token = token.to_owned();
    // Not upstream's server.crt: cloudcore on the same machine keeps its own there.
    hub.tls_cert_file = "/etc/kubeedge/certs/edge.crt".into();
    hub.tls_private_key_file = "/etc/kubeedge/certs/edge.key".into();
    config.modules.edged.hostname_override = node.clone();
    config.modules.edged.node_labels = labels;
    config
        .modules
        .edged
        .tailored_kubelet_config
        .container_runtime_endpoint = join.runtime_endpoint.to_owned();
    config.modules.meta_manager.meta_server.enable = true;
    // The stream tunnel goes to the same cloudcore, on its default tunnel port.
    let cloud_host = join
        .cloudcore_ipport
        .rsplit_once(':')
        .map_or(join.cloudcore_ipport, |(host, _)| host);
    config.modules.edge_stream.enable = true;
    config.modules.edge_stream.server = format!("{cloud_host}:{DEFAULT_TUNNEL_PORT}");
    let metaserver = config.modules.meta_manager.meta_server.server.clone();
    write(&config_path, &root.relocate(&ke_config::to_yaml(&config)))?;

    let edgecore = binary("edgecore")?;
    let log = daemon::log_hint(root, COMPONENT);
    let args = vec!["--config".to_owned(), config_path.display().to_string()];
    daemon::start(root, COMPONENT, &edgecore, &args)?;
    println!("edgecore started; waiting for node {node} to be Ready (log: {log})");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if daemon::running(root, COMPONENT).is_none() {
            bail!("edgecore stopped; see {log}");
        }
        if crate::metaserver::node_ready(&metaserver, &node) {
            break;
        }
        if Instant::now() > deadline {
            bail!("node {node} did not turn Ready within 3 minutes; see {log}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    println!("node {node} joined and is Ready");
    Ok(())
}

fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    labels
        .iter()
        .flat_map(|l| l.split(','))
        .filter(|l| !l.is_empty())
        .map(|label| {
            let (key, value) = label
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--labels {label:?} is not key=value"))?;
            Ok((key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// `keadm reset edge`: stops edgecore, removes the containers of the pods it ran and the files
/// `keadm join` and edgecore wrote; nothing else.
pub fn reset(root: &Root) -> anyhow::Result<()> {
    if daemon::stop(root, COMPONENT)? {
        println!("edgecore stopped");
    }
    let config_path = root.edgecore_config();
    let host = HostInfo::detect();
    let Ok(config) = EdgeCoreConfig::load(&config_path, &host) else {
        println!(
            "no edgecore config at {}: nothing else to remove",
            config_path.display()
        );
        return Ok(());
    };
    let database = PathBuf::from(&config.database.data_source);
    let uids = pod_uids(&database);
    let endpoint = &config
        .modules
        .edged
        .tailored_kubelet_config
        .container_runtime_endpoint;
    match remove_sandboxes(endpoint, &uids) {
        Ok(removed) => println!("removed {removed} pod sandboxes"),
        Err(err) => eprintln!("warning: pod containers not removed ({endpoint}): {err:#}"),
    }
    let pods = Path::new(&config.modules.edged.root_directory).join("pods");
    for uid in &uids {
        let _ = std::fs::remove_dir_all(pods.join(uid));
    }
    let hub = &config.modules.edge_hub;
    let mut files = vec![
        config_path.clone(),
        PathBuf::from(&hub.tls_cert_file),
        PathBuf::from(&hub.tls_private_key_file),
        root.log_file(COMPONENT),
        ke_dmi::socket::edgecore_socket(&config.modules.device_twin.dmi_sock_path),
    ];
    for suffix in ["", "-wal", "-shm"] {
        files.push(PathBuf::from(format!("{}{suffix}", database.display())));
    }
    // The CA copy is cloudcore's own file when both run here.
    if !root.cloudcore_config().exists() {
        files.push(PathBuf::from(&hub.tls_ca_file));
    }
    crate::remove_files(root, &files);
    Ok(())
}

/// The UIDs of the pods edgecore stored (only those are removed from the runtime).
fn pod_uids(database: &Path) -> HashSet<String> {
    let Ok(connection) =
        rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return HashSet::new();
    };
    let Ok(mut statement) = connection.prepare("SELECT value FROM meta WHERE type = 'pod'") else {
        return HashSet::new();
    };
    let rows = statement.query_map([], |row| row.get::<_, String>(0));
    rows.map(|rows| {
        rows.flatten()
            .filter_map(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .filter_map(|pod| pod["metadata"]["uid"].as_str().map(str::to_owned))
            .collect()
    })
    .unwrap_or_default()
}

fn remove_sandboxes(endpoint: &str, uids: &HashSet<String>) -> anyhow::Result<usize> {
    if uids.is_empty() {
        return Ok(0);
    }
    runtime()?.block_on(async {
        let client = ke_cri::CriClient::connect(endpoint).await?;
        let sandboxes = client
            .runtime()
            .list_pod_sandbox(ke_cri::api::ListPodSandboxRequest { filter: None })
            .await?
            .into_inner()
            .items;
        let mut removed = 0;
        for sandbox in sandboxes {
            let ours = sandbox
                .labels
                .get("io.kubernetes.pod.uid")
                .is_some_and(|uid| uids.contains(uid));
            if !ours {
                continue;
            }
            let id = sandbox.id;
            let mut runtime = client.runtime();
            let _ = runtime
                .stop_pod_sandbox(ke_cri::api::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await;
            runtime
                .remove_pod_sandbox(ke_cri::api::RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
                .context("remove a pod sandbox")?;
            removed += 1;
        }
        Ok(removed)
    })
}
