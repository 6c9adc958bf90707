//! Static pods: manifests in `staticPodPath` that edged runs on its own authority — with or
//! without the cloud — and shows in the API as mirror pods, as kubelet does.
//!
//! A static pod is named `<name>-<node>`; its UID is a hash of the manifest and the node, so
//! the same file gives the same pod across restarts (and its running containers are adopted)
//! while an edited file gives a new pod.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

pub(crate) struct StaticPods {
    dir: PathBuf,
    node: String,
}

impl StaticPods {
    pub fn new(dir: &str, node: &str) -> StaticPods {
        StaticPods {
            dir: PathBuf::from(dir),
            node: node.to_owned(),
        }
    }

    /// Every manifest in the directory as a pod bound to this node. A file that is not a pod
    /// manifest is logged and skipped; a missing directory holds no pods.
    pub fn scan(&self) -> Vec<Value> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let hidden = p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                let manifest = p
                    .extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
                !hidden && manifest && p.is_file()
            })
            .collect();
        files.sort();
        files
            .iter()
            .filter_map(|file| match self.read(file) {
                Ok(pod) => Some(pod),
                Err(reason) => {
                    tracing::warn!(file = %file.display(), reason, "static pod manifest skipped");
                    None
                }
            })
            .collect()
    }

    fn read(&self, file: &Path) -> Result<Value, String> {
        let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
        let manifest: Value = serde_yaml::from_str(&text).map_err(|e| e.to_string())?;
        self.static_pod(manifest, &text)
    }

    fn static_pod(&self, mut pod: Value, source: &str) -> Result<Value, String> {
        if pod["kind"] != "Pod" || pod["apiVersion"] != "v1" {
            return Err("not a v1 Pod".into());
        }
        let name = pod["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or("metadata.name is missing")?
            .to_owned();
        if !pod["spec"]["containers"].is_array() {
            return Err("spec.containers is missing".into());
        }
        let uid = content_uid(&self.node, source);
        let metadata = &mut pod["metadata"];
        metadata["name"] = json!(format!("{name}-{}", self.node));
        if !metadata["namespace"].is_string() {
            metadata["namespace"] = json!("default");
        }
        metadata["uid"] = json!(uid);
        if !metadata["annotations"].is_object() {
            metadata["annotations"] = json!({});
        }
        metadata["annotations"][CONFIG_SOURCE] = json!("file");
        metadata["annotations"][CONFIG_HASH] = json!(uid);
        pod["spec"]["nodeName"] = json!(self.node);
        if let Some(object) = pod.as_object_mut() {
            object.remove("status");
        }
        Ok(pod)
    }
}

/// Whether `pod` came from a manifest file.
pub fn is_static(annotations: &std::collections::BTreeMap<String, String>) -> bool {
    annotations.get(CONFIG_SOURCE).map(String::as_str) == Some("file")
}

/// The mirror pod of a static pod: the same pod for the API, marked as a mirror and without
/// the UID (the API server gives it its own).
pub fn mirror(static_pod: &Value) -> Value {
    let mut mirror = static_pod.clone();
    let hash = static_pod["metadata"]["uid"].clone();
    let metadata = &mut mirror["metadata"];
    if let Some(object) = metadata.as_object_mut() {
        object.remove("uid");
    }
    metadata["annotations"][CONFIG_MIRROR] = hash;
    mirror
}

/// 32 hex digits from the manifest and the node (two FNV-1a 64-bit hashes): stable across
/// runs and Rust versions, unlike `std`'s hasher.
fn content_uid(node: &str, source: &str) -> String {
    let fnv = |seed: u64| {
        let mut hash = seed;
        for byte in node.bytes().chain([0]).chain(source.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_become_pods_of_this_node_and_bad_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: agent}\n\
                        spec: {containers: [{name: a, image: busybox}]}\n";
        std::fs::write(dir.path().join("agent.yaml"), manifest).unwrap();
        std::fs::write(dir.path().join("broken.yaml"), "kind: [").unwrap();
        std::fs::write(
            dir.path().join("cm.json"),
            r#"{"apiVersion":"v1","kind":"ConfigMap"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let source = StaticPods::new(dir.path().to_str().unwrap(), "edge-1");
        let pods = source.scan();
        assert_eq!(pods.len(), 1, "{pods:?}");
        let pod = &pods[0];
        assert_eq!(pod["metadata"]["name"], "agent-edge-1");
        assert_eq!(pod["metadata"]["namespace"], "default");
        assert_eq!(pod["spec"]["nodeName"], "edge-1");
        let uid = pod["metadata"]["uid"].as_str().unwrap();
        assert_eq!(uid.len(), 32);
        assert_eq!(pod["metadata"]["annotations"][CONFIG_HASH], uid);
        // Stable for the same file; another for an edited one.
        assert_eq!(source.scan()[0]["metadata"]["uid"], uid);
        std::fs::write(
            dir.path().join("agent.yaml"),
            manifest.replace("busybox", "nginx"),
        )
        .unwrap();
        assert_ne!(source.scan()[0]["metadata"]["uid"], uid);

        let mirror = mirror(pod);
        assert!(mirror["metadata"]["uid"].is_null());
        assert_eq!(mirror["metadata"]["annotations"][CONFIG_MIRROR], uid);
        assert!(
            StaticPods::new("/nonexistent/manifests", "e")
                .scan()
                .is_empty()
        );
    }
}
