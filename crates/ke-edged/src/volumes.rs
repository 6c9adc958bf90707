//! A pod's volumes on the node's disk and the mounts that put them into containers.
//!
//! Layout as kubelet's, under `rootDirectory`: `pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`.
//! ConfigMap, Secret, projected and downwardAPI volumes are written as kubelet's atomic writer
//! does — files in a timestamped directory, `..data` pointing at it, one symlink per top-level
//! name into `..data` — so a refresh swaps the whole content with one rename and a reader
//! never sees half an update.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use ke_cri::api;
use ke_message::constants::resource_type;

use crate::downward::{self, PodFacts};
use crate::model::{Container, DownwardApiSource, KeyToPath, Pod, Volume};
use crate::objects::Objects;

/// kubelet's default file mode for ConfigMap, Secret and downwardAPI volumes (0644).
const DEFAULT_MODE: u32 = 0o644;
const DATA_LINK: &str = "..data";
/// kubelet's defaults for a container's termination message.
const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";
const MAX_TERMINATION_MESSAGE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume:?}: {reason}")]
    Invalid { volume: String, reason: String },
    #[error("volume {volume:?}: {path}: {source}")]
    Io {
        volume: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("container {container:?} mounts volume {volume:?}, which the pod does not define")]
    Undefined { container: String, volume: String },
}

/// The host directory (or file) of each volume of one pod.
pub type Prepared = HashMap<String, PathBuf>;

pub(crate) struct Volumes {
    root: PathBuf,
}

impl Volumes {
    pub fn new(root_directory: &str) -> Volumes {
        Volumes {
            root: PathBuf::from(root_directory),
        }
    }

    /// `rootDirectory/pods/<uid>`; `None` for a UID that is not one plain path component
    /// (UIDs also come from runtime labels, which anyone using the runtime can set).
    fn pod_dir(&self, uid: &str) -> Option<PathBuf> {
        component(uid).map(|uid| self.root.join("pods").join(uid))
    }

    /// Creates or refreshes every volume of `pod`. A missing ConfigMap or Secret that is not
    /// optional fails the pod's start, as kubelet's `FailedMount` does.
    pub async fn prepare(
        &self,
        objects: &mut Objects<'_>,
        pod: &Pod,
        facts: &PodFacts,
    ) -> Result<Prepared, VolumeError> {
        let mut prepared = Prepared::new();
        for volume in &pod.spec.volumes {
            let path = self.prepare_one(objects, pod, volume, facts).await?;
            prepared.insert(volume.name.clone(), path);
        }
        Ok(prepared)
    }

