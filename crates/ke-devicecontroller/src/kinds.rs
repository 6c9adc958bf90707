//! The `devices.kubeedge.io/v1beta1` kinds, addressed dynamically (their schemas are upstream's
//! CRDs; cloudcore only reads the fields it routes by).

use kube::Client;
use kube::api::{Api, ApiResource};
use kube::core::DynamicObject;

pub const GROUP: &str = "devices.kubeedge.io";
pub const VERSION: &str = "v1beta1";
pub const API_VERSION: &str = "devices.kubeedge.io/v1beta1";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: API_VERSION.into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

pub fn devices(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &resource("Device", "devices"))
}

pub fn device_models(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &resource("DeviceModel", "devicemodels"))
}

pub fn device_statuses(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &resource("DeviceStatus", "devicestatuses"),
    )
}
