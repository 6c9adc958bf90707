//! Pod and container security contexts as the runtime takes them: the container's settings
//! override the pod's, and `runAsNonRoot` is enforced before a container is created.

use ke_cri::api;

use crate::model::{Container, Pod};

/// The namespaces a pod's sandbox and containers share: the node's network for
/// `hostNetwork`, a pod network otherwise; one IPC namespace per pod; a PID namespace per
/// container (kubelet's default without `shareProcessNamespace`).
pub fn namespaces(pod: &Pod) -> api::NamespaceOption {
    let network = if pod.spec.host_network {
        api::NamespaceMode::Node
    } else {
        api::NamespaceMode::Pod
    };
    api::NamespaceOption {
        network: network as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

pub fn sandbox(pod: &Pod) -> api::LinuxSandboxSecurityContext {
    let context = &pod.spec.security_context;
    api::LinuxSandboxSecurityContext {
        namespace_options: Some(namespaces(pod)),
        run_as_user: context.run_as_user.map(|value| api::Int64Value { value }),
        run_as_group: context.run_as_group.map(|value| api::Int64Value { value }),
        supplemental_groups: supplemental_groups(pod),
        ..Default::default()
    }
}

fn supplemental_groups(pod: &Pod) -> Vec<i64> {
    let context = &pod.spec.security_context;
    let mut groups = context.supplemental_groups.clone();
    groups.extend(context.fs_group);
    groups
}

/// The security context of `container`; `image_user` is the image's configured user (uid, or
/// name when it has no numeric one), checked against `runAsNonRoot`.
pub fn container(
    pod: &Pod,
    container: &Container,
    image_user: (Option<i64>, &str),
) -> Result<api::LinuxContainerSecurityContext, String> {
    let own = &container.security_context;
    let pod_context = &pod.spec.security_context;
    let run_as_user = own.run_as_user.or(pod_context.run_as_user);
    let run_as_group = own.run_as_group.or(pod_context.run_as_group);
    if own.run_as_non_root.or(pod_context.run_as_non_root) == Some(true) {
        match (run_as_user, image_user) {
            (Some(0), _) => {
                return Err("container's runAsUser breaks non-root policy".into());
            }
            (Some(_), _) => {}
            (None, (Some(0), _)) => {
                return Err("container has runAsNonRoot and image will run as root".into());
            }
            (None, (None, name)) if !name.is_empty() => {
                return Err(format!(
                    "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root"
                ));
            }
            (None, _) => {}
        }
    }
    let capabilities = &own.capabilities;
    Ok(api::LinuxContainerSecurityContext {
        capabilities: Some(api::Capability {
            add_capabilities: capabilities.add.clone(),
            drop_capabilities: capabilities.drop.clone(),
            ..Default::default()
        }),
        privileged: own.privileged.unwrap_or(false),
        namespace_options: Some(namespaces(pod)),
        run_as_user: run_as_user.map(|value| api::Int64Value { value }),
        run_as_group: run_as_group.map(|value| api::Int64Value { value }),
        readonly_rootfs: own.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: supplemental_groups(pod),
        no_new_privs: own.allow_privilege_escalation == Some(false),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        Pod::from_value(json!({"spec": spec})).unwrap()
    }

    #[test]
    fn the_container_overrides_the_pod() {
        let pod = pod(json!({
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000},
            "containers": [{"name": "a", "securityContext": {"runAsUser": 1001,
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
        }));
        let context = container(&pod, &pod.spec.containers[0], (None, "")).unwrap();
        assert_eq!(context.run_as_user.unwrap().value, 1001);
        assert_eq!(context.run_as_group.unwrap().value, 1000);
        assert_eq!(context.supplemental_groups, [2000]);
        assert!(context.no_new_privs);
        assert_eq!(context.capabilities.unwrap().drop_capabilities, ["ALL"]);
    }

    #[test]
    fn run_as_non_root_is_enforced() {
        let pod =
            pod(json!({"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "a"}]}));
        let c = &pod.spec.containers[0];
        assert!(container(&pod, c, (Some(0), "")).is_err());
        assert!(container(&pod, c, (None, "nobody")).is_err());
        assert!(container(&pod, c, (Some(65534), "")).is_ok());
        let explicit = self::pod(json!({"containers": [{"name": "a",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 0}}]}));
        assert!(container(&explicit, &explicit.spec.containers[0], (Some(1), "")).is_err());
    }
}