    async fn prepare_one(
        &self,
        objects: &mut Objects<'_>,
        pod: &Pod,
        volume: &Volume,
        facts: &PodFacts,
    ) -> Result<PathBuf, VolumeError> {
        let name = &volume.name;
        let invalid = |reason: String| VolumeError::Invalid {
            volume: name.clone(),
            reason,
        };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| VolumeError::Io {
                volume: name.clone(),
                path,
                source,
            }
        };
        let (Some(pod_dir), Some(_)) = (self.pod_dir(pod.uid()), component(name)) else {
            return Err(invalid(
                "the pod's UID and the volume's name must be plain names".into(),
            ));
        };
        let dir = |plugin: &str| {
            pod_dir
                .join("volumes")
                .join(format!("kubernetes.io~{plugin}"))
                .join(name)
        };
        if let Some(host) = &volume.host_path {
            let path = PathBuf::from(&host.path);
            check_host_path(&path, &host.kind)
                .map_err(|reason| invalid(format!("hostPath {}: {reason}", host.path)))?;
            return Ok(path);
        }
        if volume.empty_dir.is_some() {
            // `medium: Memory` is disk-backed here: mounting tmpfs needs privileges an edge
            // node often does not give edgecore.
            let path = dir("empty-dir");
            std::fs::create_dir_all(&path).map_err(io(&path))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                .map_err(io(&path))?;
            return Ok(path);
        }
        let (plugin, payload) = written(objects, pod, volume, facts).await.ok_or_else(|| {
            invalid(
                "unsupported volume type (edged supports emptyDir, hostPath, configMap, \
                 secret, projected and downwardAPI)"
                    .into(),
            )
        })?;
        let payload = payload.map_err(invalid)?;
        let path = dir(plugin);
        write_atomically(&path, &payload).map_err(io(&path))?;
        Ok(path)
    }

    /// The host file behind a container's `terminationMessagePath`, one per attempt so a
    /// restart starts with an empty one.
    fn termination_file(&self, uid: &str, container: &str, attempt: u32) -> Option<PathBuf> {
        Some(
            self.pod_dir(uid)?
                .join("containers")
                .join(component(container)?)
                .join(attempt.to_string()),
        )
    }

    /// Creates the termination message file of this attempt (dropping the one of two attempts
    /// back, whose container is gone) and mounts it where the container writes its message.
    pub fn termination_mount(
        &self,
        pod: &Pod,
        container: &Container,
        attempt: u32,
    ) -> Result<api::Mount, VolumeError> {
        let file = self
            .termination_file(pod.uid(), &container.name, attempt)
            .ok_or_else(|| VolumeError::Invalid {
                volume: "termination-log".into(),
                reason: format!("container name {:?} is not a plain name", container.name),
            })?;
        let io = |source| VolumeError::Io {
            volume: "termination-log".into(),
            path: file.clone(),
            source,
        };
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(&file, b"").map_err(io)?;
        // Writable whatever user the container runs as.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).map_err(io)?;
        if let Some(old) = attempt
            .checked_sub(2)
            .and_then(|old| self.termination_file(pod.uid(), &container.name, old))
        {
            let _ = std::fs::remove_file(old);
        }
        let path = container
            .termination_message_path
            .clone()
            .unwrap_or_else(|| DEFAULT_TERMINATION_PATH.to_owned());
        Ok(api::Mount {
            container_path: path,
            host_path: file.to_string_lossy().into_owned(),
            ..Default::default()
        })
    }

    /// What the container of `attempt` wrote to its termination message file (at most 4 KiB,
    /// as kubelet reads).
    pub fn termination_message(&self, uid: &str, container: &str, attempt: u32) -> String {
        use std::io::Read as _;
        let mut message = Vec::new();
        let file = self.termination_file(uid, container, attempt);
        if let Some(Ok(file)) = file.map(std::fs::File::open) {
            let _ = file.take(MAX_TERMINATION_MESSAGE).read_to_end(&mut message);
        }
        String::from_utf8_lossy(&message).into_owned()
    }

    /// Removes everything edged wrote for pod `uid` (never a hostPath: those live elsewhere).
    pub async fn remove(&self, uid: &str) {
        let Some(dir) = self.pod_dir(uid) else {
            tracing::warn!(%uid, "not a pod UID; nothing removed");
            return;
        };
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        })
        .await;
        if let Ok(Err(err)) = removed {
            tracing::warn!(%uid, error = %err, "pod volumes not removed");
        }
    }
}

