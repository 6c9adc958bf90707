//! `keadm debug diagnose node|pod`: on an edge node, what its own cache (the metaserver) says
//! about the node or a pod, and what that usually means.

use anyhow::Context as _;
use ke_config::{EdgeCoreConfig, HostInfo};
use serde_json::Value;

use crate::metaserver;
use crate::paths::Root;

fn metaserver_of(root: &Root) -> anyhow::Result<(String, String)> {
    let path = root.edgecore_config();
    let config = EdgeCoreConfig::load(&path, &HostInfo::detect())
        .with_context(|| format!("no edge node here ({}; keadm join)", path.display()))?;
    let server = &config.modules.meta_manager.meta_server;
    anyhow::ensure!(
        server.enable,
        "the metaserver is off (metaManager.metaServer.enable in {})",
        path.display()
    );
    Ok((
        server.server.clone(),
        config.modules.edged.hostname_override.clone(),
    ))
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

pub fn node(root: &Root) -> anyhow::Result<()> {
    let (server, node) = metaserver_of(root)?;
    let object = metaserver::get(&server, &format!("/api/v1/nodes/{node}")).with_context(|| {
        format!("edgecore's metaserver at {server} does not know node {node}: is edgecore running? (keadm debug check)")
    })?;
    println!("node {node}:");
    for condition in object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "  {:<16} {:<7} {} {}",
            str_at(condition, "/type"),
            str_at(condition, "/status"),
            str_at(condition, "/reason"),
            str_at(condition, "/message")
        );
    }
    let info = &object["status"]["nodeInfo"];
    println!(
        "  runtime {}, kubelet {}",
        str_at(info, "/containerRuntimeVersion"),
        str_at(info, "/kubeletVersion")
    );
    Ok(())
}

/// What a container's waiting reason usually means.
fn hint(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "ImagePullBackOff" | "ErrImagePull" => {
            "the image cannot be pulled: check its name, the registry, or use imagePullPolicy: IfNotPresent with a local image"
        }
        "ErrImageNeverPull" => "imagePullPolicy is Never and the image is not on the node",
        "CrashLoopBackOff" => {
            "the container keeps exiting: see its log under the node's /var/log/pods"
        }
        "CreateContainerConfigError" => "a ConfigMap, Secret or key the pod uses is missing",
        "ContainerCreating" => "the sandbox or volumes are being set up (or an image is pulling)",
        _ => return None,
    })
}

pub fn pod(root: &Root, namespace: &str, name: &str) -> anyhow::Result<()> {
    let (server, node) = metaserver_of(root)?;
    let pod = metaserver::get(
        &server,
        &format!("/api/v1/namespaces/{namespace}/pods/{name}"),
    )
    .with_context(|| format!("node {node} has no pod {namespace}/{name}"))?;
    println!(
        "pod {namespace}/{name} on {node}: {}",
        str_at(&pod, "/status/phase")
    );
    for condition in pod["status"]["conditions"].as_array().into_iter().flatten() {
        println!(
            "  {:<16} {}",
            str_at(condition, "/type"),
            str_at(condition, "/status")
        );
    }
    let statuses = ["initContainerStatuses", "containerStatuses"];
    for status in statuses
        .iter()
        .filter_map(|k| pod["status"][*k].as_array())
        .flatten()
    {
        let name = str_at(status, "/name");
        let restarts = status["restartCount"].as_i64().unwrap_or(0);
        let state = &status["state"];
        if let Some(waiting) = state.get("waiting") {
            let reason = str_at(waiting, "/reason");
            println!(
                "  container {name}: waiting, {reason} {} (restarts {restarts})",
                str_at(waiting, "/message")
            );
            if let Some(hint) = hint(reason) {
                println!("    → {hint}");
            }
        } else if let Some(done) = state.get("terminated") {
            println!(
                "  container {name}: terminated, exit code {} {} (restarts {restarts})",
                done["exitCode"].as_i64().unwrap_or(0),
                str_at(done, "/reason")
            );
        } else {
            println!("  container {name}: running (restarts {restarts})");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn common_reasons_have_hints() {
        for reason in [
            "ImagePullBackOff",
            "CrashLoopBackOff",
            "CreateContainerConfigError",
        ] {
            assert!(super::hint(reason).is_some(), "{reason}");
        }
        assert!(super::hint("Completed").is_none());
    }
}
