//! The CRDs cloudcore needs, exactly as upstream ships them (`crds/` holds upstream's manifests
//! unchanged): installed when missing, then waited for until the API server serves them.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::Value;

const MANIFESTS: [(&str, &str); 5] = [
    (
        "devices_v1beta1_device.yaml",
        include_str!("../crds/devices_v1beta1_device.yaml"),
    ),
    (
        "devices_v1beta1_devicemodel.yaml",
        include_str!("../crds/devices_v1beta1_devicemodel.yaml"),
    ),
    (
        "devices_v1beta1_devicestatus.yaml",
        include_str!("../crds/devices_v1beta1_devicestatus.yaml"),
    ),
    (
        "objectsync_v1alpha1.yaml",
        include_str!("../crds/objectsync_v1alpha1.yaml"),
    ),
    (
        "cluster_objectsync_v1alpha1.yaml",
        include_str!("../crds/cluster_objectsync_v1alpha1.yaml"),
    ),
];

fn crd_api(client: &Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &ApiResource {
            group: "apiextensions.k8s.io".into(),
            version: "v1".into(),
            api_version: "apiextensions.k8s.io/v1".into(),
            kind: "CustomResourceDefinition".into(),
            plural: "customresourcedefinitions".into(),
        },
    )
}

/// Creates the CRDs that do not exist (existing ones are left as they are: an operator may
/// have installed a newer version) and waits until every one is Established.
pub async fn install(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let api = crd_api(client);
    let mut names = Vec::new();
    for (file, text) in MANIFESTS {
        let crd: DynamicObject =
            serde_yaml::from_str(text).with_context(|| format!("parse CRD manifest {file}"))?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => tracing::info!(crd = %name, "CRD installed"),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(crd = %name, "CRD already installed")
            }
            Err(err) => return Err(err).with_context(|| format!("install CRD {name}")),
        }
        names.push(name);
    }
    let deadline = Instant::now() + timeout;
    for name in names {
        loop {
            let crd = api
                .get(&name)
                .await
                .with_context(|| format!("read CRD {name}"))?;
            if is_established(&crd.data) {
                break;
            }
            if Instant::now() >= deadline {
                anyhow::bail!("CRD {name} not Established within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

fn is_established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_manifest_is_a_crd_of_a_kubeedge_group() {
        for (file, text) in MANIFESTS {
            let crd: DynamicObject =
                serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(
                crd.types.unwrap().kind,
                "CustomResourceDefinition",
                "{file}"
            );
            let group = crd.data["spec"]["group"].as_str().unwrap();
            assert!(
                ["devices.kubeedge.io", "reliablesyncs.kubeedge.io"].contains(&group),
                "{file}: {group}"
            );
        }
    }
}