/// The plugin name and files of a volume edged writes (ConfigMap, Secret, downwardAPI,
/// projected); `None` for other kinds.
async fn written(
    objects: &mut Objects<'_>,
    pod: &Pod,
    volume: &Volume,
    facts: &PodFacts,
) -> Option<(&'static str, Result<Payload, String>)> {
    let mut payload = Payload::new();
    let (plugin, found) = if let Some(source) = &volume.config_map {
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        let kind = resource_type::CONFIGMAP;
        let found = add_object(
            &mut payload,
            objects,
            kind,
            &source.name,
            &source.items,
            source.optional,
            mode,
        )
        .await;
        ("configmap", found)
    } else if let Some(source) = &volume.secret {
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        let kind = resource_type::SECRET;
        let found = add_object(
            &mut payload,
            objects,
            kind,
            &source.secret_name,
            &source.items,
            source.optional,
            mode,
        )
        .await;
        ("secret", found)
    } else if let Some(source) = &volume.downward_api {
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        add_downward(&mut payload, pod, source, mode, facts);
        ("downward-api", Ok(()))
    } else if let Some(source) = &volume.projected {
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        let mut found = Ok(());
        for projection in &source.sources {
            let result = if let Some(cm) = &projection.config_map {
                let kind = resource_type::CONFIGMAP;
                add_object(
                    &mut payload,
                    objects,
                    kind,
                    &cm.name,
                    &cm.items,
                    cm.optional,
                    mode,
                )
                .await
            } else if let Some(secret) = &projection.secret {
                let kind = resource_type::SECRET;
                add_object(
                    &mut payload,
                    objects,
                    kind,
                    &secret.name,
                    &secret.items,
                    secret.optional,
                    mode,
                )
                .await
            } else if let Some(downward) = &projection.downward_api {
                add_downward(&mut payload, pod, downward, mode, facts);
                Ok(())
            } else {
                // A service account token needs the cloud's token API, which the edge does
                // not proxy yet: the file is left out rather than failing the pod.
                if let Some(token) = &projection.service_account_token {
                    tracing::debug!(pod = %pod.full_name(), path = %token.path, "service account token not projected");
                }
                Ok(())
            };
            found = found.and(result);
        }
        ("projected", found)
    } else {
        return None;
    };
    Some((plugin, found.map(|()| payload)))
}

/// The CRI mounts of `container`.
pub fn mounts(
    pod: &Pod,
    container: &Container,
    prepared: &Prepared,
) -> Result<Vec<api::Mount>, VolumeError> {
    let mut mounts = Vec::new();
    for mount in &container.volume_mounts {
        let Some(host) = prepared.get(&mount.name) else {
            return Err(VolumeError::Undefined {
                container: container.name.clone(),
                volume: mount.name.clone(),
            });
        };
        let written = pod
            .spec
            .volumes
            .iter()
            .find(|v| v.name == mount.name)
            .is_some_and(|v| v.host_path.is_none() && v.empty_dir.is_none());
        let host_path = if mount.sub_path.is_empty() {
            host.clone()
        } else {
            let sub = relative(&mount.sub_path).ok_or_else(|| VolumeError::Invalid {
                volume: mount.name.clone(),
                reason: format!(
                    "subPath {:?} must be a relative path inside the volume",
                    mount.sub_path
                ),
            })?;
            let path = host.join(sub);
            let escapes = || VolumeError::Invalid {
                volume: mount.name.clone(),
                reason: format!("subPath {:?} leads out of the volume", mount.sub_path),
            };
            // A container can plant symlinks in its volumes: the subPath must resolve inside.
            if !within(host, &path) {
                return Err(escapes());
            }
            if !written && !path.exists() {
                std::fs::create_dir_all(&path).map_err(|source| VolumeError::Io {
                    volume: mount.name.clone(),
                    path: path.clone(),
                    source,
                })?;
                if !within(host, &path) {
                    return Err(escapes());
                }
            }
            path
        };
        mounts.push(api::Mount {
            container_path: mount.mount_path.clone(),
            host_path: host_path.to_string_lossy().into_owned(),
            // kubelet mounts what it writes read-only, whatever the pod asks.
            readonly: mount.read_only || written,
            ..Default::default()
        });
    }
    Ok(mounts)
}

/// Files of a written volume: relative path → (content, mode).
type Payload = BTreeMap<PathBuf, (Vec<u8>, u32)>;

