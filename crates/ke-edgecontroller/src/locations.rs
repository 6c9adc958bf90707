//! Which node needs which ConfigMap or Secret (upstream's `LocationCache`): a node needs one
//! while a pod bound to it references it. Downstream uses it to decide where a ConfigMap or
//! Secret goes; upstream uses it to refuse queries for Secrets a node has no business reading.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use ke_message::constants::resource_type;
use kube::ResourceExt;

/// A ConfigMap or Secret, by type token, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Reference {
    pub token: &'static str,
    pub namespace: String,
    pub name: String,
}

#[derive(Default)]
pub(crate) struct Locations {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Pod uid → its node and what it references.
    pods: HashMap<String, (String, Vec<Reference>)>,
    /// Reference → node → how many of the node's pods reference it.
    needed: HashMap<Reference, HashMap<String, usize>>,
}

impl Locations {
    /// Records what `pod` (bound to `node`) references; replaces what was recorded for it.
    pub fn set_pod(&self, uid: &str, node: &str, references: Vec<Reference>) {
        let mut inner = self.inner.lock().expect("locations lock poisoned");
        inner.forget(uid);
        for r in &references {
            *inner
                .needed
                .entry(r.clone())
                .or_default()
                .entry(node.to_owned())
                .or_default() += 1;
        }
        inner
            .pods
            .insert(uid.to_owned(), (node.to_owned(), references));
    }

    pub fn remove_pod(&self, uid: &str) {
        self.inner
            .lock()
            .expect("locations lock poisoned")
            .forget(uid);
    }

    /// The nodes running a pod that references `r`.
    pub fn nodes_needing(&self, r: &Reference) -> Vec<String> {
        let inner = self.inner.lock().expect("locations lock poisoned");
        inner
            .needed
            .get(r)
            .map(|nodes| nodes.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The node a pod is bound to, if the pod is known.
    pub fn node_of_pod(&self, uid: &str) -> Option<String> {
        let inner = self.inner.lock().expect("locations lock poisoned");
        inner.pods.get(uid).map(|(node, _)| node.clone())
    }

    pub fn node_needs(&self, node: &str, r: &Reference) -> bool {
        let inner = self.inner.lock().expect("locations lock poisoned");
        inner
            .needed
            .get(r)
            .is_some_and(|nodes| nodes.contains_key(node))
    }
}

impl Inner {
    fn forget(&mut self, uid: &str) {
        let Some((node, references)) = self.pods.remove(uid) else {
            return;
        };
        for r in references {
            if let Some(nodes) = self.needed.get_mut(&r) {
                if let Some(count) = nodes.get_mut(&node) {
                    *count -= 1;
                    if *count == 0 {
                        nodes.remove(&node);
                    }
                }
                if nodes.is_empty() {
                    self.needed.remove(&r);
                }
            }
        }
    }
}

/// The ConfigMaps and Secrets a pod needs on its node: volumes (also projected), env, envFrom
/// and image pull secrets, in every container and init container.
pub(crate) fn references(pod: &Pod) -> Vec<Reference> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let mut out: BTreeSet<(&'static str, String)> = BTreeSet::new();
    let mut add = |token: &'static str, name: Option<&String>| {
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            out.insert((token, name.clone()));
        }
    };
    for volume in spec.volumes.iter().flatten() {
        add(
            resource_type::CONFIGMAP,
            volume.config_map.as_ref().map(|c| &c.name),
        );
        add(
            resource_type::SECRET,
            volume.secret.as_ref().and_then(|s| s.secret_name.as_ref()),
        );
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            add(
                resource_type::CONFIGMAP,
                source.config_map.as_ref().map(|c| &c.name),
            );
            add(
                resource_type::SECRET,
                source.secret.as_ref().map(|s| &s.name),
            );
        }
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for container in containers {
        for env in container.env.iter().flatten() {
            let from = env.value_from.as_ref();
            add(
                resource_type::CONFIGMAP,
                from.and_then(|f| f.config_map_key_ref.as_ref())
                    .map(|r| &r.name),
            );
            add(
                resource_type::SECRET,
                from.and_then(|f| f.secret_key_ref.as_ref())
                    .map(|r| &r.name),
            );
        }
        for env_from in container.env_from.iter().flatten() {
            add(
                resource_type::CONFIGMAP,
                env_from.config_map_ref.as_ref().map(|r| &r.name),
            );
            add(
                resource_type::SECRET,
                env_from.secret_ref.as_ref().map(|r| &r.name),
            );
        }
    }
    for secret in spec.image_pull_secrets.iter().flatten() {
        add(resource_type::SECRET, Some(&secret.name));
    }
    let namespace = pod.namespace().unwrap_or_default();
    out.into_iter()
        .map(|(token, name)| Reference {
            token,
            namespace: namespace.clone(),
            name,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str) -> Reference {
        Reference {
            token: resource_type::CONFIGMAP,
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_pod_references_what_it_mounts_and_reads() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "volumes": [
                    {"name": "a", "configMap": {"name": "cm-vol"}},
                    {"name": "b", "secret": {"secretName": "s-vol"}},
                    {"name": "c", "projected": {"sources": [
                        {"configMap": {"name": "cm-proj"}}, {"secret": {"name": "s-proj"}}]}}
                ],
                "imagePullSecrets": [{"name": "pull"}],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s-init"}}]}],
                "containers": [{"name": "c", "env": [
                    {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}},
                    {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}},
                    {"name": "Z", "value": "plain"}],
                    "envFrom": [{"configMapRef": {"name": "cm-from"}}]}]
            }
        }))
        .unwrap();
        let found: Vec<(&str, String)> = references(&pod)
            .into_iter()
            .inspect(|r| assert_eq!(r.namespace, "ns"))
            .map(|r| (r.token, r.name))
            .collect();
        let expected = [
            ("configmap", "cm-env"),
            ("configmap", "cm-from"),
            ("configmap", "cm-proj"),
            ("configmap", "cm-vol"),
            ("secret", "pull"),
            ("secret", "s-env"),
            ("secret", "s-init"),
            ("secret", "s-proj"),
            ("secret", "s-vol"),
        ];
        let expected: Vec<(&str, String)> =
            expected.iter().map(|(t, n)| (*t, n.to_string())).collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn a_node_needs_a_reference_while_one_of_its_pods_uses_it() {
        let locations = Locations::default();
        locations.set_pod("u1", "n1", vec![cm("a")]);
        locations.set_pod("u2", "n1", vec![cm("a"), cm("b")]);
        locations.set_pod("u3", "n2", vec![cm("b")]);
        assert!(locations.node_needs("n1", &cm("a")));
        let mut nodes = locations.nodes_needing(&cm("b"));
        nodes.sort();
        assert_eq!(nodes, ["n1", "n2"]);

        locations.remove_pod("u1");
        assert!(locations.node_needs("n1", &cm("a")), "u2 still uses it");
        // A pod that stops referencing something releases it.
        locations.set_pod("u2", "n1", vec![cm("b")]);
        assert!(!locations.node_needs("n1", &cm("a")));
        locations.remove_pod("u2");
        locations.remove_pod("u3");
        assert!(locations.nodes_needing(&cm("b")).is_empty());
        locations.remove_pod("never-seen");
    }
}