async fn add_object(
    payload: &mut Payload,
    objects: &mut Objects<'_>,
    kind: &'static str,
    name: &str,
    items: &[KeyToPath],
    optional: bool,
    mode: u32,
) -> Result<(), String> {
    let namespace = objects.namespace().to_owned();
    let Some(data) = objects.data(kind, name).await? else {
        return if optional {
            Ok(())
        } else {
            Err(format!("{kind} {namespace}/{name} not found"))
        };
    };
    if items.is_empty() {
        for (key, value) in data {
            payload.insert(PathBuf::from(key), (value.clone(), mode));
        }
        return Ok(());
    }
    for item in items {
        let Some(value) = data.get(&item.key) else {
            if optional {
                continue;
            }
            return Err(format!(
                "{kind} {namespace}/{name} has no key {:?}",
                item.key
            ));
        };
        let path = relative(&item.path)
            .ok_or_else(|| format!("item path {:?} is not relative", item.path))?;
        payload.insert(path, (value.clone(), item.mode.unwrap_or(mode)));
    }
    Ok(())
}

fn add_downward(
    payload: &mut Payload,
    pod: &Pod,
    source: &DownwardApiSource,
    mode: u32,
    facts: &PodFacts,
) {
    for item in &source.items {
        let value = if let Some(field) = &item.field_ref {
            downward::field(pod, &field.field_path, facts)
        } else if let Some(reference) = &item.resource_field_ref {
            downward::resource(pod, "", reference, facts)
        } else {
            None
        };
        if let (Some(value), Some(path)) = (value, relative(&item.path)) {
            payload.insert(path, (value.into_bytes(), item.mode.unwrap_or(mode)));
        }
    }
}

/// Whether `path`, symlinks resolved as far as it exists, is inside `root`.
fn within(root: &Path, path: &Path) -> bool {
    let Ok(root) = root.canonicalize() else {
        return false;
    };
    let existing = path.ancestors().find(|p| p.exists()).unwrap_or(path);
    existing
        .canonicalize()
        .is_ok_and(|resolved| resolved.starts_with(&root))
}

/// `name` if it is one plain path component: what may be joined under the pods directory.
fn component(name: &str) -> Option<&str> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    plain.then_some(name)
}

/// `path` if it stays inside the directory it is joined to.
fn relative(path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    let inside = !path.as_os_str().is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    inside.then(|| path.to_owned())
}

fn check_host_path(path: &Path, kind: &str) -> Result<(), String> {
    use std::fs::FileType;
    use std::os::unix::fs::FileTypeExt;
    let missing = std::fs::symlink_metadata(path).is_err();
    match kind {
        "DirectoryOrCreate" if missing => {
            std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
        }
        "FileOrCreate" if missing => {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| e.to_string())?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| e.to_string())?;
        }
        _ => {}
    }
    let (check, what): (fn(&FileType) -> bool, &str) = match kind {
        "" => return Ok(()),
        "DirectoryOrCreate" | "Directory" => (FileType::is_dir, "a directory"),
        "FileOrCreate" | "File" => (FileType::is_file, "a file"),
        "Socket" => (FileType::is_socket, "a socket"),
        "CharDevice" => (FileType::is_char_device, "a character device"),
        "BlockDevice" => (FileType::is_block_device, "a block device"),
        other => return Err(format!("unknown hostPath type {other:?}")),
    };
    let is = std::fs::metadata(path).is_ok_and(|m| check(&m.file_type()));
    is.then_some(()).ok_or_else(|| format!("is not {what}"))
}

/// Replaces the content of `dir` with `payload` in one rename, unless it already holds it.
fn write_atomically(dir: &Path, payload: &Payload) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let current = std::fs::read_link(dir.join(DATA_LINK)).ok();
    if let Some(current) = &current
        && holds(&dir.join(current), payload)
    {
        return Ok(());
    }
    let stamp = unique_stamp();
    let staged = dir.join(&stamp);
    std::fs::create_dir(&staged)?;
    for (path, (content, mode)) in payload {
        let file = staged.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, content)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))?;
    }
    let link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&link);
    symlink(&stamp, &link)?;
    std::fs::rename(&link, dir.join(DATA_LINK))?;
    let top: std::collections::BTreeSet<_> = payload
        .keys()
        .filter_map(|p| p.components().next())
        .map(|c| c.as_os_str().to_owned())
        .collect();
    for name in &top {
        let entry = dir.join(name);
        if std::fs::symlink_metadata(&entry).is_err() {
            symlink(Path::new(DATA_LINK).join(name), &entry)?;
        }
    }
    // What the previous content had and this one has not.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let hidden = name.to_string_lossy().starts_with("..");
        if !hidden && !top.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(current) = current {
        let _ = std::fs::remove_dir_all(dir.join(current));
    }
    Ok(())
}

/// A name for a new content directory: kubelet's `..<time>` with a counter, so two writes in
/// the same nanosecond still differ.
fn unique_stamp() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("..{}.{:09}.{n}", now.as_secs(), now.subsec_nanos())
}

fn holds(dir: &Path, payload: &Payload) -> bool {
    let mut files = 0;
    walk(dir, &mut |_| files += 1);
    files == payload.len()
        && payload.iter().all(|(path, (content, mode))| {
            let file = dir.join(path);
            std::fs::read(&file).is_ok_and(|c| c == *content)
                && std::fs::metadata(&file).is_ok_and(|m| m.permissions().mode() & 0o7777 == *mode)
        })
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, visit);
        } else {
            visit(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str)]) -> Payload {
        files
            .iter()
            .map(|(path, content)| (PathBuf::from(path), (content.as_bytes().to_vec(), 0o644)))
            .collect()
    }

    #[test]
    fn a_refresh_swaps_the_whole_content() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("cfg");
        write_atomically(
            &volume,
            &payload(&[("mode", "fast"), ("conf/app.ini", "a=1")]),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(volume.join("mode")).unwrap(),
            "fast"
        );
        assert_eq!(
            std::fs::read_to_string(volume.join("conf/app.ini")).unwrap(),
            "a=1"
        );
        let first = std::fs::read_link(volume.join(DATA_LINK)).unwrap();

        // The same content: nothing is rewritten.
        write_atomically(
            &volume,
            &payload(&[("mode", "fast"), ("conf/app.ini", "a=1")]),
        )
        .unwrap();
        assert_eq!(std::fs::read_link(volume.join(DATA_LINK)).unwrap(), first);

        write_atomically(&volume, &payload(&[("mode", "slow")])).unwrap();
        assert_eq!(
            std::fs::read_to_string(volume.join("mode")).unwrap(),
            "slow"
        );
        assert!(
            !volume.join("conf").exists(),
            "a key that went away is gone"
        );
        assert!(!volume.join(&first).exists(), "the old content is removed");
    }

    #[test]
    fn paths_stay_inside_the_volume() {
        assert!(relative("a/b").is_some());
        for bad in ["", "/etc/passwd", "../x", "a/../../x"] {
            assert!(relative(bad).is_none(), "{bad}");
        }
        let volumes = Volumes::new("/var/lib/kubelet");
        assert!(volumes.pod_dir("0b5c-11").is_some());
        for bad in ["", ".", "..", "/x", "a/b"] {
            assert!(volumes.pod_dir(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_sub_path_through_a_symlink_out_of_the_volume_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("data");
        std::fs::create_dir_all(volume.join("logs")).unwrap();
        symlink("/", volume.join("root")).unwrap();
        assert!(within(&volume, &volume.join("logs")));
        assert!(within(&volume, &volume.join("logs/new/deeper")));
        assert!(!within(&volume, &volume.join("root")));
        assert!(!within(&volume, &volume.join("root/etc/new")));
    }

    #[test]
    fn host_path_types_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("made");
        check_host_path(&made, "DirectoryOrCreate").unwrap();
        assert!(made.is_dir());
        check_host_path(&made, "Directory").unwrap();
        assert!(check_host_path(&made, "File").is_err());
        let file = dir.path().join("f");
        check_host_path(&file, "FileOrCreate").unwrap();
        check_host_path(&file, "File").unwrap();
        assert!(check_host_path(&dir.path().join("missing"), "Directory").is_err());
        assert!(check_host_path(&made, "Weird").is_err());
    }
}
